//! Text ↔ token ids: tokenizers built from GGUF metadata or loaded from Hugging Face
//! `tokenizer.json` files, plus [`IncrementalDecoder`] for streaming generated text.
//!
//! Built from GGUF, the tokenizer reproduces llama.cpp's tokenisation of the same file: the same
//! pre-tokenizer regexes, control tokens recognised in text only when asked, and no BOS/EOS added
//! behind the caller's back.

mod gguf;
mod incremental;
mod vocab;

use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

pub use incremental::IncrementalDecoder;
pub use vocab::GgufVocab;

use crate::error::{Error, Result};

/// End-of-turn token texts that chat models use besides their EOS token (those of llama.cpp's
/// list that these families use).
const END_OF_TURN_TOKENS: [&str; 6] = [
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
    "</s>",
];

/// A tokenizer plus what generation needs to know about its special tokens.
#[derive(Clone)]
pub struct Tokenizer {
    /// Pipeline that recognises special-token text such as `<|im_start|>`.
    inner: tokenizers::Tokenizer,
    /// The same pipeline treating special-token text as plain text; built on first use.
    special_as_text: OnceLock<tokenizers::Tokenizer>,
    /// Finds the text of special tokens in user content; built on first use.
    special_finder: OnceLock<Option<aho_corasick::AhoCorasick>>,
    vocab_size: usize,
    special_ids: HashSet<u32>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
    add_bos: bool,
    end_of_turn_ids: Vec<u32>,
    chat_template: Option<String>,
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes (see [`GgufVocab`]).
    ///
    /// Supports the `"gpt2"` (byte-level BPE) and `"llama"` (SentencePiece) vocabulary models;
    /// anything else is [`Error::UnsupportedModel`].
    pub fn from_gguf_vocab(vocab: &GgufVocab) -> Result<Tokenizer> {
        let inner = gguf::build(vocab)?;
        let token_text = |id: Option<u32>| id.and_then(|id| vocab.tokens.get(id as usize)).cloned();
        let special_ids: HashSet<u32> = (0u32..)
            .zip(&vocab.tokens)
            .filter(|(id, _)| vocab.is_special(*id as usize))
            .map(|(id, _)| id)
            .collect();
        let valid = |id: Option<u32>| id.filter(|id| (*id as usize) < vocab.tokens.len());
        let mut tokenizer = Tokenizer {
            inner,
            special_as_text: OnceLock::new(),
            special_finder: OnceLock::new(),
            vocab_size: vocab.tokens.len(),
            special_ids,
            bos_token: token_text(vocab.bos_token_id),
            eos_token: token_text(vocab.eos_token_id),
            bos_token_id: valid(vocab.bos_token_id),
            eos_token_id: valid(vocab.eos_token_id),
            add_bos: vocab
                .add_bos
                .unwrap_or_else(|| gguf::default_add_bos(vocab)),
            end_of_turn_ids: Vec::new(),
            chat_template: None,
        };
        // llama.cpp ends generation at these named tokens whatever type the file gives them,
        // and treats them as control tokens from then on.
        let named = tokenizer.named_end_of_turn_ids();
        tokenizer.special_ids.extend(&named);
        tokenizer.end_of_turn_ids =
            tokenizer.find_end_of_turn_ids(valid(vocab.eot_token_id), &named);
        Ok(tokenizer)
    }

