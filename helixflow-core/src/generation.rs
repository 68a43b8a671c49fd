//! Token-by-token generation of one or more sequences over a [`CausalLm`].
//!
//! A [`Sequence`] holds everything one generated choice needs between steps: its cache, its
//! sampler and seed stream, the token history for penalties, the incremental detokeniser and
//! the stop-string matcher. [`run_batch`] steps several sequences together through the
//! model's packed forward, which is what `n > 1` and concurrent requests use; the engine of a
//! server drives the same [`Sequence`] type from its scheduler.

use crate::completion::{FinishReason, TokenLogprob, TopLogprob};
use crate::error::{Error, Result};
use crate::kv_cache::SequenceKv;
use crate::models::Logits;
use crate::models::{CausalLm, SeqStep};
use crate::sampling::{SampledToken, Sampler, SamplingParams, TokenHistory};
use crate::stop::StopMatcher;
use crate::structured::{Grammar, TokenConstraint};
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

/// What to generate, beyond the prompt: validated by [`GenerationParams::validate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationParams {
    /// Sampling controls.
    pub sampling: SamplingParams,
    /// Most tokens to generate per choice; `None` fills the rest of the context.
    pub max_tokens: Option<usize>,
    /// Strings that end generation; never part of the output.
    pub stop: Vec<String>,
    /// Number of choices (sequences) to generate.
    pub n: usize,
    /// Keep generating past the model's end-of-turn tokens (benchmarks), until `max_tokens`
    /// or a stop string.
    pub ignore_eos: bool,
    /// Hold the answer to a grammar (structured outputs); built by
    /// [`crate::chat_model::ChatModel::grammar`] for the model that runs the request.
    pub grammar: Option<Grammar>,
}

/// The most choices one request may ask for.
pub const MAX_CHOICES: usize = 16;

impl GenerationParams {
    /// Greedy decoding of at most `max_tokens`, one choice.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            sampling: SamplingParams::greedy(),
            max_tokens: Some(max_tokens),
            stop: Vec::new(),
            n: 1,
            ignore_eos: false,
            grammar: None,
        }
    }

    /// Checks the parameters against a model with `vocab_size` tokens.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        self.sampling.validate(vocab_size)?;
        if self.n == 0 || self.n > MAX_CHOICES {
            return Err(Error::InvalidRequest(format!(
                "n must be between 1 and {MAX_CHOICES}, got {}",
                self.n
            )));
        }
        if self.max_tokens == Some(0) {
            return Err(Error::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        StopMatcher::new(&self.stop)?;
        if self.ignore_eos && self.grammar.is_some() {
            return Err(Error::invalid_field(
                "ignore_eos",
                "ignore_eos cannot be combined with structured outputs, which end the answer \
                 when its grammar is complete",
            ));
        }
        Ok(())
    }

    /// The number of tokens a choice may generate after a prompt of `prompt_len` tokens,
    /// or [`Error::ContextOverflow`].
    pub fn token_budget(&self, prompt_len: usize, context: usize) -> Result<usize> {
        let room = context.saturating_sub(prompt_len);
        match self.max_tokens {
            // Checked: a client's `max_tokens` may be anything up to `u64::MAX`.
            Some(max)
                if prompt_len
                    .checked_add(max)
                    .is_some_and(|end| end <= context) =>
            {
                Ok(max)
            }
            None if room > 0 => Ok(room),
            max => Err(Error::ContextOverflow {
                prompt_tokens: prompt_len,
                max_tokens: max.unwrap_or(0),
                context,
            }),
        }
    }
}

/// What one step produced for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOutput {
    /// The sampled token.
    pub token: u32,
    /// Text that may be shown now (possibly empty: held back for UTF-8 or a stop string).
    pub text: String,
    /// The token's log-probabilities, when requested.
    pub logprob: Option<TokenLogprob>,
    /// Set when this was the sequence's last step.
    pub finish: Option<FinishReason>,
}

/// One choice being generated.
///
/// Its tokens are the prompt followed by what it has generated; the cache holds the first
/// `kv.len()` of them. The rest are pending: the whole prompt at first (prefilled in one step
/// or in chunks), then the last sampled token, or everything again after a preemption dropped
/// the cache.
pub struct Sequence {
    prompt_len: usize,
    tokens: Vec<u32>,
    kv: SequenceKv,
    sampler: Sampler,
    history: TokenHistory,
    decoder: IncrementalDecoder,
    stop: StopMatcher,
    generated: Vec<u32>,
    max_tokens: usize,
    eot_ids: Vec<u32>,
    /// The grammar's state, for a structured output.
    constraint: Option<TokenConstraint>,
    finish: Option<FinishReason>,
}

