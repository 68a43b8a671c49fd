//! Unit tests of the sampler (a child module of `sampler`, so it can see the score buffer).

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn params() -> SamplingParams {
    SamplingParams::default()
}

fn random_logits(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-8.0f32..8.0)).collect()
}

/// Independent oracle: first index of the maximum.
fn first_argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Independent oracle: softmax in f64.
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let exps: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

fn counts(sampler: &mut Sampler, logits: &[f32], draws: usize) -> Vec<usize> {
    let history = TokenHistory::default();
    let mut counts = vec![0; logits.len()];
    for _ in 0..draws {
        counts[sampler.sample(logits, &history).unwrap().id as usize] += 1;
    }
    counts
}

#[test]
fn greedy_is_argmax_with_lowest_id_on_ties() {
    let history = TokenHistory::default();
    let mut s = Sampler::with_seed(&SamplingParams::greedy(), 4, 1).unwrap();
    assert_eq!(s.sample(&[0.1, 2.0, -1.0, 2.0], &history).unwrap().id, 1);
    let mut rng = StdRng::seed_from_u64(7);
    let mut s = Sampler::with_seed(&SamplingParams::greedy(), 5000, 1).unwrap();
    for _ in 0..50 {
        let logits = random_logits(&mut rng, 5000);
        assert_eq!(
            s.sample(&logits, &history).unwrap().id,
            first_argmax(&logits)
        );
    }
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let p = SamplingParams {
        temperature: 1.3,
        top_p: 0.95,
        ..params()
    };
    let run = |seed: u64| {
        let mut s = Sampler::with_seed(&p, 1000, seed).unwrap();
        let mut logits_rng = StdRng::seed_from_u64(99);
        let mut history = TokenHistory::new(&[1, 2, 3]);
        let mut out = Vec::new();
        for _ in 0..200 {
            let logits = random_logits(&mut logits_rng, 1000);
            let t = s.sample(&logits, &history).unwrap();
            history.push_generated(t.id);
            out.push(t.id);
        }
        out
    };
    let a = run(42);
    assert_eq!(a, run(42));
    let b = run(43);
    assert_ne!(a, b);
    // Not a degenerate stream: many distinct tokens.
    assert!(a.iter().collect::<HashSet<_>>().len() > 50);
}

#[test]
fn new_uses_params_seed() {
    let p = SamplingParams {
        seed: Some(5),
        ..params()
    };
    let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
    let mut a = Sampler::new(&p, 100).unwrap();
    let mut b = Sampler::with_seed(&params(), 100, 5).unwrap();
    assert_eq!(a.seed(), 5);
    assert_eq!(counts(&mut a, &logits, 300), counts(&mut b, &logits, 300));
}

#[test]
fn choice_seeds_are_distinct_and_choice_zero_is_the_seed() {
    assert_eq!(choice_seed(123, 0), 123);
    let seeds: HashSet<u64> = (0..1000).map(|i| choice_seed(123, i)).collect();
    assert_eq!(seeds.len(), 1000);
    assert_ne!(choice_seed(123, 1), choice_seed(124, 1));
}

#[test]
fn top_k_one_is_greedy() {
    let p = SamplingParams {
        temperature: 1.5,
        top_k: Some(1),
        ..params()
    };
    let mut s = Sampler::with_seed(&p, 3000, 3).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let history = TokenHistory::default();
    for _ in 0..50 {
        let logits = random_logits(&mut rng, 3000);
        assert_eq!(
            s.sample(&logits, &history).unwrap().id,
            first_argmax(&logits)
        );
    }
}

#[test]
fn top_k_keeps_only_the_k_best_renormalised() {
    let logits = [0.0f32, 1.0, 2.0, 3.0, 2.5, -1.0];
    let p = SamplingParams {
        top_k: Some(2),
        ..params()
    };
    let mut s = Sampler::with_seed(&p, logits.len(), 17).unwrap();
    let c = counts(&mut s, &logits, 20_000);
    let expected = softmax(&[3.0, 2.5]);
    assert_eq!(c[0] + c[1] + c[2] + c[5], 0, "{c:?}");
    let observed = c[3] as f64 / 20_000.0;
    assert!(
        (observed - expected[0]).abs() < 0.015,
        "{observed} vs {expected:?}"
    );
}

