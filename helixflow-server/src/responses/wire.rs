//! A Responses request, read into the core's terms: the input items (text, messages,
//! function calls and their outputs) as [`ChatMessage`]s after `instructions`, and the
//! options (`max_output_tokens`, sampling, `text.format`, function `tools`) as the
//! OpenAI-named [`GenerationOptions`] every front end fills.

use helixflow_core::chat_template::ChatMessage;
use helixflow_core::request::GenerationOptions;
use helixflow_core::tools::{FunctionCall, ToolCall};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::wire::only_fields;

/// A Responses request, checked.
#[derive(Debug)]
pub(crate) struct ResponsesRequest {
    pub(crate) model: String,
    /// The new input, without `instructions` or an earlier response's conversation.
    pub(crate) input: Vec<ChatMessage>,
    /// `instructions`: a system message before the conversation (not carried to responses
    /// that follow this one, as OpenAI does).
    pub(crate) instructions: Option<String>,
    pub(crate) previous_response_id: Option<String>,
    pub(crate) options: GenerationOptions,
    pub(crate) stream: bool,
    pub(crate) store: bool,
    /// The request's settings as the response object echoes them.
    pub(crate) echo: Echo,
}

/// What a response object repeats of its request.
#[derive(Debug, Clone)]
pub(crate) struct Echo {
    pub(crate) instructions: Value,
    pub(crate) max_output_tokens: Value,
    pub(crate) metadata: Value,
    pub(crate) parallel_tool_calls: bool,
    pub(crate) previous_response_id: Value,
    pub(crate) store: bool,
    pub(crate) temperature: Value,
    pub(crate) text: Value,
    pub(crate) tool_choice: Value,
    pub(crate) tools: Value,
    pub(crate) top_p: Value,
    pub(crate) user: Value,
}

/// The fields HelixFlow honours; any other is refused by name.
const FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "text",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "stream",
    "store",
    "previous_response_id",
    "metadata",
    "user",
    "truncation",
];

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(field, message)
}

fn present<'v>(fields: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    fields.get(name).filter(|v| !v.is_null())
}

impl ResponsesRequest {
    /// Reads a Responses body.
    pub(crate) fn from_json(body: &Value) -> Result<Self, ApiError> {
        let fields = only_fields(body, FIELDS, |unknown| {
            format!("Unknown parameter: '{unknown}'.")
        })?;
        let model = present(fields, "model")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("model", "Missing required parameter: 'model'."))?
            .to_owned();
        let input = match present(fields, "input") {
            Some(Value::String(text)) => vec![ChatMessage::new("user", text.clone())],
            Some(Value::Array(items)) => input_items(items)?,
            Some(_) => {
                return Err(invalid(
                    "input",
                    "input must be a string or a list of items",
                ))
            }
            None => Vec::new(),
        };
        let text_field = |name: &str| -> Result<Option<String>, ApiError> {
            match present(fields, name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(invalid(name, format!("{name} must be a string"))),
            }
        };
        let instructions = text_field("instructions")?;
        let previous_response_id = text_field("previous_response_id")?;
        if input.is_empty() && previous_response_id.is_none() {
            return Err(invalid("input", "Missing required parameter: 'input'."));
        }
        let flag = |name: &str, default: bool| -> Result<bool, ApiError> {
            match present(fields, name) {
                None => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| invalid(name, format!("{name} must be a boolean"))),
            }
        };
        let number = |name: &str| -> Result<Option<f32>, ApiError> {
            match present(fields, name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(|v| Some(v as f32))
                    .ok_or_else(|| invalid(name, format!("{name} must be a number"))),
            }
        };
        let max_output_tokens = match present(fields, "max_output_tokens") {
            None => None,
            Some(v) => Some(v.as_u64().filter(|&n| n >= 1).ok_or_else(|| {
                invalid(
                    "max_output_tokens",
                    "max_output_tokens must be a positive integer",
                )
            })? as usize),
        };
        match present(fields, "truncation").map(Value::as_str) {
            None | Some(Some("disabled")) => {}
            _ => {
                return Err(invalid(
                    "truncation",
                    "only `disabled` truncation is supported: an input longer than the \
                     context is an error",
                ))
            }
        }
        if let Some(metadata) = present(fields, "metadata") {
            let fine = metadata.as_object().is_some_and(|m| {
                m.len() <= 16
                    && m.values()
                        .all(|v| v.as_str().is_some_and(|s| s.len() <= 512))
            });
            if !fine {
                return Err(invalid(
                    "metadata",
                    "metadata must be an object of at most 16 strings",
                ));
            }
        }
        let parallel = flag("parallel_tool_calls", true)?;
        let (tools, tool_choice) = tools(present(fields, "tools"), present(fields, "tool_choice"))?;
        let (response_format, text) = text_format(present(fields, "text"))?;
        let stream = flag("stream", false)?;
        let store = flag("store", true)?;
        let options = GenerationOptions {
            max_tokens: max_output_tokens,
            temperature: number("temperature")?,
            top_p: number("top_p")?,
            response_format,
            tools: tools.clone(),
            tool_choice: tool_choice.clone(),
            parallel_tool_calls: present(fields, "parallel_tool_calls").map(|_| parallel),
            ..GenerationOptions::default()
        };
        let echo = Echo {
            instructions: json!(instructions),
            max_output_tokens: json!(max_output_tokens),
            metadata: present(fields, "metadata").cloned().unwrap_or(json!({})),
            parallel_tool_calls: parallel,
            previous_response_id: json!(previous_response_id),
            store,
            temperature: json!(options.temperature.unwrap_or(1.0)),
            text,
            tool_choice: present(fields, "tool_choice")
                .cloned()
                .unwrap_or(json!("auto")),
            tools: present(fields, "tools").cloned().unwrap_or(json!([])),
            top_p: json!(options.top_p.unwrap_or(1.0)),
            user: present(fields, "user").cloned().unwrap_or(Value::Null),
        };
        Ok(Self {
            model,
            input,
            instructions,
            previous_response_id,
            options,
            stream,
            store,
            echo,
        })
    }
}

