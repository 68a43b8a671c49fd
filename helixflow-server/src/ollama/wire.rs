//! Ollama's request bodies read into the core's terms: `/api/chat`'s messages (whose tool
//! calls and results carry no ids: they are paired here, in order and by name), and the
//! `options`, `format`, `tools` and `think` of `/api/chat` and `/api/generate` as the
//! OpenAI-named [`GenerationOptions`] every front end fills.

use helixflow_core::chat_template::ChatMessage;
use helixflow_core::registry::KeepAlive;
use helixflow_core::request::{GenerationOptions, Stop};
use helixflow_core::tools::{FunctionCall, ToolCall};
use serde_json::{json, Map, Value};

use crate::error::ApiError;

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(field, message)
}

/// What `/api/chat` and `/api/generate` share.
#[derive(Debug)]
pub(crate) struct OllamaRequest {
    pub(crate) model: String,
    pub(crate) options: GenerationOptions,
    /// `stream` (Ollama streams unless told not to).
    pub(crate) stream: bool,
    /// `options.num_ctx`: the context to keep within, when smaller than the model's.
    pub(crate) num_ctx: Option<usize>,
    /// `keep_alive`: how long the model stays loaded after this request.
    pub(crate) keep_alive: Option<KeepAlive>,
}

/// The body's fields as an object, refusing any not in `known`.
pub(crate) fn fields<'v>(
    body: &'v Value,
    known: &[&str],
) -> Result<&'v Map<String, Value>, ApiError> {
    crate::wire::only_fields(body, known, |unknown| {
        format!("`{unknown}` is not supported")
    })
}

const SHARED: &[&str] = &[
    "model",
    "format",
    "options",
    "stream",
    "think",
    "keep_alive",
];

/// `keep_alive`, where given: a duration (`5m`) or a number of seconds.
pub(crate) fn keep_alive(body: &Value) -> Result<Option<KeepAlive>, ApiError> {
    match body.get("keep_alive") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => KeepAlive::from_json(value)
            .map(Some)
            .map_err(ApiError::from),
    }
}

impl OllamaRequest {
    fn read(fields: &Map<String, Value>) -> Result<Self, ApiError> {
        let model = fields
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("model", "model is required"))?
            .to_owned();
        let stream = match fields.get("stream") {
            None | Some(Value::Null) => true,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| invalid("stream", "stream must be a boolean"))?,
        };
        let mut options = GenerationOptions::default();
        let num_ctx = read_options(fields.get("options"), &mut options)?;
        options.response_format = match fields.get("format") {
            None | Some(Value::Null) => None,
            Some(Value::String(kind)) if kind == "json" => Some(json!({"type": "json_object"})),
            Some(schema @ Value::Object(_)) => Some(json!({"type": "json_schema",
                "json_schema": {"name": "format", "schema": schema}})),
            Some(_) => {
                return Err(invalid(
                    "format",
                    "format must be \"json\" or a JSON schema",
                ))
            }
        };
        match fields.get("think") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(think)) => {
                let kwargs = options.chat_template_kwargs.get_or_insert_with(Map::new);
                kwargs.insert("enable_thinking".into(), json!(think));
            }
            Some(_) => return Err(invalid("think", "think must be a boolean")),
        }
        Ok(Self {
            model,
            options,
            stream,
            num_ctx,
            keep_alive: fields
                .get("keep_alive")
                .filter(|v| !v.is_null())
                .map(KeepAlive::from_json)
                .transpose()?,
        })
    }
}

/// `options`: the sampling and length options Ollama names; any other is refused. Returns
/// `num_ctx`.
fn read_options(
    value: Option<&Value>,
    options: &mut GenerationOptions,
) -> Result<Option<usize>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let fields = value
        .as_object()
        .ok_or_else(|| invalid("options", "options must be an object"))?;
    let mut num_ctx = None;
    for (name, value) in fields {
        let field = format!("options.{name}");
        let number = || {
            value
                .as_f64()
                .map(|v| v as f32)
                .ok_or_else(|| invalid(&field, format!("{field} must be a number")))
        };
        let count = || {
            value
                .as_i64()
                .ok_or_else(|| invalid(&field, format!("{field} must be an integer")))
        };
        match name.as_str() {
            "temperature" => options.temperature = Some(number()?),
            "top_p" => options.top_p = Some(number()?),
            "min_p" => options.min_p = Some(number()?),
            "repeat_penalty" => options.repetition_penalty = Some(number()?),
            "presence_penalty" => options.presence_penalty = Some(number()?),
            "frequency_penalty" => options.frequency_penalty = Some(number()?),
            "top_k" => {
                options.top_k = Some(
                    usize::try_from(count()?)
                        .map_err(|_| invalid(&field, "top_k must not be negative"))?,
                )
            }
            "seed" => options.seed = Some(count()?),
            "num_predict" => {
                options.max_tokens = match count()? {
                    // -1: until the end of the turn; -2: until the context is full.
                    -1 | -2 => None,
                    n if n > 0 => Some(n as usize),
                    _ => return Err(invalid(&field, "num_predict must be positive, -1 or -2")),
                }
            }
            "num_ctx" => {
                num_ctx = Some(
                    usize::try_from(count()?)
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| invalid(&field, "num_ctx must be positive"))?,
                )
            }
            "stop" => {
                let stops: Vec<String> = serde_json::from_value(value.clone())
                    .map_err(|_| invalid(&field, "options.stop must be a list of strings"))?;
                options.stop = Some(Stop::Many(stops));
            }
            _ => {
                return Err(invalid(
                    &field,
                    format!("the option `{name}` is not supported"),
                ))
            }
        }
    }
    Ok(num_ctx)
}

