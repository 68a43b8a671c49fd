//! Choosing which files of a hub repository make up the model (pure; no network).

use crate::error::{Error, Result};

/// GGUF quantisations in order of preference: small and accurate first, full precision last.
/// Matched case-insensitively as a whole token of the file name (`x.Q4_K_M.gguf`,
/// `x-q4_k_m.gguf`), so `Q4_0` does not match `Q4_0_4_4` or `IQ4_0`.
pub const GGUF_PREFERENCE: &[&str] = &[
    "Q4_K_M", "Q4_0", "Q4_1", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q5_1", "Q4_K_S", "Q5_K_S",
    "Q3_K_M", "Q3_K_L", "Q3_K_S", "Q2_K", "F16", "BF16", "F32",
];

/// Metadata files fetched along with a safetensors model when the repo has them.
const FOLDER_EXTRAS: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "modules.json",
];

/// What to download from a hub repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubSelection {
    /// A Hugging Face model folder: these files, keeping their repo paths.
    Folder {
        /// Repo paths, sorted.
        files: Vec<String>,
    },
    /// A single GGUF file.
    Gguf {
        /// Its repo path.
        file: String,
    },
}

impl HubSelection {
    /// Every repo path to fetch.
    pub fn files(&self) -> Vec<&str> {
        match self {
            HubSelection::Folder { files } => files.iter().map(String::as_str).collect(),
            HubSelection::Gguf { file } => vec![file.as_str()],
        }
    }
}

/// Picks the model files out of a repo listing.
///
/// A folder model wins when the repo root has `config.json`, `tokenizer.json` and at least one
/// `*.safetensors`: those are taken with the tokenizer/sentence-transformers metadata and the
/// config and weights of sentence-transformers modules (`1_Pooling/config.json`, `2_Dense/...`).
/// Otherwise a GGUF is chosen by [`GGUF_PREFERENCE`], then the first by name; split
/// (`-00001-of-00003.gguf`) and projector (`mmproj`) files are never chosen.
/// [`Error::UnsupportedModel`] when there is neither.
pub fn select_hub_files(files: &[String]) -> Result<HubSelection> {
    let has = |name: &str| files.iter().any(|f| f == name);
    let root_safetensors = files
        .iter()
        .any(|f| !f.contains('/') && f.ends_with(".safetensors"));
    if has("config.json") && has("tokenizer.json") && root_safetensors {
        let mut chosen: Vec<String> = files
            .iter()
            .filter(|f| is_folder_file(f))
            .cloned()
            .collect();
        chosen.sort();
        chosen.dedup();
        return Ok(HubSelection::Folder { files: chosen });
    }
    let mut ggufs: Vec<&String> = files.iter().filter(|f| is_single_gguf(f)).collect();
    ggufs.sort();
    for quant in GGUF_PREFERENCE {
        if let Some(file) = ggufs.iter().find(|f| has_quant_token(file_name(f), quant)) {
            return Ok(HubSelection::Gguf {
                file: (*file).clone(),
            });
        }
    }
    if let Some(file) = ggufs.first() {
        return Ok(HubSelection::Gguf {
            file: (*file).clone(),
        });
    }
    let split = files.iter().any(|f| is_gguf(f) && is_split_part(f));
    Err(Error::UnsupportedModel(if split {
        "the repo only has split GGUF files (-0000N-of-0000M.gguf), which are not supported; \
         merge them with llama.cpp's gguf-split --merge"
            .to_string()
    } else {
        "the repo has neither a model folder (config.json + tokenizer.json + *.safetensors) \
         nor a .gguf file"
            .to_string()
    }))
}

fn is_folder_file(path: &str) -> bool {
    match path.split_once('/') {
        None => {
            path == "config.json"
                || path == "tokenizer.json"
                || path.ends_with(".safetensors")
                || FOLDER_EXTRAS.contains(&path)
        }
        Some((dir, rest)) => {
            is_sentence_transformers_module(dir)
                && !rest.contains('/')
                && (rest.ends_with(".json") || rest.ends_with(".safetensors"))
        }
    }
}

