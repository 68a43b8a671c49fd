//! The per-sequence sampler: one step's logits in, one token (with logprobs) out.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::filters::{collect_top_k, keep_min_p, keep_nucleus, keep_top_k, max_score, Candidate};
use super::history::TokenHistory;
use super::kernels::{exp_in_place, fast_exp, max_and_check, sum, sum_exp};
use super::params::{SamplingParams, LOGIT_BIAS_LIMIT};
use crate::error::{Error, Result};

/// One sampled token.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    /// The chosen token id.
    pub id: u32,
    /// The chosen token's log-probability under the raw model logits (log-softmax before bias,
    /// penalties and temperature). Always filled, always finite.
    pub logprob: f32,
    /// The `top_logprobs` most likely tokens under the raw logits as `(id, logprob)`, most
    /// likely first (lowest id first on ties). Empty unless logprobs were requested.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Derives the seed of choice `index` from a request seed, for requests with several choices.
///
/// Choice 0 keeps the request seed itself, so `n = 1` with a seed is the same as sampling with
/// that seed; the other choices get well-mixed, distinct streams.
pub fn choice_seed(seed: u64, index: u64) -> u64 {
    if index == 0 {
        return seed;
    }
    // splitmix64 finaliser over seed + index·golden ratio.
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Picks tokens from logits according to [`SamplingParams`], for one sequence.
///
/// Build one per generated sequence (choice): it owns the random stream and scratch buffers
/// that are reused across steps, so a step allocates nothing vocabulary-sized after the first.
/// The same seed and the same logits always give the same tokens (within one build of the
/// library; `StdRng`'s stream may change across `rand` releases).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    vocab_size: usize,
    seed: u64,
    rng: StdRng,
    /// `logit_bias` as `(id, bias)`, sorted by id, bans and forces included.
    bias: Vec<(u32, f32)>,
    /// Ids biased by +100, sorted: when any, only these can be sampled.
    forced: Vec<u32>,
    /// Adjusted logits, reused across steps.
    scores: Vec<f32>,
    /// Surviving candidates, reused across steps.
    candidates: Vec<Candidate>,
}

impl Sampler {
    /// A sampler seeded from `params.seed`, or from OS entropy when that is `None`.
    ///
    /// Fails with [`Error::InvalidRequest`] when the parameters are out of range
    /// ([`SamplingParams::validate`]).
    pub fn new(params: &SamplingParams, vocab_size: usize) -> Result<Self> {
        let seed = params.seed.unwrap_or_else(rand::random);
        Sampler::with_seed(params, vocab_size, seed)
    }

    /// A sampler with an explicit seed (for instance [`choice_seed`] of the request seed),
    /// ignoring `params.seed`.
    pub fn with_seed(params: &SamplingParams, vocab_size: usize, seed: u64) -> Result<Self> {
        params.validate(vocab_size)?;
        let mut bias: Vec<(u32, f32)> = params.logit_bias.iter().map(|(&i, &b)| (i, b)).collect();
        bias.sort_unstable_by_key(|&(id, _)| id);
        let forced = bias
            .iter()
            .filter(|&&(_, b)| b >= LOGIT_BIAS_LIMIT)
            .map(|&(id, _)| id)
            .collect();
        Ok(Sampler {
            params: params.clone(),
            vocab_size,
            seed,
            rng: StdRng::seed_from_u64(seed),
            bias,
            forced,
            scores: Vec::new(),
            candidates: Vec::new(),
        })
    }

    /// The seed this sampler's random stream started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The parameters this sampler applies.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The vocabulary size (the length `sample` expects of its logits).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Picks the next token from one position's `logits` (exactly `vocab_size` values).
    ///
    /// `history` holds the prompt and the tokens generated so far, for the penalties; the
    /// caller pushes the returned id into it. Fails with [`Error::Candle`] when the logits have
    /// the wrong length or contain NaN or +∞ (a broken forward pass), and with
    /// [`Error::InvalidRequest`] when bias and penalties leave no token that can be chosen.
    pub fn sample(&mut self, logits: &[f32], history: &TokenHistory) -> Result<SampledToken> {
        self.sample_masked(logits, history, None)
    }

