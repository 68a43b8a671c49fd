//! Translation between the protobuf messages and the core's types.

use std::collections::HashMap;

use helixflow_core::chat_template::ChatMessage;
use helixflow_core::completion::{FinishReason, Usage};
use helixflow_core::generation::{GenerationParams, TokenOutput};
use helixflow_core::sampling::SamplingParams;

use super::proto;

/// The core's generation parameters; unset options take the HTTP API's defaults.
pub(crate) fn params(options: Option<proto::GenerationOptions>) -> GenerationParams {
    let o = options.unwrap_or_default();
    let defaults = SamplingParams::default();
    GenerationParams {
        sampling: SamplingParams {
            temperature: o.temperature.unwrap_or(defaults.temperature),
            top_p: o.top_p.unwrap_or(defaults.top_p),
            top_k: o.top_k.map(|k| k as usize),
            min_p: o.min_p.unwrap_or(defaults.min_p),
            repetition_penalty: o.repetition_penalty.unwrap_or(defaults.repetition_penalty),
            frequency_penalty: o.frequency_penalty.unwrap_or(defaults.frequency_penalty),
            presence_penalty: o.presence_penalty.unwrap_or(defaults.presence_penalty),
            logit_bias: o.logit_bias.into_iter().collect::<HashMap<_, _>>(),
            seed: o.seed,
            logprobs: o.logprobs,
            top_logprobs: o.top_logprobs as usize,
        },
        max_tokens: o.max_tokens.map(|m| m as usize),
        stop: o.stop,
        n: o.n.map_or(1, |n| n as usize),
        ignore_eos: o.ignore_eos,
    }
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
