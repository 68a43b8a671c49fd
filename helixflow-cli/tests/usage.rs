//! `helixflow usage` and `helixflow keys defaults` on a SQLite store in a temporary data
//! directory, and a server stopped by SIGTERM under load that loses no usage record.

mod common;

use common::{cli as helixflow, ok};

use std::process::Output;
use std::sync::mpsc;

use serde_json::{json, Value};

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

#[test]
fn sigterm_under_load_loses_no_usage_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let created = json_of(&helixflow(
        dir.path(),
        &["keys", "create", "--name", "load", "--json"],
    ));
    let (key_id, key) = (
        created["id"].as_str().unwrap().to_string(),
        created["key"].as_str().unwrap().to_string(),
    );
    let server = common::Server::spawn_with_env(
        &[
            "--no-tls",
            "--data-dir",
            data,
            "--model",
            "smollm2-135m-instruct",
        ],
        &[("DATABASE_TYPE", "sqlite")],
    );

    // 16 concurrent completions of different lengths; SIGTERM once the shortest is done,
    // while the others are still generating.
    let (done_tx, done_rx) = mpsc::channel();
    let clients: Vec<_> = (0..16u32)
        .map(|i| {
            let (url, key, done) = (server.url.clone(), key.clone(), done_tx.clone());
            std::thread::spawn(move || {
                let body = json!({"model": "smollm2-135m-instruct", "prompt": "Count: 1 2 3",
                                  "max_tokens": 2 + 6 * i, "ignore_eos": true});
                let answer = common::http_as(
                    &url,
                    "POST",
                    "/v1/completions",
                    &body.to_string(),
                    Some(&key),
                );
                let _ = done.send(());
                answer
            })
        })
        .collect();
    done_rx.recv().unwrap();
    let status = server.stop();
    assert!(status.success(), "{status:?}");

    let mut completed = Vec::new();
    for client in clients {
        let (code, body) = client.join().unwrap();
        if code == 200 {
            completed.push(serde_json::from_str::<Value>(&body).unwrap());
        }
    }
    eprintln!("{} of 16 requests completed", completed.len());
    assert!(
        completed.len() >= 2,
        "only {} requests completed",
        completed.len()
    );

    // Every completed request has its usage row, with the tokens its response reported.
    let records = json_of(&helixflow(
        dir.path(),
        &["usage", "--records", "--json", "--limit", "1000"],
    ));
    let records = records.as_array().unwrap();
    for answer in &completed {
        let id = answer["id"].as_str().unwrap();
        let record = records
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no usage row for {id} in {records:#?}"));
        assert_eq!(record["status"], 200);
        assert_eq!(record["cancelled"], false);
        assert_eq!(record["key_id"], key_id.as_str());
        assert_eq!(record["prompt_tokens"], answer["usage"]["prompt_tokens"]);
        assert_eq!(
            record["completion_tokens"],
            answer["usage"]["completion_tokens"]
        );
    }
    // The totals agree.
    let totals = json_of(&helixflow(
        dir.path(),
        &["usage", "--group-by", "key", "--json", "--key", &key_id],
    ));
    let completion: u64 = completed
        .iter()
        .map(|a| a["usage"]["completion_tokens"].as_u64().unwrap())
        .sum();
    let ok_rows = records.iter().filter(|r| r["status"] == 200).count();
    assert_eq!(ok_rows, completed.len());
    assert!(totals[0]["completion_tokens"].as_u64().unwrap() >= completion);
    let table = ok(&helixflow(dir.path(), &["usage"]));
    assert!(table.contains("smollm2-135m-instruct"), "{table}");
}

