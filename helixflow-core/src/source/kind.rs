//! Telling a chat model from an embedding model by looking at its files.

use std::fs;
use std::path::{Path, PathBuf};

use super::catalog::ModelKind;
use super::select::{select_hub_files, HubSelection};
use crate::error::{Error, Result};

/// `model_type` values of encoder models used for embeddings.
const ENCODER_MODEL_TYPES: &[&str] = &[
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "mpnet",
    "nomic_bert",
    "camembert",
    "electra",
    "deberta",
    "deberta-v2",
    "modernbert",
];

/// Architecture name endings of generative models.
const GENERATIVE_SUFFIXES: &[&str] = &["ForCausalLM", "LMHeadModel", "ForConditionalGeneration"];

/// What a local model folder holds and the path a loader should open: the folder itself for a
/// Hugging Face layout (`config.json`), or the `.gguf` inside it.
pub(crate) fn classify_dir(dir: &Path) -> Result<(ModelKind, PathBuf)> {
    if crate::models::is_hf_folder(dir) {
        let config = dir.join("config.json");
        return Ok((kind_from_config(dir, &config)?, dir.to_path_buf()));
    }
    let ggufs: Vec<String> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| name.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    match select_hub_files(&ggufs) {
        Ok(HubSelection::Gguf { file }) => Ok((ModelKind::Chat, dir.join(file))),
        _ => Err(Error::ModelNotFound(format!(
            "folder {} holds neither config.json nor a usable .gguf file",
            dir.display()
        ))),
    }
}

/// Chat or embedding, from sentence-transformers files and `config.json`'s `architectures` /
/// `model_type`.
fn kind_from_config(dir: &Path, config: &Path) -> Result<ModelKind> {
    if dir.join("modules.json").is_file() || dir.join("sentence_bert_config.json").is_file() {
        return Ok(ModelKind::Embedding);
    }
    let bytes = fs::read(config).map_err(|e| Error::io(config, e))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        what: config.display().to_string(),
        source,
    })?;
    let architectures: Vec<&str> = json
        .get("architectures")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let model_type = json
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    if architectures
        .iter()
        .any(|a| GENERATIVE_SUFFIXES.iter().any(|s| a.ends_with(s)))
    {
        return Ok(ModelKind::Chat);
    }
    let encoder_arch = architectures.iter().any(|a| {
        let lower = a.to_ascii_lowercase().replace('-', "");
        ENCODER_MODEL_TYPES
            .iter()
            .any(|t| lower.starts_with(&t.replace(['-', '_'], "")))
    });
    if encoder_arch || ENCODER_MODEL_TYPES.contains(&model_type) {
        return Ok(ModelKind::Embedding);
    }
    Err(Error::UnsupportedModel(format!(
        "cannot tell whether {} is a chat or an embedding model (architectures {:?}, \
         model_type {:?})",
        dir.display(),
        architectures,
        model_type
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_with_config(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    #[test]
    fn bert_is_embedding_and_llama_is_chat() {
        let bert = folder_with_config(r#"{"architectures":["BertModel"],"model_type":"bert"}"#);
        assert_eq!(
            classify_dir(bert.path()).unwrap(),
            (ModelKind::Embedding, bert.path().to_path_buf())
        );
        let xlm = folder_with_config(r#"{"architectures":["XLMRobertaModel"]}"#);
        assert_eq!(classify_dir(xlm.path()).unwrap().0, ModelKind::Embedding);
        let llama = folder_with_config(r#"{"architectures":["LlamaForCausalLM"]}"#);
        assert_eq!(classify_dir(llama.path()).unwrap().0, ModelKind::Chat);
    }

    #[test]
    fn sentence_transformers_files_mean_embedding() {
        let dir = folder_with_config(r#"{"architectures":["SomethingNew"]}"#);
        assert!(matches!(
            classify_dir(dir.path()),
            Err(Error::UnsupportedModel(_))
        ));
        fs::write(dir.path().join("modules.json"), "[]").unwrap();
        assert_eq!(classify_dir(dir.path()).unwrap().0, ModelKind::Embedding);
    }

    #[test]
    fn broken_config_is_a_json_error() {
        let dir = folder_with_config("{ not json");
        assert!(matches!(classify_dir(dir.path()), Err(Error::Json { .. })));
    }

    #[test]
    fn gguf_folder_picks_the_preferred_file() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["m.Q8_0.gguf", "m.Q4_K_M.gguf", "notes.txt"] {
            fs::write(dir.path().join(name), b"GGUF").unwrap();
        }
        assert_eq!(
            classify_dir(dir.path()).unwrap(),
            (ModelKind::Chat, dir.path().join("m.Q4_K_M.gguf"))
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            classify_dir(empty.path()),
            Err(Error::ModelNotFound(_))
        ));
    }
}
