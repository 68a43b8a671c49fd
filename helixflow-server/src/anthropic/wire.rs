//! Anthropic's Messages request, read into the core's terms: the conversation as
//! [`ChatMessage`]s (text, `tool_use` and `tool_result` blocks, thinking), and the options as
//! the OpenAI-named [`GenerationOptions`] every front end fills.

use helixflow_core::chat_template::ChatMessage;
use helixflow_core::request::{GenerationOptions, Stop};
use helixflow_core::tools::{FunctionCall, ToolCall};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::wire::only_fields;

/// A Messages request, checked.
#[derive(Debug)]
pub(crate) struct MessagesRequest {
    pub(crate) model: String,
    pub(crate) messages: Vec<ChatMessage>,
    pub(crate) options: GenerationOptions,
    pub(crate) stream: bool,
}

/// The fields of a Messages request HelixFlow honours; any other is refused by name.
const FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
];

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(field, message)
}

impl MessagesRequest {
    /// Reads a Messages body (`count_tokens`: `max_tokens` may be left out, and `stream`
    /// means nothing).
    pub(crate) fn from_json(body: &Value, count_tokens: bool) -> Result<Self, ApiError> {
        let fields = only_fields(body, FIELDS, |unknown| {
            format!("{unknown}: Extra inputs are not permitted")
        })?;
        let model = fields
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("model", "model: Field required"))?
            .to_owned();
        let max_tokens = match fields.get("max_tokens") {
            None if count_tokens => None,
            Some(n) => Some(
                n.as_u64()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| invalid("max_tokens", "max_tokens must be a positive integer"))?
                    as usize,
            ),
            None => return Err(invalid("max_tokens", "max_tokens: Field required")),
        };
        let mut messages = system_messages(fields.get("system"))?;
        let turns = fields
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("messages", "messages: Field required (a list)"))?;
        if turns.is_empty() {
            return Err(invalid(
                "messages",
                "messages: at least one message is required",
            ));
        }
        for (i, turn) in turns.iter().enumerate() {
            messages.extend(turn_messages(i, turn)?);
        }
        let number = |name: &str| -> Result<Option<f32>, ApiError> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(|v| Some(v as f32))
                    .ok_or_else(|| invalid(name, format!("{name} must be a number"))),
            }
        };
        let stop = match fields.get("stop_sequences") {
            None | Some(Value::Null) => None,
            Some(value) => Some(Stop::Many(serde_json::from_value(value.clone()).map_err(
                |_| invalid("stop_sequences", "stop_sequences must be a list of strings"),
            )?)),
        };
        let top_k = match fields.get("top_k") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| invalid("top_k", "top_k must be a non-negative integer"))?
                    as usize,
            ),
        };
        if let Some(metadata) = fields.get("metadata") {
            // Only `user_id`, which identifies the end user and is recorded nowhere.
            let known = metadata
                .as_object()
                .is_some_and(|m| m.keys().all(|k| k == "user_id"));
            if !known {
                return Err(invalid("metadata", "metadata takes only `user_id`"));
            }
        }
        let tools = tools(fields.get("tools"), fields.get("tool_choice"))?;
        let stream = match fields.get("stream") {
            None | Some(Value::Null) => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| invalid("stream", "stream must be a boolean"))?,
        };
        let options = GenerationOptions {
            max_tokens,
            stop,
            temperature: number("temperature")?,
            top_p: number("top_p")?,
            top_k,
            tools: tools.tools,
            tool_choice: tools.tool_choice,
            parallel_tool_calls: tools.parallel_tool_calls,
            ..GenerationOptions::default()
        };
        Ok(Self {
            model,
            messages,
            options,
            stream: stream && !count_tokens,
        })
    }
}

/// `system`: a string or a list of text blocks.
fn system_messages(system: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let text = match system {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|block| text_of(block, "system"))
            .collect::<Result<Vec<_>, _>>()?
            .concat(),
        Some(_) => return Err(invalid("system", "system must be a string or text blocks")),
    };
    Ok(vec![ChatMessage::new("system", text)])
}

fn text_of(block: &Value, field: &str) -> Result<String, ApiError> {
    match (block.get("type").and_then(Value::as_str), block.get("text")) {
        (Some("text"), Some(Value::String(text))) => Ok(text.clone()),
        (kind, _) => Err(invalid(
            field,
            format!("{field}: blocks of type {kind:?} are not supported here"),
        )),
    }
}