/// `1_Pooling`, `2_Dense`, `3_Normalize`: sentence-transformers module folders.
fn is_sentence_transformers_module(dir: &str) -> bool {
    dir.split_once('_').is_some_and(|(n, name)| {
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_gguf(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".gguf")
}

fn is_single_gguf(path: &str) -> bool {
    is_gguf(path)
        && !is_split_part(path)
        && !file_name(path).to_ascii_lowercase().contains("mmproj")
}

/// `name-00001-of-00003.gguf`.
fn is_split_part(path: &str) -> bool {
    let lower = file_name(path).to_ascii_lowercase();
    let Some(stem) = lower.strip_suffix(".gguf") else {
        return false;
    };
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    let digits = |s: &&str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    matches!(parts.as_slice(), [total, "of", index, _] if digits(total) && digits(index))
}

/// True when `quant` occurs in `name` (case-insensitively) with no letter, digit or `_`
/// directly before or after it.
fn has_quant_token(name: &str, quant: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    name.match_indices(quant).any(|(start, _)| {
        let before = name.get(..start).and_then(|s| s.chars().next_back());
        let after = name
            .get(start + quant.len()..)
            .and_then(|s| s.chars().next());
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn gguf(names: &[&str]) -> String {
        match select_hub_files(&list(names)).unwrap() {
            HubSelection::Gguf { file } => file,
            other => panic!("expected a GGUF, got {other:?}"),
        }
    }

    #[test]
    fn sentence_transformers_folder() {
        // The listing of sentence-transformers/all-MiniLM-L6-v2 (abridged).
        let files = list(&[
            ".gitattributes",
            "1_Pooling/config.json",
            "README.md",
            "config.json",
            "config_sentence_transformers.json",
            "data_config.json",
            "model.safetensors",
            "modules.json",
            "onnx/model.onnx",
            "openvino/openvino_model.xml",
            "pytorch_model.bin",
            "rust_model.ot",
            "sentence_bert_config.json",
            "special_tokens_map.json",
            "tf_model.h5",
            "tokenizer.json",
            "tokenizer_config.json",
            "train_script.py",
            "vocab.txt",
        ]);
        let expected = list(&[
            "1_Pooling/config.json",
            "config.json",
            "config_sentence_transformers.json",
            "model.safetensors",
            "modules.json",
            "sentence_bert_config.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ]);
        assert_eq!(
            select_hub_files(&files).unwrap(),
            HubSelection::Folder { files: expected }
        );
    }

    #[test]
    fn sharded_folder_with_dense_module() {
        let files = list(&[
            "config.json",
            "tokenizer.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "2_Dense/config.json",
            "2_Dense/model.safetensors",
            "onnx/model.safetensors",
            "model.Q4_0.gguf",
        ]);
        let HubSelection::Folder { files } = select_hub_files(&files).unwrap() else {
            panic!("expected a folder");
        };
        assert_eq!(files.len(), 7, "{files:?}");
        assert!(files.contains(&"2_Dense/model.safetensors".to_string()));
        assert!(!files
            .iter()
            .any(|f| f.starts_with("onnx/") || f.ends_with(".gguf")));
    }

    #[test]
    fn folder_needs_all_three_parts() {
        // No tokenizer.json: the GGUF is used instead.
        let files = ["config.json", "model.safetensors", "m.Q8_0.gguf"];
        assert_eq!(gguf(&files), "m.Q8_0.gguf");
    }

    #[test]
    fn gguf_preference_order() {
        let repo = [
            "README.md",
            "SmolLM2-135M-Instruct.Q2_K.gguf",
            "SmolLM2-135M-Instruct.Q4_0.gguf",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct.Q4_K_M.gguf",
            "SmolLM2-135M-Instruct.Q8_0.gguf",
            "SmolLM2-135M-Instruct.f16.gguf",
        ];
        assert_eq!(gguf(&repo), "SmolLM2-135M-Instruct.Q4_K_M.gguf");
        assert_eq!(
            gguf(&["a-q8_0.gguf", "a-q4_1.gguf", "a-f16.gguf"]),
            "a-q4_1.gguf"
        );
        assert_eq!(gguf(&["x-F16.gguf", "x-F32.gguf"]), "x-F16.gguf");
    }

    #[test]
    fn tokens_must_be_whole() {
        // Q4_0_4_4 (ARM repack) and IQ4_XS are not Q4_0; Q6_K wins over them.
        assert_eq!(
            gguf(&["m-Q4_0_4_4.gguf", "m-IQ4_XS.gguf", "m-Q6_K.gguf"]),
            "m-Q6_K.gguf"
        );
        // Nothing recognised: first by name.
        assert_eq!(gguf(&["b-IQ2_XXS.gguf", "a-IQ3_M.gguf"]), "a-IQ3_M.gguf");
        assert_eq!(gguf(&["only.gguf"]), "only.gguf");
    }

    #[test]
    fn split_and_projector_files_are_skipped() {
        assert_eq!(
            gguf(&[
                "big-Q4_K_M-00001-of-00002.gguf",
                "big-Q4_K_M-00002-of-00002.gguf",
                "mmproj-model-f16.gguf",
                "big-Q8_0.gguf",
            ]),
            "big-Q8_0.gguf"
        );
        let err = select_hub_files(&list(&[
            "big-00001-of-00002.gguf",
            "big-00002-of-00002.gguf",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("split"), "{err}");
    }

    #[test]
    fn nothing_usable() {
        for files in [
            list(&[]),
            list(&["README.md", "pytorch_model.bin", "config.json"]),
        ] {
            assert!(matches!(
                select_hub_files(&files),
                Err(Error::UnsupportedModel(_))
            ));
        }
    }
}
