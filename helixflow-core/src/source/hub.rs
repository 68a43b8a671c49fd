//! The Hugging Face hub, through hf-hub's blocking API: built-in models fetched into a
//! staging folder, and arbitrary `org/name[:file.gguf]` repos kept in hf-hub's cache under
//! `<home>/hub`.

use std::fs;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo};

use super::cache::ModelHome;
use super::catalog::{CatalogEntry, ModelKind};
use super::kind::classify_dir;
use super::progress::Progress;
use super::select::{select_hub_files, HubSelection};
use super::{CachedModel, ResolvedModel, SourceOptions};
use crate::error::{Error, Result};

/// Proxy variables ureq honours; with one set a direct TCP probe says nothing useful.
const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Checks within `timeout` that the endpoint's host accepts TCP connections.
///
/// hf-hub 0.4 does not let us set ureq's timeouts (30 s connect, no read timeout), so without
/// this a machine with no network would wait long before falling back to PyPI. DNS runs in a
/// helper thread because the system resolver has no timeout of its own.
pub(crate) fn probe_endpoint(endpoint: &str, timeout: Duration) -> std::result::Result<(), String> {
    if PROXY_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
        return Ok(());
    }
    let (host, port) = host_and_port(endpoint)?;
    let (send, receive) = mpsc::channel();
    let deadline = Instant::now() + timeout;
    std::thread::spawn(move || {
        let result = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))
            .and_then(|addrs| {
                let mut last = format!("{host} has no address");
                for addr in addrs {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match TcpStream::connect_timeout(&addr, left) {
                        Ok(_) => return Ok(()),
                        Err(e) => last = format!("cannot connect to {addr}: {e}"),
                    }
                }
                Err(last)
            });
        // The receiver may have given up already; nothing to do then.
        let _ = send.send(result);
    });
    receive
        .recv_timeout(timeout)
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs_f32())))
}

/// `https://huggingface.co` → (`huggingface.co`, 443).
fn host_and_port(endpoint: &str) -> std::result::Result<(String, u16), String> {
    let (rest, default_port) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (rest, 443)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (rest, 80)
    } else {
        return Err(format!("hub endpoint '{endpoint}' is not an http(s) URL"));
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let bad_port = || format!("bad port in hub endpoint '{endpoint}'");
    let (host, port) = match authority.strip_prefix('[') {
        // IPv6 literal: [addr] or [addr]:port
        Some(v6) => match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => (host, Some(port.strip_prefix(':').ok_or_else(bad_port)?)),
            None => return Err(format!("bad host in hub endpoint '{endpoint}'")),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().map_err(|_| bad_port())?,
        None => default_port,
    };
    Ok((host.to_string(), port))
}

/// An hf-hub client with its cache in `cache_dir`; fails fast when the hub is unreachable.
fn connect(cache_dir: PathBuf, options: &SourceOptions, progress: &dyn Progress) -> Result<Api> {
    probe_endpoint(&options.hub_endpoint, options.hub_connect_timeout).map_err(|reason| {
        Error::Download {
            what: format!("Hugging Face hub at {}", options.hub_endpoint),
            reason,
        }
    })?;
    let mut builder = ApiBuilder::new()
        .with_cache_dir(cache_dir)
        .with_endpoint(options.hub_endpoint.clone())
        .with_progress(progress.show_download_bars())
        .with_retries(2)
        .with_user_agent("helixflow", env!("CARGO_PKG_VERSION"));
    if let Some(token) = &options.hub_token {
        builder = builder.with_token(Some(token.clone()));
    }
    builder
        .build()
        .map_err(|e| hub_error("the Hugging Face hub client", e))
}

/// Maps an hf-hub error; 404 becomes [`Error::ModelNotFound`], 401/403 a hint about tokens.
fn hub_error(what: &str, err: ApiError) -> Error {
    let text = err.to_string();
    // ureq formats status errors as "<url>: status code <n>"; hf-hub does not re-export ureq,
    // so the code is read from the message.
    let status = text
        .rsplit_once("status code ")
        .and_then(|(_, code)| code.get(..3))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(404) => Error::ModelNotFound(format!(
            "{what} does not exist on the Hugging Face hub ({text})"
        )),
        Some(401 | 403) => Error::Download {
            what: what.to_string(),
            reason: format!(
                "access denied ({text}); the repo may be private or gated: accept its licence \
                 on huggingface.co and set HF_TOKEN"
            ),
        },
        _ => Error::Download {
            what: what.to_string(),
            reason: text,
        },
    }
}

