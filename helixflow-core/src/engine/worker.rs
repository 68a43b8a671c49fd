//! The engine loop: admit, plan, run one packed step, sample, stream, repeat.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use super::config::EngineConfig;
use super::policy::{RunningSeq, SchedulingPolicy, WaitingRequest};
use super::request::{EngineEvent, EventSink};
use super::stats::StatsCell;
use crate::chat_model::ChatModel;
use crate::cpu::pool::Pool;
use crate::generation::{GenerationParams, Sequence, TokenOutput};
use crate::kv_cache::{block_hashes, KvPool, PrefixCache, SequenceKv};
use crate::models::Logits;
use crate::models::SeqStep;
use crate::sampling::{choice_seed, SampledToken};
use crate::{Error, Result};

/// A request as it crosses the queue.
pub(crate) struct Submission {
    pub(crate) prompt: Vec<u32>,
    pub(crate) params: GenerationParams,
    pub(crate) max_tokens: usize,
    pub(crate) sink: EventSink,
}

/// A request inside the engine.
struct Request {
    arrival: u64,
    submission: Submission,
    /// Choice 0 from admission on; the other choices are forked from it once the prompt is in
    /// its cache, so that they share the prompt's blocks.
    choices: Vec<Sequence>,
    completion_tokens: usize,
    /// Prefix hashes of the prompt's full blocks (empty for prompts too short to share).
    prompt_hashes: Vec<u64>,
    /// Prompt blocks already offered to the prefix cache.
    published_blocks: usize,
}

impl Request {
    fn forked(&self) -> bool {
        self.choices.len() == self.submission.params.n
    }

    fn is_done(&self) -> bool {
        self.forked() && self.choices.iter().all(Sequence::is_finished)
    }

    /// Blocks the request's not-yet-cached prompt needs.
    fn blocks_needed(&self, block_size: usize) -> usize {
        match self.choices.first() {
            Some(seq) => seq.kv().blocks_needed(seq.tokens().len()),
            None => self.submission.prompt.len().div_ceil(block_size),
        }
    }
}

pub(crate) struct Worker {
    chat: Arc<ChatModel>,
    config: EngineConfig,
    pool: KvPool,
    policy: Box<dyn SchedulingPolicy>,
    stats: Arc<StatsCell>,
    waiting: VecDeque<Request>,
    running: Vec<Request>,
    arrivals: u64,
    prefix: PrefixCache,
    /// The last step's logits, a buffer kept from step to step.
    logits: Logits,
}

impl Worker {
    pub(crate) fn new(
        chat: Arc<ChatModel>,
        config: EngineConfig,
        pool: KvPool,
        policy: Box<dyn SchedulingPolicy>,
        stats: Arc<StatsCell>,
    ) -> Self {
        Self {
            chat,
            config,
            pool,
            policy,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            arrivals: 0,
            prefix: PrefixCache::new(),
            logits: Logits::new(),
        }
    }

    /// Runs until every handle is gone and no request is left.
    pub(crate) fn run(mut self, submissions: Receiver<Submission>) {
        let mut connected = true;
        loop {
            connected = connected && self.receive(&submissions);
            self.drop_cancelled();
            if self.waiting.is_empty() && self.running.is_empty() {
                self.publish();
                if !connected {
                    return;
                }
                // Idle: sleep until a request comes.
                match submissions.recv() {
                    Ok(s) => self.enqueue(s),
                    Err(_) => return,
                }
                continue;
            }
            self.admit();
            self.step();
            self.publish();
        }
    }

