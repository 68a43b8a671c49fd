//! The formats models write tool calls in, told apart by their chat templates:
//!
//! - Hermes (Qwen 2.5/3, Hermes, many fine-tunes): `<tool_call>\n{"name": …, "arguments":
//!   {…}}\n</tool_call>`, one block per call;
//! - Llama 3.x: the whole answer is `{"name": …, "parameters": {…}}` (after
//!   `<|python_tag|>`, a special token that leaves no text);
//! - Mistral: `[TOOL_CALLS]` (a control token) then `[{"name": …, "arguments": {…}}, …]`;
//! - generic JSON, for templates that know no tools (SmolLM2's, Gemma 3's): the tools are
//!   described in a system message and the whole answer is `{"tool_calls": [{"name": …,
//!   "arguments": {…}}]}` or, where the model may answer instead, `{"content": "…"}`.
//!
//! Each format has the grammar that holds `required` and named choices (and every generic
//! answer) to calls whose arguments validate against the tools' schemas.

use serde_json::{json, Map, Value};

use super::{ChatTools, ToolChoice};
use crate::chat_template::ChatMessage;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// How a model writes its tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>{"name", "arguments"}</tool_call>` blocks.
    Hermes,
    /// Llama 3.x: `{"name", "parameters"}` as the whole answer.
    Llama3,
    /// Mistral: `[TOOL_CALLS][{"name", "arguments"}, …]`.
    Mistral,
    /// HelixFlow's own, for templates without tools: `{"tool_calls": [...]}` or
    /// `{"content": "…"}`.
    Generic,
}

/// What the generic format's system message says before the tools' definitions.
const GENERIC_TOOLS_INTRO: &str = "You can call the following tools. Their definitions, as JSON:";

impl ToolFormat {
    /// The format a chat template renders tool calls in.
    pub fn of_template(source: &str) -> Self {
        if source.contains("<tool_call>") {
            Self::Hermes
        } else if source.contains("[TOOL_CALLS]") {
            Self::Mistral
        } else if source.contains("<|python_tag|>") || source.contains("ipython") {
            Self::Llama3
        } else {
            Self::Generic
        }
    }

    /// Whether the template renders the tools and the calls itself.
    pub fn is_native(self) -> bool {
        self != Self::Generic
    }

