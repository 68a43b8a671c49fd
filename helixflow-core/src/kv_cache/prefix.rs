//! Prefix caching: full blocks of prompt keys/values, found again by a hash of their tokens
//! chained with the hash of everything before them.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use super::block::KvBlock;

/// The chained hashes of the full blocks of `tokens`: block `i`'s hash covers tokens
/// `0..(i + 1) * block_size`, so equal hashes mean equal prefixes.
pub fn block_hashes(tokens: &[u32], block_size: usize) -> Vec<u64> {
    let mut previous = 0u64;
    tokens
        .chunks_exact(block_size)
        .map(|block| {
            let mut hasher = DefaultHasher::new();
            previous.hash(&mut hasher);
            block.hash(&mut hasher);
            previous = hasher.finish();
            previous
        })
        .collect()
}

struct Entry {
    block: Arc<KvBlock>,
    last_used: u64,
}

/// Cached prompt blocks by prefix hash, evicted least-recently-used once no sequence uses them.
#[derive(Default)]
pub struct PrefixCache {
    entries: HashMap<u64, Entry>,
    clock: u64,
    hits: u64,
}

impl std::fmt::Debug for PrefixCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixCache")
            .field("blocks", &self.entries.len())
            .field("hits", &self.hits)
            .finish()
    }
}

impl PrefixCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached blocks for the longest run of leading `hashes` (each block's hash).
    pub fn lookup(&mut self, hashes: &[u64]) -> Vec<Arc<KvBlock>> {
        self.clock += 1;
        let mut found = Vec::new();
        for hash in hashes {
            let Some(entry) = self.entries.get_mut(hash) else {
                break;
            };
            entry.last_used = self.clock;
            found.push(entry.block.clone());
        }
        self.hits += found.len() as u64;
        found
    }

    /// Remembers a full prompt block under its prefix hash (a no-op if one is cached).
    pub fn insert(&mut self, hash: u64, block: &Arc<KvBlock>) {
        self.clock += 1;
        let clock = self.clock;
        self.entries
            .entry(hash)
            .and_modify(|e| e.last_used = clock)
            .or_insert_with(|| Entry {
                block: block.clone(),
                last_used: clock,
            });
    }

    /// Blocks cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Blocks reused by lookups so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Cached blocks that no sequence uses: what eviction could give back to the pool.
    pub fn evictable(&self) -> usize {
        self.entries
            .values()
            .filter(|e| Arc::strong_count(&e.block) == 1)
            .count()
    }

    /// Drops up to `wanted` unused blocks, least recently used first, returning their memory
    /// to the pool. Returns how many were dropped.
    pub fn evict(&mut self, wanted: usize) -> usize {
        let mut unused: Vec<(u64, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| Arc::strong_count(&e.block) == 1)
            .map(|(&hash, e)| (e.last_used, hash))
            .collect();
        unused.sort_unstable();
        unused.truncate(wanted);
        for (_, hash) in &unused {
            self.entries.remove(hash);
        }
        unused.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::{BlockLayout, KvPool};

    fn pool() -> KvPool {
        KvPool::new(
            BlockLayout {
                block_size: 2,
                num_layers: 1,
                kv_width: 2,
            },
            8,
        )
    }

    #[test]
    fn hashes_chain_over_the_whole_prefix() {
        let a = block_hashes(&[1, 2, 3, 4, 5], 2);
        let b = block_hashes(&[1, 2, 3, 4, 6, 7], 2);
        let c = block_hashes(&[9, 2, 3, 4], 2);
        assert_eq!(a.len(), 2);
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[1], c[1], "same block, different prefix");
    }

    #[test]
    fn lookups_stop_at_the_first_miss_and_count_hits() {
        let pool = pool();
        let mut cache = PrefixCache::new();
        let hashes = block_hashes(&[1, 2, 3, 4, 5, 6], 2);
        let blocks: Vec<_> = (0..3).map(|_| Arc::new(pool.allocate().unwrap())).collect();
        cache.insert(hashes[0], &blocks[0]);
        cache.insert(hashes[2], &blocks[2]);
        let found = cache.lookup(&hashes);
        assert_eq!(found.len(), 1);
        assert!(Arc::ptr_eq(&found[0], &blocks[0]));
        assert_eq!(cache.hits(), 1);
    }

    #[test]
    fn only_unused_blocks_are_evicted_oldest_first() {
        let pool = pool();
        let mut cache = PrefixCache::new();
        let hashes = block_hashes(&[1, 2, 3, 4, 5, 6], 2);
        let blocks: Vec<_> = (0..3).map(|_| Arc::new(pool.allocate().unwrap())).collect();
        for (h, b) in hashes.iter().zip(&blocks) {
            cache.insert(*h, b);
        }
        let in_use = blocks[0].clone();
        drop(blocks);
        assert_eq!(pool.stats().used, 3);
        assert_eq!(cache.evictable(), 2);
        assert_eq!(cache.evict(1), 1);
        // The oldest unused one (block 1) went; block 2 stays, block 0 is in use.
        assert_eq!(cache.lookup(&hashes[2..]).len(), 1);
        assert_eq!(pool.stats().used, 2);
        assert_eq!(cache.evict(10), 1);
        assert_eq!((cache.len(), pool.stats().used), (1, 1));
        drop(in_use);
        assert_eq!(cache.evict(10), 1);
        assert_eq!(pool.stats().used, 0);
    }
}
