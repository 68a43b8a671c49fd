//! The core's answers in Ollama's shapes: `/api/chat`'s `message` and `/api/generate`'s
//! `response`, streamed as NDJSON lines ending with a `done` line that carries the counts and
//! the durations (in nanoseconds), or whole.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use helixflow_core::calendar::{utc_date_string, DAY_SECONDS};
use helixflow_core::completion::{FinishReason, Usage};
use helixflow_core::streaming::{Answer, AnswerChunk};
use serde_json::{json, Map, Value};

/// Which API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `/api/chat`: a `message`.
    Chat,
    /// `/api/generate`: a `response`.
    Generate,
}

/// Now as Ollama writes times: RFC 3339 in UTC with nanoseconds.
pub(crate) fn created_at() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    timestamp(now.as_secs(), now.subsec_nanos())
}

/// A Unix time as Ollama writes times (RFC 3339 in UTC, with nanoseconds).
pub(crate) fn timestamp(unix_seconds: u64, nanos: u32) -> String {
    let seconds = unix_seconds as i64;
    let in_day = seconds.rem_euclid(DAY_SECONDS);
    format!(
        "{}T{:02}:{:02}:{:02}.{:09}Z",
        utc_date_string(seconds),
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60,
        nanos
    )
}

/// Shapes one request's answer; it times the prompt (until the first token) and the rest.
#[derive(Debug)]
pub(crate) struct OllamaShaper {
    shape: Shape,
    model: String,
    started: Instant,
    first_token: Option<Instant>,
    finish: Option<FinishReason>,
    /// The name of a streamed call whose arguments are still to come.
    calling: Option<String>,
}

impl OllamaShaper {
    /// A shaper for `model`'s answer to a request that arrived at `started`.
    pub(crate) fn new(shape: Shape, model: String, started: Instant) -> Self {
        Self {
            shape,
            model,
            started,
            first_token: None,
            finish: None,
            calling: None,
        }
    }

    fn line(&self, fields: Value) -> Value {
        let mut line = json!({"model": self.model, "created_at": created_at()});
        if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        line
    }

    /// The body of a message (or a generate answer) with `content`, thinking and calls.
    fn body(&self, content: &str, thinking: Option<&str>, calls: Vec<Value>) -> Value {
        match self.shape {
            Shape::Chat => {
                let mut message = json!({"role": "assistant", "content": content});
                if let Some(thinking) = thinking {
                    message["thinking"] = json!(thinking);
                }
                if !calls.is_empty() {
                    message["tool_calls"] = json!(calls);
                }
                json!({"message": message})
            }
            Shape::Generate => {
                let mut body = json!({"response": content});
                if let Some(thinking) = thinking {
                    body["thinking"] = json!(thinking);
                }
                body
            }
        }
    }

    /// The `done` fields: why it ended, the counts and the durations.
    fn done(&self, usage: Usage) -> Map<String, Value> {
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        let nanos = |d: std::time::Duration| d.as_nanos() as u64;
        let reason = match self.finish {
            Some(FinishReason::Length) => "length",
            _ => "stop",
        };
        let done = json!({"done": true, "done_reason": reason,
            "total_duration": nanos(now - self.started), "load_duration": 0,
            "prompt_eval_count": usage.prompt_tokens,
            "prompt_eval_duration": nanos(first - self.started),
            "eval_count": usage.completion_tokens, "eval_duration": nanos(now - first)});
        match done {
            Value::Object(fields) => fields,
            _ => Map::new(),
        }
    }

    /// The NDJSON line of a streamed chunk, if it makes one.
    pub(crate) fn chunk(&mut self, chunk: &AnswerChunk) -> Option<Value> {
        self.first_token.get_or_insert_with(Instant::now);
        let (text, thinking, calls, usage) = match chunk {
            AnswerChunk::Chat(chunk) => {
                let mut calls = Vec::new();
                let (mut text, mut thinking) = (String::new(), String::new());
                for choice in &chunk.choices {
                    text.push_str(choice.delta.content.as_deref().unwrap_or(""));
                    thinking.push_str(choice.delta.reasoning_content.as_deref().unwrap_or(""));
                    for piece in choice.delta.tool_calls.iter().flatten() {
                        if let Some(name) = &piece.function.name {
                            self.calling = Some(name.clone());
                        } else if let Some(name) = self.calling.take() {
                            let arguments: Value =
                                serde_json::from_str(&piece.function.arguments).unwrap_or_default();
                            calls.push(json!({"function": {"name": name, "arguments": arguments}}));
                        }
                    }
                    self.finish = choice.finish_reason.or(self.finish);
                }
                (text, thinking, calls, chunk.usage)
            }
            AnswerChunk::Text(chunk) => {
                let text: String = chunk.choices.iter().map(|c| c.text.as_str()).collect();
                if let Some(finish) = chunk.choices.iter().find_map(|c| c.finish_reason) {
                    self.finish = Some(finish);
                }
                (text, String::new(), Vec::new(), chunk.usage)
            }
        };
        if let Some(usage) = usage {
            let mut line = self.line(self.body("", None, Vec::new()));
            if let Some(fields) = line.as_object_mut() {
                fields.extend(self.done(usage));
            }
            return Some(line);
        }
        if text.is_empty() && thinking.is_empty() && calls.is_empty() {
            return None;
        }
        let thinking = (!thinking.is_empty()).then_some(thinking.as_str());
        let mut line = self.line(self.body(&text, thinking, calls));
        line["done"] = json!(false);
        Some(line)
    }

    /// A whole answer, whose first token came at `first_token`.
    pub(crate) fn whole(&mut self, answer: &Answer, first_token: Option<Instant>) -> Value {
        self.first_token = first_token;
        let (body, usage) = match answer {
            Answer::Chat(answer) => {
                let choice = &answer.choices[0];
                self.finish = Some(choice.finish_reason);
                let calls = choice
                    .message
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|c| {
                        let arguments: Value =
                            serde_json::from_str(&c.function.arguments).unwrap_or_default();
                        json!({"function": {"name": c.function.name, "arguments": arguments}})
                    })
                    .collect();
                let thinking = choice.message.reasoning_content.as_deref();
                (
                    self.body(&choice.message.content, thinking, calls),
                    answer.usage,
                )
            }
            Answer::Text(answer) => {
                let choice = &answer.choices[0];
                self.finish = Some(choice.finish_reason);
                (self.body(&choice.text, None, Vec::new()), answer.usage)
            }
        };
        let mut line = self.line(body);
        if let Some(fields) = line.as_object_mut() {
            fields.extend(self.done(usage));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_with_nanoseconds() {
        let t = super::created_at();
        assert_eq!(t.len(), "2024-01-02T03:04:05.123456789Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