    /// The key of a call's arguments.
    pub fn arguments_key(self) -> &'static str {
        match self {
            Self::Llama3 => "parameters",
            _ => "arguments",
        }
    }

    /// The Lark grammar answers must match under `tools`' choice, if any: calls of the
    /// callable functions for `required` and a named function, and for the generic format
    /// always (calls, or `{"content": …}` under `auto`).
    pub fn grammar(self, tools: &ChatTools, tokenizer: &Tokenizer) -> Option<String> {
        if !tools.must_call() && self != Self::Generic {
            return None;
        }
        let call = call_schema(tools, self.arguments_key());
        let many = |item: Value| {
            let mut array = json!({"type": "array", "items": item, "minItems": 1});
            if !tools.parallel {
                array["maxItems"] = json!(1);
            }
            array
        };
        Some(match self {
            Self::Hermes => {
                let open = lark_text(tokenizer, "<tool_call>");
                let close = lark_text(tokenizer, "</tool_call>");
                let repeat = if tools.parallel { "+" } else { "" };
                format!(
                    "start: call{repeat}\ncall: {open} \"\\n\" %json {} \"\\n\" {close} \"\\n\"?\n",
                    compact(call)
                )
            }
            Self::Llama3 => format!("start: %json {}\n", compact(call)),
            Self::Mistral => format!(
                "start: {} %json {}\n",
                lark_text(tokenizer, "[TOOL_CALLS]"),
                compact(many(call))
            ),
            Self::Generic => {
                let calls = json!({"type": "object", "properties": {"tool_calls": many(call)},
                    "required": ["tool_calls"], "additionalProperties": false});
                let schema = if tools.must_call() {
                    calls
                } else {
                    let content = json!({"type": "object", "properties": {"content":
                        {"type": "string"}}, "required": ["content"],
                        "additionalProperties": false});
                    json!({"anyOf": [calls, content]})
                };
                format!("start: %json {}\n", compact(schema))
            }
        })
    }

    /// The conversation as the template is to see it. Native templates get it as it is; for
    /// the generic format the tools are described in the system message, earlier calls are
    /// written as the answers they were, and tool results become user turns.
    pub fn prepare(self, messages: &[ChatMessage], tools: Option<&ChatTools>) -> Vec<ChatMessage> {
        if self.is_native() {
            return messages.to_vec();
        }
        let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
        for (i, message) in messages.iter().enumerate() {
            let follows_result = i > 0 && messages[i - 1].role == "tool";
            let converted = match (message.role.as_str(), &message.tool_calls) {
                ("assistant", Some(calls)) if !calls.is_empty() => {
                    let calls: Vec<Value> = calls
                        .iter()
                        .map(|c| {
                            let arguments = serde_json::from_str::<Value>(&c.function.arguments)
                                .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
                            json!({"name": c.function.name, "arguments": arguments})
                        })
                        .collect();
                    ChatMessage::new("assistant", json!({"tool_calls": calls}).to_string())
                }
                ("tool", _) => {
                    let name = called_name(messages, message.tool_call_id.as_deref());
                    let result = json!({"tool_response": {"name": name,
                        "content": message.content}});
                    // Consecutive results go in one turn: templates that want turns to
                    // alternate (Gemma's) would refuse two user turns in a row.
                    match out.last_mut() {
                        Some(last) if follows_result => {
                            last.content.push('\n');
                            last.content.push_str(&result.to_string());
                            continue;
                        }
                        _ => ChatMessage::new("user", result.to_string()),
                    }
                }
                // Where answers are JSON, earlier answers are written as they would be now.
                ("assistant", _) if tools.is_some() => {
                    ChatMessage::new("assistant", json!({"content": message.content}).to_string())
                }
                _ => ChatMessage::new(message.role.clone(), message.content.clone()),
            };
            out.push(converted);
        }
        if let Some(tools) = tools {
            let text = generic_instructions(tools);
            match out.first_mut() {
                Some(first) if first.role == "system" || first.role == "developer" => {
                    first.content = format!("{}\n\n{text}", first.content);
                }
                _ => out.insert(0, ChatMessage::new("system", text)),
            }
        }
        out
    }
}

/// The system message that teaches the generic format.
fn generic_instructions(tools: &ChatTools) -> String {
    let definitions: Vec<String> = tools.definitions.iter().map(Value::to_string).collect();
    let mut text = format!(
        "{GENERIC_TOOLS_INTRO}\n{}\n\nTo call tools, answer with JSON only: {{\"tool_calls\": \
         [{{\"name\": \"<tool name>\", \"arguments\": {{<the arguments>}}}}]}}.",
        definitions.join("\n")
    );
    if tools.choice == ToolChoice::Auto {
        text.push_str(
            " To answer the user without a tool, answer with JSON only: {\"content\": \
             \"<your answer>\"}.",
        );
    }
    text
}

/// The function that the call `id` named, earlier in the conversation.
fn called_name(messages: &[ChatMessage], id: Option<&str>) -> String {
    messages
        .iter()
        .flat_map(|m| m.tool_calls.iter().flatten())
        .find(|c| Some(c.id.as_str()) == id)
        .map(|c| c.function.name.clone())
        .unwrap_or_default()
}

/// The JSON schema of one call of a callable function: its name, then its arguments.
fn call_schema(tools: &ChatTools, arguments_key: &str) -> Value {
    let alternatives: Vec<Value> = tools
        .callable()
        .map(|f| {
            // Arguments beyond those the schema names are refused unless it allows them, as
            // OpenAI's strict mode does: small models otherwise wander on adding keys.
            let mut parameters = match &f.parameters {
                Value::Object(p) if p.is_empty() => json!({"type": "object"}),
                other => other.clone(),
            };
            if let Some(schema) = parameters.as_object_mut() {
                schema
                    .entry("additionalProperties")
                    .or_insert(Value::Bool(false));
            }
            let mut properties = Map::new();
            properties.insert("name".into(), json!({"const": f.name}));
            properties.insert(arguments_key.into(), parameters);
            json!({"type": "object", "properties": properties,
                "required": ["name", arguments_key], "additionalProperties": false})
        })
        .collect();
    match <[Value; 1]>::try_from(alternatives) {
        Ok([one]) => one,
        Err(many) => json!({"anyOf": many}),
    }
}

