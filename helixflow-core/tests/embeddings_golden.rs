//! Fidelity of `EmbeddingModel` against the float64 reference for all-MiniLM-L6-v2
//! (`minilm-embeddings.json`, see the golden README).
//!
//! The model is the built-in `all-minilm-l6-v2`, provisioned into the cache on first use.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use helixflow_core::embeddings::{EmbeddingModel, PoolingMode};
use helixflow_core::Error;
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    input: String,
    token_ids: Vec<u32>,
    embedding: Vec<f64>,
}

fn model_dir() -> PathBuf {
    common::minilm_dir()
}

fn golden() -> &'static [Case] {
    static GOLDEN: OnceLock<Golden> = OnceLock::new();
    &GOLDEN
        .get_or_init(|| {
            let golden: Golden = serde_json::from_value(common::golden("minilm-embeddings.json"))
                .expect("golden file parses");
            assert!(!golden.cases.is_empty(), "no golden cases");
            golden
        })
        .cases
}

fn model() -> &'static EmbeddingModel {
    static MODEL: OnceLock<EmbeddingModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = model_dir();
        EmbeddingModel::load(&dir)
            .unwrap_or_else(|e| panic!("cannot load the MiniLM folder {}: {e}", dir.display()))
    })
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * y).sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()
}

fn assert_matches_reference(vector: &[f32], case: &Case) {
    let similarity = cosine(vector, &case.embedding);
    assert!(
        similarity >= 0.9999,
        "cosine {similarity} to the reference for {:?}",
        case.input
    );
    assert!(
        (norm(vector) - 1.0).abs() < 1e-4,
        "norm {} for {:?}",
        norm(vector),
        case.input
    );
}

/// A text well over 256 tokens.
fn long_text() -> String {
    "HelixFlow embeds long documents by truncating them to the model's limit. ".repeat(40)
}

#[test]
fn model_metadata_matches_the_folder() {
    let model = model();
    assert_eq!(model.dimension(), 384);
    assert_eq!(model.max_seq_len(), 256);
    assert_eq!(model.vocab_size(), 30522);
    assert_eq!(model.pooling(), &[PoolingMode::Mean]);
    assert!(model.normalizes());
    assert_eq!(model.name(), "all-minilm-l6-v2"); // named after its folder
}

#[test]
fn token_ids_match_the_reference() {
    for case in golden() {
        let ids = model().tokenize(&case.input).unwrap();
        assert_eq!(ids, case.token_ids, "token ids for {:?}", case.input);
    }
}

#[test]
fn each_case_alone_matches_the_reference() {
    for case in golden() {
        let out = model().embed(&[case.input.as_str()]).unwrap();
        assert_eq!(out.vectors.len(), 1);
        assert_eq!(out.prompt_tokens, case.token_ids.len(), "{:?}", case.input);
        assert_matches_reference(&out.vectors[0], case);
    }
}

#[test]
fn all_cases_in_one_call_match_the_reference() {
    let inputs: Vec<&str> = golden().iter().map(|c| c.input.as_str()).collect();
    let lengths: Vec<usize> = golden().iter().map(|c| c.token_ids.len()).collect();
    assert!(
        lengths.iter().min() != lengths.iter().max(),
        "the batch should mix lengths"
    );
    let out = model().embed(&inputs).unwrap();
    assert_eq!(out.vectors.len(), inputs.len());
    assert_eq!(out.prompt_tokens, lengths.iter().sum::<usize>());
    for (vector, case) in out.vectors.iter().zip(golden()) {
        assert_matches_reference(vector, case);
    }
}

#[test]
fn many_inputs_of_mixed_lengths_keep_their_order() {
    // More inputs than one forward pass holds, with a long one that shrinks the batches.
    let long = long_text();
    let mut inputs: Vec<&str> = Vec::new();
    for _ in 0..7 {
        inputs.extend(golden().iter().map(|c| c.input.as_str()));
        inputs.push(&long);
    }
    let out = model().embed(&inputs).unwrap();
    assert_eq!(out.vectors.len(), inputs.len());
    let long_vector = model().embed(&[long.as_str()]).unwrap().vectors.remove(0);
    let cases_and_long = golden().len() + 1;
    for (i, vector) in out.vectors.iter().enumerate() {
        match golden().get(i % cases_and_long) {
            Some(case) => assert_matches_reference(vector, case),
            None => {
                let as_f64: Vec<f64> = long_vector.iter().map(|&x| f64::from(x)).collect();
                assert!(cosine(vector, &as_f64) >= 0.9999, "long input {i}");
            }
        }
    }
}

#[test]
fn token_arrays_match_the_reference() {
    let ids: Vec<Vec<u32>> = golden().iter().map(|c| c.token_ids.clone()).collect();
    let out = model().embed_token_ids(&ids).unwrap();
    assert_eq!(out.prompt_tokens, ids.iter().map(Vec::len).sum::<usize>());
    for (vector, case) in out.vectors.iter().zip(golden()) {
        assert_matches_reference(vector, case);
    }
}

#[test]
fn long_texts_are_truncated_to_256_tokens() {
    let long = long_text();
    let ids = model().tokenize(&long).unwrap();
    assert_eq!(ids.len(), 256);
    assert_eq!(ids.first(), Some(&101), "starts with [CLS]");
    assert_eq!(ids.last(), Some(&102), "ends with [SEP]");

    let out = model().embed(&[long.as_str(), "short"]).unwrap();
    assert_eq!(out.prompt_tokens, 256 + 3);
    assert!((norm(&out.vectors[0]) - 1.0).abs() < 1e-4);

    let long_ids = vec![vec![2000u32; 300]];
    assert_eq!(
        model().embed_token_ids(&long_ids).unwrap().prompt_tokens,
        256
    );
}

#[test]
fn similarities_match_those_sentence_transformers_publishes() {
    let out = model()
        .embed(&[
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ])
        .unwrap();
    let sim = |a: usize, b: usize| {
        let other: Vec<f64> = out.vectors[b].iter().map(|&x| f64::from(x)).collect();
        cosine(&out.vectors[a], &other)
    };
    for (a, b, published) in [(0, 1, 0.6660), (0, 2, 0.1046), (1, 2, 0.1411)] {
        let got = sim(a, b);
        assert!(
            (got - published).abs() < 1e-3,
            "sim({a},{b}) = {got}, published {published}"
        );
    }
}

#[test]
fn bad_requests_are_rejected() {
    let model = model();
    assert!(matches!(model.embed(&[]), Err(Error::InvalidRequest(_))));
    assert!(matches!(
        model.embed_token_ids(&[]),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        model.embed_token_ids(&[vec![101, 102], vec![]]),
        Err(Error::InvalidRequest(_))
    ));
    let out_of_range = model.embed_token_ids(&[vec![101, 30522, 102]]);
    assert!(
        matches!(out_of_range, Err(Error::InvalidRequest(ref m)) if m.contains("30522")),
        "{out_of_range:?}"
    );
}
