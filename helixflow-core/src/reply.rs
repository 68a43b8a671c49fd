//! An assistant's generated text split into what OpenAI's message has apart: its thinking
//! (`<think>…</think>`, as Qwen3 and DeepSeek-R1 write it) as `reasoning_content`, its tool
//! calls (in the model's [`ToolFormat`]) as `tool_calls`, and the rest as `content`.
//!
//! [`ReplySplitter`] takes the text as it is generated and hands out what is certain so far,
//! holding back what may still turn out to be a marker; a whole answer is the same text
//! pushed at once, so streamed and whole answers agree by construction.

use serde_json::Value;

use crate::tools::{ToolCall, ToolFormat};

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
/// Llama 3.x's and Mistral's markers, where a model's vocabulary has them as text.
const PYTHON_TAG: &str = "<|python_tag|>";
const MISTRAL_CALLS: &str = "[TOOL_CALLS]";

/// Where an answer may think.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reasoning {
    /// The model does not think aloud: all text is content.
    #[default]
    Off,
    /// The answer may open with `<think>`.
    Optional,
    /// The prompt opened `<think>` already: the answer starts in thought.
    Open,
}

/// What to look for in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplySyntax {
    /// The format of tool calls, when the request has tools.
    pub tools: Option<ToolFormat>,
    /// Whether and how the answer thinks.
    pub reasoning: Reasoning,
}

impl ReplySyntax {
    /// Whether any text may be other than content.
    pub fn is_plain(&self) -> bool {
        self.tools.is_none() && self.reasoning == Reasoning::Off
    }
}

/// What a piece of text turned out to hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyDelta {
    /// New content.
    pub content: String,
    /// New thinking.
    pub reasoning: String,
    /// Calls completed.
    pub calls: Vec<ToolCall>,
}

impl ReplyDelta {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.content.is_empty() && self.reasoning.is_empty() && self.calls.is_empty()
    }

    /// Adds what `other` holds after what this holds.
    pub fn append(&mut self, other: ReplyDelta) {
        self.content.push_str(&other.content);
        self.reasoning.push_str(&other.reasoning);
        self.calls.extend(other.calls);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing decided yet: thinking may open.
    Start,
    Thinking,
    /// Content, where calls may still begin.
    Content,
    /// Inside a Hermes `<tool_call>` block.
    HermesCall,
    /// An answer that is JSON calls (or the generic format's JSON), gathered to its end.
    JsonCalls,
}

/// Splits one answer's text as it comes; see the module's documentation.
#[derive(Debug, Clone)]
pub struct ReplySplitter {
    syntax: ReplySyntax,
    state: State,
    /// Text not yet handed out.
    held: String,
    /// Leading whitespace of what follows is dropped (after `</think>` or a call).
    trim_start: bool,
    /// Whether content has been handed out (JSON calls must open the content).
    content_started: bool,
    calls: usize,
}

impl ReplySplitter {
    /// A splitter for an answer written in `syntax`.
    pub fn new(syntax: ReplySyntax) -> Self {
        let state = match syntax.reasoning {
            Reasoning::Off => State::Content,
            Reasoning::Optional => State::Start,
            Reasoning::Open => State::Thinking,
        };
        Self {
            syntax,
            state,
            held: String::new(),
            trim_start: false,
            content_started: false,
            calls: 0,
        }
    }

    /// Whether the answer has called a tool.
    pub fn has_called(&self) -> bool {
        self.calls > 0
    }

    /// Takes the next piece of text: what it makes certain.
    pub fn push(&mut self, text: &str) -> ReplyDelta {
        self.held.push_str(text);
        let mut out = ReplyDelta::default();
        while self.step(&mut out, false) {}
        out
    }

    /// The answer has ended: everything still held, as what it is.
    pub fn finish(&mut self) -> ReplyDelta {
        let mut out = ReplyDelta::default();
        while self.step(&mut out, true) {}
        out
    }

