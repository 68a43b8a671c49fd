//! The sentence-transformers folder layout: which module lives where (`modules.json`), the
//! sequence limit (`sentence_bert_config.json`) and the pooling (`1_Pooling/config.json`).

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::pooling::PoolingMode;
use crate::error::{Error, Result};

/// What the sentence-transformers metadata of a model folder says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SentenceTransformerLayout {
    /// The folder holding `config.json`, `model.safetensors` and `tokenizer.json`.
    pub transformer_dir: PathBuf,
    /// `max_seq_length` of `sentence_bert_config.json`, when given.
    pub max_seq_length: Option<usize>,
    /// Whether inputs are lowercased before tokenisation (`do_lower_case`).
    pub lowercase: bool,
    /// The enabled pooling modes, in concatenation order.
    pub pooling: Vec<PoolingMode>,
    /// The `word_embedding_dimension` the pooling config expects, when given.
    pub pooling_dimension: Option<usize>,
    /// Where the pooling config is (or would be).
    pub pooling_config_path: PathBuf,
    /// Whether a `Normalize` module follows the pooling.
    pub normalize: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

// Defaults are those of sentence-transformers' `Pooling.__init__`, which receives this file as
// keyword arguments: only mean pooling is on unless the file says otherwise.
#[derive(Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default = "yes")]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

fn yes() -> bool {
    true
}

impl PoolingConfig {
    fn modes(&self) -> Vec<PoolingMode> {
        PoolingMode::SENTENCE_TRANSFORMERS_ORDER
            .into_iter()
            .filter(|mode| match mode {
                PoolingMode::Cls => self.pooling_mode_cls_token,
                PoolingMode::Max => self.pooling_mode_max_tokens,
                PoolingMode::Mean => self.pooling_mode_mean_tokens,
                PoolingMode::MeanSqrtLen => self.pooling_mode_mean_sqrt_len_tokens,
                PoolingMode::WeightedMean => self.pooling_mode_weightedmean_tokens,
                PoolingMode::LastToken => self.pooling_mode_lasttoken,
            })
            .collect()
    }
}

/// The default pooling folder, used when `modules.json` does not name one.
const DEFAULT_POOLING_DIR: &str = "1_Pooling";

impl SentenceTransformerLayout {
    /// Reads the metadata of the model folder `dir`. Every file is optional: a plain Hugging
    /// Face BERT folder gets mean pooling, no normalisation and no extra sequence limit.
    pub fn read(dir: &Path) -> Result<Self> {
        let mut transformer_dir = dir.to_path_buf();
        let mut pooling_dir = dir.join(DEFAULT_POOLING_DIR);
        let mut normalize = false;

        let modules_path = dir.join("modules.json");
        if let Some(modules) = read_optional_json::<Vec<ModuleEntry>>(&modules_path)? {
            for module in modules {
                // "sentence_transformers.models.Pooling" -> "Pooling"
                let kind = module.kind.rsplit('.').next().unwrap_or_default();
                match kind {
                    "Transformer" => {
                        transformer_dir = join_relative(dir, &module.path, &modules_path)?;
                    }
                    "Pooling" => pooling_dir = join_relative(dir, &module.path, &modules_path)?,
                    // Normalize has no parameters; its folder may be absent.
                    "Normalize" => normalize = true,
                    _ => {
                        return Err(Error::UnsupportedModel(format!(
                            "{} lists the sentence-transformers module {}, which HelixFlow \
                             does not support (only Transformer, Pooling and Normalize)",
                            modules_path.display(),
                            module.kind
                        )))
                    }
                }
            }
        }

        let sbert_path = transformer_dir.join("sentence_bert_config.json");
        let sbert = read_optional_json::<SentenceBertConfig>(&sbert_path)?;
        let pooling_path = pooling_dir.join("config.json");
        let pooling_config = read_optional_json::<PoolingConfig>(&pooling_path)?;
        let (pooling, pooling_dimension) = match pooling_config {
            Some(config) => (config.modes(), config.word_embedding_dimension),
            None => (vec![PoolingMode::Mean], None),
        };
        if pooling.is_empty() {
            return Err(Error::invalid_file(
                pooling_path,
                "no pooling_mode_* flag is enabled",
            ));
        }

        Ok(Self {
            transformer_dir,
            max_seq_length: sbert.as_ref().and_then(|s| s.max_seq_length),
            lowercase: sbert.is_some_and(|s| s.do_lower_case),
            pooling,
            pooling_dimension,
            pooling_config_path: pooling_path,
            normalize,
        })
    }
}