    /// [`Sampler::sample`] among the tokens of `allowed` only (a bit set over the vocabulary:
    /// bit `i % 32` of word `i / 32` for token `i`), as a grammar allows them. The
    /// log-probabilities stay those of the raw logits.
    pub fn sample_masked(
        &mut self,
        logits: &[f32],
        history: &TokenHistory,
        allowed: Option<&[u32]>,
    ) -> Result<SampledToken> {
        let (max, log_normaliser) = check_logits(logits, self.vocab_size)?;
        let plain = self.params.is_greedy() && !self.adjusts_scores() && self.forced.is_empty();
        let id = if plain && allowed.is_none() {
            // Nothing changes the logits: the first of the largest, without copying them.
            logits.iter().position(|&s| s == max).map(|i| i as u32)
        } else {
            self.scores.clear();
            self.scores.extend_from_slice(logits);
            if let Some(allowed) = allowed {
                mask_scores(&mut self.scores, allowed);
            }
            self.apply_logit_bias();
            self.apply_penalties(history);
            if self.params.is_greedy() {
                self.argmax()
            } else {
                self.draw()
            }
        }
        .ok_or_else(|| {
            Error::InvalidRequest(
                "logit_bias and the model's logits leave no token that can be sampled".into(),
            )
        })?;
        let raw = logits
            .get(id as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        let top_logprobs = if self.params.logprobs {
            top_raw_logprobs(logits, self.params.top_logprobs, log_normaliser)
        } else {
            Vec::new()
        };
        Ok(SampledToken {
            id,
            logprob: raw - log_normaliser,
            top_logprobs,
        })
    }

    /// Whether a logit bias or a penalty changes the scores before the choice.
    fn adjusts_scores(&self) -> bool {
        let p = &self.params;
        !self.bias.is_empty()
            || p.repetition_penalty != 1.0
            || p.frequency_penalty != 0.0
            || p.presence_penalty != 0.0
    }

    fn apply_logit_bias(&mut self) {
        for &(id, bias) in &self.bias {
            if let Some(score) = self.scores.get_mut(id as usize) {
                if bias <= -LOGIT_BIAS_LIMIT {
                    *score = f32::NEG_INFINITY;
                } else {
                    *score += bias;
                }
            }
        }
    }

    fn apply_penalties(&mut self, history: &TokenHistory) {
        let repetition = self.params.repetition_penalty;
        if repetition != 1.0 {
            for id in history.distinct_tokens() {
                if let Some(score) = self.scores.get_mut(id as usize) {
                    // Hugging Face: shrink positive logits, push negative ones further down.
                    // Capped so a tiny penalty cannot overflow to +inf.
                    *score = if *score > 0.0 {
                        (*score / repetition).min(f32::MAX)
                    } else {
                        *score * repetition
                    };
                }
            }
        }
        let frequency = self.params.frequency_penalty;
        let presence = self.params.presence_penalty;
        if frequency != 0.0 || presence != 0.0 {
            for (id, count) in history.generated_counts() {
                if let Some(score) = self.scores.get_mut(id as usize) {
                    *score = (*score - (count as f32 * frequency + presence)).min(f32::MAX);
                }
            }
        }
    }

    /// The highest-scoring allowed token, lowest id on ties; `None` when every score is -inf.
    fn argmax(&self) -> Option<u32> {
        if self.forced.is_empty() {
            let (max, _) = max_and_check(&self.scores);
            if max == f32::NEG_INFINITY {
                return None;
            }
            return self.scores.iter().position(|&s| s == max).map(|i| i as u32);
        }
        let mut best: Option<Candidate> = None;
        for &id in &self.forced {
            if let Some(&score) = self.scores.get(id as usize) {
                if score > f32::NEG_INFINITY && best.is_none_or(|b| score > b.score) {
                    best = Some(Candidate { id, score });
                }
            }
        }
        best.map(|b| b.id)
    }

    /// Temperature, top-k, top-p, min-p, then a draw; `None` when no candidate survives.
    fn draw(&mut self) -> Option<u32> {
        let truncates = self
            .params
            .effective_top_k()
            .is_some_and(|k| k < self.vocab_size)
            || self.params.top_p < 1.0
            || self.params.min_p > 0.0
            || !self.forced.is_empty();
        if !truncates {
            // The whole vocabulary stays in play: draw straight from the score buffer.
            return draw_from_scores(&mut self.scores, self.params.temperature, &mut self.rng);
        }
        let top_k = self.params.effective_top_k();
        match top_k {
            // Common case (e.g. top_k = 40): one pass over the scores, no vocabulary-sized list.
            Some(k) if self.forced.is_empty() => {
                collect_top_k(&self.scores, k, &mut self.candidates);
            }
            _ => {
                self.collect_candidates();
                if let Some(k) = top_k {
                    keep_top_k(&mut self.candidates, k);
                }
            }
        }
        let candidates = &mut self.candidates;
        if candidates.is_empty() {
            return None;
        }
        // After top_k: dividing by a positive temperature does not change the ranking.
        // Shifting by the max first keeps tiny temperatures from overflowing (-inf at worst).
        let temperature = self.params.temperature;
        if temperature != 1.0 {
            let max = max_score(candidates);
            for c in candidates.iter_mut() {
                c.score = (c.score - max) / temperature;
            }
        }
        if self.params.top_p < 1.0 {
            keep_nucleus(candidates, self.params.top_p);
        }
        if self.params.min_p > 0.0 {
            keep_min_p(candidates, self.params.min_p);
        }
        draw_from(candidates, &mut self.rng)
    }

    /// Fills `candidates` with every allowed token whose score is not -inf.
    fn collect_candidates(&mut self) {
        self.candidates.clear();
        let alive = |&(_, score): &(u32, f32)| score > f32::NEG_INFINITY;
        if self.forced.is_empty() {
            self.candidates.extend(
                self.scores
                    .iter()
                    .enumerate()
                    .map(|(id, &score)| (id as u32, score))
                    .filter(alive)
                    .map(|(id, score)| Candidate { id, score }),
            );
        } else {
            let scores = &self.scores;
            self.candidates.extend(
                self.forced
                    .iter()
                    .filter_map(|&id| scores.get(id as usize).map(|&score| (id, score)))
                    .filter(alive)
                    .map(|(id, score)| Candidate { id, score }),
            );
        }
    }
}

/// Sets the score of every token outside `allowed` (a bit set) to -inf.
fn mask_scores(scores: &mut [f32], allowed: &[u32]) {
    for (word, chunk) in scores.chunks_mut(32).enumerate() {
        let bits = allowed.get(word).copied().unwrap_or(0);
        if bits == u32::MAX {
            continue;
        }
        for (bit, score) in chunk.iter_mut().enumerate() {
            if bits >> bit & 1 == 0 {
                *score = f32::NEG_INFINITY;
            }
        }
    }
}

/// Checks a step's `logits` (one per token of a `vocab`-sized vocabulary, none NaN or +inf,
/// not all -inf) and returns their maximum and log-sum-exp (the log-softmax normaliser).
fn check_logits(logits: &[f32], vocab: usize) -> Result<(f32, f32)> {
    if logits.len() != vocab {
        return Err(broken_logits(format!(
            "the model produced {} logits but the vocabulary has {vocab} tokens",
            logits.len(),
        )));
    }
    let (max, all_usable) = max_and_check(logits);
    if !all_usable {
        let bad = logits
            .iter()
            .find(|v| v.is_nan() || **v == f32::INFINITY)
            .copied()
            .unwrap_or(f32::NAN);
        return Err(broken_logits(format!(
            "the model produced a logit of {bad}"
        )));
    }
    if max == f32::NEG_INFINITY {
        return Err(broken_logits("every logit is -inf".to_string()));
    }
    Ok((max, max + sum_exp(logits, max).ln() as f32))
}

fn broken_logits(message: String) -> Error {
    Error::Candle(candle_core::Error::Msg(message))
}

/// Draws a token id with probability proportional to `exp(score / temperature)`, over every
/// entry of `scores` (overwritten with the weights).
fn draw_from_scores(scores: &mut [f32], temperature: f32, rng: &mut StdRng) -> Option<u32> {
    let (max, _) = max_and_check(scores);
    if max == f32::NEG_INFINITY {
        return None;
    }
    exp_in_place(scores, max, temperature);
    let mut target = rng.random::<f64>() * sum(scores);
    let mut last_positive = None;
    for (id, &weight) in scores.iter().enumerate() {
        if weight > 0.0 {
            let weight = f64::from(weight);
            if target < weight {
                return Some(id as u32);
            }
            target -= weight;
            last_positive = Some(id as u32);
        }
    }
    // Only reachable through rounding at the very top of the range.
    last_positive
}

/// Draws one candidate with probability proportional to `exp(score)`.
fn draw_from(candidates: &mut [Candidate], rng: &mut StdRng) -> Option<u32> {
    let max = max_score(candidates);
    if max == f32::NEG_INFINITY {
        return None;
    }
    // Turn scores into unnormalised weights in place.
    let mut total = 0.0f64;
    for c in candidates.iter_mut() {
        c.score = fast_exp(c.score - max);
        total += f64::from(c.score);
    }
    let mut target = rng.random::<f64>() * total;
    let mut last_positive = None;
    for c in candidates.iter() {
        let weight = f64::from(c.score);
        if weight > 0.0 {
            if target < weight {
                return Some(c.id);
            }
            last_positive = Some(c.id);
        }
        target -= weight;
    }
    // Only reachable through rounding at the very top of the range.
    last_positive
}

/// The `n` highest raw logits as `(id, logprob)`, most likely first, lowest id on ties; -inf
/// logits (impossible tokens, not representable in JSON) are never listed.
fn top_raw_logprobs(logits: &[f32], n: usize, log_normaliser: f32) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return top;
    }
    for (id, &v) in logits.iter().enumerate() {
        if v == f32::NEG_INFINITY {
            continue;
        }
        if top.len() == n && top.last().is_some_and(|&(_, worst)| v <= worst) {
            continue;
        }
        // Ids arrive in ascending order, so equal logits go after the ones already kept.
        let at = top.partition_point(|&(_, kept)| kept >= v);
        top.insert(at, (id as u32, v));
        top.truncate(n);
    }
    for entry in &mut top {
        entry.1 -= log_normaliser;
    }
    top
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
