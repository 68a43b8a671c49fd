//! The pool of KV blocks: a fixed budget of blocks, recycled as sequences release them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use half::f16;

use super::block::{BlockLayout, KvBlock};

/// Released buffers kept for reuse by an unbounded pool.
const UNBOUNDED_SPARE_BUFFERS: usize = 64;

/// A shared budget of KV blocks. Cloning gives another handle to the same pool.
#[derive(Clone)]
pub struct KvPool {
    shared: Arc<PoolShared>,
}

pub(crate) struct PoolShared {
    layout: BlockLayout,
    /// `None`: no limit (a single sequence outside the engine).
    capacity: Option<usize>,
    used: AtomicUsize,
    spare: Mutex<Vec<Vec<f16>>>,
}

/// A snapshot of a pool's occupancy, in blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Blocks the budget allows (`usize::MAX` for an unbounded pool).
    pub capacity: usize,
    /// Blocks held by sequences (or by a prefix cache).
    pub used: usize,
    /// Blocks that can still be allocated.
    pub free: usize,
}

impl std::fmt::Debug for KvPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvPool")
            .field("layout", &self.shared.layout)
            .field("stats", &self.stats())
            .finish()
    }
}

impl KvPool {
    /// A pool of at most `capacity` blocks of `layout`.
    pub fn new(layout: BlockLayout, capacity: usize) -> Self {
        Self::build(layout, Some(capacity))
    }

    /// A pool sized from a memory budget in bytes (at least one block).
    pub fn with_budget(layout: BlockLayout, bytes: usize) -> Self {
        Self::new(layout, (bytes / layout.bytes_per_block()).max(1))
    }

    /// A pool without a limit, for a sequence run directly rather than by the engine.
    pub fn unbounded(layout: BlockLayout) -> Self {
        Self::build(layout, None)
    }

    fn build(layout: BlockLayout, capacity: Option<usize>) -> Self {
        Self {
            shared: Arc::new(PoolShared {
                layout,
                capacity,
                used: AtomicUsize::new(0),
                spare: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The shape of this pool's blocks.
    pub fn layout(&self) -> &BlockLayout {
        &self.shared.layout
    }

    /// A block, or `None` when the budget is spent.
    pub fn allocate(&self) -> Option<KvBlock> {
        let shared = &self.shared;
        let reserved = shared
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                match shared.capacity {
                    Some(cap) if used >= cap => None,
                    _ => Some(used + 1),
                }
            });
        reserved.ok()?;
        let recycled = shared
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        // A recycled buffer keeps stale values: positions are only read once written.
        let data = recycled.unwrap_or_else(|| vec![f16::ZERO; shared.layout.values_per_block()]);
        Some(KvBlock::new(data, shared.clone()))
    }

    /// Current occupancy.
    pub fn stats(&self) -> PoolStats {
        let used = self.shared.used.load(Ordering::Acquire);
        let capacity = self.shared.capacity.unwrap_or(usize::MAX);
        PoolStats {
            capacity,
            used,
            free: capacity - used.min(capacity),
        }
    }

    /// Whether two handles refer to the same pool.
    pub fn same_pool(&self, other: &KvPool) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl PoolShared {
    /// Takes back a dropped block's memory.
    pub(crate) fn release(&self, data: Vec<f16>) {
        self.used.fetch_sub(1, Ordering::AcqRel);
        let keep = self.capacity.unwrap_or(UNBOUNDED_SPARE_BUFFERS);
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < keep && !data.is_empty() {
            spare.push(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> BlockLayout {
        BlockLayout {
            block_size: 4,
            num_layers: 2,
            kv_width: 8,
        }
    }

    #[test]
    fn allocation_stops_at_the_budget_and_drops_give_blocks_back() {
        let pool = KvPool::new(layout(), 2);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert!(pool.allocate().is_none());
        assert_eq!(pool.stats().free, 0);
        drop(a);
        assert_eq!(pool.stats().used, 1);
        let c = pool.allocate().unwrap();
        assert_eq!(c.data.len(), layout().values_per_block());
        drop((b, c));
        assert_eq!(
            pool.stats(),
            PoolStats {
                capacity: 2,
                used: 0,
                free: 2
            }
        );
    }

    #[test]
    fn budget_in_bytes_rounds_down_to_whole_blocks() {
        let per_block = layout().bytes_per_block();
        assert_eq!(
            KvPool::with_budget(layout(), per_block * 3 + 5)
                .stats()
                .capacity,
            3
        );
        assert_eq!(KvPool::with_budget(layout(), 1).stats().capacity, 1);
    }
}