/// `dir/relative`, refusing paths that would leave `dir`.
fn join_relative(dir: &Path, relative: &str, listed_in: &Path) -> Result<PathBuf> {
    let escapes = Path::new(relative)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(Error::invalid_file(
            listed_in,
            format!("module path {relative:?} leaves the model folder"),
        ));
    }
    Ok(dir.join(relative))
}

/// Parses `path` as JSON, or `None` when the file does not exist.
fn read_optional_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| Error::Json {
            what: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, relative: &str, text: &str) {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_bare_folder_gets_mean_pooling_without_normalisation() {
        let dir = tempfile::tempdir().unwrap();
        let layout = SentenceTransformerLayout::read(dir.path()).unwrap();
        assert_eq!(layout.transformer_dir, dir.path());
        assert_eq!(layout.pooling, vec![PoolingMode::Mean]);
        assert!(!layout.normalize);
        assert_eq!(layout.max_seq_length, None);
    }

    #[test]
    fn modules_and_configs_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"0_Transformer","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"pool","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        );
        write(
            dir.path(),
            "0_Transformer/sentence_bert_config.json",
            r#"{"max_seq_length": 128, "do_lower_case": true}"#,
        );
        write(
            dir.path(),
            "pool/config.json",
            r#"{"word_embedding_dimension": 8, "pooling_mode_cls_token": true,
                "pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": true}"#,
        );
        let layout = SentenceTransformerLayout::read(dir.path()).unwrap();
        assert_eq!(layout.transformer_dir, dir.path().join("0_Transformer"));
        assert_eq!(layout.max_seq_length, Some(128));
        assert!(layout.lowercase);
        // Concatenation order is sentence-transformers', not the file's.
        assert_eq!(layout.pooling, vec![PoolingMode::Cls, PoolingMode::Max]);
        assert_eq!(layout.pooling_dimension, Some(8));
        assert!(layout.normalize);
    }

    #[test]
    fn a_pooling_config_without_flags_means_mean() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"word_embedding_dimension": 4}"#,
        );
        let layout = SentenceTransformerLayout::read(dir.path()).unwrap();
        assert_eq!(layout.pooling, vec![PoolingMode::Mean]);
    }

    #[test]
    fn all_flags_off_is_an_invalid_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_mean_tokens": false}"#,
        );
        let err = SentenceTransformerLayout::read(dir.path()).unwrap_err();
        assert!(
            matches!(err, Error::InvalidModelFile { ref path, .. } if path.ends_with("1_Pooling/config.json")),
            "{err}"
        );
    }

    #[test]
    fn unknown_modules_are_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            r#"[{"path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#,
        );
        let err = SentenceTransformerLayout::read(dir.path()).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedModel(ref m) if m.contains("Dense")),
            "{err}"
        );
    }

    #[test]
    fn module_paths_may_not_leave_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            r#"[{"path":"../elsewhere","type":"sentence_transformers.models.Transformer"}]"#,
        );
        let err = SentenceTransformerLayout::read(dir.path()).unwrap_err();
        assert!(matches!(err, Error::InvalidModelFile { .. }), "{err}");
    }

    #[test]
    fn corrupt_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "sentence_bert_config.json", "{ not json");
        let err = SentenceTransformerLayout::read(dir.path()).unwrap_err();
        assert!(
            matches!(err, Error::Json { ref what, .. } if what.ends_with("sentence_bert_config.json")),
            "{err}"
        );
    }
}
