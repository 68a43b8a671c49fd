//! `EmbeddingModel::load` on altered copies of the all-MiniLM-L6-v2 folder: broken or missing
//! files give typed errors naming the file, and the optional sentence-transformers files change
//! the limits, pooling and normalisation as documented.
//!
//! The model is the built-in `all-minilm-l6-v2`, provisioned into the cache on first use.

use std::collections::HashMap;
mod common;

use std::path::{Path, PathBuf};

use helixflow_core::embeddings::{EmbeddingModel, PoolingMode};
use helixflow_core::Error;
use tempfile::TempDir;

fn model_dir() -> PathBuf {
    common::minilm_dir()
}

const SMALL_FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
];

/// A copy of the model folder (the weights linked, not copied).
fn model_copy() -> TempDir {
    let source = model_dir();
    assert!(
        source.is_dir(),
        "model folder {} is missing",
        source.display()
    );
    let dir = tempfile::tempdir().unwrap();
    for file in SMALL_FILES {
        let target = dir.path().join(file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(source.join(file), target).unwrap();
    }
    link_or_copy(
        &source.join("model.safetensors"),
        &dir.path().join("model.safetensors"),
    );
    dir
}

#[cfg(unix)]
fn link_or_copy(from: &Path, to: &Path) {
    std::os::unix::fs::symlink(from, to).unwrap();
}

#[cfg(not(unix))]
fn link_or_copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
}

fn write(dir: &TempDir, file: &str, contents: &[u8]) {
    let path = dir.path().join(file);
    let _ = std::fs::remove_file(&path);
    std::fs::write(path, contents).unwrap();
}

fn load_err(dir: &Path) -> Error {
    match EmbeddingModel::load(dir) {
        Ok(model) => panic!("loading {} should fail, got {model:?}", dir.display()),
        Err(e) => e,
    }
}

fn assert_invalid_file(err: &Error, file: &str) {
    assert!(
        matches!(err, Error::InvalidModelFile { path, .. } if path.ends_with(file)),
        "expected InvalidModelFile for {file}, got {err}"
    );
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn a_missing_folder_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_err(&dir.path().join("nope"));
    assert!(
        matches!(err, Error::ModelNotFound(ref m) if m.contains("nope")),
        "{err}"
    );
}

#[test]
fn missing_weights_are_not_found() {
    let dir = model_copy();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::ModelNotFound(ref m) if m.contains("model.safetensors")),
        "{err}"
    );
}

#[test]
fn pytorch_only_weights_are_unsupported() {
    let dir = model_copy();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    write(&dir, "pytorch_model.bin", b"PK\x03\x04");
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::UnsupportedModel(ref m) if m.contains("pytorch_model.bin")),
        "{err}"
    );
}

#[test]
fn truncated_weights_are_invalid() {
    let dir = model_copy();
    let full = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    write(&dir, "model.safetensors", &full[..1 << 20]);
    assert_invalid_file(&load_err(dir.path()), "model.safetensors");
}

#[test]
fn garbage_weights_are_invalid() {
    let dir = model_copy();
    write(&dir, "model.safetensors", &[0xff; 64]);
    assert_invalid_file(&load_err(dir.path()), "model.safetensors");
}

#[test]
fn weights_without_the_bert_tensors_are_invalid() {
    let dir = model_copy();
    let tensor =
        candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::remove_file(&path).unwrap();
    candle_core::safetensors::save(
        &HashMap::from([("unrelated.weight".to_string(), tensor)]),
        &path,
    )
    .unwrap();
    assert_invalid_file(&load_err(dir.path()), "model.safetensors");
}

#[test]
fn a_corrupt_config_is_a_json_error() {
    let dir = model_copy();
    write(&dir, "config.json", b"{\"hidden_size\": 384,");
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::Json { ref what, .. } if what.ends_with("config.json")),
        "{err}"
    );
}

#[test]
fn a_missing_config_is_not_found() {
    let dir = model_copy();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::ModelNotFound(ref m) if m.contains("config.json")),
        "{err}"
    );
}

fn edit_config(dir: &TempDir, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    write(dir, "config.json", config.to_string().as_bytes());
}

#[test]
fn zero_attention_heads_are_invalid_not_a_panic() {
    let dir = model_copy();
    edit_config(&dir, |c| c["num_attention_heads"] = 0.into());
    assert_invalid_file(&load_err(dir.path()), "config.json");
}

#[test]
fn other_encoder_types_are_unsupported() {
    let dir = model_copy();
    edit_config(&dir, |c| c["model_type"] = "roberta".into());
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::UnsupportedModel(ref m) if m.contains("roberta")),
        "{err}"
    );
}

#[test]
fn a_corrupt_tokenizer_is_invalid() {
    let dir = model_copy();
    write(&dir, "tokenizer.json", b"{\"model\": 42}");
    assert_invalid_file(&load_err(dir.path()), "tokenizer.json");
}

#[test]
fn a_missing_tokenizer_is_not_found() {
    let dir = model_copy();
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::ModelNotFound(ref m) if m.contains("tokenizer.json")),
        "{err}"
    );
}

#[test]
fn a_pooling_dimension_that_disagrees_is_invalid() {
    let dir = model_copy();
    write(
        &dir,
        "1_Pooling/config.json",
        br#"{"word_embedding_dimension": 768}"#,
    );
    assert_invalid_file(&load_err(dir.path()), "1_Pooling/config.json");
}

#[test]
fn without_sentence_bert_config_the_limit_is_the_position_table() {
    let dir = model_copy();
    std::fs::remove_file(dir.path().join("sentence_bert_config.json")).unwrap();
    let model = EmbeddingModel::load(dir.path()).unwrap();
    assert_eq!(model.max_seq_len(), 512);
    let long = "word ".repeat(600);
    assert_eq!(model.embed(&[long.as_str()]).unwrap().prompt_tokens, 512);
}

#[test]
fn the_limit_is_capped_by_the_position_table() {
    let dir = model_copy();
    write(
        &dir,
        "sentence_bert_config.json",
        br#"{"max_seq_length": 1000}"#,
    );
    assert_eq!(EmbeddingModel::load(dir.path()).unwrap().max_seq_len(), 512);
}

#[test]
fn without_a_normalize_module_vectors_keep_their_length() {
    let dir = model_copy();
    write(
        &dir,
        "modules.json",
        br#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
             {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
    );
    let raw = EmbeddingModel::load(dir.path()).unwrap();
    assert!(!raw.normalizes());
    let normalised = EmbeddingModel::load(&model_dir()).unwrap();
    let text = ["The cat sits on the mat."];
    let a = raw.embed(&text).unwrap().vectors.remove(0);
    let b = normalised.embed(&text).unwrap().vectors.remove(0);
    assert!((norm(&a) - 1.0).abs() > 1e-2, "norm {}", norm(&a));
    let cosine = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>() / norm(&a);
    assert!(cosine > 0.9999, "cosine {cosine}");
}

#[test]
fn several_pooling_modes_concatenate() {
    let dir = model_copy();
    write(
        &dir,
        "1_Pooling/config.json",
        br#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true,
             "pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": true}"#,
    );
    let model = EmbeddingModel::load(dir.path()).unwrap();
    assert_eq!(model.pooling(), &[PoolingMode::Cls, PoolingMode::Max]);
    assert_eq!(model.dimension(), 768);
    let out = model.embed(&["", "The cat sits on the mat."]).unwrap();
    assert!(out.vectors.iter().all(|v| v.len() == 768));
}
