//! The model cache on disk: where things go, how a built-in model is judged complete and
//! verified, and how a half-finished download is kept from looking complete.
//!
//! Layout under the home folder:
//!
//! ```text
//! <home>/models/<id>/...                 a built-in model, complete and verified
//! <home>/models/<id>/.verified           size + mtime + sha256 of each pinned file
//! <home>/models/.partial-<id>-<pid>-<n>/ a provision in progress (never read as a model)
//! <home>/hub/                            hf-hub's own cache (models--org--name/...)
//! ```

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::catalog::CatalogEntry;
use crate::error::{Error, Result};

/// Name of the marker written next to a verified built-in model.
pub const VERIFIED_MARKER: &str = ".verified";
/// Prefix of the staging folders of provisions in progress.
pub(crate) const PARTIAL_PREFIX: &str = ".partial-";
/// Staging folders older than this are leftovers of a killed process and are removed.
const STALE_PARTIAL_AGE: Duration = Duration::from_secs(6 * 3600);

/// The cache root holding downloaded models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelHome {
    root: PathBuf,
}

impl ModelHome {
    /// A cache rooted at `path` (created on first download).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ModelHome { root: path.into() }
    }

    /// `HELIXFLOW_HOME` when set and non-empty, else `<user cache dir>/helixflow`.
    pub fn from_env() -> Result<Self> {
        if let Some(home) = std::env::var_os("HELIXFLOW_HOME").filter(|h| !h.is_empty()) {
            return Ok(Self::new(home));
        }
        match dirs::cache_dir() {
            Some(cache) => Ok(Self::new(cache.join("helixflow"))),
            None => Err(Error::io(
                "helixflow",
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no user cache folder on this system; set HELIXFLOW_HOME",
                ),
            )),
        }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<home>/models`, the parent of the built-in models' folders.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// `<home>/models/<id>`, the folder of one built-in model.
    pub fn builtin_dir(&self, id: &str) -> PathBuf {
        self.models_dir().join(id)
    }

    /// `<home>/hub`, hf-hub's cache for arbitrary hub repos.
    pub fn hub_dir(&self) -> PathBuf {
        self.root.join("hub")
    }
}

/// What is on disk for a built-in model.
#[derive(Debug)]
pub(crate) enum InstallState {
    /// Every file present and every pinned digest confirmed.
    Ready,
    /// No folder at all.
    Missing,
    /// The folder exists but a file is missing (says which).
    Incomplete(String),
    /// A pinned file has the wrong digest ([`Error::ChecksumMismatch`]).
    Corrupt(Error),
}

/// How hard [`check_installed`] looks at the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Trust the marker when size and mtime still match; hash otherwise.
    TrustMarker,
    /// Hash every pinned file.
    Rehash,
}

/// One pinned file as it was when last hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MarkerFile {
    path: String,
    size: u64,
    mtime_secs: u64,
    mtime_nanos: u32,
    sha256: String,
}

/// Contents of the `.verified` marker.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Marker {
    files: Vec<MarkerFile>,
}

/// Judges the model folder `dir` of `entry`; rewrites the marker after hashing.
pub(crate) fn check_installed(
    entry: &CatalogEntry,
    dir: &Path,
    verify: Verify,
) -> Result<InstallState> {
    if !dir.is_dir() {
        return Ok(InstallState::Missing);
    }
    if let Some(missing) = entry
        .files
        .iter()
        .find(|f| !dir.join(f.local_path).is_file())
    {
        return Ok(InstallState::Incomplete(format!(
            "{} is missing",
            missing.local_path
        )));
    }
    let marker = read_marker(dir);
    let mut fresh = Vec::new();
    let mut hashed_any = false;
    for (local_path, expected) in entry.pinned_files() {
        let path = dir.join(local_path);
        let snapshot = file_snapshot(&path, local_path, expected)?;
        if verify == Verify::TrustMarker && marker.files.contains(&snapshot) {
            fresh.push(snapshot);
            continue;
        }
        let actual = sha256_file(&path)?;
        hashed_any = true;
        if actual != expected {
            return Ok(InstallState::Corrupt(Error::ChecksumMismatch {
                path,
                expected: expected.to_string(),
                actual,
            }));
        }
        fresh.push(snapshot);
    }
    if hashed_any {
        // Best effort: a read-only cache still works, it just rehashes next time.
        let _ = write_marker_files(dir, fresh);
    }
    Ok(InstallState::Ready)
}

/// True when the marker vouches for every pinned file and all files exist; never hashes.
pub(crate) fn marker_confirms(entry: &CatalogEntry, dir: &Path) -> bool {
    if entry
        .files
        .iter()
        .any(|f| !dir.join(f.local_path).is_file())
    {
        return false;
    }
    let marker = read_marker(dir);
    entry.pinned_files().all(|(local_path, sha)| {
        file_snapshot(&dir.join(local_path), local_path, sha)
            .is_ok_and(|snap| marker.files.contains(&snap))
    })
}

/// Writes the marker for files just verified against `entry`'s pins.
pub(crate) fn write_marker(entry: &CatalogEntry, dir: &Path) -> Result<()> {
    let files = entry
        .pinned_files()
        .map(|(local_path, sha)| file_snapshot(&dir.join(local_path), local_path, sha))
        .collect::<Result<Vec<_>>>()?;
    write_marker_files(dir, files)
}

fn write_marker_files(dir: &Path, files: Vec<MarkerFile>) -> Result<()> {
    let path = dir.join(VERIFIED_MARKER);
    let text = serde_json::to_string_pretty(&Marker { files }).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })?;
    fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

fn read_marker(dir: &Path) -> Marker {
    fs::read(dir.join(VERIFIED_MARKER))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The marker line `path` would have if its contents hash to `sha256`.
fn file_snapshot(path: &Path, local_path: &str, sha256: &str) -> Result<MarkerFile> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    Ok(MarkerFile {
        path: local_path.to_string(),
        size: meta.len(),
        mtime_secs: mtime.as_secs(),
        mtime_nanos: mtime.subsec_nanos(),
        sha256: sha256.to_string(),
    })
}

/// Lowercase hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A provision's private folder inside `<home>/models`; removed on drop unless committed, so
/// an error or panic never leaves a half model under the final name.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    /// Creates `<home>/models/.partial-<id>-<pid>-<nanos>`.
    pub(crate) fn create(home: &ModelHome, id: &str) -> Result<Staging> {
        let models = home.models_dir();
        fs::create_dir_all(&models).map_err(|e| Error::io(&models, e))?;
        remove_stale_partials(&models, id);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = models.join(format!(
            "{PARTIAL_PREFIX}{id}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging {
            dir,
            committed: false,
        })
    }

    /// The staging folder.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Renames the staging folder to `target` (atomic on one file system). Fails when
    /// `target` exists; the caller decides what to do with it.
    pub(crate) fn commit(&mut self, target: &Path) -> std::io::Result<()> {
        fs::rename(&self.dir, target)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes staging folders of `id` left by killed processes long ago. Recent ones may belong
/// to a download running right now in another process, so they stay.
fn remove_stale_partials(models: &Path, id: &str) {
    let prefix = format!("{PARTIAL_PREFIX}{id}-");
    let Ok(entries) = fs::read_dir(models) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry.file_name().to_string_lossy().starts_with(&prefix);
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if is_ours && age.is_some_and(|a| a > STALE_PARTIAL_AGE) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Total size of the files under `dir` (symlinks followed), skipping the marker.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            match fs::metadata(&path) {
                Ok(m) if m.is_dir() => dir_size(&path),
                Ok(m) if e.file_name() != VERIFIED_MARKER => m.len(),
                _ => 0,
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::super::catalog::{CatalogFile, ModelKind, WheelFiles, WheelSource};
    use super::*;

    // sha256("hello world\n"), from coreutils' sha256sum.
    const HELLO_SHA: &str = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";

    static ENTRY: CatalogEntry = CatalogEntry {
        id: "tiny",
        kind: ModelKind::Chat,
        description: "test",
        hub_repo: "test/tiny",
        files: &[
            CatalogFile {
                repo_path: "w.bin",
                local_path: "w.bin",
                sha256: Some(HELLO_SHA),
            },
            CatalogFile {
                repo_path: "config.json",
                local_path: "config.json",
                sha256: None,
            },
        ],
        main_file: Some("w.bin"),
        wheels: WheelFiles::Whole(WheelSource {
            package: "tiny",
            version: "1",
            prefix: "tiny/",
        }),
        license: "test",
        approx_size_bytes: 12,
    };

    #[test]
    fn layout() {
        let home = ModelHome::new("/x/home");
        assert_eq!(home.builtin_dir("a-b"), PathBuf::from("/x/home/models/a-b"));
        assert_eq!(home.hub_dir(), PathBuf::from("/x/home/hub"));
    }

    #[test]
    fn sha256_matches_coreutils() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello world\n").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), HELLO_SHA);
    }

    #[test]
    fn states_and_marker() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny");
        assert!(matches!(
            check_installed(&ENTRY, &model, Verify::TrustMarker).unwrap(),
            InstallState::Missing
        ));
        fs::create_dir(&model).unwrap();
        fs::write(model.join("w.bin"), b"hello world\n").unwrap();
        assert!(matches!(
            check_installed(&ENTRY, &model, Verify::TrustMarker).unwrap(),
            InstallState::Incomplete(m) if m.contains("config.json")
        ));
        fs::write(model.join("config.json"), b"{}").unwrap();
        assert!(!marker_confirms(&ENTRY, &model));
        assert!(matches!(
            check_installed(&ENTRY, &model, Verify::TrustMarker).unwrap(),
            InstallState::Ready
        ));
        // Hashing left a marker behind, which now vouches for the file.
        assert!(model.join(VERIFIED_MARKER).is_file());
        assert!(marker_confirms(&ENTRY, &model));

        // Same size, different contents, mtime moved: the marker no longer applies.
        fs::write(model.join("w.bin"), b"HELLO WORLD\n").unwrap();
        let file = fs::File::options()
            .write(true)
            .open(model.join("w.bin"))
            .unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        assert!(!marker_confirms(&ENTRY, &model));
        match check_installed(&ENTRY, &model, Verify::TrustMarker).unwrap() {
            InstallState::Corrupt(Error::ChecksumMismatch { expected, .. }) => {
                assert_eq!(expected, HELLO_SHA)
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn marker_is_trusted_until_size_or_mtime_change() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("w.bin"), b"hello world\n").unwrap();
        fs::write(dir.path().join("config.json"), b"{}").unwrap();
        write_marker(&ENTRY, dir.path()).unwrap();
        // Corrupt the file but restore its mtime: the marker is trusted (that is its point)...
        let path = dir.path().join("w.bin");
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, b"jello world\n").unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(matches!(
            check_installed(&ENTRY, dir.path(), Verify::TrustMarker).unwrap(),
            InstallState::Ready
        ));
        // ...while a forced rehash catches it.
        assert!(matches!(
            check_installed(&ENTRY, dir.path(), Verify::Rehash).unwrap(),
            InstallState::Corrupt(_)
        ));
    }

    #[test]
    fn staging_is_removed_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let home = ModelHome::new(dir.path());
        let staging = Staging::create(&home, "tiny").unwrap();
        let path = staging.path().to_path_buf();
        fs::write(path.join("x"), b"1").unwrap();
        drop(staging);
        assert!(!path.exists());

        let mut staging = Staging::create(&home, "tiny").unwrap();
        let target = home.builtin_dir("tiny");
        staging.commit(&target).unwrap();
        assert!(target.is_dir());
        assert_eq!(fs::read_dir(home.models_dir()).unwrap().count(), 1);
    }

    #[test]
    fn sizes_skip_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        fs::write(dir.path().join("sub/b"), [0u8; 5]).unwrap();
        fs::write(dir.path().join(VERIFIED_MARKER), [0u8; 100]).unwrap();
        assert_eq!(dir_size(dir.path()), 15);
    }
}
