//! The sampling parameters of one request, with OpenAI's defaults and ranges.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest `top_logprobs` a request may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// The magnitude of a `logit_bias` entry that bans (`-100`) or forces (`+100`) a token.
pub(crate) const LOGIT_BIAS_LIMIT: f32 = 100.0;

/// How to pick each generated token.
///
/// Deserialising fills every missing field with its default, so `{}` is plain sampling at
/// temperature 1. Call [`SamplingParams::validate`] before use: construction does not check
/// ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature, `0..=2`. `0` means greedy decoding (argmax, lowest id on ties).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability mass
    /// reaches `top_p`, in `(0, 1]`. `1` disables it.
    pub top_p: f32,
    /// Keep only the `k` most likely tokens. `None` or `Some(0)` disables it.
    pub top_k: Option<usize>,
    /// Drop tokens whose probability is below `min_p` times the most likely token's, in `[0, 1]`.
    /// `0` disables it.
    pub min_p: f32,
    /// Hugging Face-style repetition penalty over prompt and generated tokens (`> 0`; `1` is
    /// off): positive logits are divided by it, negative ones multiplied.
    pub repetition_penalty: f32,
    /// OpenAI frequency penalty, `[-2, 2]`: subtracted once per earlier occurrence of the token
    /// in the generated text.
    pub frequency_penalty: f32,
    /// OpenAI presence penalty, `[-2, 2]`: subtracted once if the token occurs in the generated
    /// text.
    pub presence_penalty: f32,
    /// Added to the logits of the given token ids, `[-100, 100]`. `-100` bans a token outright
    /// and `+100` restricts sampling to the tokens biased by `+100`.
    pub logit_bias: HashMap<u32, f32>,
    /// Seed for reproducible sampling. `None` draws a seed from OS entropy.
    pub seed: Option<u64>,
    /// Whether the response should report logprobs.
    pub logprobs: bool,
    /// How many alternatives to report per position, `0..=20`; needs `logprobs`.
    pub top_logprobs: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: HashMap::new(),
            seed: None,
            logprobs: false,
            top_logprobs: 0,
        }
    }
}

impl SamplingParams {
    /// Parameters for greedy decoding (temperature 0), everything else at its default.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        }
    }

    /// Whether these parameters decode greedily.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// The effective `top_k`, with `0` folded into "off".
    pub fn effective_top_k(&self) -> Option<usize> {
        self.top_k.filter(|&k| k > 0)
    }

    /// Checks every value against OpenAI's ranges and the model's vocabulary size.
    ///
    /// Returns [`Error::InvalidRequest`] naming the first offending parameter. NaN is rejected
    /// everywhere.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        check_range("temperature", self.temperature, 0.0, 2.0)?;
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if let Some(k) = self.top_k {
            if k == 0 || k > vocab_size {
                return Err(invalid(format!(
                    "top_k must be between 1 and the vocabulary's {vocab_size} tokens, got {k} \
                     (leave it out to sample from every token)"
                )));
            }
        }
        check_range("min_p", self.min_p, 0.0, 1.0)?;
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(invalid(format!(
                "repetition_penalty must be a finite number greater than 0, got {}",
                self.repetition_penalty
            )));
        }
        check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(invalid(format!(
                "top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {}",
                self.top_logprobs
            )));
        }
        if self.top_logprobs > 0 && !self.logprobs {
            return Err(invalid(
                "top_logprobs requires logprobs to be true".to_string(),
            ));
        }
        // Sorted so that the error names the same token every time.
        let mut bias: Vec<(&u32, &f32)> = self.logit_bias.iter().collect();
        bias.sort_unstable_by_key(|(id, _)| **id);
        for (&id, &value) in bias {
            if id as usize >= vocab_size {
                return Err(invalid(format!(
                    "logit_bias names token {id}, but the vocabulary has {vocab_size} tokens"
                )));
            }
            if !(-LOGIT_BIAS_LIMIT..=LOGIT_BIAS_LIMIT).contains(&value) {
                return Err(invalid(format!(
                    "logit_bias for token {id} must be in [-100, 100], got {value}"
                )));
            }
        }
        let banned = self
            .logit_bias
            .values()
            .filter(|&&v| v <= -LOGIT_BIAS_LIMIT)
            .count();
        if vocab_size == 0 {
            return Err(invalid("the model's vocabulary is empty".to_string()));
        }
        if banned >= vocab_size {
            return Err(invalid(
                "logit_bias bans every token of the vocabulary".to_string(),
            ));
        }
        Ok(())
    }
}

