//! The engine on the default chat model: batch invariance against llama.cpp's reference,
//! cancellation, preemption, overload.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::ids;
use helixflow_core::chat_model::ChatModel;
use helixflow_core::engine::{Engine, EngineConfig, EngineEvent, EngineHandle, KvBudget};
use helixflow_core::generation::GenerationParams;
use helixflow_core::Error;

const PATIENCE: Duration = Duration::from_secs(120);

fn model() -> Arc<ChatModel> {
    static MODEL: OnceLock<Arc<ChatModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Arc::new(ChatModel::load_named(common::chat_gguf(), "smollm2-135m-instruct").unwrap())
        })
        .clone()
}

/// (prompt ids, llama.cpp's greedy completion ids) of every golden case.
fn cases() -> Vec<(Vec<u32>, Vec<u32>)> {
    common::golden("smollm2-chat.json")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                ids(&c["prompt_token_ids"]),
                ids(&c["greedy_completion_token_ids"]),
            )
        })
        .collect()
}

fn start(config: EngineConfig) -> EngineHandle {
    Engine::start(model(), config).unwrap()
}

/// Collects the tokens of choice 0 until `Done`.
fn collect(stream: helixflow_core::engine::RequestStream) -> Vec<u32> {
    let mut tokens = Vec::new();
    loop {
        match stream.recv_timeout(PATIENCE) {
            Ok(EngineEvent::Token { choice: 0, output }) => tokens.push(output.token),
            Ok(EngineEvent::Done { completion_tokens }) => {
                assert!(completion_tokens >= tokens.len());
                return tokens;
            }
            Ok(EngineEvent::Failed(e)) => panic!("request failed: {e}"),
            Ok(_) => {}
            Err(_) => panic!("no event within {PATIENCE:?}"),
        }
    }
}