/// Downloads `entry`'s files from its hub repo into `staging` at their `local_path`, using a
/// throw-away hf-hub cache inside `staging` so the blobs can simply be moved.
pub(crate) fn fetch_hub_into(
    entry: &CatalogEntry,
    staging: &Path,
    options: &SourceOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let cache_dir = staging.join(".hub");
    let api = connect(cache_dir.clone(), options, progress)?;
    progress.message(&format!(
        "downloading {} (~{} MB) from the Hugging Face hub ({})",
        entry.id,
        entry.approx_size_bytes / 1_000_000,
        entry.hub_repo
    ));
    let repo = api.model(entry.hub_repo.to_string());
    for file in entry.files {
        let what = format!("{}/{}", entry.hub_repo, file.repo_path);
        let pointer = repo.get(file.repo_path).map_err(|e| hub_error(&what, e))?;
        // The snapshot entry is a symlink into blobs/; move the blob itself.
        let blob = fs::canonicalize(&pointer).map_err(|e| Error::io(&pointer, e))?;
        let target = staging.join(file.local_path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        fs::rename(&blob, &target).map_err(|e| Error::io(&target, e))?;
    }
    fs::remove_dir_all(&cache_dir).map_err(|e| Error::io(&cache_dir, e))
}

/// Resolves `repo` (and `file`) from `<home>/hub`, downloading with hf-hub when needed.
///
/// The local cache is used first, so a model once downloaded works offline. With `refresh`
/// (`pull`) and the hub allowed, the repo listing is fetched again to pick files.
pub(crate) fn resolve_hub(
    repo: &str,
    file: Option<&str>,
    home: &ModelHome,
    options: &SourceOptions,
    progress: &dyn Progress,
    refresh: bool,
) -> Result<ResolvedModel> {
    let cache = Cache::new(home.hub_dir());
    let cached = cache.repo(Repo::model(repo.to_string()));
    let name = match file {
        Some(file) => format!("{repo}:{file}"),
        None => repo.to_string(),
    };
    if let Some(file) = file {
        if let Some(path) = cached.get(file) {
            return Ok(gguf_model(name, path));
        }
    } else if !refresh {
        if let Some(model) = cached_selection(&home.hub_dir(), repo, &name)? {
            return Ok(model);
        }
    }
    if !options.allow_hub {
        return Err(Error::Download {
            what: name,
            reason: "not in the local cache, and the hub is disabled (HF_HUB_OFFLINE or \
                     HELIXFLOW_NO_HUB is set)"
                .to_string(),
        });
    }
    let api = connect(home.hub_dir(), options, progress)?;
    let api_repo = api.model(repo.to_string());
    let selection = match file {
        Some(file) => HubSelection::Gguf {
            file: file.to_string(),
        },
        None => {
            let info = api_repo.info().map_err(|e| hub_error(repo, e))?;
            let listing: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
            select_hub_files(&listing)?
        }
    };
    progress.message(&format!("fetching {name} from the Hugging Face hub"));
    let mut paths = Vec::new();
    for wanted in selection.files() {
        let what = format!("{repo}/{wanted}");
        paths.push(api_repo.get(wanted).map_err(|e| hub_error(&what, e))?);
    }
    let model = match selection {
        HubSelection::Gguf { .. } => match paths.into_iter().next() {
            Some(path) => gguf_model(name, path),
            None => return Err(Error::ModelNotFound(format!("{name}: nothing downloaded"))),
        },
        HubSelection::Folder { .. } => {
            let snapshot = cached
                .get("config.json")
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .ok_or_else(|| Error::ModelNotFound(format!("{name}: config.json missing")))?;
            folder_model(name, &snapshot)?
        }
    };
    progress.message(&format!("{} is at {}", model.name, model.path.display()));
    Ok(model)
}

fn gguf_model(name: String, path: PathBuf) -> ResolvedModel {
    ResolvedModel {
        kind: ModelKind::Chat,
        path,
        name,
    }
}

fn folder_model(name: String, dir: &Path) -> Result<ResolvedModel> {
    let (kind, path) = classify_dir(dir)?;
    Ok(ResolvedModel { kind, path, name })
}

/// A complete selection from the cached snapshot of `repo`, if there is one.
fn cached_selection(hub_dir: &Path, repo: &str, name: &str) -> Result<Option<ResolvedModel>> {
    let Some(snapshot) = current_snapshot(hub_dir, repo) else {
        return Ok(None);
    };
    let listing = list_files(&snapshot);
    let Ok(selection) = select_hub_files(&listing) else {
        return Ok(None);
    };
    Ok(Some(match selection {
        HubSelection::Gguf { file } => gguf_model(name.to_string(), snapshot.join(file)),
        HubSelection::Folder { .. } => folder_model(name.to_string(), &snapshot)?,
    }))
}

/// hf-hub's folder name for a model repo: `models--org--name`.
pub(crate) fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// The snapshot `refs/main` points at.
fn current_snapshot(hub_dir: &Path, repo: &str) -> Option<PathBuf> {
    let repo_dir = hub_dir.join(repo_folder(repo));
    let commit = fs::read_to_string(repo_dir.join("refs").join("main")).ok()?;
    let snapshot = repo_dir.join("snapshots").join(commit.trim());
    snapshot.is_dir().then_some(snapshot)
}

/// Every file under `dir` as a `/`-separated relative path (symlinks followed).
pub(crate) fn list_files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let rel = format!("{prefix}{name}");
            let path = entry.path();
            if path.is_dir() {
                walk(&path, &format!("{rel}/"), out);
            } else if path.is_file() {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// Models in hf-hub's cache: `org/name` for a complete safetensors folder, and
/// `org/name:file.gguf` for each GGUF, across all snapshots (the current one wins).
pub(crate) fn list_hub_cache(hub_dir: &Path) -> Vec<CachedModel> {
    let Ok(entries) = fs::read_dir(hub_dir) else {
        return Vec::new();
    };
    let mut models: Vec<CachedModel> = Vec::new();
    let mut add = |model: CachedModel| {
        if !models.iter().any(|m| m.id == model.id) {
            models.push(model);
        }
    };
    for entry in entries.flatten() {
        let folder = entry.file_name().to_string_lossy().into_owned();
        let Some(repo) = folder
            .strip_prefix("models--")
            .and_then(|r| r.split_once("--"))
            .map(|(org, name)| format!("{org}/{name}"))
        else {
            continue;
        };
        let current = current_snapshot(hub_dir, &repo);
        let mut snapshots: Vec<PathBuf> = fs::read_dir(entry.path().join("snapshots"))
            .map(|s| s.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        // The snapshot refs/main points at first, so its files win the dedup.
        snapshots.sort_by_key(|s| Some(s) != current.as_ref());
        for snapshot in snapshots {
            let files = list_files(&snapshot);
            if let Ok(HubSelection::Folder { .. }) = select_hub_files(&files) {
                add(CachedModel {
                    id: repo.clone(),
                    path: snapshot.clone(),
                    size_bytes: super::cache::dir_size(&snapshot),
                    verified: false,
                    license: None,
                });
            }
            for file in files
                .iter()
                .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
            {
                let path = snapshot.join(file);
                add(CachedModel {
                    id: format!("{repo}:{file}"),
                    size_bytes: fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                    path,
                    verified: false,
                    license: None,
                });
            }
        }
    }
    models.sort_by(|a, b| a.id.cmp(&b.id));
    models
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            host_and_port("https://huggingface.co").unwrap(),
            ("huggingface.co".to_string(), 443)
        );
        assert_eq!(
            host_and_port("http://mirror.local:8080/hf").unwrap(),
            ("mirror.local".to_string(), 8080)
        );
        assert_eq!(
            host_and_port("http://[::1]:9000").unwrap(),
            ("::1".to_string(), 9000)
        );
        assert_eq!(
            host_and_port("https://[::1]/x").unwrap(),
            ("::1".to_string(), 443)
        );
        assert!(host_and_port("ftp://x").is_err());
        assert!(host_and_port("http://x:port").is_err());
    }

    #[test]
    fn probe_fails_fast_on_a_closed_local_port() {
        // Bind then drop to get a port nobody listens on; nothing leaves this machine.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if PROXY_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return; // the probe is skipped by design behind a proxy
        }
        let start = Instant::now();
        let result = probe_endpoint(&format!("http://127.0.0.1:{port}"), Duration::from_secs(3));
        assert!(result.is_err());
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn offline_resolution_uses_the_hf_hub_cache_layout() {
        // Build what hf-hub leaves behind: refs/main -> snapshots/<commit>/<files>.
        let home_dir = tempfile::tempdir().unwrap();
        let home = ModelHome::new(home_dir.path());
        let repo_dir = home.hub_dir().join(repo_folder("org/tiny-GGUF"));
        let snapshot = repo_dir.join("snapshots").join("abc123");
        fs::create_dir_all(&snapshot).unwrap();
        fs::create_dir_all(repo_dir.join("refs")).unwrap();
        fs::write(repo_dir.join("refs").join("main"), "abc123").unwrap();
        fs::write(snapshot.join("tiny.Q8_0.gguf"), b"GGUF").unwrap();
        fs::write(snapshot.join("tiny.Q4_0.gguf"), b"GGUF").unwrap();
        let options = SourceOptions::offline("python3");
        let silent = super::super::SilentProgress;

        let model = resolve_hub("org/tiny-GGUF", None, &home, &options, &silent, false).unwrap();
        assert_eq!(model.path, snapshot.join("tiny.Q4_0.gguf"));
        assert_eq!(model.kind, ModelKind::Chat);

        let model = resolve_hub(
            "org/tiny-GGUF",
            Some("tiny.Q8_0.gguf"),
            &home,
            &options,
            &silent,
            false,
        )
        .unwrap();
        assert_eq!(model.name, "org/tiny-GGUF:tiny.Q8_0.gguf");

        let missing = resolve_hub(
            "org/tiny-GGUF",
            Some("x.gguf"),
            &home,
            &options,
            &silent,
            false,
        );
        assert!(
            matches!(missing, Err(Error::Download { reason, .. }) if reason.contains("disabled"))
        );
        let unknown = resolve_hub("org/other", None, &home, &options, &silent, false);
        assert!(matches!(unknown, Err(Error::Download { .. })));
    }
}
