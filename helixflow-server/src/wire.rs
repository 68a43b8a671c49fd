//! Request bodies of the OpenAI API and their translation into core parameters.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use helixflow_core::generation::GenerationParams;
use helixflow_core::sampling::SamplingParams;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::ToSchema;

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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

/// The generation fields shared by chat and text completions.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct GenerationFields {
    /// The chat model's id.
    pub(crate) model: String,
    /// Answer as a stream of server-sent events, ending with `data: [DONE]`.
    #[serde(default)]
    pub(crate) stream: bool,
    /// `include_usage: true` adds a last chunk with the token counts.
    pub(crate) stream_options: Option<StreamOptions>,
    /// Independent choices to generate (1..=16).
    pub(crate) n: Option<usize>,
    /// The same seed and request give the same output.
    pub(crate) seed: Option<i64>,
    /// Up to 4 strings that end generation (not included in the output).
    pub(crate) stop: Option<Stop>,
    /// Most tokens to generate (default: up to the context length).
    pub(crate) max_tokens: Option<usize>,
    /// The newer name of `max_tokens`; wins when both are given.
    pub(crate) max_completion_tokens: Option<usize>,
    /// Sampling temperature, 0 (greedy) to 2.
    pub(crate) temperature: Option<f32>,
    /// Nucleus sampling mass, (0, 1].
    pub(crate) top_p: Option<f32>,
    /// Penalty per previous occurrence of a token, -2 to 2.
    pub(crate) frequency_penalty: Option<f32>,
    /// Penalty for any previous occurrence of a token, -2 to 2.
    pub(crate) presence_penalty: Option<f32>,
    /// Token id (as a string) to a bias added to its logit, -100 to 100.
    pub(crate) logit_bias: Option<HashMap<String, f32>>,
    /// Sample among the k most likely tokens only (extension).
    pub(crate) top_k: Option<usize>,
    /// Drop tokens less likely than min_p times the most likely one (extension).
    pub(crate) min_p: Option<f32>,
    /// Divide the logits of previous tokens by this (extension; 1 = off).
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
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ChatRequest {
    #[serde(flatten)]
    pub(crate) fields: GenerationFields,
    /// The conversation: OpenAI chat messages (`role`, and `content` as a string or text
    /// parts).
    pub(crate) messages: serde_json::Value,
    /// Report each generated token's log-probability.
    #[serde(default)]
    pub(crate) logprobs: bool,
    /// With `logprobs`, also the most likely alternatives at each position (0..=20).
    pub(crate) top_logprobs: Option<usize>,
}

/// `POST /v1/completions`: `prompt` is a string, a list of one string, or token ids.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CompletionRequest {
    #[serde(flatten)]
    pub(crate) fields: GenerationFields,
    /// A string, a list with one string, or a list of token ids.
    pub(crate) prompt: serde_json::Value,
    /// The legacy API's logprobs: alternatives per token (0..=20).
    pub(crate) logprobs: Option<usize>,
    /// Echo the prompt before the completion (unsupported: rejected if true).
    #[serde(default)]
    pub(crate) echo: bool,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct EmbeddingRequest {
    /// The embedding model's id.
    pub(crate) model: String,
    /// A string, a list of strings, a list of token ids, or a list of such lists.
    pub(crate) input: serde_json::Value,
    /// `float` (the default) or `base64` (little-endian f32s).
    pub(crate) encoding_format: Option<String>,
    /// Only the model's own dimension is supported; any other value is rejected.
    pub(crate) dimensions: Option<usize>,
    #[allow(dead_code)]
    pub(crate) user: Option<String>,
}