/// One turn of `messages`: a user turn's `tool_result` blocks become `tool` messages (before
/// its text), an assistant turn's `tool_use` blocks its calls and its `thinking` its
/// reasoning.
fn turn_messages(index: usize, turn: &Value) -> Result<Vec<ChatMessage>, ApiError> {
    let field = "messages";
    let bad = |message: String| invalid(field, format!("messages.{index}: {message}"));
    let role = turn.get("role").and_then(Value::as_str).unwrap_or_default();
    if role != "user" && role != "assistant" {
        return Err(bad("role must be `user` or `assistant`".into()));
    }
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => return Ok(vec![ChatMessage::new(role, text.clone())]),
        Some(Value::Array(blocks)) => blocks,
        _ => return Err(bad("content must be a string or a list of blocks".into())),
    };
    let mut message = ChatMessage::new(role, "");
    let mut results = Vec::new();
    for block in blocks {
        match (role, block.get("type").and_then(Value::as_str)) {
            (_, Some("text")) => message.content.push_str(&text_of(block, field)?),
            ("assistant", Some("tool_use")) => {
                let (Some(id), Some(name), Some(input)) = (
                    block.get("id").and_then(Value::as_str),
                    block.get("name").and_then(Value::as_str),
                    block.get("input").filter(|i| i.is_object()),
                ) else {
                    return Err(bad(
                        "a tool_use block needs `id`, `name` and an `input` object".into(),
                    ));
                };
                message
                    .tool_calls
                    .get_or_insert_with(Vec::new)
                    .push(ToolCall {
                        id: id.to_owned(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: name.to_owned(),
                            arguments: input.to_string(),
                        },
                    });
            }
            ("assistant", Some("thinking")) => {
                let thinking = block
                    .get("thinking")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                message
                    .reasoning_content
                    .get_or_insert_with(String::new)
                    .push_str(thinking);
            }
            ("user", Some("tool_result")) => {
                let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
                    return Err(bad("a tool_result block needs `tool_use_id`".into()));
                };
                let content = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .map(|part| text_of(part, field))
                        .collect::<Result<Vec<_>, _>>()?
                        .concat(),
                    Some(_) => return Err(bad("tool_result content must be text".into())),
                };
                let mut result = ChatMessage::new("tool", content);
                result.tool_call_id = Some(id.to_owned());
                results.push(result);
            }
            (_, kind) => {
                return Err(bad(format!(
                    "content blocks of type {kind:?} are not supported in a {role} turn"
                )))
            }
        }
    }
    let keep = !message.content.is_empty() || message.tool_calls.is_some() || results.is_empty();
    Ok(results.into_iter().chain(keep.then_some(message)).collect())
}

/// `tools` and `tool_choice` in OpenAI's terms.
#[derive(Debug, Default)]
struct OpenAiTools {
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
}

/// `tools` and `tool_choice` in OpenAI's terms: the tools, the choice, and whether calls may
/// come several at once.
fn tools(tools: Option<&Value>, choice: Option<&Value>) -> Result<OpenAiTools, ApiError> {
    let definitions = match tools {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, tool)| {
                    let name = tool.get("name").and_then(Value::as_str);
                    let schema = tool.get("input_schema").filter(|s| s.is_object());
                    let (Some(name), Some(schema)) = (name, schema) else {
                        return Err(invalid(
                            "tools",
                            format!("tools.{i}: a tool needs `name` and an `input_schema` object"),
                        ));
                    };
                    let mut function = Map::new();
                    function.insert("name".into(), json!(name));
                    if let Some(description) = tool.get("description") {
                        function.insert("description".into(), description.clone());
                    }
                    function.insert("parameters".into(), schema.clone());
                    Ok(json!({"type": "function", "function": function}))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(invalid("tools", "tools must be a list")),
    };
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok(OpenAiTools {
            tools: definitions.map(Value::Array),
            ..OpenAiTools::default()
        });
    };
    let parallel = match choice.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(disable)) => Some(!disable),
        Some(_) => {
            return Err(invalid(
                "tool_choice",
                "tool_choice.disable_parallel_tool_use must be a boolean",
            ))
        }
    };
    let openai = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => {
                return Err(invalid(
                    "tool_choice",
                    "tool_choice of type `tool` needs `name`",
                ))
            }
        },
        _ => {
            return Err(invalid(
                "tool_choice",
                "tool_choice.type must be `auto`, `any`, `tool` or `none`",
            ))
        }
    };
    Ok(OpenAiTools {
        tools: definitions.map(Value::Array),
        tool_choice: Some(openai),
        parallel_tool_calls: parallel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_with_tools_reads_into_core_messages() {
        let body = json!({
            "model": "m", "max_tokens": 10, "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                    "content": "sunny"}, {"type": "text", "text": "And?"}]}
            ],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["x"], "top_k": 3
        });
        let request = MessagesRequest::from_json(&body, false).unwrap();
        let roles: Vec<&str> = request.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        let call = &request.messages[2].tool_calls.as_ref().unwrap()[0];
        assert_eq!(
            (call.id.as_str(), call.function.arguments.as_str()),
            ("toolu_1", "{\"c\":1}")
        );
        assert_eq!(request.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(request.options.tool_choice, Some(json!("required")));
        assert_eq!(request.options.parallel_tool_calls, Some(false));
        assert_eq!(request.options.max_tokens, Some(10));
    }

    #[test]
    fn bad_requests_name_their_field() {
        let base =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
        for (change, field) in [
            (json!({"thinking": {"type": "enabled"}}), "thinking"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"messages": []}), "messages"),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "messages",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image"}]}]}),
                "messages",
            ),
            (json!({"tools": [{"name": "t"}]}), "tools"),
            (json!({"tool_choice": {"type": "sometimes"}}), "tool_choice"),
        ] {
            let mut body = base.clone();
            for (k, v) in change.as_object().unwrap() {
                body[k] = v.clone();
            }
            let e = MessagesRequest::from_json(&body, false).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{change}");
        }
        let mut no_max = base.clone();
        no_max.as_object_mut().unwrap().remove("max_tokens");
        assert!(MessagesRequest::from_json(&no_max, false).is_err());
        assert!(MessagesRequest::from_json(&no_max, true).is_ok());
    }
}
