//! One sequence's cache: its table of blocks.

use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::block::{BlockLayout, KvBlock};
use super::pool::KvPool;
use crate::{Error, Result};

/// The key/value cache of one sequence: a table of blocks from a [`KvPool`].
///
/// Positions `0..len()` are cached. Growing the cache takes blocks from the pool; dropping or
/// truncating it gives them back (once no other sequence shares them).
#[derive(Clone)]
pub struct SequenceKv {
    pool: KvPool,
    blocks: Vec<Arc<KvBlock>>,
    len: usize,
}

impl std::fmt::Debug for SequenceKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequenceKv")
            .field("len", &self.len)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl SequenceKv {
    /// An empty cache drawing blocks from `pool`.
    pub fn new(pool: KvPool) -> Self {
        Self {
            pool,
            blocks: Vec::new(),
            len: 0,
        }
    }

    /// A cache that starts with `blocks` already filled (a shared prefix), `len` positions long.
    pub fn with_prefix(pool: KvPool, blocks: Vec<Arc<KvBlock>>, len: usize) -> Self {
        debug_assert!(len <= blocks.len() * pool.layout().block_size);
        Self { pool, blocks, len }
    }

    /// Positions cached (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pool the blocks come from.
    pub fn pool(&self) -> &KvPool {
        &self.pool
    }

    /// The block table.
    pub fn blocks(&self) -> &[Arc<KvBlock>] {
        &self.blocks
    }

    /// Bytes of KV memory this sequence holds (shared blocks included).
    pub fn bytes(&self) -> usize {
        self.blocks.len() * self.pool.layout().bytes_per_block()
    }

    /// Blocks that growing to `new_len` positions would take from the pool, counting the copy
    /// of a shared, partly filled last block.
    pub fn blocks_needed(&self, new_len: usize) -> usize {
        let bs = self.pool.layout().block_size;
        let fresh = new_len.div_ceil(bs).saturating_sub(self.blocks.len());
        fresh + usize::from(new_len > self.len && self.last_block_is_shared_and_partial())
    }

    fn last_block_is_shared_and_partial(&self) -> bool {
        let bs = self.pool.layout().block_size;
        !self.len.is_multiple_of(bs) && self.blocks.last().is_some_and(|b| Arc::strong_count(b) > 1)
    }

    /// Makes positions `len()..new_len` writable: allocates the blocks they need and copies a
    /// shared, partly filled last block (copy-on-write). All or nothing: on
    /// [`Error::KvCacheFull`] the cache is unchanged.
    pub fn reserve(&mut self, new_len: usize) -> Result<()> {
        let needed = self.blocks_needed(new_len);
        let mut fresh = Vec::with_capacity(needed);
        for _ in 0..needed {
            match self.pool.allocate() {
                Some(block) => fresh.push(block),
                None => {
                    let free = fresh.len();
                    drop(fresh);
                    return Err(Error::KvCacheFull { needed, free });
                }
            }
        }
        let mut fresh = fresh.into_iter();
        if new_len > self.len && self.last_block_is_shared_and_partial() {
            let mut copy = fresh.next().expect("counted in blocks_needed");
            let last = self.blocks.last_mut().expect("partial block exists");
            copy.data.copy_from_slice(&last.data);
            *last = Arc::new(copy);
        }
        self.blocks.extend(fresh.map(Arc::new));
        Ok(())
    }

    /// Stores layer `layer`'s keys and values (rows of `kv_width` f32 values) for positions
    /// `start..`, which [`Self::reserve`] made writable.
    pub(crate) fn write(&mut self, layer: usize, start: usize, keys: &[f32], values: &[f32]) {
        let layout = *self.pool.layout();
        let w = layout.kv_width;
        for (i, (k, v)) in keys.chunks_exact(w).zip(values.chunks_exact(w)).enumerate() {
            let pos = start + i;
            let block = Arc::get_mut(&mut self.blocks[pos / layout.block_size])
                .expect("reserved positions lie in blocks this sequence owns alone");
            let (bk, bv) = block.layer_mut(&layout, layer);
            let off = (pos % layout.block_size) * w;
            bk[off..off + w].convert_from_f32_slice(k);
            bv[off..off + w].convert_from_f32_slice(v);
        }
    }

    /// Marks `n` more positions as cached (after every layer has been written).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Drops positions from `len` on, giving back blocks no longer needed.
    pub fn truncate(&mut self, len: usize) {
        self.len = len.min(self.len);
        let keep = self.len.div_ceil(self.pool.layout().block_size);
        self.blocks.truncate(keep);
    }

    /// Drops blocks reserved beyond the cached positions (after a failed step).
    pub(crate) fn release_unused(&mut self) {
        self.truncate(self.len);
    }

    /// Layer `layer` of the cache, for attention.
    pub fn view(&self, layer: usize) -> KvView<'_> {
        KvView {
            blocks: &self.blocks,
            layout: self.pool.layout(),
            layer,
            first: 0,
        }
    }
}

/// Read access to one layer of a sequence's cache, position by position, from its first
/// visible position on (0 unless [`Self::starting_at`] hid earlier ones).
#[derive(Clone, Copy)]
pub struct KvView<'a> {
    blocks: &'a [Arc<KvBlock>],
    layout: &'a BlockLayout,
    layer: usize,
    first: usize,
}

impl<'a> KvView<'a> {
    /// The same view with positions before `first` hidden (a sliding attention window):
    /// position `i` of the new view is position `first + i` of the cache.
    pub fn starting_at(self, first: usize) -> Self {
        Self {
            first: self.first + first,
            ..self
        }
    }