impl Sequence {
    /// A sequence that will prefill `prompt` and then generate up to `max_tokens` tokens.
    ///
    /// `seed` fixes the sampler's random stream (choice `i` of a request uses
    /// [`crate::sampling::choice_seed`]); `None` draws one from the OS.
    pub fn new(
        model: &dyn CausalLm,
        tokenizer: &Tokenizer,
        prompt: Vec<u32>,
        params: &GenerationParams,
        max_tokens: usize,
        seed: Option<u64>,
    ) -> Result<Self> {
        let kv = model.new_kv_state();
        Self::with_cache(model, tokenizer, prompt, params, max_tokens, seed, kv)
    }

    /// [`Sequence::new`] with the cache given: empty, or holding a prefix of `prompt` (from
    /// a prefix cache).
    pub fn with_cache(
        model: &dyn CausalLm,
        tokenizer: &Tokenizer,
        prompt: Vec<u32>,
        params: &GenerationParams,
        max_tokens: usize,
        seed: Option<u64>,
        kv: SequenceKv,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        let sampler = sampler_for(params, model.shape().vocab_size, seed)?;
        Ok(Self {
            prompt_len: prompt.len(),
            history: TokenHistory::new(&prompt),
            decoder: IncrementalDecoder::with_context(&prompt),
            tokens: prompt,
            kv,
            sampler,
            stop: StopMatcher::new(&params.stop)?,
            generated: Vec::new(),
            max_tokens,
            eot_ids: if params.ignore_eos {
                Vec::new()
            } else {
                tokenizer.end_of_turn_ids().to_vec()
            },
            constraint: params.grammar.as_ref().map(Grammar::constraint),
            finish: None,
        })
    }

    /// Tokens in the prompt.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// Why the sequence ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Whether the sequence has ended.
    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// Tokens not yet in the cache.
    pub fn pending_len(&self) -> usize {
        self.tokens.len() - self.kv.len()
    }

    /// The sequence's cache.
    pub fn kv(&self) -> &SequenceKv {
        &self.kv
    }

    /// The prompt followed by the generated tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The part of the next packed step that belongs to this sequence: the pending tokens, at
    /// most `max_tokens` of them (a chunk of a long prefill).
    pub fn step_input(&mut self, max_tokens: usize) -> SeqStep<'_> {
        let pending = self.pending_range(max_tokens);
        SeqStep {
            tokens: &self.tokens[pending],
            kv: &mut self.kv,
            prompt_len: self.prompt_len,
        }
    }

    /// Whether this sequence can take a step of at most `max_tokens` pending tokens on
    /// `model` ([`CausalLm::check_step`]).
    pub fn check_step(&self, model: &dyn CausalLm, max_tokens: usize) -> Result<()> {
        let pending = self.pending_range(max_tokens);
        model.check_step(&self.tokens[pending], self.kv.len())
    }

    /// The tokens the next step takes: those after the cache, at most `max_tokens` (at
    /// least one).
    fn pending_range(&self, max_tokens: usize) -> std::ops::Range<usize> {
        let start = self.kv.len().min(self.tokens.len());
        let end = self
            .tokens
            .len()
            .min(start.saturating_add(max_tokens.max(1)));
        start..end
    }

    /// Whether the last step left tokens pending (a chunked prefill): its logits are not for
    /// the next token and must not be sampled.
    pub fn is_prefilling(&self) -> bool {
        self.pending_len() > 0
    }

    /// Drops the cache so that its blocks go back to the pool; the next steps recompute it
    /// (preemption). The numbers come out identical: every position is recomputed in the
    /// same product order as before.
    pub fn evict_cache(&mut self) {
        self.kv.truncate(0);
    }

    /// Another choice of the same request sharing this one's cache (copy-on-write), with its
    /// own sampler seeded by `seed`. Call it after the prompt has been prefilled.
    pub fn fork(&self, params: &GenerationParams, vocab: usize, seed: Option<u64>) -> Result<Self> {
        let sampler = sampler_for(params, vocab, seed)?;
        Ok(Self {
            prompt_len: self.prompt_len,
            tokens: self.tokens.clone(),
            kv: self.kv.clone(),
            sampler,
            history: self.history.clone(),
            decoder: self.decoder.clone(),
            stop: StopMatcher::new(&params.stop)?,
            generated: self.generated.clone(),
            max_tokens: self.max_tokens,
            eot_ids: self.eot_ids.clone(),
            constraint: self.constraint.clone(),
            finish: self.finish,
        })
    }

    /// Takes the logits of the step and samples the next token.
    pub fn accept(&mut self, tokenizer: &Tokenizer, logits: &[f32]) -> Result<TokenOutput> {
        let sampled = self.sample_next(logits)?;
        self.accept_sampled(tokenizer, sampled)
    }

    /// The first half of [`Sequence::accept`]: samples the next token from the step's
    /// logits without taking it yet. It needs no tokenizer, so an engine may sample its
    /// sequences in parallel and then take each token with [`Sequence::accept_sampled`].
    pub fn sample_next(&mut self, logits: &[f32]) -> Result<SampledToken> {
        if self.finish.is_some() {
            return Err(Error::InvalidRequest(
                "the sequence has already finished".into(),
            ));
        }
        if self.is_prefilling() {
            return Err(Error::InvalidRequest(
                "the sequence is still prefilling its prompt".into(),
            ));
        }
        match &mut self.constraint {
            None => self.sampler.sample(logits, &self.history),
            Some(constraint) => {
                let allowed = constraint.allowed()?;
                self.sampler
                    .sample_masked(logits, &self.history, Some(&allowed))
            }
        }
    }

    /// The second half of [`Sequence::accept`]: takes `sampled` (from
    /// [`Sequence::sample_next`] on this sequence) as the next token, decodes its text and
    /// checks the stop conditions.
    pub fn accept_sampled(
        &mut self,
        tokenizer: &Tokenizer,
        sampled: SampledToken,
    ) -> Result<TokenOutput> {
        if self.finish.is_some() {
            return Err(Error::InvalidRequest(
                "the sequence has already finished".into(),
            ));
        }
        self.history.push_generated(sampled.id);
        self.generated.push(sampled.id);
        self.tokens.push(sampled.id);

        let logprob = self.sampler.params().logprobs.then(|| {
            token_logprob(
                tokenizer,
                sampled.id,
                sampled.logprob,
                &sampled.top_logprobs,
            )
        });
        let mut text = String::new();
        if self.eot_ids.contains(&sampled.id) {
            self.finish = Some(FinishReason::Stop);
        } else {
            let complete = match &mut self.constraint {
                Some(constraint) => constraint.accept(sampled.id)?,
                None => false,
            };
            let delta = self.decoder.push(tokenizer, sampled.id)?;
            let step = self.stop.push(&delta);
            text = step.text;
            if step.stopped || complete {
                self.finish = Some(FinishReason::Stop);
            } else if self.generated.len() >= self.max_tokens {
                self.finish = Some(FinishReason::Length);
            }
        }
        if self.finish.is_some() && !self.stop.is_stopped() {
            // Release what was held back for UTF-8 or a possible stop string.
            let tail = self.decoder.finish(tokenizer)?;
            let step = self.stop.push(&tail);
            text.push_str(&step.text);
            if !step.stopped {
                text.push_str(&self.stop.finish());
            }
        }
        Ok(TokenOutput {
            token: sampled.id,
            text,
            logprob,
            finish: self.finish,
        })
    }
}

