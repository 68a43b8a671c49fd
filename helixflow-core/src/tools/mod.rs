//! Tool calling: OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`, checked into a
//! [`ChatTools`]; the calls an assistant made ([`ToolCall`]), in the history and in answers;
//! and the formats models write their calls in ([`ToolFormat`]), each with the grammar that
//! holds `required` and named choices to valid calls ([`format`]).
//!
//! Tools reach the model through its chat template, as Hugging Face renders them (`tools` in
//! the template's context); a template that knows no tools gets them described in a system
//! message, with a generic JSON answer format that a grammar enforces.

pub mod format;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use format::ToolFormat;

use crate::{Error, Result};

/// One call of a function tool, as an assistant message carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolCall {
    /// The call's id, which the `tool` message answering it names (`call_…`).
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function called and its arguments.
    pub function: FunctionCall,
}

/// The function a [`ToolCall`] calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// Its arguments: a JSON object, as text.
    pub arguments: String,
}

impl ToolCall {
    /// A call of `name` with `arguments` (JSON text), with a fresh id.
    pub fn new(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        use rand::Rng;
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let id: String = (0..24)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        Self {
            id: format!("call_{id}"),
            kind: "function".into(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// A function tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    /// Its name: letters, digits, `_` and `-`, at most 64.
    pub name: String,
    /// The JSON schema of its arguments (an object schema; `{}` when the tool gave none).
    pub parameters: Value,
}

/// `tool_choice`: whether and which tools the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Never call a tool (the tools are left out of the prompt).
    None,
    /// Answer or call tools, as the model decides.
    Auto,
    /// Call one or more tools.
    Required,
    /// Call this function.
    Named(String),
}

/// The tools of a chat request, checked: what the template is given, what the model may or
/// must call.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTools {
    /// The tools as the request gave them (`{"type": "function", "function": {…}}`), for the
    /// chat template.
    pub definitions: Vec<Value>,
    /// Their functions, in order.
    pub functions: Vec<FunctionTool>,
    /// Whether and which tools must be called.
    pub choice: ToolChoice,
    /// Whether several calls may come in one answer.
    pub parallel: bool,
}

impl ChatTools {
    /// Reads OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`; `None` when no tools
    /// are given or `tool_choice` is `none`. Errors name the field at fault.
    pub fn from_request(
        tools: Option<&Value>,
        tool_choice: Option<&Value>,
        parallel_tool_calls: Option<bool>,
    ) -> Result<Option<Self>> {
        let definitions = match tools {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return Err(Error::invalid_field("tools", "tools must be an array")),
        };
        let functions = definitions
            .iter()
            .enumerate()
            .map(|(i, tool)| function_tool(i, tool))
            .collect::<Result<Vec<_>>>()?;
        for (i, f) in functions.iter().enumerate() {
            if functions[..i].iter().any(|g| g.name == f.name) {
                return Err(Error::invalid_field(
                    "tools",
                    format!("tools[{i}]: the function name `{}` is given twice", f.name),
                ));
            }
        }
        let choice = tool_choice_from(tool_choice, &functions)?;
        if functions.is_empty() || choice == ToolChoice::None {
            return Ok(None);
        }
        Ok(Some(Self {
            definitions,
            functions,
            choice,
            parallel: parallel_tool_calls.unwrap_or(true),
        }))
    }

    /// The functions the model may call under `tool_choice` (one, when it is named).
    pub fn callable(&self) -> impl Iterator<Item = &FunctionTool> {
        self.functions.iter().filter(|f| match &self.choice {
            ToolChoice::Named(name) => &f.name == name,
            _ => true,
        })
    }

