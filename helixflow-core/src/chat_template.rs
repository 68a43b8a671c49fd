//! Chat templates: turning a conversation into the prompt text a model was trained on.
//!
//! Templates are the Jinja sources shipped with models (GGUF `tokenizer.chat_template`, Hugging
//! Face `tokenizer_config.json`), rendered with minijinja under Hugging Face's conventions:
//! variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`; the function
//! `raise_exception(msg)`; Python string/dict methods (`.strip()`, `.startswith()`, `.items()`,
//! ...); Python-style `tojson`; `strftime_now(format)`; `trim_blocks` and `lstrip_blocks` on;
//! the final newline of the template dropped.

mod guard;
mod strftime;
mod tojson;

use std::sync::Arc;
use std::time::Duration;

use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tools::{ToolCall, ToolFormat};

/// The template used for models that ship none: ChatML, as Hugging Face's default, i.e.
/// `<|im_start|>{role}\n{content}<|im_end|>\n` per message and `<|im_start|>assistant\n` when a
/// generation prompt is asked for.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The name the template is registered under (shows up in error locations).
const TEMPLATE_NAME: &str = "chat_template";

/// Instructions one render may run (minijinja's fuel): far more than any real template
/// needs for the longest conversation, far fewer than a runaway loop would take.
const RENDER_FUEL: u64 = 20_000_000;

/// How long one render may take.
const RENDER_TIME: Duration = Duration::from_secs(10);

/// Memory one render may hold, beyond [`RENDER_MEMORY_PER_INPUT_BYTE`] per byte of the
/// conversation.
const RENDER_MEMORY_BASE: usize = 64 << 20;
const RENDER_MEMORY_PER_INPUT_BYTE: usize = 32;

/// Output one render may write, beyond [`RENDER_OUTPUT_PER_INPUT_BYTE`] per byte of the
/// conversation.
const RENDER_OUTPUT_BASE: usize = 1 << 20;
const RENDER_OUTPUT_PER_INPUT_BYTE: usize = 8;

/// The roles OpenAI's chat API defines; any other is refused.
pub const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// One message of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    /// Who speaks: `"system"`, `"user"`, `"assistant"`, ...
    pub role: String,
    /// What they say.
    pub content: String,
    /// An assistant's thinking before its answer (`<think>…</think>`), apart from `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// The tools an assistant called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }

    /// The message as a chat template sees it: calls' arguments as the JSON objects they
    /// spell, as Hugging Face's templates expect (`tool_call.arguments | tojson`).
    fn for_template(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(calls) = value.get_mut("tool_calls").and_then(|c| c.as_array_mut()) {
            for call in calls {
                let function = &mut call["function"];
                if let Some(text) = function["arguments"].as_str() {
                    if let Ok(arguments) = serde_json::from_str::<serde_json::Value>(text) {
                        function["arguments"] = arguments;
                    }
                }
            }
        }
        value
    }
}

/// Refuses a role outside [`ROLES`], naming message `index`.
pub fn check_role(index: usize, role: &str) -> Result<()> {
    if ROLES.contains(&role) {
        return Ok(());
    }
    Err(Error::InvalidRequest(format!(
        "messages[{index}].role must be one of {}, not {role:?}",
        ROLES.join(", ")
    )))
}

