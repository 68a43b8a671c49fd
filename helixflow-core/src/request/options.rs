//! Generation options as the OpenAI API names them, before defaults apply: what an HTTP body,
//! a gRPC message or a Python call carries, turned into [`GenerationParams`] in one place.

use std::collections::HashMap;

use serde::Deserialize;

use crate::generation::GenerationParams;
use crate::sampling::SamplingParams;
use crate::structured::GrammarSpec;
use crate::tools::ChatTools;
use crate::{Error, Result};

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Stop {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

/// The generation options of chat and text completions; every one may be left out.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GenerationOptions {
    /// Independent choices to generate (1..=16).
    pub n: Option<usize>,
    /// The same seed and request give the same output.
    pub seed: Option<i64>,
    /// Up to 16 strings that end generation (not included in the output).
    pub stop: Option<Stop>,
    /// Most tokens to generate (default: up to the context length).
    pub max_tokens: Option<usize>,
    /// The newer name of `max_tokens`; wins when both are given.
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature, 0 (greedy) to 2.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass, (0, 1].
    pub top_p: Option<f32>,
    /// Penalty per previous occurrence of a token, -2 to 2.
    pub frequency_penalty: Option<f32>,
    /// Penalty for any previous occurrence of a token, -2 to 2.
    pub presence_penalty: Option<f32>,
    /// Token id (as a string) to a bias added to its logit, -100 to 100.
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Sample among the k most likely tokens only (extension).
    pub top_k: Option<usize>,
    /// Drop tokens less likely than min_p times the most likely one (extension).
    pub min_p: Option<f32>,
    /// Divide the logits of previous tokens by this (extension; 1 = off).
    pub repetition_penalty: Option<f32>,
    /// vLLM's extension: keep generating past end-of-sequence tokens (benchmarks use it).
    #[serde(default)]
    pub ignore_eos: bool,
    /// OpenAI's structured outputs: `{"type": "json_schema", "json_schema": {"name",
    /// "schema"}}`, `{"type": "json_object"}` or `{"type": "text"}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub response_format: Option<serde_json::Value>,
    /// vLLM's structured outputs: one of `json` (a schema), `regex`, `choice` (strings),
    /// `grammar` (Lark) or `json_object: true`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub structured_outputs: Option<serde_json::Value>,
    /// Chat only: function tools the model may call (`[{"type": "function", "function":
    /// {"name", "description", "parameters"}}]`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Object>>))]
    pub tools: Option<serde_json::Value>,
    /// Chat only: `none`, `auto` (the default with tools), `required`, or `{"type":
    /// "function", "function": {"name"}}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub tool_choice: Option<serde_json::Value>,
    /// Chat only: whether one answer may call several tools (default true).
    pub parallel_tool_calls: Option<bool>,
    /// Chat only: more variables for the chat template (`{"enable_thinking": false}`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
}

