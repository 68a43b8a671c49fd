//! Rendering untrusted templates within a memory and time limit.
//!
//! Chat templates come from downloaded model files. minijinja's fuel bounds how many
//! instructions a render runs, but a handful of instructions can still ask for gigabytes
//! (`{% set s = s + s %}` thirty times), and Rust cannot turn a failed allocation into an
//! error: the process aborts. So a render runs on a thread of its own whose allocations the
//! crate's global allocator ([`GuardedAllocator`]) counts against a budget. A thread that
//! would go over it is never given the memory: it reports the overrun and stops for good
//! (parked, holding at most the budget), and the caller gets an error at once. The template
//! is then refused from that moment on ([`RenderGuard`]), so a hostile model costs at most
//! one parked thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The crate's global allocator: the system allocator, counting the allocations of threads
/// that render a template (see the module's documentation). Other threads pay one
/// thread-local read per allocation.
pub struct GuardedAllocator;

#[global_allocator]
static GLOBAL: GuardedAllocator = GuardedAllocator;

/// What a guarded render thread may allocate, and whom to tell when it ran out.
struct Budget {
    limit: usize,
    used: Cell<usize>,
    run: Arc<RunState>,
}

thread_local! {
    // Set only on render threads, for the length of the render.
    static BUDGET: Cell<*const Budget> = const { Cell::new(std::ptr::null()) };
}

const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const OUT_OF_MEMORY: u8 = 2;

/// A render thread's state as its caller sees it.
struct RunState {
    state: AtomicU8,
    caller: Thread,
}

impl RunState {
    fn end(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.caller.unpark();
    }
}

/// Counts `size` more bytes against the current thread's budget, if it has one; a thread
/// that would pass its limit reports it and never returns.
fn charge(size: usize) {
    let Ok(budget) = BUDGET.try_with(Cell::get) else {
        return;
    };
    if budget.is_null() {
        return;
    }
    // SAFETY: the pointer is set by `run_guarded` to a `Budget` on its own stack frame and
    // cleared before that frame ends; only this thread reads it.
    let budget = unsafe { &*budget };
    let used = budget.used.get().saturating_add(size);
    if used > budget.limit {
        // Nothing here allocates: the flag, the caller's unpark, and parking for good.
        budget.run.end(OUT_OF_MEMORY);
        loop {
            std::thread::park();
        }
    }
    budget.used.set(used);
}

fn refund(size: usize) {
    if let Ok(budget) = BUDGET.try_with(Cell::get) {
        if !budget.is_null() {
            // SAFETY: as in `charge`.
            let budget = unsafe { &*budget };
            budget.used.set(budget.used.get().saturating_sub(size));
        }
    }
}

// SAFETY: every call goes to the system allocator with the caller's own arguments; the
// counting around it never touches the memory.
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        refund(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            refund(layout.size() - new_size);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Why a guarded run gave no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overrun {
    /// It asked for more memory than its budget.
    Memory,
    /// It ran past its time limit (it stops by itself later: fuel bounds it).
    Time,
    /// An earlier run of the same guard overran: it is not run again.
    Refused,
}

/// Runs renders of one template within limits, and refuses them all once one overran its
/// memory budget.
#[derive(Debug, Default)]
pub(crate) struct RenderGuard {
    poisoned: AtomicBool,
}

impl RenderGuard {
    /// Runs `work` on a thread of its own with at most `memory` bytes of allocations live
    /// and `time` to finish.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        memory: usize,
        time: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Overrun> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Overrun::Refused);
        }
        let result = run_guarded(memory, time, work);
        if result.as_ref().err() == Some(&Overrun::Memory) {
            self.poisoned.store(true, Ordering::Release);
        }
        result
    }
}

fn run_guarded<T: Send + 'static>(
    memory: usize,
    time: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Overrun> {
    let run = Arc::new(RunState {
        state: AtomicU8::new(RUNNING),
        caller: std::thread::current(),
    });
    let slot: Arc<Mutex<Option<T>>> = Arc::default();
    let spawned = {
        let (run, slot) = (run.clone(), slot.clone());
        std::thread::Builder::new()
            .name("helixflow-template".into())
            .spawn(move || {
                let budget = Budget {
                    limit: memory,
                    used: Cell::new(0),
                    run: run.clone(),
                };
                BUDGET.with(|b| b.set(&budget));
                let value = work();
                BUDGET.with(|b| b.set(std::ptr::null()));
                drop(budget);
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
                run.end(FINISHED);
            })
    };
    if spawned.is_err() {
        // No thread could be started (the system is out of them): no render either.
        return Err(Overrun::Time);
    }
    let deadline = Instant::now() + time;
    loop {
        match run.state.load(Ordering::Acquire) {
            FINISHED => {
                let value = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                return value.ok_or(Overrun::Time);
            }
            OUT_OF_MEMORY => return Err(Overrun::Memory),
            _ => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Overrun::Time);
        }
        std::thread::park_timeout(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_within_its_budget_returns_its_value() {
        let guard = RenderGuard::default();
        let out = guard.run(1 << 20, Duration::from_secs(5), || "x".repeat(1000));
        assert_eq!(out.unwrap().len(), 1000);
    }

    #[test]
    fn an_allocation_past_the_budget_is_an_error_and_poisons_the_guard() {
        let guard = RenderGuard::default();
        let out = guard.run(1 << 20, Duration::from_secs(5), || {
            let mut s = String::from("ab");
            for _ in 0..40 {
                s = format!("{s}{s}");
            }
            s.len()
        });
        assert_eq!(out, Err(Overrun::Memory));
        assert_eq!(
            guard.run(1 << 20, Duration::from_secs(5), || 1),
            Err(Overrun::Refused)
        );
        // Other threads allocate as before.
        assert_eq!(vec![0u8; 64 << 20].len(), 64 << 20);
    }

    #[test]
    fn work_past_its_time_is_an_error() {
        let guard = RenderGuard::default();
        let out = guard.run(1 << 20, Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(500));
        });
        assert_eq!(out, Err(Overrun::Time));
    }
}