/// The input items as messages: a function call joins the assistant message before it (or
/// starts one), an output becomes a `tool` message.
fn input_items(items: &[Value]) -> Result<Vec<ChatMessage>, ApiError> {
    let mut messages: Vec<ChatMessage> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let bad = |message: &str| invalid("input", format!("input[{i}]: {message}"));
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            None | Some("message") => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
                let role = match role {
                    "user" | "assistant" | "system" => role,
                    "developer" => "system",
                    _ => return Err(bad("role must be user, assistant, system or developer")),
                };
                let content = match item.get("content") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .map(|part| match part.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text") => part
                                .get("text")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                                .ok_or_else(|| bad("a text part needs `text`")),
                            other => Err(bad(&format!(
                                "content parts of type {other:?} are not supported (text only)"
                            ))),
                        })
                        .collect::<Result<Vec<_>, _>>()?
                        .concat(),
                    _ => return Err(bad("content must be a string or a list of parts")),
                };
                messages.push(ChatMessage::new(role, content));
            }
            Some("function_call") => {
                let (Some(call_id), Some(name), Some(arguments)) = (
                    item.get("call_id").and_then(Value::as_str),
                    item.get("name").and_then(Value::as_str),
                    item.get("arguments").and_then(Value::as_str),
                ) else {
                    return Err(bad(
                        "a function_call needs `call_id`, `name` and `arguments`",
                    ));
                };
                let call = ToolCall {
                    id: call_id.to_owned(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: name.to_owned(),
                        arguments: arguments.to_owned(),
                    },
                };
                match messages.last_mut() {
                    Some(last) if last.role == "assistant" => {
                        last.tool_calls.get_or_insert_with(Vec::new).push(call)
                    }
                    _ => {
                        let mut message = ChatMessage::new("assistant", "");
                        message.tool_calls = Some(vec![call]);
                        messages.push(message);
                    }
                }
            }
            Some("function_call_output") => {
                let (Some(call_id), Some(output)) = (
                    item.get("call_id").and_then(Value::as_str),
                    item.get("output").and_then(Value::as_str),
                ) else {
                    return Err(bad(
                        "a function_call_output needs `call_id` and `output` text",
                    ));
                };
                let mut message = ChatMessage::new("tool", output);
                message.tool_call_id = Some(call_id.to_owned());
                messages.push(message);
            }
            Some("reasoning") => {
                // An earlier answer's thinking, sent back: kept with the assistant turn.
                let text: String = item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .collect();
                let mut message = ChatMessage::new("assistant", "");
                message.reasoning_content = Some(text);
                messages.push(message);
            }
            Some(other) => {
                return Err(bad(&format!("items of type `{other}` are not supported")));
            }
        }
    }
    Ok(merge_assistant_turns(messages))
}

/// Joins a reasoning-only assistant message with the assistant message after it.
fn merge_assistant_turns(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut merged: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for message in messages {
        match merged.last_mut() {
            Some(last)
                if last.role == "assistant"
                    && message.role == "assistant"
                    && last.content.is_empty()
                    && last.tool_calls.is_none() =>
            {
                let reasoning = last.reasoning_content.take();
                *last = message;
                if last.reasoning_content.is_none() {
                    last.reasoning_content = reasoning;
                }
            }
            _ => merged.push(message),
        }
    }
    merged
}

