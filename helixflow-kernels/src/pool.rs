//! The worker threads of the kernels' parallel loops.
//!
//! A decode step of a small model runs hundreds of parallel loops of a few microseconds each.
//! Handing each loop to threads that went to sleep after the last one (as a general-purpose
//! pool does once its workers idle) costs about as much as the loop itself. Here the workers
//! poll for the next loop after each one, so it reaches them within a microsecond, and sleep
//! only when no loop has come for a few milliseconds. The calling thread takes tasks too, so
//! `n` threads means `n - 1` workers.
//!
//! The CPUs may be shared (a server's other threads, other processes): a loop never waits for
//! a worker that has not joined it (the caller runs the remaining tasks itself and closes the
//! loop), and every wait yields the CPU between polls, so that a descheduled thread gets to
//! run instead of being spun against.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// How long an idle worker polls for the next loop before it sleeps.
const SPIN: Duration = Duration::from_millis(5);

/// How long a wait spins before it starts yielding the CPU between polls.
const SPIN_BEFORE_YIELD: Duration = Duration::from_micros(50);

thread_local! {
    /// Set while this thread runs a pool task: a loop started from inside a task runs on this
    /// thread alone instead of waiting for workers that are busy with the outer loop.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// A fixed set of worker threads that run parallel loops with the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: usize,
    /// One loop at a time; a second caller meanwhile runs its loop on its own thread.
    running: Mutex<()>,
}

/// One loop: the task function and the number of tasks. Lives on the caller's stack while
/// the workers use it.
struct Job<'a> {
    run: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
}

/// [`Shared::state`]: the loop's number in the high 32 bits, whether it is still open to
/// workers, and how many workers joined it and have not finished yet.
const OPEN: u64 = 1 << 31;
const JOINED: u64 = OPEN - 1;

fn loop_number(state: u64) -> u64 {
    state >> 32
}

struct Shared {
    /// The current loop's number, [`OPEN`] flag and [`JOINED`] count. A worker runs a loop
    /// only if it joins it (one compare-and-swap) while it is open; the caller closes it once
    /// every task has been taken and then waits only for the workers that joined.
    state: AtomicU64,
    /// The current loop's [`Job`], type- and lifetime-erased.
    job: AtomicPtr<Job<'static>>,
    /// The next task index to hand out.
    next: AtomicUsize,
    /// Whether a task of the current loop panicked on a worker.
    panicked: AtomicBool,
    /// Workers asleep (or about to be) on `wake`.
    sleeping: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

impl Pool {
    /// A pool running loops on `threads` threads (the caller and `threads - 1` workers).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = threads.max(1) - 1;
        for i in 0..workers {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("helixflow-kernel-{i}"))
                .spawn(move || shared.work())
                .expect("spawning a kernel worker thread");
        }
        Self {
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    /// The process-wide pool. Its size is `HELIXFLOW_NUM_THREADS`, else `RAYON_NUM_THREADS`
    /// (which older releases used), else the number of CPUs.
    pub fn global() -> &'static Pool {
        static GLOBAL: OnceLock<Pool> = OnceLock::new();
        GLOBAL.get_or_init(|| Pool::new(configured_threads()))
    }

    /// Threads that run each loop, the caller included.
    pub fn threads(&self) -> usize {
        self.workers + 1
    }

    /// Runs `run(i)` for every `i` in `0..tasks`, spread over the pool's threads, and returns
    /// when all have finished. A panic in a task is raised again here.
    pub fn for_each(&self, tasks: usize, run: impl Fn(usize) + Sync) {
        if tasks == 0 {
            return;
        }
        let nested = IN_TASK.with(Cell::get);
        let guard = match self.running.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        match guard {
            Some(_guard) if tasks > 1 && self.workers > 0 && !nested => self.run_loop(tasks, &run),
            _ => (0..tasks).for_each(run),
        }
    }

    /// Splits `data` into chunks of `chunk` elements (the last may be shorter) and runs
    /// `run(index, chunk)` for each, in parallel.
    pub fn for_each_chunk_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        run: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.for_each(len.div_ceil(chunk), |i| {
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: every index gets its own disjoint range of `data`, which stays borrowed
            // mutably until every task has finished.
            let part =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            run(i, part);
        });
    }

    fn run_loop(&self, tasks: usize, run: &(dyn Fn(usize) + Sync)) {
        let shared = &*self.shared;
        let job = Job { run, tasks };
        shared.next.store(0, Ordering::Relaxed);
        shared.panicked.store(false, Ordering::Relaxed);
        // SAFETY of the erased lifetime: `CloseLoop` below keeps this frame (and `job`) alive
        // until no worker uses it, even if a task panics here.
        shared.job.store(
            (&job as *const Job<'_>).cast_mut().cast(),
            Ordering::Relaxed,
        );
        let number = loop_number(shared.state.load(Ordering::Relaxed)) + 1;
        shared.state.store((number << 32) | OPEN, Ordering::SeqCst);
        if shared.sleeping.load(Ordering::SeqCst) > 0 {
            let _lock = shared.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            shared.wake.notify_all();
        }
        let close = CloseLoop(shared);
        shared.take_tasks(&job);
        drop(close);
        if shared.panicked.load(Ordering::Acquire) {
            resume_unwind(Box::new("a kernel task panicked on a worker thread"));
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .finish()
    }
}

/// Closes the current loop when dropped and waits until the workers that joined it are done.
struct CloseLoop<'a>(&'a Shared);

