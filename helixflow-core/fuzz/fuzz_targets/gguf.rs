//! A GGUF file of any bytes: parsing its header, metadata and tensor table, reading every
//! tensor's bytes and loading it as a chat model are errors or successes, never a crash.
#![no_main]

use std::io::Write;

use helixflow_core::chat_model::ChatModel;
use helixflow_core::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader maps a file: give it one (in memory where the system has a tmpfs).
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile_in("/dev/shm")
    } else {
        tempfile_in(&std::env::temp_dir().to_string_lossy())
    };
    let path = dir.join("model.gguf");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(data))
        .expect("the input file is written");
    if let Ok(file) = GgufFile::open(&path) {
        let names: Vec<String> = file.tensor_infos().keys().cloned().collect();
        for name in names {
            let _ = file.tensor_bytes(&name);
        }
        for key in file.metadata().keys() {
            let _ = file.get_str(key);
            let _ = file.get_u64(key);
            let _ = file.get_string_array(key);
        }
    }
    let _ = ChatModel::load_named(&path, "fuzzed");
    let _ = std::fs::remove_dir_all(&dir);
});

/// A fresh directory under `base`, unique to this process and input.
fn tempfile_in(base: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::path::Path::new(base).join(format!(
        "helixflow-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("the input directory is made");
    dir
}