    /// Loads a Hugging Face `tokenizer.json`, with the BOS/EOS tokens, `add_bos_token` and chat
    /// template from `tokenizer_config.json` when given (a `chat_template.jinja` beside the
    /// tokenizer is used when the config has no template, or there is no config).
    ///
    /// Padding and truncation settings in the file are switched off: [`encode`](Self::encode)
    /// returns exactly the tokens of the text.
    pub fn from_file(
        tokenizer_json: &Path,
        tokenizer_config_json: Option<&Path>,
    ) -> Result<Tokenizer> {
        let mut inner = tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|e| {
            Error::Tokenizer(format!("cannot load {}: {e}", tokenizer_json.display()))
        })?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(format!("cannot disable truncation: {e}")))?;
        let mut config = match tokenizer_config_json {
            Some(path) => TokenizerConfig::read(path)?,
            None => TokenizerConfig::default(),
        };
        if config.chat_template.is_none() {
            let sibling = tokenizer_json.with_file_name("chat_template.jinja");
            if sibling.is_file() {
                let source =
                    std::fs::read_to_string(&sibling).map_err(|e| Error::io(&sibling, e))?;
                config.chat_template = Some(source);
            }
        }
        let special_ids: HashSet<u32> = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| *id)
            .collect();
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |max| *max as usize + 1);
        let bos_token_id = config
            .bos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t));
        let eos_token_id = config
            .eos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t));
        // Without an explicit setting, BOS is wanted when the post-processor would add it.
        let add_bos = config.add_bos_token.unwrap_or_else(|| {
            let with_specials = inner.encode_fast("", true).map(|e| e.get_ids().to_vec());
            matches!((bos_token_id, with_specials.as_deref()), (Some(bos), Ok([first, ..])) if *first == bos)
        });
        let mut tokenizer = Tokenizer {
            inner,
            special_as_text: OnceLock::new(),
            special_finder: OnceLock::new(),
            vocab_size,
            special_ids,
            bos_token: config.bos_token,
            eos_token: config.eos_token,
            bos_token_id,
            eos_token_id,
            add_bos,
            end_of_turn_ids: Vec::new(),
            chat_template: config.chat_template,
        };
        let named: Vec<u32> = tokenizer
            .named_end_of_turn_ids()
            .into_iter()
            .filter(|id| tokenizer.is_special(*id))
            .collect();
        tokenizer.end_of_turn_ids = tokenizer.find_end_of_turn_ids(None, &named);
        Ok(tokenizer)
    }

    /// The tokenizer of a Hugging Face model folder: [`Self::from_file`] on its
    /// `tokenizer.json` (with `tokenizer_config.json` where present), and the end-of-sequence
    /// ids of `generation_config.json` as end-of-turn tokens too.
    pub fn from_hf_folder(dir: &Path) -> Result<Tokenizer> {
        let config = dir.join("tokenizer_config.json");
        let mut tokenizer = Self::from_file(
            &dir.join("tokenizer.json"),
            config.is_file().then_some(config.as_path()),
        )?;
        let generation = dir.join("generation_config.json");
        if generation.is_file() {
            let text =
                std::fs::read_to_string(&generation).map_err(|e| Error::io(&generation, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::Json {
                    what: generation.display().to_string(),
                    source,
                })?;
            let id = |v: &serde_json::Value| v.as_u64().and_then(|v| u32::try_from(v).ok());
            let ids: Vec<u32> = match json.get("eos_token_id") {
                Some(serde_json::Value::Array(ids)) => ids.iter().filter_map(id).collect(),
                Some(v) => id(v).into_iter().collect(),
                None => Vec::new(),
            };
            for id in ids {
                if (id as usize) < tokenizer.vocab_size && !tokenizer.end_of_turn_ids.contains(&id)
                {
                    tokenizer.end_of_turn_ids.push(id);
                }
            }
        }
        Ok(tokenizer)
    }

    /// Turns `text` into token ids. Never adds BOS/EOS (see [`add_bos`](Self::add_bos)).
    ///
    /// With `parse_special`, special-token text such as `<|im_start|>` becomes that token;
    /// otherwise it is tokenised as ordinary text (use this for user-supplied content).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let pipeline = if parse_special {
            &self.inner
        } else {
            self.special_as_text.get_or_init(|| {
                let mut plain = self.inner.clone();
                plain.set_encode_special_tokens(true);
                plain
            })
        };
        let encoding = pipeline
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(format!("cannot encode text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The first special token whose text occurs in `text` (such text would become that
    /// token if tokenised with `parse_special`), with its byte offset.
    pub fn find_special_text<'t>(&self, text: &'t str) -> Option<(usize, &'t str)> {
        let finder = self.special_finder.get_or_init(|| {
            let mut texts: Vec<String> = self
                .special_ids
                .iter()
                .filter_map(|&id| self.inner.id_to_token(id))
                .filter(|t| !t.is_empty())
                .collect();
            texts.extend(
                self.inner
                    .get_added_tokens_decoder()
                    .values()
                    .filter(|t| t.special && !t.content.is_empty())
                    .map(|t| t.content.clone()),
            );
            texts.sort();
            texts.dedup();
            aho_corasick::AhoCorasick::new(texts).ok()
        });
        let found = finder.as_ref()?.find(text)?;
        Some((found.start(), &text[found.range()]))
    }

    /// Turns `text` into the ids a Hugging Face model expects as a whole input: special-token
    /// text parsed, then the `tokenizer.json` post-processor applied (e.g. BERT's `[CLS] … [SEP]`).
    /// For GGUF tokenizers, which have no post-processor, this equals `encode(text, true)`.
    pub fn encode_with_post_processor(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, true)
            .map_err(|e| Error::Tokenizer(format!("cannot encode text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Turns token ids back into text; with `skip_special`, special tokens are left out.
    ///
    /// Ids outside the vocabulary are ignored. Incomplete UTF-8 sequences become U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer(format!("cannot decode tokens: {e}")))
    }

    /// The number of token ids (one more than the largest id).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The id of a token given its exact text (as stored in the vocabulary).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of a token as stored in the vocabulary (byte-level or `▁` form, not decoded).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The decoding pipeline, which says how token texts spell bytes.
    pub(crate) fn decoder(&self) -> Option<&tokenizers::DecoderWrapper> {
        self.inner.get_decoder()
    }

    /// The BOS token's text, for chat templates.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The EOS token's text, for chat templates.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// The BOS token's id.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// The EOS token's id.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }

    /// Whether prompts should start with [`bos_token_id`](Self::bos_token_id) (when it exists);
    /// [`encode`](Self::encode) leaves that to the caller.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos_token_id.is_some()
    }

    /// Tokens that end the assistant's turn: EOS, the model's end-of-turn token, and whichever
    /// special tokens among `<|im_end|>`, `<|eot_id|>`, `<|end|>`, `<|endoftext|>`, `</s>` exist.
    pub fn end_of_turn_ids(&self) -> &[u32] {
        &self.end_of_turn_ids
    }

    /// Whether `id` is a special (control) token, left out of decoded text when skipping specials.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// The chat template from `tokenizer_config.json` (only for [`from_file`](Self::from_file);
    /// GGUF templates live in the file's own metadata).
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The tokens of [`END_OF_TURN_TOKENS`] this vocabulary has.
    fn named_end_of_turn_ids(&self) -> Vec<u32> {
        END_OF_TURN_TOKENS
            .iter()
            .filter_map(|text| self.token_to_id(text))
            .collect()
    }

    /// EOS, then `eot`, then `named`, each once.
    fn find_end_of_turn_ids(&self, eot: Option<u32>, named: &[u32]) -> Vec<u32> {
        let mut ids = Vec::new();
        for id in self
            .eos_token_id
            .into_iter()
            .chain(eot)
            .chain(named.iter().copied())
        {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

impl std::fmt::Debug for Tokenizer {
    // The wrapped pipeline prints its whole vocabulary; keep logs readable.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("add_bos", &self.add_bos)
            .field("end_of_turn_ids", &self.end_of_turn_ids)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish_non_exhaustive()
    }
}

/// The parts of `tokenizer_config.json` the tokenizer uses.
#[derive(Debug, Default)]
struct TokenizerConfig {
    bos_token: Option<String>,
    eos_token: Option<String>,
    add_bos_token: Option<bool>,
    chat_template: Option<String>,
}

impl TokenizerConfig {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json {
                what: path.display().to_string(),
                source,
            })?;
        let chat_template = json.get("chat_template").and_then(template_text);
        Ok(TokenizerConfig {
            bos_token: json.get("bos_token").and_then(token_text),
            eos_token: json.get("eos_token").and_then(token_text),
            add_bos_token: json
                .get("add_bos_token")
                .and_then(serde_json::Value::as_bool),
            chat_template,
        })
    }
}

/// A token given as `"<s>"` or as `{"content": "<s>", ...}`.
fn token_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => map.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// A template given as a string or as a list of `{"name", "template"}` (the `"default"` one).
fn template_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|entry| entry.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|entry| entry.get("template")?.as_str().map(str::to_owned)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
