//! Models that come and go while serving: loads on first use shared by concurrent requests,
//! keep-alive, unloading, eviction within a memory budget, and requests that keep running
//! (with the same answers) while other models are loaded and evicted around them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use helixflow_core::engine::{EngineConfig, EngineEvent, KvBudget};
use helixflow_core::generation::GenerationParams;
use helixflow_core::registry::{
    KeepAlive, ModelLease, ModelRegistry, ModelState, RegistryConfig, Unloaded,
};
use helixflow_core::source::SilentProgress;
use helixflow_core::{Error, ErrorClass};

const PATIENCE: Duration = Duration::from_secs(120);
/// Each engine's KV cache: small, so that a model's footprint is mostly its weights.
const KV_BYTES: usize = 8 << 20;

/// A models folder holding the default chat model as `a`, `b` and `c`, and a broken file.
fn models_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let gguf = common::chat_gguf();
    for name in ["a", "b", "c"] {
        std::os::unix::fs::symlink(&gguf, dir.path().join(format!("{name}.gguf"))).unwrap();
    }
    std::fs::write(dir.path().join("broken.gguf"), b"GGUF but nothing else").unwrap();
    dir
}

/// What one model takes in the registry's account: its file and its KV cache.
fn footprint() -> u64 {
    std::fs::metadata(common::chat_gguf()).unwrap().len() + KV_BYTES as u64
}

fn registry(dir: &Path, budget: Option<u64>, keep_alive: KeepAlive) -> ModelRegistry {
    ModelRegistry::with_config(RegistryConfig {
        engine: EngineConfig {
            kv_budget: KvBudget::Bytes(KV_BYTES),
            ..EngineConfig::default()
        },
        models_dir: Some(dir.to_path_buf()),
        keep_alive,
        memory_budget: budget,
        ..RegistryConfig::default()
    })
}

/// The first golden case: a prompt and llama.cpp's greedy answer to it.
fn case() -> (Vec<u32>, Vec<u32>) {
    let golden = common::golden("smollm2-chat.json");
    let case = &golden["cases"][0];
    let want = common::ids(&case["greedy_completion_token_ids"]);
    (
        common::ids(&case["prompt_token_ids"]),
        want[..want.len().min(12)].to_vec(),
    )
}

/// Greedy tokens from the model `lease` holds.
fn generate(lease: &ModelLease, prompt: &[u32], max: usize) -> Vec<u32> {
    let stream = lease
        .chat()
        .unwrap()
        .submit(prompt.to_vec(), GenerationParams::greedy(max))
        .unwrap();
    let mut tokens = Vec::new();
    loop {
        match stream.recv_timeout(PATIENCE) {
            Ok(EngineEvent::Token { output, .. }) => tokens.push(output.token),
            Ok(EngineEvent::Done { .. }) => return tokens,
            Ok(EngineEvent::Failed(e)) => panic!("the request failed: {e}"),
            Ok(_) => {}
            Err(_) => panic!("no event within {PATIENCE:?}"),
        }
    }
}