    /// One move of the state machine; `false` when it needs more text (or, at the end, has
    /// handed out everything).
    fn step(&mut self, out: &mut ReplyDelta, end: bool) -> bool {
        if self.trim_start {
            let trimmed = self.held.trim_start().len();
            self.held.drain(..self.held.len() - trimmed);
            if self.held.is_empty() && !end {
                return false;
            }
            self.trim_start = false;
        }
        match self.state {
            State::Start => {
                let head = self.held.trim_start();
                if let Some(rest) = head.strip_prefix(THINK_OPEN) {
                    self.held = rest.to_owned();
                    self.state = State::Thinking;
                } else if THINK_OPEN.starts_with(head) && !end {
                    return false;
                } else {
                    self.state = State::Content;
                }
                true
            }
            State::Thinking => match self.held.find(THINK_CLOSE) {
                Some(at) => {
                    out.reasoning.push_str(&self.held[..at]);
                    self.held.drain(..at + THINK_CLOSE.len());
                    self.state = State::Content;
                    self.trim_start = true;
                    true
                }
                None => {
                    let keep = if end {
                        0
                    } else {
                        marker_prefix_len(&self.held, THINK_CLOSE)
                    };
                    out.reasoning.push_str(&self.held[..self.held.len() - keep]);
                    self.held.drain(..self.held.len() - keep);
                    false
                }
            },
            State::Content => self.content(out, end),
            State::HermesCall => match self.held.find(HERMES_CLOSE) {
                Some(at) => {
                    let body = self.held[..at].to_owned();
                    self.held.drain(..at + HERMES_CLOSE.len());
                    self.hermes_call(&body, true, out);
                    self.state = State::Content;
                    self.trim_start = true;
                    true
                }
                None if end => {
                    let body = std::mem::take(&mut self.held);
                    self.hermes_call(&body, false, out);
                    false
                }
                None => false,
            },
            State::JsonCalls => {
                if end {
                    let text = std::mem::take(&mut self.held);
                    self.json_calls(&text, out);
                }
                false
            }
        }
    }

    fn content(&mut self, out: &mut ReplyDelta, end: bool) -> bool {
        let Some(format) = self.syntax.tools else {
            out.content.push_str(&self.held);
            self.content_started |= !self.held.is_empty();
            self.held.clear();
            return false;
        };
        if format == ToolFormat::Hermes {
            if let Some(at) = self.held.find(HERMES_OPEN) {
                self.emit_content(at, out);
                self.held.drain(..HERMES_OPEN.len());
                self.state = State::HermesCall;
                return true;
            }
            let keep = if end {
                0
            } else {
                marker_prefix_len(&self.held, HERMES_OPEN)
            };
            self.emit_content(self.held.len() - keep, out);
            return false;
        }
        // The other formats' calls are the whole answer: JSON from its first character, or
        // after the format's marker where that is text rather than a special token.
        if !self.content_started {
            let head = self.held.trim_start();
            let opens = json_openings(format);
            if opens.iter().any(|open| head.starts_with(open)) {
                self.state = State::JsonCalls;
                return true;
            }
            if !end && opens.iter().any(|open| open.starts_with(head)) {
                return false;
            }
        }
        self.emit_content(self.held.len(), out);
        false
    }

    /// Hands out the first `len` bytes held as content.
    fn emit_content(&mut self, len: usize, out: &mut ReplyDelta) {
        out.content.push_str(&self.held[..len]);
        self.content_started |= len > 0;
        self.held.drain(..len);
    }

    /// A Hermes block's body: a call, or (when it is none) the block as content.
    fn hermes_call(&mut self, body: &str, closed: bool, out: &mut ReplyDelta) {
        match serde_json::from_str::<Value>(body.trim())
            .ok()
            .and_then(|v| call_of(&v))
        {
            Some(call) => {
                self.calls += 1;
                out.calls.push(call);
            }
            None => {
                out.content.push_str(HERMES_OPEN);
                out.content.push_str(body);
                if closed {
                    out.content.push_str(HERMES_CLOSE);
                }
                self.content_started = true;
            }
        }
    }

