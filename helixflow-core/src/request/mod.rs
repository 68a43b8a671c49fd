//! One request's lifecycle, the same for every front end (HTTP, gRPC, the Python binding and
//! [`ChatModel`]): its options and prompt become one validated [`GenerationRequest`] here, the
//! engine runs it, and [`crate::streaming::AnswerBuilder`] turns the engine's events into the
//! answer's chunks, the whole answer and its usage.
//!
//! ```no_run
//! # fn demo() -> helixflow_core::Result<()> {
//! use helixflow_core::chat_model::ChatModel;
//! use helixflow_core::chat_template::ChatMessage;
//! use helixflow_core::request::{GenerationOptions, GenerationRequest};
//! let model = ChatModel::load("model.gguf")?;
//! let messages = [ChatMessage::new("user", "Hi")];
//! let request = GenerationRequest::chat(&model, &messages, &GenerationOptions::default(), false, None)?;
//! assert!(!request.prompt.is_empty());
//! # Ok(())
//! # }
//! ```

pub mod fields;
mod options;

pub use options::{GenerationOptions, Stop};

use crate::chat_model::ChatModel;
use crate::chat_template::ChatMessage;
use crate::completion::{new_id, unix_now};
use crate::generation::GenerationParams;
use crate::reply::ReplySyntax;
use crate::sampling::MAX_TOP_LOGPROBS;
use crate::streaming::{AnswerBuilder, AnswerKind, ChunkHeader};
use crate::structured::{Grammar, GrammarSpec};
use crate::tools::format::check_tool_messages;
use crate::{Error, Result};

/// A text completion's prompt: text to tokenise, or token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextPrompt {
    /// Text, tokenised with the model's own special tokens.
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

impl TextPrompt {
    /// OpenAI's `prompt` field: a string, a list with one string, or token ids (flat, or one
    /// list of them). One prompt per request.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        use serde_json::Value;
        let bad = || {
            Error::invalid_field(
                "prompt",
                "prompt must be a string, a list with one string, or a list of token ids \
                 (one prompt per request)",
            )
        };
        let ids = |values: &[Value]| -> Result<Self> {
            values
                .iter()
                .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
                .collect::<Option<Vec<u32>>>()
                .map(Self::Tokens)
                .ok_or_else(bad)
        };
        match value {
            Value::String(text) => Ok(Self::Text(text.clone())),
            Value::Array(items) => match items.as_slice() {
                [Value::String(text)] => Ok(Self::Text(text.clone())),
                [Value::Array(values)] => ids(values),
                values if values.iter().all(Value::is_u64) => ids(values),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

/// A request checked and ready for the engine: its prompt's token ids and its generation
/// parameters, defaults filled in. Building one renders the chat template and tokenises,
/// which takes a while on long prompts: async front ends build it off their executor.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// A chat or a text completion: what the answer looks like.
    pub kind: AnswerKind,
    /// The prompt's token ids (never empty).
    pub prompt: Vec<u32>,
    /// How to generate, checked against the model.
    pub params: GenerationParams,
    /// What a chat answer's text holds beside content (thinking, tool calls).
    pub reply: ReplySyntax,
}

impl GenerationRequest {
    /// A chat completion of `messages`; `top_logprobs` needs `logprobs`.
    pub fn chat(
        model: &ChatModel,
        messages: &[ChatMessage],
        options: &GenerationOptions,
        logprobs: bool,
        top_logprobs: Option<usize>,
    ) -> Result<Self> {
        let mut params = options.chat_params(logprobs, top_logprobs)?;
        let tools = options.chat_tools()?;
        check_tool_messages(messages)?;
        params.grammar = grammar(model, options)?;
        if let Some(tools) = &tools {
            if let Some(lark) = model.tool_format().grammar(tools, model.tokenizer()) {
                if params.grammar.is_some() {
                    return Err(Error::invalid_field(
                        "tools",
                        "tools that the answer is held to (tool_choice `required` or named, \
                         or a model without tools in its template) cannot be combined with \
                         response_format or structured_outputs",
                    ));
                }
                params.grammar = Some(model.grammar(&GrammarSpec::Lark(lark), "tools")?);
            }
        }
        params.validate(model.model().shape().vocab_size)?;
        let kwargs = options.chat_template_kwargs.clone().unwrap_or_default();
        let prompt = model.encode_chat_with(messages, tools.as_ref(), kwargs)?;
        let mut request = Self::checked(AnswerKind::Chat, prompt.ids, params)?;
        request.reply = prompt.reply;
        Ok(request)
    }

    /// A text completion of `prompt`; `logprobs` is the legacy API's number of alternatives
    /// per token (`Some(0)`: the chosen token's alone). `echo` is refused: HelixFlow does
    /// not return the prompt.
    pub fn text(
        model: &ChatModel,
        prompt: TextPrompt,
        options: &GenerationOptions,
        logprobs: Option<usize>,
        echo: bool,
    ) -> Result<Self> {
        if echo {
            return Err(Error::invalid_field("echo", "echo is not supported"));
        }
        options.check_no_chat_fields()?;
        let top = logprobs.unwrap_or(0);
        if top > MAX_TOP_LOGPROBS {
            return Err(Error::invalid_field(
                "logprobs",
                format!("logprobs must be at most {MAX_TOP_LOGPROBS}"),
            ));
        }
        let mut params = options.params(logprobs.is_some(), top)?;
        params.grammar = grammar(model, options)?;
        params.validate(model.model().shape().vocab_size)?;
        let prompt = match prompt {
            TextPrompt::Text(text) => model.encode_prompt(&text)?,
            TextPrompt::Tokens(ids) => ids,
        };
        Self::checked(AnswerKind::Text, prompt, params)
    }

    fn checked(kind: AnswerKind, prompt: Vec<u32>, params: GenerationParams) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::invalid_field("prompt", "the prompt is empty"));
        }
        Ok(Self {
            kind,
            prompt,
            params,
            reply: ReplySyntax::default(),
        })
    }

    /// What every chunk of this request's answer from `model` shares: a new id, made now.
    pub fn header(&self, model: impl Into<String>) -> ChunkHeader {
        ChunkHeader {
            id: new_id(self.kind.id_prefix()),
            created: unix_now(),
            model: model.into(),
        }
    }

    /// The builder of this request's answer from `model` (with a new [`Self::header`]): its
    /// chunks when `stream` (and the usage chunk with `include_usage`), else the whole answer.
    pub fn answer_builder(
        &self,
        model: impl Into<String>,
        stream: bool,
        include_usage: bool,
    ) -> AnswerBuilder {
        let (header, n) = (self.header(model), self.params.n);
        let builder = if stream {
            AnswerBuilder::streamed(self.kind, header, n, include_usage)
        } else {
            AnswerBuilder::whole(self.kind, header, n, self.params.sampling.logprobs)
        };
        builder.with_reply(self.reply)
    }
}