impl Drop for CloseLoop<'_> {
    fn drop(&mut self) {
        let state = &self.0.state;
        state.fetch_and(!OPEN, Ordering::SeqCst);
        let mut wait = Wait::new();
        while state.load(Ordering::Acquire) & JOINED != 0 {
            pause(&mut wait);
        }
        self.0.job.store(std::ptr::null_mut(), Ordering::Relaxed);
    }
}

/// One poll of a wait: spin hints for the first [`SPIN_BEFORE_YIELD`] (on an idle machine the
/// next loop or the last worker comes sooner), then the CPU yielded between polls, so that a
/// thread the waiter depends on can run if the CPUs are oversubscribed.
fn pause(wait: &mut Wait) {
    wait.polls += 1;
    if !wait.yielding {
        std::hint::spin_loop();
        if wait.polls.is_multiple_of(32) {
            wait.yielding = wait.start.elapsed() > SPIN_BEFORE_YIELD;
        }
    } else {
        std::thread::yield_now();
    }
}

/// The progress of one wait.
struct Wait {
    start: Instant,
    polls: u32,
    yielding: bool,
}

impl Wait {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            polls: 0,
            yielding: false,
        }
    }
}

impl Shared {
    /// Takes task indices until none are left.
    fn take_tasks(&self, job: &Job<'_>) {
        /// Clears [`IN_TASK`] however the tasks end.
        struct InTask;
        impl Drop for InTask {
            fn drop(&mut self) {
                IN_TASK.with(|t| t.set(false));
            }
        }
        IN_TASK.with(|t| t.set(true));
        let _in_task = InTask;
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= job.tasks {
                break;
            }
            (job.run)(i);
        }
    }

    /// A worker's life: wait for a loop, join it if it is still open, take its tasks, leave.
    fn work(&self) {
        let mut seen = 0u64;
        loop {
            seen = self.wait_for_loop(seen);
            if !self.join(seen) {
                continue;
            }
            let job = self.job.load(Ordering::Relaxed);
            // SAFETY: the caller published `job` before opening the loop (which this thread
            // joined with SeqCst) and keeps it alive until every worker that joined has left.
            let job = unsafe { &*job.cast_const() };
            if catch_unwind(AssertUnwindSafe(|| self.take_tasks(job))).is_err() {
                self.panicked.store(true, Ordering::Release);
            }
            self.state.fetch_sub(1, Ordering::Release);
        }
    }

    /// Joins loop `number` if it is still the open one.
    fn join(&self, number: u64) -> bool {
        let mut state = self.state.load(Ordering::SeqCst);
        loop {
            if loop_number(state) != number || state & OPEN == 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// Returns the number of the next loop after `seen`: polling at first, then asleep.
    fn wait_for_loop(&self, seen: u64) -> u64 {
        let mut wait = Wait::new();
        loop {
            let number = loop_number(self.state.load(Ordering::SeqCst));
            if number != seen {
                return number;
            }
            pause(&mut wait);
            if wait.polls.is_multiple_of(64) && wait.start.elapsed() > SPIN {
                break;
            }
        }
        let mut lock = self.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sleeping.fetch_add(1, Ordering::SeqCst);
        let number = loop {
            let number = loop_number(self.state.load(Ordering::SeqCst));
            if number != seen {
                break number;
            }
            lock = self.wake.wait(lock).unwrap_or_else(|p| p.into_inner());
        };
        self.sleeping.fetch_sub(1, Ordering::SeqCst);
        number
    }
}

/// A raw pointer that may cross threads; each user guarantees disjoint access.
struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<T> {}

// SAFETY: see `for_each_chunk_mut`: the pointer is only used for disjoint ranges.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// A method rather than field access, so closures capture the whole `Sync` wrapper.
    fn get(self) -> *mut T {
        self.0
    }
}

fn configured_threads() -> usize {
    ["HELIXFLOW_NUM_THREADS", "RAYON_NUM_THREADS"]
        .iter()
        .find_map(|key| std::env::var(key).ok()?.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let pool = Pool::new(3);
        for tasks in [0, 1, 2, 7, 100] {
            let counts: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.for_each(tasks, |i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn chunks_cover_the_slice_disjointly() {
        let pool = Pool::new(2);
        let mut data = vec![0usize; 1003];
        pool.for_each_chunk_mut(&mut data, 10, |i, chunk| {
            for x in chunk.iter_mut() {
                *x += i + 1;
            }
        });
        for (j, &x) in data.iter().enumerate() {
            assert_eq!(x, j / 10 + 1);
        }
    }

    #[test]
    fn nested_and_concurrent_loops_complete() {
        let pool = Arc::new(Pool::new(2));
        let total = AtomicUsize::new(0);
        pool.for_each(4, |_| {
            pool.for_each(5, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 20);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let sum = AtomicUsize::new(0);
                    for _ in 0..200 {
                        pool.for_each(8, |i| {
                            sum.fetch_add(i, Ordering::Relaxed);
                        });
                    }
                    sum.load(Ordering::Relaxed)
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 200 * 28);
        }
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_still_works() {
        let pool = Pool::new(2);
        for _ in 0..20 {
            let result = catch_unwind(AssertUnwindSafe(|| {
                pool.for_each(16, |i| assert!(i != 9, "task 9 fails"));
            }));
            assert!(result.is_err());
        }
        let ran = AtomicUsize::new(0);
        pool.for_each(16, |_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(ran.load(Ordering::Relaxed), 16);
    }

    #[test]
    fn workers_wake_after_sleeping() {
        let pool = Pool::new(2);
        std::thread::sleep(SPIN * 3);
        let ran = AtomicUsize::new(0);
        pool.for_each(64, |_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(ran.load(Ordering::Relaxed), 64);
    }
}
