//! One block of cached keys and values.

use std::sync::Arc;

use half::f16;

use super::pool::PoolShared;

/// The shape of a block: how many positions it holds and how wide each layer's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    /// Positions per block.
    pub block_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Width of one key (or value) row: `num_kv_heads * head_dim`.
    pub kv_width: usize,
}

impl BlockLayout {
    /// f16 values in one block: keys and values of every layer.
    pub fn values_per_block(&self) -> usize {
        2 * self.num_layers * self.block_size * self.kv_width
    }

    /// Bytes of one block.
    pub fn bytes_per_block(&self) -> usize {
        self.values_per_block() * 2
    }

    /// Offset of layer `layer`'s keys in a block; its values follow them.
    pub(crate) fn layer_offset(&self, layer: usize) -> usize {
        2 * layer * self.block_size * self.kv_width
    }
}

/// `block_size` positions of keys and values for every layer, laid out
/// `[layer][keys | values][position][kv_width]`.
///
/// Blocks come from a [`super::KvPool`] and return their memory to it when dropped.
pub struct KvBlock {
    pub(crate) data: Vec<f16>,
    pool: Arc<PoolShared>,
}

impl std::fmt::Debug for KvBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvBlock")
            .field("values", &self.data.len())
            .finish()
    }
}

impl KvBlock {
    pub(crate) fn new(data: Vec<f16>, pool: Arc<PoolShared>) -> Self {
        Self { data, pool }
    }

    /// Keys of `layer`, `[position][kv_width]`.
    pub fn keys(&self, layout: &BlockLayout, layer: usize) -> &[f16] {
        let start = layout.layer_offset(layer);
        &self.data[start..start + layout.block_size * layout.kv_width]
    }

    /// Values of `layer`, `[position][kv_width]`.
    pub fn values(&self, layout: &BlockLayout, layer: usize) -> &[f16] {
        let start = layout.layer_offset(layer) + layout.block_size * layout.kv_width;
        &self.data[start..start + layout.block_size * layout.kv_width]
    }

    /// Mutable keys and values of `layer`.
    pub(crate) fn layer_mut(
        &mut self,
        layout: &BlockLayout,
        layer: usize,
    ) -> (&mut [f16], &mut [f16]) {
        let start = layout.layer_offset(layer);
        let width = layout.block_size * layout.kv_width;
        self.data[start..start + 2 * width].split_at_mut(width)
    }
}

impl Drop for KvBlock {
    fn drop(&mut self) {
        self.pool.release(std::mem::take(&mut self.data));
    }
}