/// Reads an OpenAI `messages` array: each message has a `role` and a `content` that is a
/// string, `null` (an assistant turn with tool calls only), or an array of parts of which the
/// `text` parts are joined.
pub fn messages_from_openai(value: &serde_json::Value) -> Result<Vec<ChatMessage>> {
    let bad = |msg: String| Error::InvalidRequest(msg);
    let items = value
        .as_array()
        .ok_or_else(|| bad("messages must be a JSON array".into()))?;
    if items.is_empty() {
        return Err(bad("messages must not be empty".into()));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let role = item
                .get("role")
                .and_then(|r| r.as_str())
                .ok_or_else(|| bad(format!("messages[{i}].role must be a string")))?;
            check_role(i, role)?;
            let content = match item.get("content") {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Array(parts)) => parts
                    .iter()
                    .map(|part| match part.get("type").and_then(|t| t.as_str()) {
                        Some("text") => part
                            .get("text")
                            .and_then(|t| t.as_str())
                            .ok_or_else(|| bad(format!("messages[{i}]: a text part needs `text`"))),
                        other => Err(bad(format!(
                            "messages[{i}]: content parts of type {other:?} are not supported"
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?
                    .concat(),
                Some(_) => {
                    return Err(bad(format!(
                        "messages[{i}].content must be a string or an array of parts"
                    )))
                }
            };
            let mut message = ChatMessage::new(role, content);
            if let Some(calls) = item.get("tool_calls").filter(|c| !c.is_null()) {
                if role != "assistant" {
                    return Err(bad(format!(
                        "messages[{i}]: only assistant messages carry tool_calls"
                    )));
                }
                message.tool_calls = Some(tool_calls_from_openai(i, calls)?);
            }
            if let Some(id) = item.get("tool_call_id").filter(|c| !c.is_null()) {
                let id = id
                    .as_str()
                    .ok_or_else(|| bad(format!("messages[{i}].tool_call_id must be a string")))?;
                message.tool_call_id = Some(id.to_owned());
            }
            if let Some(reasoning) = item.get("reasoning_content").and_then(|r| r.as_str()) {
                message.reasoning_content = Some(reasoning.to_owned());
            }
            Ok(message)
        })
        .collect()
}

/// An assistant message's `tool_calls`: each with an id, type `function`, and a function's
/// name and arguments (a JSON object, as text).
fn tool_calls_from_openai(index: usize, calls: &serde_json::Value) -> Result<Vec<ToolCall>> {
    let bad = |msg: String| Error::invalid_field("messages", format!("messages[{index}]: {msg}"));
    let calls: Vec<ToolCall> = serde_json::from_value(calls.clone()).map_err(|e| {
        bad(format!(
            "tool_calls must be a list of {{\"id\", \"type\": \"function\", \"function\": \
             {{\"name\", \"arguments\"}}}}: {e}"
        ))
    })?;
    for call in &calls {
        if call.kind != "function" {
            return Err(bad(format!(
                "tool calls of type `{}` are not supported",
                call.kind
            )));
        }
        if serde_json::from_str::<serde_json::Value>(&call.function.arguments).is_err() {
            return Err(bad(format!(
                "the arguments of tool call `{}` are not JSON",
                call.id
            )));
        }
    }
    Ok(calls)
}

/// What a chat template sees beside the messages.
#[derive(Debug, Clone, Default)]
pub struct TemplateExtras {
    /// `tools`: the tools' definitions, as the request gave them.
    pub tools: Option<Vec<serde_json::Value>>,
    /// `chat_template_kwargs`: more variables (`enable_thinking`, …); they cannot replace
    /// `messages`, `tools` or the others.
    pub kwargs: serde_json::Map<String, serde_json::Value>,
}

impl TemplateExtras {
    fn size(&self) -> usize {
        let tools: usize = self
            .tools
            .iter()
            .flatten()
            .map(|t| t.to_string().len())
            .sum();
        tools + serde_json::to_string(&self.kwargs).map_or(0, |k| k.len())
    }
}

/// A compiled chat template of one model.
///
/// Templates come with downloaded models, so they are untrusted: a render runs within a
/// budget of instructions (fuel), output, memory and time, and a template that once asked
/// for more memory than its budget is refused from then on.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    model: String,
    bos_token: String,
    eos_token: String,
    tool_format: ToolFormat,
    thinks: bool,
    source: Arc<str>,
    guard: Arc<guard::RenderGuard>,
}

impl ChatTemplate {
    /// Compiles `source`. `model_name` names the model in errors; `bos_token`/`eos_token` are the
    /// token texts the template may insert (empty when absent).
    ///
    /// A syntax error is [`Error::ChatTemplate`].
    pub fn new(
        source: &str,
        model_name: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime::strftime_now);
        env.add_filter("tojson", tojson::tojson);
        env.set_fuel(Some(RENDER_FUEL));
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| template_error(model_name, &e))?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            model: model_name.to_owned(),
            bos_token: bos_token.unwrap_or_default().to_owned(),
            eos_token: eos_token.unwrap_or_default().to_owned(),
            tool_format: ToolFormat::of_template(source),
            thinks: source.contains("<think>") && source.contains("</think>"),
            source: Arc::from(source),
            guard: Arc::default(),
        })
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the opening of an
    /// assistant turn. Errors (including the template's own `raise_exception`) are
    /// [`Error::ChatTemplate`].
    ///
    /// A render that runs out of fuel, output, memory or time is an error too, as is every
    /// render of a template that once ran out of memory.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, &TemplateExtras::default())
    }

    /// [`Self::render`] with `tools` and other variables in the template's context.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extras: &TemplateExtras,
    ) -> Result<String> {
        let input: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum::<usize>()
            .saturating_add(extras.size())
            .saturating_add(self.bos_token.len() + self.eos_token.len());
        let memory = RENDER_MEMORY_PER_INPUT_BYTE
            .saturating_mul(input)
            .saturating_add(RENDER_MEMORY_BASE);
        let max_output = RENDER_OUTPUT_PER_INPUT_BYTE
            .saturating_mul(input)
            .saturating_add(RENDER_OUTPUT_BASE);
        let messages: Vec<serde_json::Value> =
            messages.iter().map(ChatMessage::for_template).collect();
        let (env, extras) = (self.env.clone(), extras.clone());
        let (bos, eos) = (self.bos_token.clone(), self.eos_token.clone());
        let rendered = self.guard.run(memory, RENDER_TIME, move || {
            let template = env.get_template(TEMPLATE_NAME).map_err(|e| e.to_string())?;
            let mut out = LimitedOutput {
                text: Vec::new(),
                limit: max_output,
                overflowed: false,
            };
            let context = context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos,
                eos_token => eos,
                tools => extras.tools,
                ..minijinja::Value::from_serialize(&extras.kwargs)
            };
            if let Err(e) = template.render_captured_to(context, &mut out) {
                return Err(if out.overflowed {
                    format!(
                        "the rendered prompt would be larger than {} bytes",
                        out.limit
                    )
                } else {
                    e.to_string()
                });
            }
            String::from_utf8(out.text).map_err(|_| "the output is not UTF-8".to_string())
        });
        let limit = |what: String| Error::ChatTemplate {
            model: self.model.clone(),
            reason: what,
        };
        match rendered {
            Ok(result) => result.map_err(limit),
            Err(guard::Overrun::Memory) => Err(limit(format!(
                "rendering needed more than {} MiB of memory; the template is disabled",
                memory >> 20
            ))),
            Err(guard::Overrun::Refused) => Err(limit(
                "the template is disabled: a render needed more memory than its limit".into(),
            )),
            Err(guard::Overrun::Time) => Err(limit(format!(
                "rendering took longer than {} s",
                RENDER_TIME.as_secs()
            ))),
        }
    }

    /// How the template's model writes tool calls.
    pub fn tool_format(&self) -> ToolFormat {
        self.tool_format
    }

    /// Whether the template's model thinks aloud (`<think>…</think>`) before answering.
    pub fn thinks(&self) -> bool {
        self.thinks
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The model this template belongs to.
    pub fn model_name(&self) -> &str {
        &self.model
    }
}

fn template_error(model: &str, err: &minijinja::Error) -> Error {
    Error::ChatTemplate {
        model: model.to_owned(),
        reason: err.to_string(),
    }
}

/// Collects a render's output up to a limit, past which the render fails.
struct LimitedOutput {
    text: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl std::io::Write for LimitedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `raise_exception(msg)`: templates call it to reject a conversation (e.g. roles that do not
/// alternate); rendering fails with `msg`.
fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

#[cfg(test)]
mod tests;