impl GenerationOptions {
    /// The core parameters, defaults filled in; `logprobs`/`top_logprobs` come from the
    /// endpoint's own fields (chat and text completions name them differently). Values are
    /// range-checked later, against the model, by [`GenerationParams::validate`].
    pub fn params(&self, logprobs: bool, top_logprobs: usize) -> Result<GenerationParams> {
        let mut logit_bias = HashMap::new();
        for (token, bias) in self.logit_bias.iter().flatten() {
            let id = token.parse::<u32>().map_err(|_| {
                Error::InvalidRequest(format!("logit_bias: `{token}` is not a token id"))
            })?;
            logit_bias.insert(id, *bias);
        }
        // Seeds are signed in the API; every bit pattern is a distinct seed.
        let seed = self.seed.map(|s| u64::from_ne_bytes(s.to_ne_bytes()));
        let defaults = SamplingParams::default();
        Ok(GenerationParams {
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(defaults.temperature),
                top_p: self.top_p.unwrap_or(defaults.top_p),
                top_k: self.top_k,
                min_p: self.min_p.unwrap_or(defaults.min_p),
                repetition_penalty: self
                    .repetition_penalty
                    .unwrap_or(defaults.repetition_penalty),
                frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
                presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
                logit_bias,
                seed,
                logprobs,
                top_logprobs,
            },
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            stop: match &self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s.clone()],
                Some(Stop::Many(v)) => v.clone(),
            },
            n: self.n.unwrap_or(1),
            ignore_eos: self.ignore_eos,
            grammar: None, // compiled for the model by `GenerationRequest`
        })
    }

    /// The tools of a chat request, checked (`None` without tools or under `tool_choice:
    /// none`).
    pub fn chat_tools(&self) -> Result<Option<ChatTools>> {
        ChatTools::from_request(
            self.tools.as_ref(),
            self.tool_choice.as_ref(),
            self.parallel_tool_calls,
        )
    }

    /// Refuses the fields only chat completions have (for text completions).
    pub fn check_no_chat_fields(&self) -> Result<()> {
        let chat_only = [
            ("tools", self.tools.is_some()),
            ("tool_choice", self.tool_choice.is_some()),
            ("parallel_tool_calls", self.parallel_tool_calls.is_some()),
            ("chat_template_kwargs", self.chat_template_kwargs.is_some()),
        ];
        match chat_only.into_iter().find(|(_, given)| *given) {
            Some((field, _)) => Err(Error::invalid_field(
                field,
                format!("{field} is for chat completions only"),
            )),
            None => Ok(()),
        }
    }

    /// The grammar the answer must match, if any, and the field that asked for it.
    pub fn grammar_spec(&self) -> Result<Option<(GrammarSpec, &'static str)>> {
        match (&self.response_format, &self.structured_outputs) {
            (Some(_), Some(_)) => Err(Error::invalid_field(
                "structured_outputs",
                "give response_format or structured_outputs, not both",
            )),
            (Some(format), None) => Ok(
                GrammarSpec::from_response_format(format)?.map(|spec| (spec, "response_format"))
            ),
            (None, Some(spec)) => Ok(Some((
                GrammarSpec::from_structured_outputs(spec)?,
                "structured_outputs",
            ))),
            (None, None) => Ok(None),
        }
    }

    /// [`GenerationOptions::params`] for a chat completion, whose `top_logprobs` needs
    /// `logprobs`.
    pub fn chat_params(
        &self,
        logprobs: bool,
        top_logprobs: Option<usize>,
    ) -> Result<GenerationParams> {
        check_top_logprobs(logprobs, top_logprobs)?;
        self.params(logprobs, top_logprobs.unwrap_or(0))
    }
}

/// The rule of APIs that name the logprobs switch and the count of alternatives apart, as
/// chat does: `top_logprobs` needs `logprobs`.
pub(super) fn check_top_logprobs(logprobs: bool, top_logprobs: Option<usize>) -> Result<()> {
    if top_logprobs.is_some_and(|n| n > 0) && !logprobs {
        return Err(Error::InvalidRequest(
            "top_logprobs needs logprobs: true".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: serde_json::Value) -> GenerationOptions {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn unset_options_take_the_defaults() {
        let params = options(serde_json::json!({})).params(false, 0).unwrap();
        assert_eq!(params.sampling, SamplingParams::default());
        assert_eq!((params.n, params.max_tokens), (1, None));
        assert!(params.stop.is_empty());
    }

    #[test]
    fn options_map_onto_the_parameters() {
        let params = options(serde_json::json!({
            "n": 2, "seed": -1, "stop": "x", "max_tokens": 5, "max_completion_tokens": 7,
            "temperature": 0.5, "logit_bias": {"42": -100.0}, "top_k": 3
        }))
        .params(true, 2)
        .unwrap();
        assert_eq!(params.n, 2);
        assert_eq!(params.sampling.seed, Some(u64::MAX));
        assert_eq!(params.stop, ["x"]);
        assert_eq!(params.max_tokens, Some(7));
        assert_eq!(params.sampling.temperature, 0.5);
        assert_eq!(params.sampling.logit_bias[&42], -100.0);
        assert_eq!(params.sampling.top_k, Some(3));
        assert!(params.sampling.logprobs);
        assert_eq!(params.sampling.top_logprobs, 2);
    }

    #[test]
    fn bad_logit_bias_keys_and_lone_top_logprobs_are_refused() {
        let bias = options(serde_json::json!({"logit_bias": {"word": 1.0}}));
        assert!(matches!(
            bias.params(false, 0),
            Err(Error::InvalidRequest(_))
        ));
        let none = GenerationOptions::default();
        assert!(matches!(
            none.chat_params(false, Some(2)),
            Err(Error::InvalidRequest(m)) if m.contains("top_logprobs")
        ));
        assert!(none.chat_params(false, Some(0)).is_ok());
    }
}