    /// Whether the answer must be a call.
    pub fn must_call(&self) -> bool {
        matches!(self.choice, ToolChoice::Required | ToolChoice::Named(_))
    }
}

fn function_tool(index: usize, tool: &Value) -> Result<FunctionTool> {
    let bad = |message: String| Error::invalid_field("tools", format!("tools[{index}]: {message}"));
    let Some(fields) = tool.as_object() else {
        return Err(bad("a tool must be an object".into()));
    };
    match fields.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => return Err(bad(format!("tools of type `{other}` are not supported"))),
        None => return Err(bad("`type` must be `function`".into())),
    }
    let Some(function) = fields.get("function").and_then(Value::as_object) else {
        return Err(bad("`function` must be an object".into()));
    };
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`function.name` must be a string".into()))?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(bad(format!(
            "`function.name` must be 1 to 64 letters, digits, `_` or `-`, not {name:?}"
        )));
    }
    if let Some(description) = function.get("description") {
        if !description.is_string() {
            return Err(bad("`function.description` must be a string".into()));
        }
    }
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(schema @ Value::Object(_)) => {
            if let Some(kind) = schema.get("type") {
                if kind != "object" {
                    return Err(bad(
                        "`function.parameters` must be the schema of a JSON object".into(),
                    ));
                }
            }
            schema.clone()
        }
        Some(_) => return Err(bad("`function.parameters` must be a JSON schema".into())),
    };
    Ok(FunctionTool {
        name: name.to_owned(),
        parameters,
    })
}

fn tool_choice_from(value: Option<&Value>, functions: &[FunctionTool]) -> Result<ToolChoice> {
    let bad = |message: String| Error::invalid_field("tool_choice", message);
    let choice = match value {
        None | Some(Value::Null) => {
            return Ok(if functions.is_empty() {
                ToolChoice::None
            } else {
                ToolChoice::Auto
            })
        }
        Some(Value::String(mode)) => match mode.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(format!(
                    "tool_choice must be `none`, `auto`, `required` or a function, not `{other}`"
                )))
            }
        },
        Some(named) => {
            let name = named
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| named.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    bad(
                        "a named tool_choice is {\"type\": \"function\", \"function\": \
                         {\"name\": …}}"
                            .into(),
                    )
                })?;
            if !functions.iter().any(|f| f.name == name) {
                return Err(bad(format!(
                    "tool_choice names `{name}`, which is not in tools"
                )));
            }
            ToolChoice::Named(name.to_owned())
        }
    };
    if functions.is_empty() && choice != ToolChoice::None {
        return Err(bad("tool_choice needs tools".into()));
    }
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
    }

    #[test]
    fn tools_and_choices_are_read() {
        let tools = json!([weather()]);
        let auto = ChatTools::from_request(Some(&tools), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(auto.choice, ToolChoice::Auto);
        assert!(auto.parallel && !auto.must_call());
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let named = ChatTools::from_request(Some(&tools), Some(&named), Some(false))
            .unwrap()
            .unwrap();
        assert_eq!(named.choice, ToolChoice::Named("get_weather".into()));
        assert!(named.must_call() && !named.parallel);
        assert_eq!(
            ChatTools::from_request(Some(&tools), Some(&json!("none")), None).unwrap(),
            None
        );
        assert_eq!(ChatTools::from_request(None, None, None).unwrap(), None);
    }

    #[test]
    fn bad_tools_name_their_field() {
        let cases = [
            (json!({"type": "function"}), None, "tools"),
            (json!([{"type": "retrieval"}]), None, "tools"),
            (
                json!([{"type": "function", "function": {"name": "a b"}}]),
                None,
                "tools",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": 3}}]),
                None,
                "tools",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters":
                    {"type": "string"}}}]),
                None,
                "tools",
            ),
            (json!([weather(), weather()]), None, "tools"),
            (json!([weather()]), Some(json!("sometimes")), "tool_choice"),
            (
                json!([weather()]),
                Some(json!({"type": "function", "function": {"name": "other"}})),
                "tool_choice",
            ),
            (json!([]), Some(json!("required")), "tool_choice"),
        ];
        for (tools, choice, field) in cases {
            let e = ChatTools::from_request(Some(&tools), choice.as_ref(), None).unwrap_err();
            assert_eq!(e.field(), Some(field), "{tools} {choice:?}: {e}");
        }
    }
}