#[test]
fn tiny_top_p_keeps_only_the_most_likely() {
    let p = SamplingParams {
        top_p: 1e-6,
        ..params()
    };
    let mut s = Sampler::with_seed(&p, 2000, 8).unwrap();
    let mut rng = StdRng::seed_from_u64(12);
    let history = TokenHistory::default();
    for _ in 0..30 {
        let logits = random_logits(&mut rng, 2000);
        assert_eq!(
            s.sample(&logits, &history).unwrap().id,
            first_argmax(&logits)
        );
    }
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_best() {
    let probs = [0.5f32, 0.3, 0.15, 0.05];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let p = SamplingParams {
        min_p: 0.4, // threshold 0.2: keeps 0.5 and 0.3
        ..params()
    };
    let mut s = Sampler::with_seed(&p, 4, 4).unwrap();
    let c = counts(&mut s, &logits, 20_000);
    assert_eq!(c[2] + c[3], 0, "{c:?}");
    let observed = c[0] as f64 / 20_000.0;
    assert!((observed - 0.5 / 0.8).abs() < 0.015, "{observed}");
}

#[test]
fn temperature_one_matches_softmax() {
    let logits = [1.0f32, 0.0, -0.5, 2.0, 0.7, -3.0];
    let mut s = Sampler::with_seed(&params(), logits.len(), 2024).unwrap();
    let draws = 20_000;
    let c = counts(&mut s, &logits, draws);
    for (i, expected) in softmax(&logits).iter().enumerate() {
        let observed = c[i] as f64 / draws as f64;
        // ~4.5 standard deviations of a binomial proportion.
        let tolerance = 4.5 * (expected * (1.0 - expected) / draws as f64).sqrt() + 1e-3;
        assert!(
            (observed - expected).abs() < tolerance,
            "token {i}: {observed} vs {expected}"
        );
    }
}

#[test]
fn temperature_two_matches_softmax_of_halved_logits() {
    let logits = [1.0f32, 0.0, 2.0, -1.0];
    let p = SamplingParams {
        temperature: 2.0,
        ..params()
    };
    let mut s = Sampler::with_seed(&p, logits.len(), 77).unwrap();
    let draws = 20_000;
    let c = counts(&mut s, &logits, draws);
    let halved: Vec<f32> = logits.iter().map(|v| v / 2.0).collect();
    for (i, expected) in softmax(&halved).iter().enumerate() {
        let observed = c[i] as f64 / draws as f64;
        assert!(
            (observed - expected).abs() < 0.015,
            "token {i}: {observed} vs {expected}"
        );
    }
}

#[test]
fn low_temperature_concentrates_on_the_best() {
    let logits = [1.0f32, 0.8, 0.5, 0.9];
    let p = SamplingParams {
        temperature: 0.01,
        ..params()
    };
    let mut s = Sampler::with_seed(&p, logits.len(), 5).unwrap();
    let c = counts(&mut s, &logits, 2000);
    assert_eq!(c[0], 2000, "{c:?}");
}

#[test]
fn logit_bias_bans_and_forces() {
    let logits = [5.0f32, 4.0, 3.0, -2.0];
    let history = TokenHistory::default();
    let banned = SamplingParams {
        logit_bias: HashMap::from([(0, -100.0)]),
        ..params()
    };
    let mut greedy = Sampler::with_seed(
        &SamplingParams {
            temperature: 0.0,
            ..banned.clone()
        },
        4,
        0,
    )
    .unwrap();
    assert_eq!(greedy.sample(&logits, &history).unwrap().id, 1);
    let mut s = Sampler::with_seed(&banned, 4, 1).unwrap();
    let c = counts(&mut s, &logits, 5000);
    assert_eq!(c[0], 0);
    assert!(c[1] > 0 && c[2] > 0);

    let forced = SamplingParams {
        logit_bias: HashMap::from([(3, 100.0)]),
        ..params()
    };
    let mut s = Sampler::with_seed(&forced, 4, 2).unwrap();
    assert_eq!(counts(&mut s, &logits, 500)[3], 500);
    let mut greedy = Sampler::with_seed(
        &SamplingParams {
            temperature: 0.0,
            ..forced
        },
        4,
        0,
    )
    .unwrap();
    let t = greedy.sample(&logits, &history).unwrap();
    assert_eq!(t.id, 3);
    // The reported logprob is the raw model's, not the forced one.
    let raw = softmax(&logits)[3].ln();
    assert!((t.logprob as f64 - raw).abs() < 1e-4);

    // A moderate bias shifts the distribution: +2 on token 2 puts it level with token 0.
    let shifted = SamplingParams {
        logit_bias: HashMap::from([(2, 2.0)]),
        temperature: 0.0,
        ..params()
    };
    let mut s = Sampler::with_seed(&shifted, 4, 0).unwrap();
    assert_eq!(s.sample(&logits, &history).unwrap().id, 0); // tie → lowest id
}

#[test]
fn penalties_follow_hugging_face_and_openai_arithmetic() {
    let logits = [2.0f32, -1.0, 0.5, 3.0, 1.0];
    let mut history = TokenHistory::new(&[0, 1]);
    for id in [2, 2, 3] {
        history.push_generated(id);
    }
    let p = SamplingParams {
        temperature: 0.0,
        repetition_penalty: 2.0,
        frequency_penalty: 0.5,
        presence_penalty: 0.25,
        ..params()
    };
    let mut s = Sampler::with_seed(&p, logits.len(), 0).unwrap();
    let t = s.sample(&logits, &history).unwrap();
    // Repetition (prompt + generated): 2/2, -1·2, 0.5/2, 3/2; token 4 unseen.
    // Frequency/presence (generated): token 2 (twice) -= 2·0.5 + 0.25, token 3 (once) -= 0.75.
    let expected = [1.0f32, -2.0, 0.25 - 1.25, 1.5 - 0.75, 1.0];
    for (i, (&got, &want)) in s.scores.iter().zip(&expected).enumerate() {
        assert!((got - want).abs() < 1e-6, "token {i}: {got} vs {want}");
    }
    assert_eq!(t.id, 0); // 1.0 ties with token 4; lowest id wins

    // Negative penalties reward repeats.
    let p = SamplingParams {
        temperature: 0.0,
        frequency_penalty: -2.0,
        ..params()
    };
    let mut history = TokenHistory::default();
    history.push_generated(2);
    history.push_generated(2);
    let mut s = Sampler::with_seed(&p, logits.len(), 0).unwrap();
    assert_eq!(s.sample(&logits, &history).unwrap().id, 2); // 0.5 + 2·2 = 4.5 > 3
}

#[test]
fn logprobs_are_raw_log_softmax_and_sorted() {
    let logits = [1.5f32, -0.5, 3.0, 0.25, 3.0];
    let p = SamplingParams {
        temperature: 0.7,
        top_k: Some(2),
        logit_bias: HashMap::from([(1, 5.0)]),
        logprobs: true,
        top_logprobs: 5,
        ..params()
    };
    let mut s = Sampler::with_seed(&p, logits.len(), 9).unwrap();
    let t = s.sample(&logits, &TokenHistory::default()).unwrap();
    let raw: Vec<f64> = softmax(&logits).iter().map(|p| p.ln()).collect();
    assert!((t.logprob as f64 - raw[t.id as usize]).abs() < 1e-5);
    let ids: Vec<u32> = t.top_logprobs.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids, vec![2, 4, 0, 3, 1]);
    let total: f64 = t
        .top_logprobs
        .iter()
        .map(|&(_, lp)| (lp as f64).exp())
        .sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
    for &(id, lp) in &t.top_logprobs {
        assert!((lp as f64 - raw[id as usize]).abs() < 1e-5);
    }

    // Fewer requested: the best ones; not requested: empty.
    let p3 = SamplingParams {
        top_logprobs: 2,
        ..p.clone()
    };
    let mut s = Sampler::with_seed(&p3, logits.len(), 9).unwrap();
    let t = s.sample(&logits, &TokenHistory::default()).unwrap();
    assert_eq!(t.top_logprobs.len(), 2);
    assert_eq!(t.top_logprobs[0].0, 2);
    assert_eq!(t.top_logprobs[1].0, 4);
    let mut s = Sampler::with_seed(&params(), logits.len(), 9).unwrap();
    let t = s.sample(&logits, &TokenHistory::default()).unwrap();
    assert!(t.top_logprobs.is_empty());
    assert!((t.logprob as f64 - raw[t.id as usize]).abs() < 1e-5);
}

