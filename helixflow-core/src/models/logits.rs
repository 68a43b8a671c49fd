//! The logits of a model step: one row of vocabulary scores per sequence, in one buffer that
//! a decode loop reuses from step to step.

/// One row of `vocab` logits per sequence of a step, stored flat.
#[derive(Debug, Clone, Default)]
pub struct Logits {
    values: Vec<f32>,
    vocab: usize,
}

impl Logits {
    /// An empty set of logits (no rows), whose buffer grows on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sequences (rows) held.
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.vocab).unwrap_or(0)
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The logits of sequence `i` of the step.
    ///
    /// # Panics
    /// If `i` is not below [`Self::rows`].
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.vocab..(i + 1) * self.vocab]
    }

    /// Every row, in the step's sequence order.
    pub fn iter(&self) -> std::slice::ChunksExact<'_, f32> {
        self.values.chunks_exact(self.vocab.max(1))
    }

    /// Every row copied out, one vector per sequence.
    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        self.iter().map(<[f32]>::to_vec).collect()
    }

    /// Readies `rows` rows of `vocab` logits for a step to overwrite, keeping the buffer.
    pub(crate) fn reset(&mut self, rows: usize, vocab: usize) -> &mut [f32] {
        self.vocab = vocab;
        // Every value is overwritten by the step, so growing is the only cost.
        self.values.resize(rows * vocab, 0.0);
        &mut self.values
    }
}