#[test]
fn key_defaults_round_trip_and_bad_usage_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let none = json!({"rpm": null, "tpm": null, "budget_tokens": null, "budget_period": null});
    assert_eq!(
        json_of(&helixflow(dir.path(), &["keys", "defaults", "--json"])),
        none
    );
    let set = json_of(&helixflow(
        dir.path(),
        &[
            "keys", "defaults", "--rpm", "60", "--budget", "1000", "--period", "day", "--json",
        ],
    ));
    assert_eq!(
        set,
        json!({"rpm": 60, "tpm": null, "budget_tokens": 1000, "budget_period": "day"})
    );
    // Shown without flags; other flags change only what they name.
    let shown = ok(&helixflow(dir.path(), &["keys", "defaults"]));
    assert!(
        shown.contains("rpm     60") && shown.contains("1000 per day"),
        "{shown}"
    );
    let more = json_of(&helixflow(
        dir.path(),
        &["keys", "defaults", "--tpm", "500", "--json"],
    ));
    assert_eq!((&more["rpm"], &more["tpm"]), (&json!(60), &json!(500)));

    // New keys take them, unless --unlimited; keys already made keep theirs.
    let key = json_of(&helixflow(
        dir.path(),
        &["keys", "create", "--name", "a", "--json"],
    ));
    assert_eq!(key["limits"]["rpm"], 60);
    assert_eq!(key["limits"]["budget_period"], "day");
    let own = json_of(&helixflow(
        dir.path(),
        &["keys", "create", "--name", "b", "--rpm", "5", "--json"],
    ));
    assert_eq!(
        (&own["limits"]["rpm"], &own["limits"]["tpm"]),
        (&json!(5), &json!(500))
    );
    let free = json_of(&helixflow(
        dir.path(),
        &["keys", "create", "--name", "c", "--unlimited", "--json"],
    ));
    assert_eq!(free["limits"], none);
    let cleared = json_of(&helixflow(
        dir.path(),
        &["keys", "defaults", "--clear", "--tpm", "7", "--json"],
    ));
    assert_eq!(
        cleared,
        json!({"rpm": null, "tpm": 7, "budget_tokens": null, "budget_period": null})
    );
    let listed = ok(&helixflow(dir.path(), &["keys", "list", "--json"]));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let a = listed.as_array().unwrap().iter().find(|k| k["name"] == "a");
    assert_eq!(a.unwrap()["limits"]["rpm"], 60, "made before the change");

    // Mistakes: clap's usage errors (2), or a clear error (1); nothing changes.
    for (bad, code) in [
        (
            &["keys", "create", "--name", "x", "--unlimited", "--rpm", "5"][..],
            2,
        ),
        (&["keys", "defaults", "--period", "day"], 2),
        (&["keys", "defaults", "--rpm", "-5"], 2),
        (
            &["keys", "defaults", "--budget", "5", "--period", "week"],
            1,
        ),
        (&["usage", "--group-by", "key;DROP TABLE usage_records"], 1),
        (&["usage", "--since", "soon"], 1),
    ] {
        let out = helixflow(dir.path(), bad);
        assert_eq!(out.status.code(), Some(code), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        if code == 1 {
            assert!(stderr.starts_with("error: "), "{stderr}");
        }
    }
    assert_eq!(
        json_of(&helixflow(dir.path(), &["keys", "defaults", "--json"])),
        cleared
    );
    // An empty report is just its header.
    let empty = ok(&helixflow(dir.path(), &["usage"]));
    assert_eq!(empty.lines().count(), 1, "{empty}");
    assert_eq!(
        json_of(&helixflow(dir.path(), &["usage", "--records", "--json"])),
        json!([])
    );
}

/// A hard kill (SIGKILL, no shutdown) loses at most the last flush interval of usage records:
/// requests that ended more than a second before it are all stored.
#[test]
fn a_hard_kill_loses_at_most_the_last_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let created = json_of(&helixflow(
        dir.path(),
        &["keys", "create", "--name", "killed", "--json"],
    ));
    let key = created["key"].as_str().unwrap().to_string();
    let mut server = common::Server::spawn_with_env(
        &[
            "--no-tls",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--model",
            "smollm2-135m-instruct",
        ],
        &[],
    );
    let body = json!({"model": "smollm2-135m-instruct", "prompt": "Hi", "max_tokens": 3});
    for _ in 0..4 {
        let (code, answer) = common::http_as(
            &server.url,
            "POST",
            "/v1/completions",
            &body.to_string(),
            Some(&key),
        );
        assert_eq!(code, 200, "{answer}");
    }
    std::thread::sleep(std::time::Duration::from_millis(1200));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let records = json_of(&helixflow(
        dir.path(),
        &["usage", "--records", "--json", "--limit", "100"],
    ));
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 4, "{records:#?}");
    assert!(records.iter().all(|r| r["completion_tokens"] == 3));
}
