//! Request bodies of the OpenAI API and their translation into core parameters.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use helixflow_core::generation::GenerationParams;
use helixflow_core::sampling::SamplingParams;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::ApiError;

/// Parses a JSON body, turning every failure into a 400 (413 for an oversized body) with
/// OpenAI's error shape rather than axum's plain-text rejections.
pub(crate) fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| ApiError {
        status: rejection.status(),
        ..ApiError::invalid(rejection.body_text())
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("The request body is not valid: {e}")))
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

/// The generation fields shared by chat and text completions.
#[derive(Debug, Deserialize)]
pub(crate) struct GenerationFields {
    pub(crate) model: String,
    #[serde(default)]
    pub(crate) stream: bool,
    pub(crate) stream_options: Option<StreamOptions>,
    pub(crate) n: Option<usize>,
    pub(crate) seed: Option<i64>,
    pub(crate) stop: Option<Stop>,
    pub(crate) max_tokens: Option<usize>,
    pub(crate) max_completion_tokens: Option<usize>,
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    pub(crate) frequency_penalty: Option<f32>,
    pub(crate) presence_penalty: Option<f32>,
    pub(crate) logit_bias: Option<HashMap<String, f32>>,
    pub(crate) top_k: Option<usize>,
    pub(crate) min_p: Option<f32>,
    pub(crate) repetition_penalty: Option<f32>,
    /// vLLM's extension: keep generating past end-of-sequence tokens (benchmarks use it).
    #[serde(default)]
    pub(crate) ignore_eos: bool,
    /// Accepted and ignored (OpenAI uses it for abuse monitoring).
    #[allow(dead_code)]
    pub(crate) user: Option<String>,
}

impl GenerationFields {
    /// Whether the final SSE chunk carries usage.
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// The core parameters; `logprobs`/`top_logprobs` come from the endpoint's own fields.
    pub(crate) fn params(
        &self,
        logprobs: bool,
        top_logprobs: usize,
    ) -> Result<GenerationParams, ApiError> {
        let mut logit_bias = HashMap::new();
        for (token, bias) in self.logit_bias.iter().flatten() {
            let id = token.parse::<u32>().map_err(|_| {
                ApiError::invalid_param("logit_bias", format!("`{token}` is not a token id"))
            })?;
            logit_bias.insert(id, *bias);
        }
        let seed = self.seed.map(|s| u64::from_ne_bytes(s.to_ne_bytes()));
        let defaults = SamplingParams::default();
        Ok(GenerationParams {
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(defaults.temperature),
                top_p: self.top_p.unwrap_or(defaults.top_p),
                top_k: self.top_k,
                min_p: self.min_p.unwrap_or(defaults.min_p),
                repetition_penalty: self
                    .repetition_penalty
                    .unwrap_or(defaults.repetition_penalty),
                frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
                presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
                logit_bias,
                seed,
                logprobs,
                top_logprobs,
            },
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            stop: match &self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s.clone()],
                Some(Stop::Many(v)) => v.clone(),
            },
            n: self.n.unwrap_or(1),
            ignore_eos: self.ignore_eos,
        })
    }
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(flatten)]
    pub(crate) fields: GenerationFields,
    pub(crate) messages: serde_json::Value,
    #[serde(default)]
    pub(crate) logprobs: bool,
    pub(crate) top_logprobs: Option<usize>,
}

/// `POST /v1/completions`: `prompt` is a string, a list of one string, or token ids.
#[derive(Debug, Deserialize)]
pub(crate) struct CompletionRequest {
    #[serde(flatten)]
    pub(crate) fields: GenerationFields,
    pub(crate) prompt: serde_json::Value,
    /// The legacy API's number of alternatives per token (0..=5).
    pub(crate) logprobs: Option<usize>,
    /// Echo the prompt before the completion (unsupported: rejected if true).
    #[serde(default)]
    pub(crate) echo: bool,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingRequest {
    pub(crate) model: String,
    pub(crate) input: serde_json::Value,
    pub(crate) encoding_format: Option<String>,
    pub(crate) dimensions: Option<usize>,
    #[allow(dead_code)]
    pub(crate) user: Option<String>,
}