/// `schema` as llguidance's `%json` takes it, written as compactly as answers are.
fn compact(mut schema: Value) -> String {
    if let Some(fields) = schema.as_object_mut() {
        fields.insert(
            "x-guidance".into(),
            json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    schema.to_string()
}

/// `text` in a Lark rule: the special token it is, if the tokenizer has one (a grammar's
/// text can never produce a special token), else the literal.
fn lark_text(tokenizer: &Tokenizer, text: &str) -> String {
    match tokenizer.token_to_id(text) {
        Some(id) if tokenizer.is_special(id) => format!("<[{id}]>"),
        _ => Value::String(text.into()).to_string(),
    }
}

/// Checks the tool turns of a conversation: every `tool` message answers a call made by an
/// earlier assistant message, by its id.
pub fn check_tool_messages(messages: &[ChatMessage]) -> Result<()> {
    for (i, message) in messages.iter().enumerate() {
        if message.role != "tool" {
            continue;
        }
        let Some(id) = message.tool_call_id.as_deref() else {
            return Err(Error::invalid_field(
                "messages",
                format!("messages[{i}]: a tool message needs `tool_call_id`"),
            ));
        };
        let answered = messages[..i]
            .iter()
            .filter(|m| m.role == "assistant")
            .flat_map(|m| m.tool_calls.iter().flatten())
            .any(|c| c.id == id);
        if !answered {
            return Err(Error::invalid_field(
                "messages",
                format!(
                    "messages[{i}]: tool_call_id `{id}` answers no tool call of an earlier \
                     assistant message"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolCall;

    #[test]
    fn templates_tell_their_format() {
        assert_eq!(
            ToolFormat::of_template("{{ '<tool_call>' }}"),
            ToolFormat::Hermes
        );
        assert_eq!(
            ToolFormat::of_template("[TOOL_CALLS] {{ x }}"),
            ToolFormat::Mistral
        );
        assert_eq!(
            ToolFormat::of_template("<|python_tag|>"),
            ToolFormat::Llama3
        );
        assert_eq!(
            ToolFormat::of_template(crate::chat_template::CHATML_TEMPLATE),
            ToolFormat::Generic
        );
    }

    #[test]
    fn tool_messages_must_answer_a_call() {
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = Some(vec![ToolCall::new("f", "{}")]);
        let id = call.tool_calls.as_ref().unwrap()[0].id.clone();
        let mut answer = ChatMessage::new("tool", "42");
        answer.tool_call_id = Some(id);
        let good = [ChatMessage::new("user", "q"), call.clone(), answer.clone()];
        check_tool_messages(&good).unwrap();
        let early = [ChatMessage::new("user", "q"), answer.clone(), call];
        assert_eq!(
            check_tool_messages(&early).unwrap_err().field(),
            Some("messages")
        );
        let mut nameless = answer;
        nameless.tool_call_id = None;
        let err = check_tool_messages(&[nameless]).unwrap_err();
        assert!(err.to_string().contains("tool_call_id"), "{err}");
    }

    #[test]
    fn the_generic_format_rewrites_the_history() {
        let tools = ChatTools::from_request(
            Some(&json!([{"type": "function", "function": {"name": "f"}}])),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = Some(vec![ToolCall::new("f", "{\"x\": 1}")]);
        let mut result = ChatMessage::new("tool", "ok");
        result.tool_call_id = Some(call.tool_calls.as_ref().unwrap()[0].id.clone());
        let messages = [ChatMessage::new("user", "q"), call, result.clone(), result];
        let prepared = ToolFormat::Generic.prepare(&messages, Some(&tools));
        assert_eq!(prepared.len(), 4);
        assert_eq!(prepared[0].role, "system");
        assert!(prepared[0].content.starts_with(GENERIC_TOOLS_INTRO));
        assert!(prepared[0].content.contains("{\"content\""));
        assert_eq!(
            prepared[2].content,
            "{\"tool_calls\":[{\"name\":\"f\",\"arguments\":{\"x\":1}}]}"
        );
        assert_eq!(prepared[3].role, "user");
        assert_eq!(prepared[3].content.lines().count(), 2);
    }
}