/// A sampler for `params`, seeded with `seed` or from the OS.
fn sampler_for(params: &GenerationParams, vocab: usize, seed: Option<u64>) -> Result<Sampler> {
    match seed {
        Some(seed) => Sampler::with_seed(&params.sampling, vocab, seed),
        None => Sampler::new(&params.sampling, vocab),
    }
}

/// Builds the OpenAI logprob entry of a token.
fn token_logprob(tokenizer: &Tokenizer, id: u32, logprob: f32, top: &[(u32, f32)]) -> TokenLogprob {
    let text = |id: u32| tokenizer.decode(&[id], false).unwrap_or_default();
    let token = text(id);
    TokenLogprob {
        bytes: token.as_bytes().to_vec(),
        token,
        logprob,
        top_logprobs: top
            .iter()
            .map(|&(id, logprob)| {
                let token = text(id);
                TopLogprob {
                    bytes: token.as_bytes().to_vec(),
                    token,
                    logprob,
                }
            })
            .collect(),
    }
}

/// Steps every unfinished sequence in `seqs` together until all have finished, calling
/// `on_token(index, output)` after each sampled token.
///
/// Returning an error from `on_token` (a client went away) stops the whole batch.
pub fn run_batch(
    model: &dyn CausalLm,
    tokenizer: &Tokenizer,
    seqs: &mut [Sequence],
    mut on_token: impl FnMut(usize, &TokenOutput) -> Result<()>,
) -> Result<()> {
    let mut logits = Logits::new();
    loop {
        // Indices and step inputs of the unfinished sequences, gathered in one pass.
        let (active, mut steps): (Vec<usize>, Vec<SeqStep<'_>>) = seqs
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| !s.is_finished())
            .map(|(i, s)| (i, s.step_input(usize::MAX)))
            .unzip();
        if active.is_empty() {
            return Ok(());
        }
        model.forward_into(&mut steps, &mut logits)?;
        drop(steps);
        for (&i, logits) in active.iter().zip(logits.iter()) {
            let out = seqs[i].accept(tokenizer, logits)?;
            on_token(i, &out)?;
        }
    }
}