/// Rejects NaN and values outside `[min, max]`.
fn check_range(name: &str, value: f32, min: f32, max: f32) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name} must be in [{min}, {max}], got {value}"
        )))
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidRequest(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: usize = 100;

    fn rejects(params: SamplingParams, needle: &str) {
        match params.validate(VOCAB) {
            Err(Error::InvalidRequest(message)) => assert!(
                message.contains(needle),
                "message {message:?} should mention {needle:?}"
            ),
            other => panic!("expected InvalidRequest mentioning {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_openai() {
        let p = SamplingParams::default();
        assert_eq!(p.temperature, 1.0);
        assert_eq!(p.top_p, 1.0);
        assert_eq!(p.effective_top_k(), None);
        assert_eq!(p.min_p, 0.0);
        assert_eq!(p.repetition_penalty, 1.0);
        assert_eq!(p.frequency_penalty, 0.0);
        assert_eq!(p.presence_penalty, 0.0);
        assert!(p.logit_bias.is_empty());
        assert_eq!(p.seed, None);
        assert!(!p.logprobs);
        assert_eq!(p.top_logprobs, 0);
        assert!(p.validate(VOCAB).is_ok());
        assert!(SamplingParams::greedy().is_greedy());
        assert!(!p.is_greedy());
    }

    #[test]
    fn deserialises_partial_json_with_string_bias_keys() {
        let p: SamplingParams = serde_json::from_str(
            r#"{"temperature": 0.5, "top_k": 0, "logit_bias": {"42": -100, "7": 3.5}, "seed": 9}"#,
        )
        .unwrap();
        assert_eq!(p.temperature, 0.5);
        assert_eq!(p.effective_top_k(), None);
        assert_eq!(p.logit_bias.get(&42), Some(&-100.0));
        assert_eq!(p.logit_bias.get(&7), Some(&3.5));
        assert_eq!(p.seed, Some(9));
        assert_eq!(p.top_p, 1.0);
        let round_trip: SamplingParams =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(round_trip, p);
    }

    #[test]
    fn accepts_boundary_values() {
        let p = SamplingParams {
            temperature: 2.0,
            top_p: 1e-6,
            top_k: Some(VOCAB),
            min_p: 1.0,
            repetition_penalty: 0.01,
            frequency_penalty: -2.0,
            presence_penalty: 2.0,
            logit_bias: HashMap::from([(0, -100.0), (99, 100.0)]),
            seed: Some(u64::MAX),
            logprobs: true,
            top_logprobs: 20,
        };
        assert!(p.validate(VOCAB).is_ok());
    }

    #[test]
    fn rejects_each_bad_value() {
        let base = SamplingParams::default;
        rejects(
            SamplingParams {
                temperature: -0.1,
                ..base()
            },
            "temperature",
        );
        rejects(
            SamplingParams {
                temperature: 2.5,
                ..base()
            },
            "temperature",
        );
        rejects(
            SamplingParams {
                temperature: f32::NAN,
                ..base()
            },
            "temperature",
        );
        rejects(
            SamplingParams {
                top_p: 0.0,
                ..base()
            },
            "top_p",
        );
        rejects(
            SamplingParams {
                top_p: 1.01,
                ..base()
            },
            "top_p",
        );
        rejects(
            SamplingParams {
                top_p: f32::NAN,
                ..base()
            },
            "top_p",
        );
        rejects(
            SamplingParams {
                min_p: -0.01,
                ..base()
            },
            "min_p",
        );
        for k in [0, VOCAB + 1, 1_000_000_000_000_000] {
            rejects(
                SamplingParams {
                    top_k: Some(k),
                    ..base()
                },
                "top_k",
            );
        }
        rejects(
            SamplingParams {
                min_p: 1.5,
                ..base()
            },
            "min_p",
        );
        rejects(
            SamplingParams {
                repetition_penalty: 0.0,
                ..base()
            },
            "repetition_penalty",
        );
        rejects(
            SamplingParams {
                repetition_penalty: f32::INFINITY,
                ..base()
            },
            "repetition_penalty",
        );
        rejects(
            SamplingParams {
                repetition_penalty: f32::NAN,
                ..base()
            },
            "repetition_penalty",
        );
        rejects(
            SamplingParams {
                frequency_penalty: 2.01,
                ..base()
            },
            "frequency_penalty",
        );
        rejects(
            SamplingParams {
                presence_penalty: -2.01,
                ..base()
            },
            "presence_penalty",
        );
        rejects(
            SamplingParams {
                presence_penalty: f32::NAN,
                ..base()
            },
            "presence_penalty",
        );
        rejects(
            SamplingParams {
                logprobs: true,
                top_logprobs: 21,
                ..base()
            },
            "top_logprobs",
        );
        rejects(
            SamplingParams {
                top_logprobs: 3,
                ..base()
            },
            "requires logprobs",
        );
        rejects(
            SamplingParams {
                logit_bias: HashMap::from([(100, 1.0)]),
                ..base()
            },
            "token 100",
        );
        rejects(
            SamplingParams {
                logit_bias: HashMap::from([(5, 100.5)]),
                ..base()
            },
            "token 5",
        );
        rejects(
            SamplingParams {
                logit_bias: HashMap::from([(5, f32::NAN)]),
                ..base()
            },
            "token 5",
        );
        rejects(
            SamplingParams {
                logit_bias: (0..VOCAB as u32).map(|id| (id, -100.0)).collect(),
                ..base()
            },
            "bans every token",
        );
    }
}