    /// Moves queued submissions into the waiting list, as long as it has room (the rest wait
    /// in the bounded channel, whose overflow is refused). `false` once every handle is gone.
    fn receive(&mut self, submissions: &Receiver<Submission>) -> bool {
        while self.waiting.len() < self.config.queue_capacity {
            match submissions.try_recv() {
                Ok(s) => self.enqueue(s),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn enqueue(&mut self, submission: Submission) {
        self.arrivals += 1;
        // Prompts of one token are computed in another product order than longer ones, so
        // their blocks are never shared (see `ProductOrder`).
        let prompt_hashes = if submission.prompt.len() >= 2 {
            block_hashes(&submission.prompt, self.config.block_size)
        } else {
            Vec::new()
        };
        self.waiting.push_back(Request {
            arrival: self.arrivals,
            submission,
            choices: Vec::new(),
            completion_tokens: 0,
            prompt_hashes,
            published_blocks: 0,
        });
    }

    /// Forgets requests whose caller has gone; dropping them frees their blocks.
    fn drop_cancelled(&mut self) {
        let before = self.waiting.len() + self.running.len();
        self.waiting.retain(|r| !r.submission.sink.is_cancelled());
        self.running.retain(|r| !r.submission.sink.is_cancelled());
        let cancelled = before - self.waiting.len() - self.running.len();
        if cancelled > 0 {
            self.stats
                .update(|s| s.cancelled_requests += cancelled as u64);
            self.stats.ended(cancelled);
        }
    }

    fn running_seq_count(&self) -> usize {
        self.running.iter().map(|r| r.submission.params.n).sum()
    }

    fn admit(&mut self) {
        let bs = self.config.block_size;
        let view: Vec<WaitingRequest> = self
            .waiting
            .iter()
            .map(|r| WaitingRequest {
                arrival: r.arrival,
                seqs: r.submission.params.n,
                blocks_needed: r.blocks_needed(bs),
            })
            .collect();
        let count = self.policy.admit(
            &view,
            self.running_seq_count(),
            self.config.max_num_seqs,
            self.pool.stats().free + self.prefix.evictable(),
        );
        for _ in 0..count.min(self.waiting.len()) {
            let mut request = self.waiting.pop_front().expect("counted");
            if request.choices.is_empty() {
                match self.first_choice(&request) {
                    Ok(seq) => request.choices.push(seq),
                    Err(e) => {
                        request.submission.sink.send(EngineEvent::Failed(e));
                        continue;
                    }
                }
                let prompt_tokens = request.submission.prompt.len();
                request
                    .submission
                    .sink
                    .send(EngineEvent::Started { prompt_tokens });
            }
            self.running.push(request);
        }
    }

    /// Choice 0 of a request, starting from the longest cached prefix of its prompt (at
    /// least one prompt token is always computed: its logits give the first token).
    fn first_choice(&mut self, request: &Request) -> Result<Sequence> {
        let s = &request.submission;
        let bs = self.config.block_size;
        let usable = (s.prompt.len() - 1) / bs;
        let mut blocks = self
            .prefix
            .lookup(&request.prompt_hashes[..usable.min(request.prompt_hashes.len())]);
        blocks.truncate(usable);
        let cached = blocks.len() * bs;
        Sequence::with_cache(
            self.chat.model(),
            self.chat.tokenizer(),
            s.prompt.clone(),
            &s.params,
            s.max_tokens,
            s.params.sampling.seed.map(|seed| choice_seed(seed, 0)),
            SequenceKv::with_prefix(self.pool.clone(), blocks, cached),
        )
    }

    /// Offers the prompt blocks that running requests have completed to the prefix cache.
    fn publish_prompt_blocks(&mut self) {
        let bs = self.config.block_size;
        for request in &mut self.running {
            let Some(seq) = request.choices.first() else {
                continue;
            };
            let full = seq.kv().len().min(seq.prompt_len()) / bs;
            let full = full.min(request.prompt_hashes.len());
            for j in request.published_blocks..full {
                self.prefix
                    .insert(request.prompt_hashes[j], &seq.kv().blocks()[j]);
            }
            request.published_blocks = request.published_blocks.max(full);
        }
    }

    /// Running sequences as (request index, choice index), in a stable order.
    fn running_seqs(&self) -> Vec<(usize, usize)> {
        let mut seqs = Vec::new();
        for (r, request) in self.running.iter().enumerate() {
            for (c, seq) in request.choices.iter().enumerate() {
                if !seq.is_finished() {
                    seqs.push((r, c));
                }
            }
        }
        seqs
    }

    /// Plans a step that fits the free KV blocks, preempting requests until it does.
    fn plan(&mut self) -> Option<Vec<(usize, usize, usize)>> {
        loop {
            let seqs = self.running_seqs();
            if seqs.is_empty() {
                return None;
            }
            let view: Vec<RunningSeq> = seqs
                .iter()
                .map(|&(r, c)| RunningSeq {
                    arrival: self.running[r].arrival,
                    pending: self.running[r].choices[c].pending_len(),
                })
                .collect();
            let chunks = self.policy.plan_step(&view, self.config.max_batched_tokens);
            let needed: usize = seqs
                .iter()
                .zip(&chunks)
                .map(|(&(r, c), &n)| {
                    let kv = self.running[r].choices[c].kv();
                    kv.blocks_needed(kv.len() + n)
                })
                .sum();
            let free = self.pool.stats().free;
            if needed > free && self.prefix.evict(needed - free) > 0 {
                continue;
            }
            if needed <= free {
                let plan: Vec<_> = seqs
                    .into_iter()
                    .zip(chunks)
                    .filter(|&(_, n)| n > 0)
                    .map(|((r, c), n)| (r, c, n))
                    .collect();
                return (!plan.is_empty()).then_some(plan);
            }
            match self.policy.preempt(&view) {
                Some(arrival) => self.preempt(arrival),
                None => {
                    // Not even the oldest request alone fits: it can never run.
                    let request = self.running.remove(0);
                    let free = self.pool.stats().free;
                    request
                        .submission
                        .sink
                        .send(EngineEvent::Failed(Error::KvCacheFull { needed, free }));
                }
            }
        }
    }

    /// Frees a request's blocks and puts it back in the waiting list, in arrival order; its
    /// caches are recomputed when it is admitted again.
    fn preempt(&mut self, arrival: u64) {
        let Some(i) = self.running.iter().position(|r| r.arrival == arrival) else {
            return;
        };
        let mut request = self.running.remove(i);
        for seq in &mut request.choices {
            seq.evict_cache();
        }
        let at = self
            .waiting
            .iter()
            .position(|w| w.arrival > arrival)
            .unwrap_or(self.waiting.len());
        self.waiting.insert(at, request);
        self.stats.update(|s| s.preemptions += 1);
    }

    /// Runs one packed step and streams its tokens.
    fn step(&mut self) {
        let Some(plan) = self.plan() else {
            return;
        };
        // A failure that belongs to one sequence ends its request alone, before the step.
        let model = self.chat.model();
        for &(r, c, n) in &plan {
            let request = &mut self.running[r];
            let Some(seq) = request.choices.get(c) else {
                continue;
            };
            if let Err(e) = seq.check_step(model, n) {
                tracing::warn!("a request cannot continue and was ended: {e}");
                request.submission.sink.send(EngineEvent::Failed(e));
                request.choices.clear();
            }
        }
        let plan: Vec<_> = plan
            .into_iter()
            .filter(|&(r, _, _)| !self.running[r].choices.is_empty())
            .collect();
        if plan.is_empty() {
            self.running.retain(|r| !r.choices.is_empty());
            return;
        }
        let batch_tokens: usize = plan.iter().map(|&(_, _, n)| n).sum();
        let prefill_tokens: usize = plan
            .iter()
            .map(|&(r, c, n)| {
                let seq = &self.running[r].choices[c];
                n.min(seq.prompt_len().saturating_sub(seq.kv().len()))
            })
            .sum();
        let stepped = {
            let mut order: Vec<(usize, usize, usize)> = plan.clone();
            order.sort_unstable();
            let mut steps: Vec<SeqStep<'_>> = Vec::with_capacity(order.len());
            // Borrow each planned sequence mutably once, in request then choice order.
            let mut want = order.iter().peekable();
            for (r, request) in self.running.iter_mut().enumerate() {
                for (c, seq) in request.choices.iter_mut().enumerate() {
                    if let Some(&&(pr, pc, n)) = want.peek() {
                        if (pr, pc) == (r, c) {
                            steps.push(seq.step_input(n));
                            want.next();
                        }
                    }
                }
            }
            let result = self.chat.model().forward_into(&mut steps, &mut self.logits);
            drop(steps);
            result.map(|()| order)
        };
        let order = match stepped {
            Ok(ok) => ok,
            Err(e) => {
                // Every sequence passed its own checks: this is a fault of the whole step,
                // which fails the requests in it (the others go on).
                tracing::error!("an engine step of {} sequences failed: {e}", plan.len());
                let mut failed: Vec<usize> = plan.iter().map(|&(r, _, _)| r).collect();
                failed.sort_unstable();
                failed.dedup();
                for &r in failed.iter().rev() {
                    let request = self.running.remove(r);
                    let message = Error::StepFailed(e.to_string());
                    request.submission.sink.send(EngineEvent::Failed(message));
                }
                self.running.retain(|r| !r.choices.is_empty());
                return;
            }
        };
        self.publish_prompt_blocks();
        let mut presampled = sample_in_parallel(&mut self.running, &order, &self.logits);
        let mut generated = 0u64;
        let rows = order.iter().zip(self.logits.iter());
        for ((&(r, c, _), logits), presampled) in rows.zip(&mut presampled) {
            let request = &mut self.running[r];
            // A request whose sampling failed earlier in this loop has no choices left.
            if request.choices.get(c).is_none_or(Sequence::is_prefilling) {
                continue;
            }
            if let Some(sampled) = presampled.take() {
                let output = sampled.and_then(|sampled| {
                    request.choices[c].accept_sampled(self.chat.tokenizer(), sampled)
                });
                generated += u64::from(deliver(request, c, output));
                continue;
            }
            if c == 0 && !request.forked() {
                if let Err(e) = fork_choices(request, self.chat.model().shape().vocab_size) {
                    request.submission.sink.send(EngineEvent::Failed(e));
                    request.choices.clear();
                    continue;
                }
                // Every choice samples its first token from the prompt's logits.
                for choice in 0..request.choices.len() {
                    generated += u64::from(accept(request, choice, logits, &self.chat));
                }
            } else {
                generated += u64::from(accept(request, c, logits, &self.chat));
            }
        }
        // The statistics count this step before any of its requests hears that it is
        // done, so a client that reads them after its answer sees its own tokens.
        let finished_count = self
            .running
            .iter()
            .filter(|r| !r.choices.is_empty() && r.is_done())
            .count() as u64;
        self.stats.update(|s| {
            s.steps += 1;
            s.tokens_computed += batch_tokens as u64;
            s.prefill_tokens += prefill_tokens as u64;
            s.tokens_generated += generated;
            s.last_batch_seqs = plan.len();
            s.max_batch_seqs = s.max_batch_seqs.max(plan.len());
            s.last_batch_tokens = batch_tokens;
            s.finished_requests += finished_count;
        });
        self.stats.ended(finished_count as usize);
        self.running.retain(|r| {
            if r.choices.is_empty() {
                return false; // failed above
            }
            if r.is_done() {
                let completion_tokens = r.completion_tokens;
                r.submission
                    .sink
                    .send(EngineEvent::Done { completion_tokens });
                return false;
            }
            true
        });
    }

    fn publish(&self) {
        let (cached, hits, evictable) = (
            self.prefix.len(),
            self.prefix.hits(),
            self.prefix.evictable(),
        );
        let (waiting, running, seqs) = (
            self.waiting.len(),
            self.running.len(),
            self.running
                .iter()
                .flat_map(|r| &r.choices)
                .filter(|s| !s.is_finished())
                .count(),
        );
        self.stats.update(|s| {
            s.waiting_requests = waiting;
            s.running_requests = running;
            s.running_seqs = seqs;
            s.kv_blocks_cached = cached;
            s.prefix_cache_hits = hits;
            s.kv_blocks_evictable = evictable;
        });
    }
}

/// Adds choices 1..n, sharing choice 0's freshly prefilled cache.
fn fork_choices(request: &mut Request, vocab: usize) -> Result<()> {
    let params = &request.submission.params;
    for i in 1..params.n {
        let seed = params.sampling.seed.map(|s| choice_seed(s, i as u64));
        let fork = request.choices[0].fork(params, vocab, seed)?;
        request.choices.push(fork);
    }
    Ok(())
}

/// Samples choice `c`'s next token and streams it; `true` if a token was generated.
fn accept(request: &mut Request, c: usize, logits: &[f32], chat: &ChatModel) -> bool {
    let Some(seq) = request.choices.get_mut(c) else {
        return false;
    };
    if seq.is_finished() {
        return false;
    }
    let output = seq.accept(chat.tokenizer(), logits);
    deliver(request, c, output)
}

/// Sends choice `c`'s new token, or its failure (which ends the request), to the client;
/// true when a token was generated.
fn deliver(request: &mut Request, c: usize, output: Result<TokenOutput>) -> bool {
    match output {
        Ok(output) => {
            request.completion_tokens += 1;
            request
                .submission
                .sink
                .send(EngineEvent::Token { choice: c, output });
            true
        }
        Err(e) => {
            request.submission.sink.send(EngineEvent::Failed(e));
            request.choices.clear();
            false
        }
    }
}

/// Samples, on the kernels' pool, the next token of each planned choice that continues its
/// decoding (`order[i]` gets `logits[i]`): sampling reads a whole vocabulary of logits per
/// sequence, which on a batch of many sequences is worth spreading over the threads. Entry
/// `i` is `None` where the step loop has to take the token itself (a prompt's first token,
/// which every choice of the request samples, or a choice that is done or still prefilling).
fn sample_in_parallel(
    running: &mut [Request],
    order: &[(usize, usize, usize)],
    logits: &Logits,
) -> Vec<Option<Result<SampledToken>>> {
    /// One sequence to sample and where its result goes.
    struct Job<'a> {
        seq: &'a mut Sequence,
        logits: &'a [f32],
        at: usize,
        sampled: Option<Result<SampledToken>>,
    }
    let mut results: Vec<Option<Result<SampledToken>>> = Vec::new();
    results.resize_with(order.len(), || None);
    let mut jobs = Vec::with_capacity(order.len());
    // `order` is sorted by request and choice, so one walk over the requests finds them all.
    let mut want = order.iter().zip(logits.iter()).enumerate().peekable();
    for (r, request) in running.iter_mut().enumerate() {
        let forked = request.forked();
        for (c, seq) in request.choices.iter_mut().enumerate() {
            while let Some(&(at, (&(pr, pc, _), logits))) = want.peek() {
                if (pr, pc) > (r, c) {
                    break;
                }
                want.next();
                let continues = (c > 0 || forked) && !seq.is_prefilling() && !seq.is_finished();
                if (pr, pc) == (r, c) && continues {
                    jobs.push(Job {
                        seq: &mut *seq,
                        logits,
                        at,
                        sampled: None,
                    });
                    break;
                }
            }
        }
    }
    Pool::global().for_each_chunk_mut(&mut jobs, 1, |_, job| {
        for job in job {
            job.sampled = Some(job.seq.sample_next(job.logits));
        }
    });
    for job in jobs {
        results[job.at] = job.sampled;
    }
    results
}