#[test]
fn top_logprobs_on_a_large_vocabulary_match_a_full_sort() {
    let mut rng = StdRng::seed_from_u64(3);
    let logits = random_logits(&mut rng, 50_000);
    let p = SamplingParams {
        logprobs: true,
        top_logprobs: 20,
        ..params()
    };
    let mut s = Sampler::with_seed(&p, logits.len(), 1).unwrap();
    let t = s.sample(&logits, &TokenHistory::default()).unwrap();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let expected: Vec<u32> = order[..20].iter().map(|&i| i as u32).collect();
    let got: Vec<u32> = t.top_logprobs.iter().map(|&(id, _)| id).collect();
    assert_eq!(got, expected);
    assert!(t.top_logprobs.windows(2).all(|w| w[0].1 >= w[1].1));
}

#[test]
fn broken_logits_are_errors_not_panics() {
    let history = TokenHistory::default();
    let mut s = Sampler::with_seed(&params(), 3, 0).unwrap();
    assert!(matches!(
        s.sample(&[0.0, 1.0], &history),
        Err(Error::Candle(_))
    ));
    assert!(matches!(
        s.sample(&[0.0, f32::NAN, 1.0], &history),
        Err(Error::Candle(_))
    ));
    assert!(matches!(
        s.sample(&[f32::NEG_INFINITY; 3], &history),
        Err(Error::Candle(_))
    ));
    // The only forced token is impossible under the model: nothing can be sampled.
    let forced = SamplingParams {
        logit_bias: HashMap::from([(1, 100.0)]),
        ..params()
    };
    for temperature in [0.0, 1.0] {
        let p = SamplingParams {
            temperature,
            ..forced.clone()
        };
        let mut s = Sampler::with_seed(&p, 3, 0).unwrap();
        assert!(matches!(
            s.sample(&[0.0, f32::NEG_INFINITY, 1.0], &history),
            Err(Error::InvalidRequest(_))
        ));
    }
    // Invalid parameters are refused at construction.
    let bad = SamplingParams {
        top_p: 0.0,
        ..params()
    };
    assert!(matches!(
        Sampler::with_seed(&bad, 3, 0),
        Err(Error::InvalidRequest(_))
    ));
}

