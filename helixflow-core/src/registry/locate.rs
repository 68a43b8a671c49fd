//! Which model ids a registry may load on first use, and from where. A client names models
//! by id only: a built-in id, a model under the operator's models folder, or (when the
//! operator allows pulling) a hub id; never a path, so a request cannot open a file the
//! operator did not put there.

use std::path::{Path, PathBuf};

use crate::source::{find_builtin, CatalogEntry, ModelHome, ModelSpec};
use crate::{Error, Result};

/// Finds the source of a model id.
#[derive(Debug, Clone)]
pub(super) struct ModelLocator {
    /// `--models-dir`: each `NAME.gguf` file and each `NAME/` model folder is model `NAME`.
    pub(super) models_dir: Option<PathBuf>,
    /// Whether missing built-ins and hub ids may be downloaded.
    pub(super) allow_pull: bool,
    /// Whether built-in ids load at all (a registry of models added by hand loads none).
    pub(super) builtins: bool,
}

impl ModelLocator {
    /// Where model `id` comes from: [`Error::ModelNotFound`] when it is none of the above.
    pub(super) fn locate(&self, id: &str, home: &ModelHome) -> Result<ModelSpec> {
        if let Some(entry) = find_builtin(id) {
            if self.builtin_available(entry, home) {
                return Ok(ModelSpec::BuiltIn(entry));
            }
            return Err(Error::ModelNotFound(id.to_string()));
        }
        if let Some(spec) = self.in_models_dir(id) {
            return Ok(spec);
        }
        if self.allow_pull {
            if let Ok(Some(hub)) = ModelSpec::parse_hub_id(id) {
                return Ok(hub);
            }
        }
        Err(Error::ModelNotFound(id.to_string()))
    }

    /// Whether built-in `entry` loads on first use: it is in the cache, or may be pulled.
    pub(super) fn builtin_available(&self, entry: &CatalogEntry, home: &ModelHome) -> bool {
        self.builtins && (self.allow_pull || home.builtin_dir(entry.id).is_dir())
    }

    /// The models under the models folder, by id.
    pub(super) fn models_dir_entries(&self) -> Vec<(String, ModelSpec)> {
        let Some(dir) = &self.models_dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut found: Vec<(String, ModelSpec)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_string();
                model_at(&entry.path(), &name)
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Model `id` in the models folder. The folder's listing is searched for the name rather
    /// than the id joined to the folder's path, so that no id can reach outside it.
    fn in_models_dir(&self, id: &str) -> Option<ModelSpec> {
        self.models_dir_entries()
            .into_iter()
            .find(|(name, _)| name == id)
            .map(|(_, spec)| spec)
    }
}

/// `NAME.gguf` or a folder `NAME` holding `config.json` or a `.gguf`, as model `NAME`.
fn model_at(path: &Path, file_name: &str) -> Option<(String, ModelSpec)> {
    if file_name.starts_with('.') {
        return None;
    }
    if path.is_file() {
        let stem = file_name
            .strip_suffix(".gguf")
            .or_else(|| file_name.strip_suffix(".GGUF"))?;
        return Some((stem.to_string(), ModelSpec::LocalFile(path.to_path_buf())));
    }
    if path.is_dir() {
        let spec = ModelSpec::parse(path.to_str()?).ok()?;
        return matches!(spec, ModelSpec::LocalDir(_)).then(|| (file_name.to_string(), spec));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_reach_outside_the_models_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("models");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("tiny.gguf"), b"GGUF").unwrap();
        std::fs::write(root.path().join("outside.gguf"), b"GGUF").unwrap();
        std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
        let home = ModelHome::new(root.path().join("home"));
        let locator = ModelLocator {
            models_dir: Some(dir.clone()),
            allow_pull: false,
            builtins: true,
        };
        assert_eq!(
            locator.locate("tiny", &home).unwrap(),
            ModelSpec::LocalFile(dir.join("tiny.gguf"))
        );
        let outside = root.path().join("outside.gguf");
        for id in [
            "../outside",
            outside.to_str().unwrap(),
            "notes",
            "tiny.gguf",
            "org/repo",
            // A built-in that is not in the cache: only pulled with --allow-pull.
            "smollm2-135m-instruct",
        ] {
            let err = locator.locate(id, &home).unwrap_err();
            assert!(
                matches!(err, Error::ModelNotFound(ref m) if m == id),
                "{id}: {err}"
            );
        }
        let pulling = ModelLocator {
            allow_pull: true,
            ..locator
        };
        assert!(matches!(
            pulling.locate("org/repo:model.Q4_0.gguf", &home).unwrap(),
            ModelSpec::Hub { .. }
        ));
        assert!(matches!(
            pulling.locate("smollm2-135m-instruct", &home).unwrap(),
            ModelSpec::BuiltIn(_)
        ));
        assert!(pulling.locate("../outside", &home).is_err());
    }
}
