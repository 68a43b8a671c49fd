//! The core's answer as a Responses `response`: its thinking, text and tool calls as output
//! items (`reasoning`, `message`, `function_call`), and the chunks of a streamed answer as
//! the Responses events (`response.created`, each item's `output_item.added`, deltas and
//! `output_item.done`, then `response.completed` or `response.incomplete`).

use helixflow_core::chat_template::ChatMessage;
use helixflow_core::completion::{
    new_id, ChatCompletion, ChatCompletionChunk, FinishReason, Usage,
};
use helixflow_core::tools::{FunctionCall, ToolCall};
use serde_json::{json, Value};

use super::wire::Echo;

/// An output item's id: `prefix` and random hex, as OpenAI writes them (`msg_…`, `fc_…`).
fn item_id(prefix: &str) -> String {
    new_id(prefix).replace('-', "_")
}

/// The response id of the answer whose chat completion id is `id`.
pub(crate) fn response_id(id: &str) -> String {
    format!("resp_{}", id.rsplit('-').next().unwrap_or(id))
}

/// What every response object of one request shares.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    pub(crate) id: String,
    pub(crate) created_at: u64,
    pub(crate) model: String,
    pub(crate) echo: Echo,
}

impl ResponseHead {
    /// The response object: `status`, its `output` items, and (once done) its usage.
    pub(crate) fn object(&self, status: &str, output: &[Value], usage: Option<Usage>) -> Value {
        let echo = &self.echo;
        let incomplete = if status == "incomplete" {
            json!({"reason": "max_output_tokens"})
        } else {
            Value::Null
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": echo.instructions,
            "max_output_tokens": echo.max_output_tokens,
            "metadata": echo.metadata,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": echo.parallel_tool_calls,
            "previous_response_id": echo.previous_response_id,
            "reasoning": {"effort": null, "summary": null},
            "store": echo.store,
            "temperature": echo.temperature,
            "text": echo.text,
            "tool_choice": echo.tool_choice,
            "tools": echo.tools,
            "top_p": echo.top_p,
            "truncation": "disabled",
            "usage": usage.map(usage_object),
            "user": echo.user,
        })
    }

    /// A failed response, with the error that ended it.
    pub(crate) fn failed(&self, output: &[Value], code: &str, message: &str) -> Value {
        let mut object = self.object("failed", output, None);
        object["error"] = json!({"code": code, "message": message});
        object
    }
}

/// `completed`, or `incomplete` when the answer ran out of tokens.
fn status(finish: Option<FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "incomplete",
        _ => "completed",
    }
}

fn usage_object(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    })
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [],
        "content": [{"type": "reasoning_text", "text": text}], "status": "completed"})
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([text_part(text)])
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": content})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status})
}

/// A whole answer as a response object, and the answer as the assistant message that a
/// response following it continues from.
pub(crate) fn whole(head: &ResponseHead, answer: &ChatCompletion) -> (Value, ChatMessage) {
    let choice = &answer.choices[0];
    let reply = &choice.message;
    let mut output = Vec::new();
    if let Some(thinking) = reply.reasoning_content.as_deref() {
        output.push(reasoning_item(&item_id("rs"), thinking));
    }
    if !reply.content.is_empty() || reply.tool_calls.is_none() {
        output.push(message_item(&item_id("msg"), &reply.content, "completed"));
    }
    for call in reply.tool_calls.iter().flatten() {
        output.push(call_item(
            &item_id("fc"),
            &call.id,
            &call.function.name,
            &call.function.arguments,
            "completed",
        ));
    }
    let finish = Some(choice.finish_reason);
    let object = head.object(status(finish), &output, Some(answer.usage));
    (object, reply.clone())
}