    /// A whole answer of JSON: calls, the generic format's content, or (when it is
    /// neither) content as written.
    fn json_calls(&mut self, text: &str, out: &mut ReplyDelta) {
        let json = text.trim();
        let json = [PYTHON_TAG, MISTRAL_CALLS]
            .iter()
            .find_map(|marker| json.strip_prefix(marker))
            .unwrap_or(json);
        let calls = parse_json_calls(json.trim());
        match calls {
            Some(JsonAnswer::Calls(calls)) if !calls.is_empty() => {
                self.calls += calls.len();
                out.calls.extend(calls);
            }
            Some(JsonAnswer::Content(content))
                if self.syntax.tools == Some(ToolFormat::Generic) =>
            {
                out.content.push_str(&content);
            }
            _ => out.content.push_str(text),
        }
    }
}

/// How an answer that is calls may begin, in `format` (not Hermes, whose calls are blocks).
fn json_openings(format: ToolFormat) -> &'static [&'static str] {
    match format {
        ToolFormat::Llama3 => &["{", PYTHON_TAG],
        ToolFormat::Mistral => &["[", "{"],
        _ => &["{"],
    }
}

/// Splits a whole answer at once.
pub fn split_reply(syntax: ReplySyntax, text: &str) -> (ReplyDelta, bool) {
    let mut splitter = ReplySplitter::new(syntax);
    let mut all = splitter.push(text);
    all.append(splitter.finish());
    (all, splitter.has_called())
}

enum JsonAnswer {
    Calls(Vec<ToolCall>),
    Content(String),
}

/// Calls written as JSON: one call object, a list of them, several separated by `;` (Llama
/// 3.x), or the generic format's `{"tool_calls": […]}` / `{"content": "…"}`.
fn parse_json_calls(text: &str) -> Option<JsonAnswer> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        if let Some(content) = value.get("content").and_then(Value::as_str) {
            if value.as_object().is_some_and(|o| o.len() == 1) {
                return Some(JsonAnswer::Content(content.to_owned()));
            }
        }
        let items: &[Value] = match &value {
            Value::Array(items) => items,
            Value::Object(fields) => match fields.get("tool_calls") {
                Some(Value::Array(items)) => items,
                _ => std::slice::from_ref(&value),
            },
            _ => return None,
        };
        return items
            .iter()
            .map(call_of)
            .collect::<Option<Vec<_>>>()
            .map(JsonAnswer::Calls);
    }
    text.split(';')
        .map(|part| {
            serde_json::from_str::<Value>(part.trim())
                .ok()
                .and_then(|v| call_of(&v))
        })
        .collect::<Option<Vec<_>>>()
        .map(JsonAnswer::Calls)
}

