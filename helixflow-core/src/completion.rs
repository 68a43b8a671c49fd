//! OpenAI-shaped results of chat and text completion, serialisable as the API returns them.

use serde::{Deserialize, Serialize};

use crate::chat_template::ChatMessage;

/// Why a choice stopped generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FinishReason {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_tokens` (or the context) was reached.
    Length,
    /// The answer called tools (it ended where a stop would have).
    ToolCalls,
}

impl FinishReason {
    /// The reason of an answer that `called` tools or not: one that ended where a stop would
    /// have ended it, having called tools, ended on them.
    pub fn after_calls(self, called: bool) -> Self {
        match self {
            Self::Stop if called => Self::ToolCalls,
            other => other,
        }
    }
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated, over all choices.
    pub completion_tokens: usize,
    /// The sum of both.
    pub total_tokens: usize,
}

impl Usage {
    /// Usage from the two counts.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// One alternative token and its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability under the model.
    pub logprob: f32,
    /// The token's UTF-8 bytes (a token may hold part of a character).
    pub bytes: Vec<u8>,
}

/// The log-probability of one generated token, with the most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability under the model.
    pub logprob: f32,
    /// The token's UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The `top_logprobs` most likely tokens at this position.
    pub top_logprobs: Vec<TopLogprob>,
}

/// The `logprobs` object of a choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChoiceLogprobs {
    /// One entry per generated token.
    pub content: Vec<TokenLogprob>,
}

/// The `logprobs` object of the legacy `/v1/completions` API: parallel lists, one entry per
/// generated token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LegacyLogprobs {
    /// Each token's text.
    pub tokens: Vec<String>,
    /// Each token's log-probability.
    pub token_logprobs: Vec<f32>,
    /// Each position's most likely tokens, text to log-probability (empty objects when no
    /// alternatives were asked for).
    pub top_logprobs: Vec<std::collections::BTreeMap<String, f32>>,
    /// Where each token starts in the completion text, in characters.
    pub text_offset: Vec<usize>,
}

impl LegacyLogprobs {
    /// The legacy form of `tokens`, the first starting at character `offset` of the text.
    pub fn new(tokens: &[TokenLogprob], mut offset: usize) -> Self {
        let mut out = Self::default();
        for t in tokens {
            out.tokens.push(t.token.clone());
            out.token_logprobs.push(t.logprob);
            out.top_logprobs.push(
                t.top_logprobs
                    .iter()
                    .map(|alt| (alt.token.clone(), alt.logprob))
                    .collect(),
            );
            out.text_offset.push(offset);
            offset += t.token.chars().count();
        }
        out
    }
}

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatChoice {
    /// Index of the choice (0..n).
    pub index: usize,
    /// The assistant's message.
    pub message: ChatMessage,
    /// Token log-probabilities, when requested.
    pub logprobs: Option<ChoiceLogprobs>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
}

/// A chat completion, shaped like OpenAI's `chat.completion` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatCompletion {
    /// Unique id, `chatcmpl-...`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix time of creation, in seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// Identifies the build and configuration that produced the answer.
    pub system_fingerprint: String,
    /// The choices, in index order.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// The incremental message of a streamed chat choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatDelta {
    /// `assistant` in the first chunk of a choice, absent afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// New thinking, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Tool calls: a call's id, type and name first, then its arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A piece of a streamed tool call; the pieces of call `index` add up to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolCallDelta {
    /// Which call of the choice (0, 1, …).
    pub index: usize,
    /// The call's id, in its first piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, in the first piece.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The function's name (first piece) and a fragment of its arguments.
    pub function: FunctionCallDelta,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionCallDelta {
    /// The function's name, in the call's first piece.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fragment of the arguments' text.
    pub arguments: String,
}

/// One choice's part of a streamed chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatChunkChoice {
    /// Index of the choice.
    pub index: usize,
    /// The new part of the message.
    pub delta: ChatDelta,
    /// Log-probabilities of the tokens in this chunk, when requested.
    pub logprobs: Option<ChoiceLogprobs>,
    /// Set in the last chunk of the choice.
    pub finish_reason: Option<FinishReason>,
}

/// A streamed piece of a chat completion, shaped like OpenAI's `chat.completion.chunk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatCompletionChunk {
    /// The same id in every chunk of a completion.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Unix time of creation, in seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// See [`ChatCompletion::system_fingerprint`].
    pub system_fingerprint: String,
    /// Usually one choice.
    pub choices: Vec<ChatChunkChoice>,
    /// Token counts, only in the final chunk when requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice of a text completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompletionChoice {
    /// Index of the choice.
    pub index: usize,
    /// The generated text.
    pub text: String,
    /// Token log-probabilities, when requested, in the legacy shape.
    pub logprobs: Option<LegacyLogprobs>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
}

