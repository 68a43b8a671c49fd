//! Text embeddings with BERT-family encoders stored as a Hugging Face / sentence-transformers
//! folder (`config.json`, `model.safetensors`, `tokenizer.json`, optional `modules.json`,
//! `sentence_bert_config.json` and `1_Pooling/config.json`).
//!
//! ```no_run
//! # fn main() -> helixflow_core::Result<()> {
//! use helixflow_core::embeddings::EmbeddingModel;
//! let model = EmbeddingModel::load(std::path::Path::new("all-MiniLM-L6-v2"))?;
//! let out = model.embed(&["The cat sits on the mat.", "A feline rests on a rug."])?;
//! assert_eq!(out.vectors.len(), 2);
//! assert_eq!(out.vectors[0].len(), model.dimension());
//! # Ok(())
//! # }
//! ```

mod batching;
mod encoder;
mod layout;
mod loading;
pub mod pooling;

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use batching::{plan_batches, MAX_BATCH_SEQUENCES, MAX_BATCH_TOKENS};
use encoder::BertEncoder;
use layout::SentenceTransformerLayout;
pub use pooling::PoolingMode;

/// A loaded embedding model: a BERT encoder, its tokenizer, pooling and optional normalisation.
///
/// Runs in f32 on the CPU. `embed` takes `&self`, so one model can serve several threads
/// (it is `Send + Sync`).
pub struct EmbeddingModel {
    name: String,
    encoder: BertEncoder,
    tokenizer: Tokenizer,
    vocab_size: usize,
    hidden_size: usize,
    max_seq_len: usize,
    pooling: Vec<PoolingMode>,
    normalize: bool,
    lowercase: bool,
}

/// The most inputs one embedding request may carry (OpenAI's limit).
pub const MAX_INPUTS_PER_REQUEST: usize = 2048;

/// The most tokens one embedding request may carry, special tokens included (OpenAI's limit).
pub const MAX_TOKENS_PER_REQUEST: usize = 300_000;

/// One embedding request's inputs, as the APIs take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingInput {
    /// Texts, tokenised with the model's special tokens.
    Texts(Vec<String>),
    /// Token id lists, used as given.
    TokenIds(Vec<Vec<u32>>),
}

/// The result of one embedding call.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input, in the order of the inputs, each [`EmbeddingModel::dimension`] long.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens fed to the model over all inputs, special tokens (`[CLS]`, `[SEP]`) included and
    /// after truncation; what OpenAI's `usage.prompt_tokens` reports.
    pub prompt_tokens: usize,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("name", &self.name)
            .field("dimension", &self.dimension())
            .field("max_seq_len", &self.max_seq_len)
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .finish_non_exhaustive()
    }
}

