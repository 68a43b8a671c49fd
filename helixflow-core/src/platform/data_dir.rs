//! The data directory: where the server keeps its secrets at rest (the SQLite database, the
//! token secret, the first admin key, the self-signed certificate's key).
//!
//! The directory is private to its owner (0700) and every file in it is too (0600): created
//! so, and tightened at start with a warning when found looser, since any local account that
//! can read these files can impersonate the server's users.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::PlatformError;

/// Mode of the data directory.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

fn io_error(what: &str, path: &Path, e: std::io::Error) -> PlatformError {
    PlatformError::config(format!("{what} {}: {e}", path.display()))
}

/// Creates `dir` (and its parents) if missing, private to its owner, then tightens the
/// directory and the files in it that others could read or write. Returns what was
/// tightened, each of which is also logged as a warning.
pub fn prepare_data_dir(dir: &Path) -> Result<Vec<PathBuf>, PlatformError> {
    if !dir.exists() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(DIR_MODE);
        }
        builder
            .create(dir)
            .map_err(|e| io_error("creating the data directory", dir, e))?;
    }
    let mut tightened = Vec::new();
    #[cfg(unix)]
    {
        if tighten(dir, DIR_MODE)? {
            tightened.push(dir.to_path_buf());
        }
        let entries =
            fs::read_dir(dir).map_err(|e| io_error("reading the data directory", dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            // Links are left alone: tightening their target could touch files elsewhere.
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file && tighten(&path, FILE_MODE)? {
                tightened.push(path);
            }
        }
    }
    for path in &tightened {
        tracing::warn!(
            "{} was readable or writable by other users; made it private to its owner",
            path.display()
        );
    }
    Ok(tightened)
}

/// Takes group and other permissions away from `path` where it has any (`mode` is what it
/// gets then); `true` when it changed.
#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> Result<bool, PlatformError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|e| io_error("reading", path, e))?;
    if meta.permissions().mode() & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("restricting", path, e))?;
    Ok(true)
}

/// Writes `contents` to a file only its owner may read (created 0600; an existing file is
/// restricted before it is overwritten).
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), PlatformError> {
    let mut options = private_options();
    options.create(true).truncate(true);
    #[cfg(unix)]
    if path.exists() {
        tighten(path, FILE_MODE)?;
    }
    let mut file = options
        .open(path)
        .map_err(|e| io_error("writing", path, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("writing", path, e))
}

/// Creates an empty file only its owner may read, unless it exists (SQLite then opens it,
/// and gives its journal files the same mode).
pub(crate) fn create_private_file(path: &Path) -> Result<(), PlatformError> {
    if path.exists() {
        return Ok(());
    }
    let mut options = private_options();
    options.create_new(true);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error("creating", path, e)),
    }
}

/// Opening for writing, creating files only their owner may read.
fn private_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_missing_directory_is_made_private_with_its_parents() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join(".local/share/helixflow");
        assert!(prepare_data_dir(&dir).unwrap().is_empty());
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn loose_directories_and_files_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("helixflow.db");
        fs::write(&db, b"x").unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let tightened = prepare_data_dir(dir.path()).unwrap();
        assert_eq!(tightened.len(), 2);
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert!(prepare_data_dir(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn private_files_are_created_and_rewritten_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        fs::write(&file, b"old").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        write_private_file(&file, b"new").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read(&file).unwrap(), b"new");
        let fresh = dir.path().join("db");
        create_private_file(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);
    }
}