/// A call object: `name` and its `arguments` (or Llama's `parameters`), an object or the
/// text of one.
fn call_of(value: &Value) -> Option<ToolCall> {
    let name = value.get("name")?.as_str()?;
    let arguments = value.get("arguments").or_else(|| value.get("parameters"))?;
    let arguments = match arguments {
        Value::Object(_) => arguments.to_string(),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(object @ Value::Object(_)) => object.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    Some(ToolCall::new(name, arguments))
}

/// The length of the longest end of `text` that begins `marker` (text that may yet become
/// it), on a character boundary.
fn marker_prefix_len(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(tools: Option<ToolFormat>, reasoning: Reasoning) -> ReplySyntax {
        ReplySyntax { tools, reasoning }
    }

    /// The text pushed in every split into pieces gives what the whole gives.
    fn split_every_way(syntax: ReplySyntax, text: &str) -> ReplyDelta {
        let (whole, _) = split_reply(syntax, text);
        let chars: Vec<char> = text.chars().collect();
        for size in 1..=4 {
            let mut splitter = ReplySplitter::new(syntax);
            let mut all = ReplyDelta::default();
            for piece in chars.chunks(size) {
                all.append(splitter.push(&piece.iter().collect::<String>()));
            }
            all.append(splitter.finish());
            assert_eq!(all.content, whole.content, "{size}");
            assert_eq!(all.reasoning, whole.reasoning, "{size}");
            let names = |d: &ReplyDelta| {
                d.calls
                    .iter()
                    .map(|c| (c.function.name.clone(), c.function.arguments.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&all), names(&whole), "{size}");
        }
        whole
    }

    #[test]
    fn thinking_goes_to_reasoning() {
        let out = split_every_way(
            syntax(None, Reasoning::Optional),
            "<think>\nhmm <b>\n</think>\n\nHello <think>",
        );
        assert_eq!(out.reasoning, "\nhmm <b>\n");
        assert_eq!(out.content, "Hello <think>");
        let open = split_every_way(syntax(None, Reasoning::Open), "x</think>y");
        assert_eq!((open.reasoning.as_str(), open.content.as_str()), ("x", "y"));
        let none = split_every_way(syntax(None, Reasoning::Optional), "<thin");
        assert_eq!(none.content, "<thin");
    }

    #[test]
    fn hermes_calls_are_parsed_between_content() {
        let text = "Let me look.<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n\
                    </tool_call>\n<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>";
        let out = split_every_way(syntax(Some(ToolFormat::Hermes), Reasoning::Off), text);
        assert_eq!(out.content, "Let me look.");
        assert_eq!(out.calls.len(), 2);
        assert_eq!(out.calls[0].function.arguments, "{\"a\":1}");
        assert_eq!(out.calls[1].function.name, "g");
        let broken = "<tool_call>\nnot json\n</tool_call>";
        let out = split_every_way(syntax(Some(ToolFormat::Hermes), Reasoning::Off), broken);
        assert_eq!(out.content, broken);
        assert!(out.calls.is_empty());
    }

    #[test]
    fn json_formats() {
        let llama = "{\"name\": \"f\", \"parameters\": {\"x\": \"y\"}}";
        let out = split_every_way(syntax(Some(ToolFormat::Llama3), Reasoning::Off), llama);
        assert_eq!(out.calls[0].function.arguments, "{\"x\":\"y\"}");
        let mistral =
            "[{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"g\", \"arguments\": {}}]";
        let out = split_every_way(syntax(Some(ToolFormat::Mistral), Reasoning::Off), mistral);
        assert_eq!(out.calls.len(), 2);
        let tagged = format!("<|python_tag|>{llama}");
        let out = split_every_way(syntax(Some(ToolFormat::Llama3), Reasoning::Off), &tagged);
        assert_eq!(out.calls.len(), 1);
        let marked = format!("[TOOL_CALLS]{mistral}");
        let out = split_every_way(syntax(Some(ToolFormat::Mistral), Reasoning::Off), &marked);
        assert_eq!((out.calls.len(), out.content.as_str()), (2, ""));
        let out = split_every_way(
            syntax(Some(ToolFormat::Llama3), Reasoning::Off),
            "<b>hi</b>",
        );
        assert_eq!(out.content, "<b>hi</b>");
        let generic = syntax(Some(ToolFormat::Generic), Reasoning::Off);
        let out = split_every_way(generic, "{\"content\": \"Hi {there}\"}");
        assert_eq!((out.content.as_str(), out.calls.len()), ("Hi {there}", 0));
        let out = split_every_way(
            generic,
            "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"q\": [1]}}]}",
        );
        assert_eq!(out.calls[0].function.arguments, "{\"q\":[1]}");
        let out = split_every_way(generic, "Plain words.");
        assert_eq!(out.content, "Plain words.");
    }
}
