//! The core's answer in Anthropic's shapes: a whole chat completion as a `message`, and the
//! chunks of a streamed one as Anthropic's events (`message_start`, a block's
//! `content_block_start`, deltas and `content_block_stop`, then `message_delta` and
//! `message_stop`).

use helixflow_core::completion::{ChatCompletion, ChatCompletionChunk, FinishReason, Usage};
use serde_json::{json, Value};

/// Anthropic's `stop_reason` for a finish reason.
fn stop_reason(finish: Option<FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls) => "tool_use",
        Some(FinishReason::Stop) | None => "end_turn",
    }
}

/// Anthropic's id of the answer whose OpenAI id is `id`.
pub(crate) fn message_id(id: &str) -> String {
    format!("msg_{}", id.rsplit('-').next().unwrap_or(id))
}

/// A whole answer as an Anthropic `message`: its thinking, text and tool calls as blocks.
pub(crate) fn message(answer: &ChatCompletion) -> Value {
    let choice = &answer.choices[0];
    let reply = &choice.message;
    let mut content = Vec::new();
    if let Some(thinking) = reply.reasoning_content.as_deref() {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    if !reply.content.is_empty() {
        content.push(json!({"type": "text", "text": reply.content}));
    }
    for call in reply.tool_calls.iter().flatten() {
        let input: Value = serde_json::from_str(&call.function.arguments).unwrap_or_default();
        content.push(
            json!({"type": "tool_use", "id": call.id, "name": call.function.name,
            "input": input}),
        );
    }
    json!({
        "id": message_id(&answer.id),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": stop_reason(Some(choice.finish_reason)),
        "stop_sequence": null,
        "usage": usage(answer.usage),
    })
}

fn usage(usage: Usage) -> Value {
    json!({"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens})
}

/// The content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Thinking,
    ToolUse,
}

/// Turns a streamed answer's chunks (with the usage chunk at the end) into Anthropic's events.
#[derive(Debug, Default)]
pub(crate) struct EventShaper {
    started: bool,
    /// The open block and its index.
    open: Option<(Block, usize)>,
    blocks: usize,
    finish: Option<FinishReason>,
}

/// One server-sent event: its name and data.
pub(crate) type NamedEvent = (&'static str, Value);

impl EventShaper {
    /// The events of `chunk`; `prompt_tokens` is the prompt's length (for `message_start`).
    pub(crate) fn chunk(
        &mut self,
        chunk: &ChatCompletionChunk,
        prompt_tokens: usize,
    ) -> Vec<NamedEvent> {
        let mut events = Vec::new();
        if !self.started {
            self.started = true;
            let start = json!({"id": message_id(&chunk.id), "type": "message", "role": "assistant",
                "model": chunk.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": 0}});
            events.push((
                "message_start",
                json!({"type": "message_start", "message": start}),
            ));
        }
        for choice in &chunk.choices {
            let delta = &choice.delta;
            if let Some(thinking) = delta.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
                let index = self.open_block(
                    Block::Thinking,
                    json!({"type": "thinking",
                    "thinking": ""}),
                    &mut events,
                );
                events.push(delta_event(
                    index,
                    json!({"type": "thinking_delta", "thinking": thinking}),
                ));
            }
            if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                let index = self.open_block(
                    Block::Text,
                    json!({"type": "text", "text": ""}),
                    &mut events,
                );
                events.push(delta_event(
                    index,
                    json!({"type": "text_delta", "text": text}),
                ));
            }
            for piece in delta.tool_calls.iter().flatten() {
                if let (Some(id), Some(name)) = (&piece.id, &piece.function.name) {
                    self.close_block(&mut events);
                    let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                    self.open_block(Block::ToolUse, block, &mut events);
                }
                if let (false, Some((Block::ToolUse, index))) =
                    (piece.function.arguments.is_empty(), self.open)
                {
                    events.push(delta_event(
                        index,
                        json!({"type": "input_json_delta",
                        "partial_json": piece.function.arguments}),
                    ));
                }
            }
            self.finish = choice.finish_reason.or(self.finish);
        }
        if let Some(usage) = chunk.usage {
            self.close_block(&mut events);
            events.push((
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason(self.finish), "stop_sequence": null},
                "usage": {"output_tokens": usage.completion_tokens}}),
            ));
            events.push(("message_stop", json!({"type": "message_stop"})));
        }
        events
    }

    /// The index of an open block of `kind`, opening one (and closing another) if needed.
    fn open_block(&mut self, kind: Block, start: Value, events: &mut Vec<NamedEvent>) -> usize {
        match self.open {
            Some((open, index)) if open == kind && kind != Block::ToolUse => index,
            _ => {
                self.close_block(events);
                let index = self.blocks;
                self.blocks += 1;
                self.open = Some((kind, index));
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start",
                    "index": index, "content_block": start}),
                ));
                index
            }
        }
    }

    fn close_block(&mut self, events: &mut Vec<NamedEvent>) {
        if let Some((_, index)) = self.open.take() {
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }
}

fn delta_event(index: usize, delta: Value) -> NamedEvent {
    (
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

/// Anthropic's error `type` for an HTTP status.
pub(crate) fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Anthropic's error body.
pub(crate) fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}