/// The grammar `options` ask the answer to match, compiled for `model`.
fn grammar(model: &ChatModel, options: &GenerationOptions) -> Result<Option<Grammar>> {
    options
        .grammar_spec()?
        .map(|(spec, field)| model.grammar(&spec, field))
        .transpose()
}

/// The legacy `logprobs` count of an API that names the switch and the count apart, as chat
/// does (`top_logprobs` needs `logprobs`).
pub fn legacy_logprobs(logprobs: bool, top_logprobs: Option<usize>) -> Result<Option<usize>> {
    options::check_top_logprobs(logprobs, top_logprobs)?;
    Ok(logprobs.then(|| top_logprobs.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_text_prompt_is_a_string_one_string_or_token_ids() {
        let text = TextPrompt::Text("hi".into());
        assert_eq!(TextPrompt::from_json(&json!("hi")).unwrap(), text);
        assert_eq!(TextPrompt::from_json(&json!(["hi"])).unwrap(), text);
        let ids = TextPrompt::Tokens(vec![1, 2]);
        assert_eq!(TextPrompt::from_json(&json!([1, 2])).unwrap(), ids);
        assert_eq!(TextPrompt::from_json(&json!([[1, 2]])).unwrap(), ids);
        for bad in [
            json!(["a", "b"]),
            json!([1, "a"]),
            json!(7),
            json!([[1], [2]]),
        ] {
            let e = TextPrompt::from_json(&bad).unwrap_err();
            assert_eq!(e.field(), Some("prompt"), "{bad}");
        }
        let e = TextPrompt::from_json(&json!([5_000_000_000u64])).unwrap_err();
        assert_eq!(e.field(), Some("prompt"));
    }

    #[test]
    fn legacy_logprobs_need_the_switch() {
        assert_eq!(legacy_logprobs(false, None).unwrap(), None);
        assert_eq!(legacy_logprobs(true, None).unwrap(), Some(0));
        assert_eq!(legacy_logprobs(true, Some(3)).unwrap(), Some(3));
        assert!(legacy_logprobs(false, Some(3)).is_err());
    }
}