    /// The key row (`kv_width` values) of position `pos`.
    #[inline]
    pub fn key_row(&self, pos: usize) -> &'a [f16] {
        let (block, off) = self.locate(pos);
        &self.blocks[block].keys(self.layout, self.layer)[off..off + self.layout.kv_width]
    }

    /// The value row (`kv_width` values) of position `pos`.
    #[inline]
    pub fn value_row(&self, pos: usize) -> &'a [f16] {
        let (block, off) = self.locate(pos);
        &self.blocks[block].values(self.layout, self.layer)[off..off + self.layout.kv_width]
    }

    /// Calls `f` with the key and value rows of the view's positions `0..len`, in order,
    /// block by block (plain loops, for kernels that index the rows afterwards).
    #[inline]
    pub fn for_each_row_pair(&self, len: usize, mut f: impl FnMut(&'a [f16], &'a [f16])) {
        let (width, bs) = (self.layout.kv_width, self.layout.block_size);
        let mut left = len;
        let mut skip = self.first % bs;
        for block in &self.blocks[(self.first / bs).min(self.blocks.len())..] {
            if left == 0 {
                break;
            }
            let keys = block.keys(self.layout, self.layer);
            let values = block.values(self.layout, self.layer);
            let here = left.min(bs - skip);
            for (k, v) in keys
                .chunks_exact(width)
                .zip(values.chunks_exact(width))
                .skip(skip)
                .take(here)
            {
                f(k, v);
            }
            left -= here;
            skip = 0;
        }
    }

    #[inline]
    fn locate(&self, pos: usize) -> (usize, usize) {
        let (bs, pos) = (self.layout.block_size, self.first + pos);
        (pos / bs, (pos % bs) * self.layout.kv_width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(capacity: usize) -> KvPool {
        KvPool::new(
            BlockLayout {
                block_size: 4,
                num_layers: 1,
                kv_width: 2,
            },
            capacity,
        )
    }

    fn fill(kv: &mut SequenceKv, from: usize, to: usize) {
        kv.reserve(to).unwrap();
        let rows: Vec<f32> = (from..to).flat_map(|p| [p as f32, -(p as f32)]).collect();
        kv.write(0, from, &rows, &rows);
        kv.advance(to - from);
    }

    #[test]
    fn rows_land_in_blocks_and_read_back() {
        let mut kv = SequenceKv::new(pool(8));
        fill(&mut kv, 0, 3);
        fill(&mut kv, 3, 9);
        assert_eq!(kv.blocks().len(), 3);
        let view = kv.view(0);
        for pos in 0..9 {
            assert_eq!(view.key_row(pos)[0].to_f32(), pos as f32);
            assert_eq!(view.value_row(pos)[1].to_f32(), -(pos as f32));
        }
    }

    #[test]
    fn a_full_pool_fails_without_changing_the_cache() {
        let pool = pool(2);
        let mut kv = SequenceKv::new(pool.clone());
        fill(&mut kv, 0, 5);
        let err = kv.reserve(13).unwrap_err();
        assert!(
            matches!(err, Error::KvCacheFull { needed: 2, free: 0 }),
            "{err}"
        );
        assert_eq!((kv.len(), kv.blocks().len()), (5, 2));
        assert_eq!(pool.stats().used, 2);
    }

    #[test]
    fn forks_share_blocks_and_copy_the_partial_one_on_write() {
        let pool = pool(8);
        let mut a = SequenceKv::new(pool.clone());
        fill(&mut a, 0, 6);
        let mut b = a.clone();
        assert_eq!(pool.stats().used, 2);
        // Growing `b` copies its half-full second block and leaves `a`'s intact.
        assert_eq!(b.blocks_needed(7), 1);
        b.reserve(7).unwrap();
        b.write(0, 6, &[100.0, 100.0], &[100.0, 100.0]);
        b.advance(1);
        assert_eq!(pool.stats().used, 3);
        assert!(Arc::ptr_eq(&a.blocks()[0], &b.blocks()[0]));
        assert_eq!(b.view(0).key_row(6)[0].to_f32(), 100.0);
        assert_eq!(b.view(0).key_row(5)[0].to_f32(), 5.0);
        fill(&mut a, 6, 7);
        assert_eq!(a.view(0).key_row(6)[0].to_f32(), 6.0);
        drop(b);
        assert_eq!(pool.stats().used, 2);
    }

    #[test]
    fn truncating_and_dropping_return_blocks() {
        let pool = pool(8);
        let mut kv = SequenceKv::new(pool.clone());
        fill(&mut kv, 0, 10);
        assert_eq!(pool.stats().used, 3);
        kv.truncate(4);
        assert_eq!((kv.len(), pool.stats().used), (4, 1));
        drop(kv);
        assert_eq!(pool.stats().used, 0);
    }

    /// A view started at a later position sees the rows from there on, across blocks.
    #[test]
    fn a_view_starting_later_hides_the_earlier_rows() {
        let mut kv = SequenceKv::new(pool(8));
        fill(&mut kv, 0, 11);
        let view = kv.view(0).starting_at(5);
        let mut keys = Vec::new();
        view.for_each_row_pair(6, |k, _| keys.push(k[0].to_f32()));
        assert_eq!(keys, [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!(view.key_row(3)[0].to_f32(), 8.0);
        assert_eq!(view.starting_at(2).value_row(0)[1].to_f32(), -7.0);
    }
}