/// Function `tools` (flat, as the Responses API writes them) and `tool_choice`, in Chat
/// Completions' terms.
fn tools(
    tools: Option<&Value>,
    choice: Option<&Value>,
) -> Result<(Option<Value>, Option<Value>), ApiError> {
    let definitions = match tools {
        None => None,
        Some(Value::Array(items)) => Some(Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, tool)| {
                    let bad = |m: &str| invalid("tools", format!("tools[{i}]: {m}"));
                    match tool.get("type").and_then(Value::as_str) {
                        Some("function") => {}
                        other => {
                            return Err(bad(&format!(
                                "tools of type {other:?} are not supported (function tools only)"
                            )))
                        }
                    }
                    let name = tool
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("a function tool needs `name`"))?;
                    let mut function = Map::new();
                    function.insert("name".into(), json!(name));
                    for key in ["description", "parameters", "strict"] {
                        if let Some(value) = tool.get(key).filter(|v| !v.is_null()) {
                            function.insert(key.into(), value.clone());
                        }
                    }
                    Ok(json!({"type": "function", "function": function}))
                })
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Some(_) => return Err(invalid("tools", "tools must be a list")),
    };
    let choice =
        match choice {
            None => None,
            Some(Value::String(mode)) if ["auto", "none", "required"].contains(&mode.as_str()) => {
                Some(json!(mode))
            }
            Some(named) if named.get("type").and_then(Value::as_str) == Some("function") => {
                let name = named
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool_choice", "a function tool_choice needs `name`"))?;
                Some(json!({"type": "function", "function": {"name": name}}))
            }
            Some(_) => return Err(invalid(
                "tool_choice",
                "tool_choice must be auto, none, required or {\"type\": \"function\", \"name\"}",
            )),
        };
    Ok((definitions, choice))
}

/// `text.format` as a Chat Completions `response_format`, and the `text` the response
/// echoes.
fn text_format(text: Option<&Value>) -> Result<(Option<Value>, Value), ApiError> {
    let default = json!({"format": {"type": "text"}});
    let Some(text) = text else {
        return Ok((None, default));
    };
    let fields = only_fields(text, &["format", "verbosity"], |unknown| {
        format!("Unknown parameter: 'text.{unknown}'.")
    })?;
    if present(fields, "verbosity").is_some_and(|v| v != "medium") {
        return Err(invalid(
            "text.verbosity",
            "only `medium` verbosity is supported",
        ));
    }
    let Some(format) = present(fields, "format") else {
        return Ok((None, default));
    };
    let kind = format.get("type").and_then(Value::as_str);
    let response_format = match kind {
        Some("text") => None,
        Some("json_object") => Some(json!({"type": "json_object"})),
        Some("json_schema") => {
            let (Some(name), Some(schema)) = (
                format.get("name").and_then(Value::as_str),
                format.get("schema").filter(|s| s.is_object()),
            ) else {
                return Err(invalid(
                    "text.format",
                    "a json_schema format needs `name` and a `schema` object",
                ));
            };
            let mut json_schema = json!({"name": name, "schema": schema});
            if let Some(strict) = format.get("strict").filter(|v| !v.is_null()) {
                json_schema["strict"] = strict.clone();
            }
            Some(json!({"type": "json_schema", "json_schema": json_schema}))
        }
        _ => {
            return Err(invalid(
                "text.format",
                "text.format.type must be text, json_object or json_schema",
            ))
        }
    };
    Ok((response_format, json!({"format": format})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_a_conversation() {
        let body = json!({"model": "m", "instructions": "Be brief.", "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "message", "role": "developer",
             "content": [{"type": "input_text", "text": "Then "}, {"type": "input_text", "text": "answer."}]},
        ], "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
           "tool_choice": {"type": "function", "name": "weather"}, "max_output_tokens": 9,
           "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}});
        let request = ResponsesRequest::from_json(&body).unwrap();
        let roles: Vec<&str> = request.input.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool", "system"]);
        assert_eq!(request.input[1].tool_calls.as_ref().unwrap().len(), 2);
        assert_eq!(request.input[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(request.input[3].content, "Then answer.");
        assert_eq!(request.instructions.as_deref(), Some("Be brief."));
        assert!(request.store && !request.stream);
        let options = &request.options;
        assert_eq!(options.max_tokens, Some(9));
        assert_eq!(
            options.tools.as_ref().unwrap()[0]["function"]["name"],
            "weather"
        );
        assert_eq!(
            options.tool_choice,
            Some(json!({"type": "function", "function": {"name": "weather"}}))
        );
        assert_eq!(
            options.response_format.as_ref().unwrap()["type"],
            "json_schema"
        );
    }

    #[test]
    fn what_is_not_honoured_is_refused_by_name() {
        for (body, field) in [
            (
                json!({"model": "m", "input": "x", "reasoning": {"effort": "high"}}),
                "reasoning",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "tools",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "http://x"}]}]}),
                "input",
            ),
            (json!({"model": "m"}), "input"),
            (
                json!({"model": "m", "input": "x", "truncation": "auto"}),
                "truncation",
            ),
            (
                json!({"model": "m", "input": "x", "max_output_tokens": 0}),
                "max_output_tokens",
            ),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}),
                "text.format",
            ),
        ] {
            let err = ResponsesRequest::from_json(&body).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(field), "{body}: {}", err.message);
        }
    }
}