/// `count` requests for `id` at once, each refused: their errors.
fn refusals_at_once(registry: &ModelRegistry, id: &str, count: usize) -> Vec<Error> {
    let barrier = Arc::new(Barrier::new(count));
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..count)
            .map(|_| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    registry.acquire(id).unwrap_err()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

fn state(registry: &ModelRegistry, id: &str) -> Option<ModelState> {
    registry.status(id).map(|s| s.state)
}

/// Waits up to five seconds for `done`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < until, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn concurrent_first_requests_share_one_load() {
    let dir = models_dir();
    let registry = registry(dir.path(), None, KeepAlive::Forever);
    assert_eq!(state(&registry, "a"), None);
    assert!(registry
        .list()
        .iter()
        .any(|m| m.id == "a" && m.state == ModelState::Available));
    let (prompt, want) = case();
    let max = want.len();
    let barrier = Arc::new(Barrier::new(6));
    let answers: Vec<Vec<u32>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (registry, barrier, prompt) = (&registry, barrier.clone(), &prompt);
                s.spawn(move || {
                    barrier.wait();
                    let lease = registry.acquire("a").unwrap();
                    generate(&lease, prompt, max)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(registry.loads(), 1, "one load for every first request");
    for answer in answers {
        assert_eq!(answer, want);
    }
    let status = registry.status("a").unwrap();
    assert_eq!(status.state, ModelState::Loaded);
    assert_eq!(status.requests, 6);
    assert_eq!(status.in_flight, 0);
    assert_eq!(status.footprint.total(), footprint());
    assert!(status.last_used.is_some());
}

#[test]
fn ids_name_models_never_paths() {
    let dir = models_dir();
    let registry = registry(dir.path(), None, KeepAlive::Forever);
    let outside = dir.path().join("a.gguf");
    for id in [
        "../a",
        outside.to_str().unwrap(),
        "a.gguf",
        "nope",
        "org/repo",
    ] {
        let err = registry.acquire(id).unwrap_err();
        assert!(
            matches!(err, Error::ModelNotFound(ref m) if m == id),
            "{id}: {err}"
        );
        assert!(!registry.knows(id));
    }
    assert!(registry.knows("b"));
    assert_eq!(registry.loads(), 0);
}

#[test]
fn a_failed_load_reaches_every_waiter_and_leaves_nothing() {
    let dir = models_dir();
    let registry = registry(dir.path(), None, KeepAlive::Forever);
    let errors = refusals_at_once(&registry, "broken", 4);
    for err in &errors {
        assert_eq!(err.class(), ErrorClass::ModelLoad, "{err}");
    }
    assert_eq!(state(&registry, "broken"), None);
    assert_eq!(registry.memory().reserved_bytes, 0);
    // The next request tries again (and fails again).
    assert!(registry.acquire("broken").is_err());
}

#[test]
fn idle_models_go_after_their_keep_alive() {
    let dir = models_dir();
    let registry = registry(dir.path(), None, KeepAlive::For(Duration::from_millis(300)));
    drop(registry.acquire("a").unwrap());
    assert_eq!(state(&registry, "a"), Some(ModelState::Loaded));
    assert!(registry.status("a").unwrap().expires_at.is_some());
    eventually("unloading a after 300 ms", || {
        state(&registry, "a").is_none()
    });
    // It comes back on the next request.
    drop(registry.acquire("a").unwrap());
    assert_eq!(registry.loads(), 2);

    // A request's own keep-alive: zero unloads the model when the request ends...
    let lease = registry.acquire("b").unwrap();
    lease.set_keep_alive(KeepAlive::NONE);
    assert_eq!(state(&registry, "b"), Some(ModelState::Loaded));
    drop(lease);
    assert_eq!(state(&registry, "b"), None);
    // ...and forever keeps it past the server's keep-alive.
    let lease = registry.acquire("c").unwrap();
    lease.set_keep_alive(KeepAlive::Forever);
    drop(lease);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(state(&registry, "c"), Some(ModelState::Loaded));
    assert_eq!(registry.status("c").unwrap().expires_at, None);
}

#[test]
fn unloading_waits_for_the_requests_in_flight() {
    let dir = models_dir();
    let registry = registry(dir.path(), None, KeepAlive::Forever);
    let (prompt, want) = case();
    let lease = registry.acquire("a").unwrap();
    assert_eq!(
        registry.unload("a").unwrap(),
        Unloaded::WhenIdle { in_flight: 1 }
    );
    // The request in flight runs to its end on the model.
    assert_eq!(generate(&lease, &prompt, want.len()), want);
    assert_eq!(state(&registry, "a"), Some(ModelState::Loaded));
    drop(lease);
    assert_eq!(state(&registry, "a"), None);
    assert!(matches!(registry.unload("a"), Err(Error::ModelNotFound(_))));
    drop(registry.acquire("a").unwrap());
    assert_eq!(registry.unload("a").unwrap(), Unloaded::Now);
}

#[test]
fn eviction_takes_the_least_recently_used_idle_model() {
    let dir = models_dir();
    let per_model = footprint();
    let budget = 2 * per_model + per_model / 2;
    let registry = registry(dir.path(), Some(budget), KeepAlive::Forever);
    let a = registry.acquire("a").unwrap();
    drop(registry.acquire("b").unwrap());
    // `a` is busy and `b` idle: `c` takes `b`'s room.
    let c = registry.acquire("c").unwrap();
    assert_eq!(state(&registry, "a"), Some(ModelState::Loaded));
    assert_eq!(state(&registry, "b"), None);
    assert!(registry.memory().reserved_bytes <= budget);
    // Both loaded models are busy: no room for `b`, and a hint when to try again.
    match registry.acquire("b") {
        Err(Error::NoRoom {
            retry_after_secs, ..
        }) => assert!(retry_after_secs > 0),
        other => panic!("expected no room, got {other:?}"),
    }
    assert_eq!(state(&registry, "b"), None);
    // Once `a` is idle (and `c` used after it), `b` takes `a`'s room.
    drop(a);
    std::thread::sleep(Duration::from_millis(5));
    drop(c);
    drop(registry.acquire("b").unwrap());
    assert_eq!(state(&registry, "a"), None);
    assert_eq!(state(&registry, "c"), Some(ModelState::Loaded));
    assert!(registry.memory().reserved_bytes <= budget);

    // A model larger than the whole budget never fits.
    let tiny = self::registry(dir.path(), Some(per_model / 2), KeepAlive::Forever);
    let err = tiny.acquire("a").unwrap_err();
    assert!(matches!(err, Error::NoRoom { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Overloaded);
}

#[test]
fn requests_survive_loads_and_evictions_around_them() {
    let dir = models_dir();
    let per_model = footprint();
    let budget = 2 * per_model + per_model / 2;
    let registry = registry(dir.path(), Some(budget), KeepAlive::Forever);
    let (prompt, want) = case();
    let over_budget = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let refused = AtomicU64::new(0);
    std::thread::scope(|s| {
        // Watches the account while the requests run.
        let watcher = {
            let (registry, over_budget, stop) = (&registry, over_budget.clone(), stop.clone());
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if registry.memory().reserved_bytes > budget {
                        over_budget.store(true, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let (registry, prompt, want, refused) = (&registry, &prompt, &want, &refused);
                s.spawn(move || {
                    for request in 0..4 {
                        let id = ["a", "b", "c"][(client + request) % 3];
                        let deadline = Instant::now() + PATIENCE;
                        let lease = loop {
                            match registry.acquire(id) {
                                Ok(lease) => break lease,
                                Err(Error::NoRoom { .. }) if Instant::now() < deadline => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                                Err(e) => panic!("request {request} of client {client}: {e}"),
                            }
                        };
                        assert_eq!(&generate(&lease, prompt, want.len()), want, "{id}");
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
    });
    assert!(
        !over_budget.load(Ordering::Relaxed),
        "the budget was exceeded"
    );
    assert!(
        registry.loads() >= 3,
        "every model was loaded at least once"
    );
    let loaded = registry
        .list()
        .iter()
        .filter(|m| m.state == ModelState::Loaded)
        .count();
    assert!(loaded <= 2);
    eprintln!(
        "{} loads, {} refusals for room",
        registry.loads(),
        refused.load(Ordering::Relaxed)
    );
}

#[test]
fn start_up_models_come_back_after_an_unload() {
    let dir = models_dir();
    let path: PathBuf = dir.path().join("a.gguf");
    let registry = ModelRegistry::start(
        RegistryConfig {
            engine: EngineConfig {
                kv_budget: KvBudget::Bytes(KV_BYTES),
                ..EngineConfig::default()
            },
            ..RegistryConfig::default()
        },
        &[path.to_str().unwrap().to_string()],
        &SilentProgress,
    )
    .unwrap();
    assert_eq!(state(&registry, "a"), Some(ModelState::Loaded));
    assert_eq!(registry.unload("a").unwrap(), Unloaded::Now);
    assert!(registry
        .list()
        .iter()
        .any(|m| m.id == "a" && m.state == ModelState::Available));
    drop(registry.acquire("a").unwrap());
    assert_eq!(registry.loads(), 2);
    // Not in any models folder, `b` is unknown to this registry.
    assert!(matches!(
        registry.acquire("b"),
        Err(Error::ModelNotFound(_))
    ));
}

#[test]
fn every_waiter_on_a_load_without_room_is_told_to_retry() {
    let dir = models_dir();
    let registry = registry(dir.path(), Some(footprint() / 2), KeepAlive::Forever);
    let errors = refusals_at_once(&registry, "a", 4);
    for err in &errors {
        assert!(
            matches!(err, Error::NoRoom { model, .. } if model == "a"),
            "{err}"
        );
        assert!(err.retry_after_secs().is_some());
    }
    assert_eq!(registry.memory().reserved_bytes, 0);
}
