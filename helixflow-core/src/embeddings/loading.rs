//! Reading the encoder's files: `config.json`, `tokenizer.json` and `model.safetensors`.

use std::path::Path;

use candle_transformers::models::bert::Config;
use tokenizers::{PostProcessor, Tokenizer, TruncationParams};

use super::encoder::BertEncoder;
use crate::error::{Error, Result};

/// Reads a file the model cannot do without; a missing file is [`Error::ModelNotFound`].
fn read_required(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::ModelNotFound(format!("{} is missing", path.display()))
        } else {
            Error::io(path, e)
        }
    })
}

/// Parses and checks a BERT `config.json`.
pub(super) fn read_bert_config(path: &Path) -> Result<Config> {
    let bytes = read_required(path)?;
    let config: Config = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })?;
    // Other encoders (RoBERTa, DistilBERT, ...) parse as BERT configs but compute differently
    // (position offsets, no token types), which would give silently wrong vectors.
    if let Some(model_type) = config.model_type.as_deref() {
        if model_type != "bert" {
            return Err(Error::UnsupportedModel(format!(
                "{}: model_type {model_type:?} is not supported for embeddings (only \"bert\")",
                path.display()
            )));
        }
    }
    let problem = if config.vocab_size == 0 {
        Some("vocab_size is 0".to_string())
    } else if config.max_position_embeddings == 0 {
        Some("max_position_embeddings is 0".to_string())
    } else if config.type_vocab_size == 0 {
        Some("type_vocab_size is 0".to_string())
    } else if config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        Some(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden_size, config.num_attention_heads
        ))
    } else if config.hidden_size == 0 {
        Some("hidden_size is 0".to_string())
    } else {
        None
    };
    match problem {
        Some(reason) => Err(Error::invalid_file(path, reason)),
        None => Ok(config),
    }
}

/// Loads `tokenizer.json` without its padding and with truncation at `max_seq_len` tokens
/// (special tokens included).
pub(super) fn load_tokenizer(path: &Path, max_seq_len: usize) -> Result<Tokenizer> {
    let bytes = read_required(path)?;
    let mut tokenizer =
        Tokenizer::from_bytes(&bytes).map_err(|e| Error::invalid_file(path, e.to_string()))?;
    // Files exported for fixed-shape runtimes pad every input (often to 128); we pad per batch
    // and pool over real tokens only.
    tokenizer.with_padding(None);
    let special_tokens = tokenizer
        .get_post_processor()
        .map_or(0, |processor| processor.added_tokens(false));
    if max_seq_len <= special_tokens {
        return Err(Error::invalid_file(
            path,
            format!(
                "the sequence limit of {max_seq_len} tokens leaves no room next to the \
                 {special_tokens} special tokens"
            ),
        ));
    }
    let truncation = TruncationParams {
        max_length: max_seq_len,
        ..TruncationParams::default()
    };
    tokenizer
        .with_truncation(Some(truncation))
        .map_err(|e| Error::invalid_file(path, e.to_string()))?;
    Ok(tokenizer)
}

/// Loads `folder/model.safetensors` into an f32 encoder on the CPU.
pub(super) fn load_weights(folder: &Path, config: &Config) -> Result<BertEncoder> {
    let path = folder.join("model.safetensors");
    if !path.is_file() {
        if folder.join("pytorch_model.bin").is_file() {
            return Err(Error::UnsupportedModel(format!(
                "{} has only pytorch_model.bin; HelixFlow loads model.safetensors",
                folder.display()
            )));
        }
        return Err(Error::ModelNotFound(format!(
            "{} is missing",
            path.display()
        )));
    }
    BertEncoder::load(&path, config)
}