impl EmbeddingModel {
    /// Loads the model folder `dir`.
    ///
    /// The sequence limit is `max_seq_length` of `sentence_bert_config.json` (or
    /// `max_position_embeddings` without that file), never more than `max_position_embeddings`.
    /// Pooling follows `1_Pooling/config.json` (mean when absent); vectors are L2-normalised when
    /// `modules.json` lists a `Normalize` module. The tokenizer's own padding is switched off.
    ///
    /// Errors name the offending file: [`Error::ModelNotFound`] for a missing folder or required
    /// file, [`Error::Json`] for unparsable JSON, [`Error::InvalidModelFile`] for bad weights,
    /// tokenizer or inconsistent settings, [`Error::UnsupportedModel`] for non-BERT models or
    /// extra sentence-transformers modules (such as `Dense`), [`Error::Io`] for read failures.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::ModelNotFound(format!(
                "{} is not a model folder",
                dir.display()
            )));
        }
        let layout = SentenceTransformerLayout::read(dir)?;
        let folder = &layout.transformer_dir;
        let config = loading::read_bert_config(&folder.join("config.json"))?;
        if let Some(dimension) = layout.pooling_dimension {
            if dimension != config.hidden_size {
                return Err(Error::invalid_file(
                    &layout.pooling_config_path,
                    format!(
                        "word_embedding_dimension is {dimension} but the model's hidden_size is {}",
                        config.hidden_size
                    ),
                ));
            }
        }
        let max_seq_len = layout
            .max_seq_length
            .map_or(config.max_position_embeddings, |limit| {
                limit.min(config.max_position_embeddings)
            });
        let tokenizer = loading::load_tokenizer(&folder.join("tokenizer.json"), max_seq_len)?;
        let encoder = loading::load_weights(folder, &config)?;
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(Self {
            name,
            encoder,
            tokenizer,
            vocab_size: config.vocab_size,
            hidden_size: config.hidden_size,
            max_seq_len,
            pooling: layout.pooling,
            normalize: layout.normalize,
            lowercase: layout.lowercase,
        })
    }

    /// Replaces the name (by default the folder's name).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The model's name (by default the folder's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Floats per embedding vector (the hidden size times the number of pooling modes).
    pub fn dimension(&self) -> usize {
        self.hidden_size * self.pooling.len()
    }

    /// The most tokens (special tokens included) fed to the model per input; longer inputs are
    /// truncated.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Entries in the model's token embedding table; valid token ids are below this.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The pooling modes, concatenated in this order.
    pub fn pooling(&self) -> &[PoolingMode] {
        &self.pooling
    }

    /// Whether vectors are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// The token ids `embed` feeds the model for `text`: special tokens added, truncated to
    /// [`max_seq_len`](Self::max_seq_len), no padding.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenize_checked(text).map(|(ids, _)| ids)
    }

    /// The token ids of `text` without the special tokens (`[CLS]`, `[SEP]`) and untruncated.
    pub fn tokenize_plain(&self, text: &str) -> Result<Vec<u32>> {
        let lowered = if self.lowercase {
            text.to_lowercase()
        } else {
            text.to_string()
        };
        let encoding = self
            .tokenizer
            .encode(lowered, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of token ids; `skip_special` leaves special tokens out. Ids outside the
    /// vocabulary are an [`Error::InvalidRequest`].
    pub fn detokenize(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(Error::InvalidRequest(format!(
                "token id {id} is outside the vocabulary of {} tokens",
                self.vocab_size
            )));
        }
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Embeds each text. Fails with [`Error::InvalidRequest`] when `inputs` is empty; an empty
    /// string is fine (it is just the special tokens).
    pub fn embed(&self, inputs: &[&str]) -> Result<Embeddings> {
        if inputs.is_empty() {
            return Err(Error::InvalidRequest("no inputs to embed".into()));
        }
        let sequences = inputs
            .iter()
            .map(|text| self.tokenize(text))
            .collect::<Result<Vec<_>>>()?;
        self.embed_sequences(&sequences)
    }

    /// Embeds pre-tokenised inputs (OpenAI's token-array input).
    ///
    /// The ids are used as given, so special tokens are not added: pass what
    /// [`tokenize`](Self::tokenize) returns to get the same vector as [`embed`](Self::embed).
    /// Arrays longer than [`max_seq_len`](Self::max_seq_len) keep their first `max_seq_len` ids.
    /// Fails with [`Error::InvalidRequest`] for no inputs, an empty array, or an id outside the
    /// vocabulary.
    pub fn embed_token_ids(&self, inputs: &[Vec<u32>]) -> Result<Embeddings> {
        if inputs.is_empty() {
            return Err(Error::InvalidRequest("no inputs to embed".into()));
        }
        let mut sequences = Vec::with_capacity(inputs.len());
        for (index, ids) in inputs.iter().enumerate() {
            if ids.is_empty() {
                return Err(Error::InvalidRequest(format!(
                    "input {index} is an empty token array"
                )));
            }
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
                return Err(Error::InvalidRequest(format!(
                    "input {index} has token id {id}, outside the vocabulary of {} tokens",
                    self.vocab_size
                )));
            }
            sequences.push(ids.iter().take(self.max_seq_len).copied().collect());
        }
        self.embed_sequences(&sequences)
    }

    /// The token ids of one request's inputs, checked against the request limits (at most
    /// [`MAX_INPUTS_PER_REQUEST`] inputs and [`MAX_TOKENS_PER_REQUEST`] tokens). An input
    /// longer than [`max_seq_len`](Self::max_seq_len) is an error naming it, unless
    /// `truncate` asks for it to be cut to that length.
    pub fn prepare_request(&self, input: EmbeddingInput, truncate: bool) -> Result<Vec<Vec<u32>>> {
        let count = match &input {
            EmbeddingInput::Texts(texts) => texts.len(),
            EmbeddingInput::TokenIds(lists) => lists.len(),
        };
        if count == 0 {
            return Err(Error::InvalidRequest("there is nothing to embed".into()));
        }
        if count > MAX_INPUTS_PER_REQUEST {
            return Err(Error::InvalidRequest(format!(
                "{count} inputs in one request; at most {MAX_INPUTS_PER_REQUEST} are accepted"
            )));
        }
        let too_long = |index: usize, tokens: String| {
            Error::InvalidRequest(format!(
                "input {index} is {tokens} tokens, longer than the {} the model `{}` takes; \
                 shorten it, or ask for truncation (`truncate: true`)",
                self.max_seq_len, self.name
            ))
        };
        let mut total = 0usize;
        let mut sequences = Vec::with_capacity(count);
        let mut add = |ids: Vec<u32>| -> Result<()> {
            total = total.saturating_add(ids.len());
            if total > MAX_TOKENS_PER_REQUEST {
                return Err(Error::InvalidRequest(format!(
                    "the inputs are more than {MAX_TOKENS_PER_REQUEST} tokens; split the request"
                )));
            }
            sequences.push(ids);
            Ok(())
        };
        match input {
            EmbeddingInput::Texts(texts) => {
                let bytes: usize = texts.iter().map(String::len).sum();
                for (index, text) in texts.iter().enumerate() {
                    let (ids, cut) = self.tokenize_checked(text)?;
                    if cut && !truncate {
                        return Err(too_long(index, "more".into()));
                    }
                    add(ids)?;
                }
                crate::chat_model::release_after_large_input(bytes);
            }
            EmbeddingInput::TokenIds(lists) => {
                for (index, mut ids) in lists.into_iter().enumerate() {
                    if ids.is_empty() {
                        return Err(Error::InvalidRequest(format!(
                            "input {index} is an empty token array"
                        )));
                    }
                    if ids.len() > self.max_seq_len {
                        if !truncate {
                            return Err(too_long(index, ids.len().to_string()));
                        }
                        ids.truncate(self.max_seq_len);
                    }
                    add(ids)?;
                }
            }
        }
        Ok(sequences)
    }

    /// Embeds what [`prepare_request`](Self::prepare_request) returned, asking `cancelled`
    /// between batches: once it says yes, the work stops with [`Error::Cancelled`].
    pub fn embed_prepared(
        &self,
        sequences: &[Vec<u32>],
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Embeddings> {
        if let Some((index, &id)) = sequences.iter().enumerate().find_map(|(i, ids)| {
            ids.iter()
                .find(|&&id| id as usize >= self.vocab_size)
                .map(|id| (i, id))
        }) {
            return Err(Error::InvalidRequest(format!(
                "input {index} has token id {id}, outside the vocabulary of {} tokens",
                self.vocab_size
            )));
        }
        if sequences.iter().any(|ids| ids.len() > self.max_seq_len) {
            return Err(Error::InvalidRequest(format!(
                "an input is longer than the model's {} tokens",
                self.max_seq_len
            )));
        }
        self.embed_batches(sequences, cancelled)
    }

    /// [`tokenize`](Self::tokenize), and whether the text was cut to fit.
    fn tokenize_checked(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let lowered;
        let text = if self.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let ids = encoding.get_ids().to_vec();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(Error::Tokenizer(format!(
                "the tokenizer produced id {id}, outside the model's vocabulary of {}",
                self.vocab_size
            )));
        }
        Ok((ids, !encoding.get_overflowing().is_empty()))
    }

    /// Runs the encoder over non-empty, in-vocabulary, truncated sequences in length-sorted
    /// batches, and returns the vectors in input order.
    fn embed_sequences(&self, sequences: &[Vec<u32>]) -> Result<Embeddings> {
        self.embed_batches(sequences, &|| false)
    }

    /// [`embed_sequences`](Self::embed_sequences), stopping between batches once `cancelled`.
    fn embed_batches(
        &self,
        sequences: &[Vec<u32>],
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Embeddings> {
        if let Some(index) = sequences.iter().position(Vec::is_empty) {
            return Err(Error::InvalidRequest(format!(
                "input {index} has no tokens to embed"
            )));
        }
        let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
        let mut vectors = vec![Vec::new(); sequences.len()];
        for batch in plan_batches(&lengths, MAX_BATCH_SEQUENCES, MAX_BATCH_TOKENS) {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            let members: Vec<&[u32]> = batch
                .iter()
                .filter_map(|&i| sequences.get(i).map(Vec::as_slice))
                .collect();
            let pooled = self.forward_batch(&members)?;
            for (index, vector) in batch.into_iter().zip(pooled) {
                if let Some(slot) = vectors.get_mut(index) {
                    *slot = vector;
                }
            }
        }
        Ok(Embeddings {
            vectors,
            prompt_tokens: lengths.iter().sum(),
        })
    }

    /// One forward pass over `sequences` (stacked without padding), then pooling.
    fn forward_batch(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let states = self.encoder.forward(sequences)?;
        let mut rest = states.as_slice();
        let mut mask = Vec::new();
        sequences
            .iter()
            .map(|sequence| {
                let (mine, after) = rest.split_at(sequence.len() * self.hidden_size);
                rest = after;
                mask.clear();
                mask.resize(sequence.len(), 1u32);
                let mut vector = pooling::pool(&self.pooling, mine, self.hidden_size, &mask)?;
                if self.normalize {
                    pooling::l2_normalize(&mut vector);
                }
                Ok(vector)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<EmbeddingModel>();
    }
}