/// Waits for `cond` on the engine's stats, for at most `PATIENCE`.
fn wait_for(
    engine: &EngineHandle,
    what: &str,
    cond: impl Fn(&helixflow_core::engine::EngineStats) -> bool,
) {
    let start = Instant::now();
    while !cond(&engine.stats()) {
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for {what}: {:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn greedy_outputs_do_not_depend_on_what_else_is_in_flight() {
    // A small token budget forces chunked prefills that share steps with running decodes.
    let engine = start(EngineConfig {
        max_batched_tokens: 24,
        ..Default::default()
    });
    let mut streams = Vec::new();
    for (i, (prompt, want)) in cases().into_iter().enumerate() {
        let stream = engine
            .submit(prompt, GenerationParams::greedy(want.len()))
            .unwrap();
        streams.push((stream, want));
        // Stagger arrivals: the next request comes a few steps after this one.
        let steps = engine.stats().steps;
        wait_for(&engine, "a few steps", |s| s.steps >= steps + 2 + i as u64);
    }
    for (stream, want) in streams {
        assert_eq!(collect(stream), want);
    }
    let stats = engine.stats();
    assert!(
        stats.last_batch_tokens <= 24 && stats.steps > 0,
        "{stats:?}"
    );
    wait_for(&engine, "all blocks back", |s| s.kv_blocks_used == 0);
}

#[test]
fn a_pool_too_small_for_everyone_preempts_and_still_gives_the_same_output() {
    let layout = model().model().block_layout(16);
    // Room for about two of the requests at a time.
    let engine = start(EngineConfig {
        kv_budget: KvBudget::Bytes(layout.bytes_per_block() * 12),
        ..Default::default()
    });
    let streams: Vec<_> = cases()
        .into_iter()
        .map(|(prompt, want)| {
            let stream = engine
                .submit(prompt, GenerationParams::greedy(want.len()))
                .unwrap();
            (stream, want)
        })
        .collect();
    for (stream, want) in streams {
        assert_eq!(collect(stream), want);
    }
    assert!(engine.stats().preemptions > 0, "{:?}", engine.stats());
    wait_for(&engine, "all blocks back", |s| s.kv_blocks_used == 0);
}

#[test]
fn dropping_a_stream_frees_its_blocks_mid_prefill_and_mid_decode() {
    let engine = start(EngineConfig {
        max_batched_tokens: 8,
        ..Default::default()
    });
    let (prompt, _) = cases().remove(5);
    assert!(prompt.len() > 24);

    // Mid-prefill: the prompt needs several 8-token steps.
    let stream = engine
        .submit(prompt.clone(), GenerationParams::greedy(40))
        .unwrap();
    wait_for(&engine, "the prefill to start", |s| s.kv_blocks_used > 0);
    assert!(engine.stats().tokens_generated == 0);
    drop(stream);
    wait_for(&engine, "blocks freed after a cancelled prefill", |s| {
        s.kv_blocks_used == 0 && s.running_requests == 0
    });

    // Mid-decode.
    let stream = engine.submit(prompt, GenerationParams::greedy(40)).unwrap();
    let mut tokens = 0;
    while tokens < 3 {
        if let Ok(EngineEvent::Token { .. }) = stream.recv_timeout(PATIENCE) {
            tokens += 1;
        }
    }
    drop(stream);
    wait_for(&engine, "blocks freed after a cancelled decode", |s| {
        s.kv_blocks_used == 0 && s.running_requests == 0
    });
    assert_eq!(engine.stats().cancelled_requests, 2);
}

#[test]
fn a_full_queue_refuses_requests_at_once() {
    let engine = start(EngineConfig {
        queue_capacity: 2,
        max_num_seqs: 1,
        ..Default::default()
    });
    let (prompt, _) = cases().remove(0);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match engine.submit(prompt.clone(), GenerationParams::greedy(8)) {
            Ok(stream) => accepted.push(stream),
            Err(Error::Overloaded { queued: 2, .. }) => refused += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(refused > 0, "nothing was refused");
    assert!(accepted.len() <= 2 + 2 + 1, "{} accepted", accepted.len());
    for stream in accepted {
        assert_eq!(collect(stream).len(), 8);
    }
}

#[test]
fn a_prompt_id_outside_the_vocabulary_is_refused_and_spares_the_batch() {
    let engine = start(EngineConfig::default());
    let (prompt, expected) = cases().remove(0);
    let healthy = engine
        .submit(prompt, GenerationParams::greedy(expected.len()))
        .unwrap();
    let vocab = model().model().shape().vocab_size as u32;
    match engine.submit(vec![5, vocab], GenerationParams::greedy(2)) {
        Err(Error::InvalidRequest(message)) => assert!(message.contains("vocabulary"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The request already running is untouched.
    assert_eq!(collect(healthy), expected);
}

#[test]
fn requests_that_can_never_fit_are_refused_at_submission() {
    let layout = model().model().block_layout(16);
    let engine = start(EngineConfig {
        kv_budget: KvBudget::Bytes(layout.bytes_per_block() * 2),
        ..Default::default()
    });
    let (prompt, _) = cases().remove(0);
    let err = engine
        .submit(prompt, GenerationParams::greedy(32))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    let context = model().model().shape().context_length;
    let err = engine
        .submit(vec![1; context], GenerationParams::greedy(1))
        .unwrap_err();
    assert!(matches!(err, Error::ContextOverflow { .. }), "{err}");
}

#[test]
fn choices_of_one_request_share_the_prompt_and_sample_independently() {
    let engine = start(EngineConfig::default());
    let (prompt, want) = cases().remove(1);
    // Greedy choices all follow the reference.
    let mut params = GenerationParams::greedy(want.len());
    params.n = 3;
    let stream = engine.submit(prompt.clone(), params).unwrap();
    let mut per_choice = vec![Vec::new(); 3];
    for event in stream {
        match event {
            EngineEvent::Token { choice, output } => per_choice[choice].push(output.token),
            EngineEvent::Done { .. } => break,
            EngineEvent::Failed(e) => panic!("{e}"),
            EngineEvent::Started { prompt_tokens } => assert_eq!(prompt_tokens, prompt.len()),
        }
    }
    assert!(per_choice.iter().all(|c| *c == want));

    // Sampled choices with a seed: reproducible, and not all the same.
    let sample = |seed| {
        let mut params = GenerationParams::greedy(12);
        params.sampling.temperature = 1.0;
        params.n = 3;
        params.sampling.seed = Some(seed);
        let stream = engine.submit(prompt.clone(), params).unwrap();
        let mut per_choice = vec![Vec::new(); 3];
        for event in stream {
            match event {
                EngineEvent::Token { choice, output } => per_choice[choice].push(output.token),
                EngineEvent::Done { .. } => break,
                _ => {}
            }
        }
        per_choice
    };
    let first = sample(7);
    assert_eq!(first, sample(7));
    assert!(first[0] != first[1] || first[1] != first[2], "{first:?}");
}

#[test]
fn a_shared_system_prompt_is_prefilled_once() {
    let engine = start(EngineConfig::default());
    let tokenizer = model().tokenizer().clone();
    let system = "You are a meticulous assistant. Answer in one short sentence, cite no sources, \
                  and never use lists. Prefer plain words over jargon, and say so when unsure. \
                  Keep units metric, dates in ISO format, and numbers as digits. Be kind. ";
    let prompt = |question: &str| {
        tokenizer
            .encode(&format!("{system}{question}"), false)
            .unwrap()
    };
    // The cold run, then the same system prompt with another question.
    let first = prompt("What is the capital of France?");
    let second = prompt("Why is the sky blue?");
    assert!(first.len() > 48, "{} tokens", first.len());
    let cold = collect(
        engine
            .submit(first.clone(), GenerationParams::greedy(8))
            .unwrap(),
    );
    let before = engine.stats();
    let warm_first = collect(engine.submit(first, GenerationParams::greedy(8)).unwrap());
    let after = engine.stats();
    assert_eq!(
        warm_first, cold,
        "a cached prefix must not change the output"
    );
    assert!(after.prefix_cache_hits > before.prefix_cache_hits);
    assert!(
        after.prefill_tokens - before.prefill_tokens < 16,
        "the cached prompt was prefilled again: {before:?} {after:?}"
    );

    // The second prompt reuses the shared part and matches a cold engine's output.
    let hits = engine.stats().prefix_cache_hits;
    let warm_second = collect(
        engine
            .submit(second.clone(), GenerationParams::greedy(8))
            .unwrap(),
    );
    assert!(engine.stats().prefix_cache_hits >= hits + 2);
    let cold_engine = start(EngineConfig::default());
    let cold_second = collect(
        cold_engine
            .submit(second, GenerationParams::greedy(8))
            .unwrap(),
    );
    assert_eq!(warm_second, cold_second);
}

#[test]
fn seeded_sampling_does_not_depend_on_what_else_is_in_flight() {
    let engine = start(EngineConfig::default());
    let params = |seed: u64| {
        let mut params = GenerationParams::greedy(16);
        params.ignore_eos = true;
        params.sampling.temperature = 0.9;
        params.sampling.seed = Some(seed);
        params
    };
    let prompts: Vec<Vec<u32>> = cases().into_iter().map(|(prompt, _)| prompt).collect();
    let alone: Vec<Vec<u32>> = (0..prompts.len())
        .map(|i| collect(engine.submit(prompts[i].clone(), params(i as u64)).unwrap()))
        .collect();
    // All at once: their decodes share steps, where the engine samples them in parallel.
    let streams: Vec<_> = (0..prompts.len())
        .map(|i| engine.submit(prompts[i].clone(), params(i as u64)).unwrap())
        .collect();
    let together: Vec<Vec<u32>> = streams.into_iter().map(collect).collect();
    assert!(engine.stats().max_batch_seqs >= 2, "{:?}", engine.stats());
    assert_eq!(alone, together);
    assert!(alone.windows(2).any(|w| w[0] != w[1]));
}
