//! The verbs Ollama's users type: `helixflow pull|ls|rm` on the model cache, and
//! `helixflow run MODEL` as a chat in the shell (history, `/clear`, `/bye`, and ctrl-c that
//! stops the answer, not the program).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn helixflow_in(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(args)
        .env("HELIXFLOW_HOME", home)
        .env("HELIXFLOW_NO_HUB", "1")
        .output()
        .expect("the binary runs")
}

fn listed(home: &Path) -> Vec<String> {
    let out = helixflow_in(home, &["ls", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ls_and_rm_manage_the_cache() {
    let home = tempfile::tempdir().unwrap();
    // A built-in's folder and a hub repo's snapshot, as a download leaves them.
    let builtin = home.path().join("models/smollm2-135m-instruct");
    std::fs::create_dir_all(&builtin).unwrap();
    std::fs::write(builtin.join("SmolLM2-135M-Instruct.Q4_1.gguf"), b"GGUF....").unwrap();
    let snapshot = home.path().join("hub/models--org--tiny/snapshots/abc");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(snapshot.join("tiny.Q4_0.gguf"), b"GGUF....").unwrap();
    let ids = listed(home.path());
    assert!(
        ids.contains(&"smollm2-135m-instruct".to_string()),
        "{ids:?}"
    );
    assert!(
        ids.contains(&"org/tiny:tiny.Q4_0.gguf".to_string()),
        "{ids:?}"
    );

    let out = helixflow_in(home.path(), &["rm", "smollm2-135m-instruct"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted 'smollm2-135m-instruct'"));
    assert!(!builtin.exists());
    let out = helixflow_in(home.path(), &["rm", "org/tiny:tiny.Q4_0.gguf"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listed(home.path()), Vec::<String>::new());

    // Unknown ids are errors, and paths never reach outside the cache.
    for id in ["nope", "../models", "/etc"] {
        let out = helixflow_in(home.path(), &["rm", id]);
        assert!(!out.status.success(), "{id}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(id), "{id}");
    }
    // `pull` without the hub or a wheel to reach fails clearly, and leaves nothing behind.
    let out = Command::new(env!("CARGO_BIN_EXE_helixflow"))
        .args(["pull", "org/missing"])
        .env("HELIXFLOW_HOME", home.path())
        .env("HELIXFLOW_NO_HUB", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(listed(home.path()), Vec::<String>::new());
}

/// A chat in the shell: the child, and what it has written so far.
struct Chat {
    child: std::process::Child,
    output: Arc<Mutex<String>>,
}

impl Chat {
    fn start(max_tokens: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_helixflow"))
            .args([
                "run",
                "smollm2-135m-instruct",
                "--interactive",
                "--temperature",
                "0",
                "--max-tokens",
                max_tokens,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 256];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Self { child, output }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output holds `count` prompts.
    fn wait_for_prompts(&self, count: usize) {
        let until = Instant::now() + Duration::from_secs(120);
        while self.text().matches(">>> ").count() < count {
            assert!(
                Instant::now() < until,
                "waiting for prompt {count}: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn run_without_a_prompt_is_a_chat() {
    let mut chat = Chat::start("12");
    chat.wait_for_prompts(1);
    chat.say("What is the capital of France?");
    chat.wait_for_prompts(2);
    // An answer between the two prompts.
    let first = chat.text();
    let answer = first.split(">>> ").nth(1).unwrap();
    assert!(answer.trim().len() > 3, "{first}");
    chat.say("/?");
    chat.say("/nonsense");
    chat.say("/clear");
    chat.wait_for_prompts(5);
    chat.say("/bye");
    let status = chat.child.wait().unwrap();
    assert!(status.success());
    let text = chat.text();
    assert!(text.contains("Unknown command '/nonsense'"), "{text}");
    assert!(text.contains("Cleared session context"), "{text}");
}

#[test]
fn ctrl_c_stops_the_answer_not_the_chat() {
    let mut chat = Chat::start("2000");
    chat.wait_for_prompts(1);
    chat.say("Count from one to one thousand, one number per line.");
    // Once the answer is under way, ctrl-c.
    let until = Instant::now() + Duration::from_secs(120);
    while chat.text().len() < 40 {
        assert!(Instant::now() < until, "no answer: {}", chat.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &chat.child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    // The chat goes on: a new prompt well before two thousand tokens, then /bye ends it.
    chat.wait_for_prompts(2);
    chat.say("/bye");
    let status = chat.child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", chat.text());
}
