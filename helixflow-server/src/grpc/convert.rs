//! Translation between the protobuf messages and the core's types.

use helixflow_core::chat_template::ChatMessage;
use helixflow_core::completion::{FinishReason, Usage};
use helixflow_core::generation::TokenOutput;
use helixflow_core::reply::ReplyDelta;
use helixflow_core::request::{GenerationOptions, Stop};
use helixflow_core::tools::{FunctionCall, ToolCall};
use helixflow_core::Error;

use super::proto;

/// The request's options as the core takes them from every front end (defaults and checks
/// are the core's), with the `logprobs` switch and the number of alternatives per token.
/// The structured-output fields are JSON text; text that is not JSON names its field.
pub(crate) fn options(
    options: Option<proto::GenerationOptions>,
) -> Result<(GenerationOptions, bool, Option<usize>), Error> {
    let o = options.unwrap_or_default();
    let json = |field: &str, text: Option<String>| {
        text.map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| Error::invalid_field(field, format!("{field} is not JSON: {e}")))
        })
        .transpose()
    };
    let options = GenerationOptions {
        n: o.n.map(|n| n as usize),
        // Seeds are signed in the OpenAI API; the bits are the seed either way.
        seed: o.seed.map(|s| i64::from_ne_bytes(s.to_ne_bytes())),
        stop: (!o.stop.is_empty()).then_some(Stop::Many(o.stop)),
        max_tokens: o.max_tokens.map(|m| m as usize),
        max_completion_tokens: None,
        temperature: o.temperature,
        top_p: o.top_p,
        frequency_penalty: o.frequency_penalty,
        presence_penalty: o.presence_penalty,
        logit_bias: (!o.logit_bias.is_empty()).then(|| {
            o.logit_bias
                .into_iter()
                .map(|(id, bias)| (id.to_string(), bias))
                .collect()
        }),
        top_k: o.top_k.map(|k| k as usize),
        min_p: o.min_p,
        repetition_penalty: o.repetition_penalty,
        ignore_eos: o.ignore_eos,
        response_format: json("response_format", o.response_format)?,
        structured_outputs: json("structured_outputs", o.structured_outputs)?,
        tools: json("tools", o.tools)?,
        tool_choice: json("tool_choice", o.tool_choice)?,
        parallel_tool_calls: o.parallel_tool_calls,
        chat_template_kwargs: match json("chat_template_kwargs", o.chat_template_kwargs)? {
            None => None,
            Some(serde_json::Value::Object(kwargs)) => Some(kwargs),
            Some(_) => {
                return Err(Error::invalid_field(
                    "chat_template_kwargs",
                    "chat_template_kwargs must be a JSON object",
                ))
            }
        },
    };
    Ok((options, o.logprobs, Some(o.top_logprobs as usize)))
}

/// The conversation in the core's terms.
pub(crate) fn messages(messages: Vec<proto::ChatMessage>) -> Vec<ChatMessage> {
    messages
        .into_iter()
        .map(|m| ChatMessage {
            tool_calls: (!m.tool_calls.is_empty())
                .then(|| m.tool_calls.into_iter().map(core_call).collect()),
            tool_call_id: m.tool_call_id,
            reasoning_content: m.reasoning_content,
            ..ChatMessage::new(m.role, m.content)
        })
        .collect()
}

fn core_call(call: proto::ToolCall) -> ToolCall {
    ToolCall {
        id: call.id,
        kind: "function".into(),
        function: FunctionCall {
            name: call.name,
            arguments: call.arguments,
        },
    }
}

/// A chat choice's whole answer, read as a message.
pub(crate) fn reply(
    choice: usize,
    reply: ReplyDelta,
    finish: Option<FinishReason>,
) -> proto::Reply {
    proto::Reply {
        choice: choice as u32,
        content: reply.content,
        reasoning_content: (!reply.reasoning.is_empty()).then_some(reply.reasoning),
        tool_calls: reply
            .calls
            .into_iter()
            .map(|c| proto::ToolCall {
                id: c.id,
                name: c.function.name,
                arguments: c.function.arguments,
            })
            .collect(),
        finish_reason: finish_reason(finish).into(),
    }
}

fn finish_reason(finish: Option<FinishReason>) -> proto::FinishReason {
    match finish {
        None => proto::FinishReason::Unspecified,
        Some(FinishReason::Stop) => proto::FinishReason::Stop,
        Some(FinishReason::Length) => proto::FinishReason::Length,
        Some(FinishReason::ToolCalls) => proto::FinishReason::ToolCalls,
    }
}

/// One generated token of choice `choice`.
pub(crate) fn token(choice: usize, output: TokenOutput) -> proto::Token {
    let finish_reason = finish_reason(output.finish);
    let (logprob, top_logprobs) = match output.logprob {
        Some(lp) => (
            Some(lp.logprob),
            lp.top_logprobs
                .into_iter()
                .map(|t| proto::TopLogprob {
                    token: t.token,
                    logprob: t.logprob,
                })
                .collect(),
        ),
        None => (None, Vec::new()),
    };
    proto::Token {
        choice: choice as u32,
        token_id: output.token,
        text: output.text,
        logprob,
        top_logprobs,
        finish_reason: finish_reason.into(),
    }
}

/// Token counts.
pub(crate) fn usage(usage: Usage) -> proto::Usage {
    proto::Usage {
        prompt_tokens: usage.prompt_tokens as u32,
        completion_tokens: usage.completion_tokens as u32,
        total_tokens: usage.total_tokens as u32,
    }
}