#[test]
fn history_ids_outside_the_vocabulary_are_ignored() {
    let mut history = TokenHistory::new(&[1_000_000]);
    history.push_generated(u32::MAX);
    let p = SamplingParams {
        temperature: 0.0,
        repetition_penalty: 1.5,
        frequency_penalty: 1.0,
        presence_penalty: 1.0,
        ..params()
    };
    let mut s = Sampler::with_seed(&p, 3, 0).unwrap();
    assert_eq!(s.sample(&[0.0, 2.0, 1.0], &history).unwrap().id, 1);
}

#[test]
fn extreme_but_valid_parameters_stay_well_defined() {
    let logits = [5.0f32, 30.0, 20.0, -10.0];
    let mut history = TokenHistory::new(&[1]);
    history.push_generated(2);
    // A tiny temperature behaves like greedy instead of overflowing.
    for top_p in [1.0, 0.9] {
        let p = SamplingParams {
            temperature: 1e-38,
            top_p,
            ..params()
        };
        let mut s = Sampler::with_seed(&p, 4, 0).unwrap();
        assert_eq!(counts(&mut s, &logits, 200)[1], 200);
    }
    // A tiny repetition penalty inflates seen tokens without producing +inf or NaN.
    let p = SamplingParams {
        repetition_penalty: 1e-38,
        ..params()
    };
    let mut s = Sampler::with_seed(&p, 4, 0).unwrap();
    for _ in 0..50 {
        let id = s.sample(&logits, &history).unwrap().id;
        assert!(id == 1 || id == 2, "{id}");
        assert!(s.scores.iter().all(|v| !v.is_nan()));
    }
}
