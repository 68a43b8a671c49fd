//! Translation between the protobuf messages and the core's types.

use helixflow_core::chat_template::ChatMessage;
use helixflow_core::completion::{FinishReason, Usage};
use helixflow_core::generation::TokenOutput;
use helixflow_core::request::{GenerationOptions, Stop};
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
    };
    Ok((options, o.logprobs, Some(o.top_logprobs as usize)))
}

/// The conversation in the core's terms.
pub(crate) fn messages(messages: Vec<proto::ChatMessage>) -> Vec<ChatMessage> {
    messages
        .into_iter()
        .map(|m| ChatMessage::new(m.role, m.content))
        .collect()
}

/// One generated token of choice `choice`.
pub(crate) fn token(choice: usize, output: TokenOutput) -> proto::Token {
    let finish_reason = match output.finish {
        None => proto::FinishReason::Unspecified,
        Some(FinishReason::Stop) => proto::FinishReason::Stop,
        Some(FinishReason::Length) => proto::FinishReason::Length,
    };
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