/// A text completion, shaped like OpenAI's `text_completion` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TextCompletion {
    /// Unique id, `cmpl-...`.
    pub id: String,
    /// Always `text_completion`.
    pub object: String,
    /// Unix time of creation, in seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// See [`ChatCompletion::system_fingerprint`].
    pub system_fingerprint: String,
    /// The choices, in index order.
    pub choices: Vec<CompletionChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// One choice's part of a streamed text completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TextChunkChoice {
    /// Index of the choice.
    pub index: usize,
    /// New text.
    pub text: String,
    /// Log-probabilities of the tokens in this chunk, when requested, in the legacy shape.
    pub logprobs: Option<LegacyLogprobs>,
    /// Set in the last chunk of the choice.
    pub finish_reason: Option<FinishReason>,
}

/// A streamed piece of a text completion: OpenAI streams `text_completion` objects whose
/// choices carry text deltas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TextCompletionChunk {
    /// The same id in every chunk of a completion.
    pub id: String,
    /// Always `text_completion`.
    pub object: String,
    /// Unix time of creation, in seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// See [`ChatCompletion::system_fingerprint`].
    pub system_fingerprint: String,
    /// Usually one choice.
    pub choices: Vec<TextChunkChoice>,
    /// Token counts, only in the final chunk when requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice as it is generated: its text, logprobs and finish reason, gathered token by
/// token and then shaped into a [`ChatCompletion`] or [`TextCompletion`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeneratedChoice {
    /// The text so far.
    pub text: String,
    /// Token logprobs, when requested (`Some` from the start then).
    pub logprobs: Option<ChoiceLogprobs>,
    /// Why generation stopped, once it has.
    pub finish: Option<FinishReason>,
    /// Tokens generated.
    pub tokens: usize,
}

impl GeneratedChoice {
    /// An empty choice; `logprobs` says whether logprobs are collected.
    pub fn new(logprobs: bool) -> Self {
        Self {
            logprobs: logprobs.then(ChoiceLogprobs::default),
            ..Self::default()
        }
    }

    /// Adds one generated token.
    pub fn push(&mut self, out: &crate::generation::TokenOutput) {
        self.text.push_str(&out.text);
        self.tokens += 1;
        self.finish = out.finish.or(self.finish);
        if let (Some(lps), Some(lp)) = (self.logprobs.as_mut(), out.logprob.as_ref()) {
            lps.content.push(lp.clone());
        }
    }
}

impl ChatCompletion {
    /// A `chat.completion` from finished choices.
    pub fn new(
        id: String,
        created: u64,
        model: String,
        choices: Vec<GeneratedChoice>,
        usage: Usage,
    ) -> Self {
        Self {
            id,
            object: "chat.completion".into(),
            created,
            model,
            system_fingerprint: system_fingerprint(),
            choices: choices
                .into_iter()
                .enumerate()
                .map(|(index, c)| ChatChoice {
                    index,
                    message: crate::chat_template::ChatMessage::new("assistant", c.text),
                    logprobs: c.logprobs,
                    finish_reason: c.finish.unwrap_or(FinishReason::Length),
                })
                .collect(),
            usage,
        }
    }
}

impl TextCompletion {
    /// A `text_completion` from finished choices.
    pub fn new(
        id: String,
        created: u64,
        model: String,
        choices: Vec<GeneratedChoice>,
        usage: Usage,
    ) -> Self {
        Self {
            id,
            object: "text_completion".into(),
            created,
            model,
            system_fingerprint: system_fingerprint(),
            choices: choices
                .into_iter()
                .enumerate()
                .map(|(index, c)| CompletionChoice {
                    index,
                    text: c.text,
                    logprobs: c.logprobs.map(|lp| LegacyLogprobs::new(&lp.content, 0)),
                    finish_reason: c.finish.unwrap_or(FinishReason::Length),
                })
                .collect(),
            usage,
        }
    }
}

/// The fingerprint reported in every response: the crate version.
pub fn system_fingerprint() -> String {
    format!("helixflow-{}", env!("CARGO_PKG_VERSION"))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh random id with `prefix` (e.g. `chatcmpl`).
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{prefix}-{n:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logprob(token: &str, logprob: f32, alternatives: &[(&str, f32)]) -> TokenLogprob {
        TokenLogprob {
            token: token.into(),
            logprob,
            bytes: token.as_bytes().to_vec(),
            top_logprobs: alternatives
                .iter()
                .map(|&(t, lp)| TopLogprob {
                    token: t.into(),
                    logprob: lp,
                    bytes: t.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn legacy_logprobs_are_parallel_lists_with_character_offsets() {
        let tokens = [
            logprob(" é", -0.5, &[(" é", -0.5), (" e", -1.5)]),
            logprob("tait", -0.25, &[("tait", -0.25), ("t", -2.0)]),
        ];
        let legacy = LegacyLogprobs::new(&tokens, 3);
        assert_eq!(legacy.tokens, [" é", "tait"]);
        assert_eq!(legacy.token_logprobs, [-0.5, -0.25]);
        // " é" is two characters (three bytes).
        assert_eq!(legacy.text_offset, [3, 5]);
        assert_eq!(legacy.top_logprobs[1]["t"], -2.0);
        let json = serde_json::to_value(&legacy).unwrap();
        assert_eq!(json["top_logprobs"][0][" e"], -1.5);
    }
}