/// `POST /api/chat`.
pub(crate) fn chat_request(body: &Value) -> Result<(OllamaRequest, Vec<ChatMessage>), ApiError> {
    let fields = fields(body, &[SHARED, &["messages", "tools"]].concat())?;
    let mut request = OllamaRequest::read(fields)?;
    request.options.tools = fields.get("tools").filter(|t| !t.is_null()).cloned();
    let turns = fields
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "messages must be a list"))?;
    // No messages: just load (or, with `keep_alive: 0`, unload) the model.
    let messages = chat_messages(turns)?;
    Ok((request, messages))
}

/// `POST /api/generate`: the request, the prompt, the system prompt, and whether it is raw
/// (no chat template).
pub(crate) fn generate_request(
    body: &Value,
) -> Result<(OllamaRequest, String, Option<String>, bool), ApiError> {
    let fields = fields(body, &[SHARED, &["prompt", "system", "raw"]].concat())?;
    let request = OllamaRequest::read(fields)?;
    let text = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(name, format!("{name} must be a string"))),
    };
    let prompt = text("prompt")?.unwrap_or_default();
    let raw = fields.get("raw").and_then(Value::as_bool).unwrap_or(false);
    Ok((request, prompt, text("system")?, raw))
}

/// Ollama's messages as the core's: calls get ids (Ollama's have none), and each `tool`
/// message answers the earliest unanswered call of its `tool_name` (or of any tool).
fn chat_messages(turns: &[Value]) -> Result<Vec<ChatMessage>, ApiError> {
    let mut unanswered: Vec<(String, String)> = Vec::new(); // (id, name)
    let mut messages = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let bad = |message: &str| invalid("messages", format!("messages[{i}]: {message}"));
        let role = turn
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("role is required"))?;
        if turn.get("images").is_some_and(|v| !v.is_null()) {
            return Err(bad("images are not supported"));
        }
        let content = match turn.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad("content must be a string")),
        };
        let mut message = ChatMessage::new(role, content);
        if let Some(thinking) = turn.get("thinking").and_then(Value::as_str) {
            message.reasoning_content = Some(thinking.to_owned());
        }
        if let Some(calls) = turn.get("tool_calls").and_then(Value::as_array) {
            let mut core_calls = Vec::new();
            for (j, call) in calls.iter().enumerate() {
                let function = call.get("function");
                let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
                let arguments = function
                    .and_then(|f| f.get("arguments"))
                    .filter(|a| a.is_object());
                let (Some(name), Some(arguments)) = (name, arguments) else {
                    return Err(bad(
                        "a tool call needs function.name and function.arguments (an object)",
                    ));
                };
                let id = format!("call_{i}_{j}");
                unanswered.push((id.clone(), name.to_owned()));
                core_calls.push(ToolCall {
                    id,
                    kind: "function".into(),
                    function: FunctionCall {
                        name: name.to_owned(),
                        arguments: arguments.to_string(),
                    },
                });
            }
            message.tool_calls = Some(core_calls);
        }
        if role == "tool" {
            let name = turn.get("tool_name").and_then(Value::as_str);
            let at = unanswered
                .iter()
                .position(|(_, called)| name.is_none_or(|n| n == called))
                .ok_or_else(|| bad("a tool message answers no earlier tool call"))?;
            message.tool_call_id = Some(unanswered.remove(at).0);
        }
        messages.push(message);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_requests_read_into_core_terms() {
        let body = json!({"model": "m", "stream": false, "format": {"type": "object"},
        "options": {"temperature": 0, "num_predict": 5, "stop": ["x"], "num_ctx": 512},
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function":
                {"name": "w", "arguments": {"c": "Paris"}}}]},
            {"role": "tool", "content": "sunny", "tool_name": "w"}
        ]});
        let (request, messages) = chat_request(&body).unwrap();
        assert!(!request.stream);
        assert_eq!(request.options.max_tokens, Some(5));
        assert_eq!(request.num_ctx, Some(512));
        assert_eq!(
            request.options.response_format.as_ref().unwrap()["type"],
            "json_schema"
        );
        assert_eq!(
            messages[2].tool_call_id,
            messages[1].tool_calls.as_ref().unwrap()[0]
                .id
                .clone()
                .into()
        );
    }

    #[test]
    fn bad_requests_name_their_field() {
        for (body, field) in [
            (
                json!({"model": "m", "messages": [], "suffix": "x"}),
                "suffix",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "options": {"mirostat": 1}}),
                "options.mirostat",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "options": {"num_predict": 0}}),
                "options.num_predict",
            ),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "messages",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "format": 3}),
                "format",
            ),
        ] {
            let e = chat_request(&body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{body}");
        }
    }
}