/// The item being streamed.
#[derive(Debug)]
enum Open {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// One server-sent event: its name and data.
pub(crate) type NamedEvent = (&'static str, Value);

/// Turns a streamed answer's chunks (with the usage chunk at the end) into the Responses
/// events, numbering them.
#[derive(Debug)]
pub(crate) struct EventShaper {
    head: ResponseHead,
    sequence: u64,
    started: bool,
    open: Option<Open>,
    /// The finished items, in order.
    output: Vec<Value>,
    finish: Option<FinishReason>,
    /// The answer as a message, for the conversation a later response continues.
    reply: ChatMessage,
    /// The last response object, once the answer is done.
    done: Option<Value>,
}

impl EventShaper {
    pub(crate) fn new(head: ResponseHead) -> Self {
        Self {
            head,
            sequence: 0,
            started: false,
            open: None,
            output: Vec::new(),
            finish: None,
            reply: ChatMessage::new("assistant", ""),
            done: None,
        }
    }

    fn event(&mut self, kind: &'static str, mut data: Value) -> NamedEvent {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        (kind, data)
    }

    /// The events that open the stream (before the first chunk).
    pub(crate) fn start(&mut self) -> Vec<NamedEvent> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        let response = self.head.object("in_progress", &[], None);
        vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    /// The events of `chunk`.
    pub(crate) fn chunk(&mut self, chunk: &ChatCompletionChunk) -> Vec<NamedEvent> {
        let mut events = self.start();
        for choice in &chunk.choices {
            let delta = &choice.delta;
            if let Some(thinking) = delta.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    self.close(&mut events);
                    let id = item_id("rs");
                    let item = json!({"type": "reasoning", "id": id, "summary": [],
                        "content": [], "status": "in_progress"});
                    let index = self.output.len();
                    events.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    ));
                    let part = json!({"type": "reasoning_text", "text": ""});
                    events.push(self.event(
                        "response.content_part.added",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                            "part": part}),
                    ));
                    self.open = Some(Open::Reasoning {
                        id,
                        text: String::new(),
                    });
                }
                if let Some(Open::Reasoning { id, text }) = &mut self.open {
                    text.push_str(thinking);
                    let data = json!({"item_id": id, "output_index": self.output.len(),
                        "content_index": 0, "delta": thinking});
                    events.push(self.event("response.reasoning_text.delta", data));
                }
            }
            if let Some(piece) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.close(&mut events);
                    self.open_message(&mut events);
                }
                if let Some(Open::Message { id, text }) = &mut self.open {
                    text.push_str(piece);
                    let data = json!({"item_id": id, "output_index": self.output.len(),
                        "content_index": 0, "delta": piece, "logprobs": []});
                    events.push(self.event("response.output_text.delta", data));
                }
            }
            for piece in delta.tool_calls.iter().flatten() {
                if let (Some(call_id), Some(name)) = (&piece.id, &piece.function.name) {
                    self.close(&mut events);
                    let id = item_id("fc");
                    let item = call_item(&id, call_id, name, "", "in_progress");
                    let index = self.output.len();
                    events.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    ));
                    self.open = Some(Open::Call {
                        id,
                        call_id: call_id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                    });
                }
                let fragment = &piece.function.arguments;
                if let (false, Some(Open::Call { id, arguments, .. })) =
                    (fragment.is_empty(), &mut self.open)
                {
                    arguments.push_str(fragment);
                    let data = json!({"item_id": id, "output_index": self.output.len(),
                        "delta": fragment});
                    events.push(self.event("response.function_call_arguments.delta", data));
                }
            }
            self.finish = choice.finish_reason.or(self.finish);
        }
        if let Some(usage) = chunk.usage {
            if self.output.is_empty() && self.open.is_none() {
                // An empty answer is still a message.
                self.open_message(&mut events);
            }
            self.close(&mut events);
            let status = status(self.finish);
            let response = self.head.object(status, &self.output, Some(usage));
            let kind = if status == "completed" {
                "response.completed"
            } else {
                "response.incomplete"
            };
            events.push(self.event(kind, json!({"response": response})));
            self.done = Some(response);
        }
        events
    }

    fn open_message(&mut self, events: &mut Vec<NamedEvent>) {
        let id = item_id("msg");
        let index = self.output.len();
        let item = message_item(&id, "", "in_progress");
        events.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
        events.push(self.event(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
        ));
        self.open = Some(Open::Message {
            id,
            text: String::new(),
        });
    }

    /// Finishes the open item: its `done` events, and the item among the output.
    fn close(&mut self, events: &mut Vec<NamedEvent>) {
        let Some(open) = self.open.take() else {
            return;
        };
        let index = self.output.len();
        let item = match open {
            Open::Reasoning { id, text } => {
                let part = json!({"type": "reasoning_text", "text": text});
                events.push(self.event(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "text": text}),
                ));
                events.push(self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": part}),
                ));
                self.reply
                    .reasoning_content
                    .get_or_insert_with(String::new)
                    .push_str(&text);
                reasoning_item(&id, &text)
            }
            Open::Message { id, text } => {
                events.push(self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "text": text, "logprobs": []}),
                ));
                events.push(self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": text_part(&text)}),
                ));
                self.reply.content.push_str(&text);
                message_item(&id, &text, "completed")
            }
            Open::Call {
                id,
                call_id,
                name,
                arguments,
            } => {
                events.push(self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name,
                        "arguments": arguments}),
                ));
                self.reply
                    .tool_calls
                    .get_or_insert_with(Vec::new)
                    .push(ToolCall {
                        id: call_id.clone(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: name.clone(),
                            arguments: arguments.clone(),
                        },
                    });
                call_item(&id, &call_id, &name, &arguments, "completed")
            }
        };
        events.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
        self.output.push(item);
    }

    /// The events of a failure mid-stream: `response.failed`, with what was output.
    pub(crate) fn failed(&mut self, code: &str, message: &str) -> Vec<NamedEvent> {
        let mut events = self.start();
        let response = self.head.failed(&self.output, code, message);
        events.push(self.event("response.failed", json!({"response": response})));
        events
    }

    /// The finished response and the answer as a message, once the last chunk is in.
    pub(crate) fn finished(&self) -> Option<(&Value, &ChatMessage)> {
        self.done.as_ref().map(|done| (done, &self.reply))
    }
}
