//! The platform store's test suite, run against SQLite and against PostgreSQL.
//!
//! PostgreSQL: `HELIXFLOW_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`)
//! names a server on which each run creates, and then drops, a fresh database. Without a
//! server the PostgreSQL tests say they were skipped, unless `HELIXFLOW_REQUIRE_POSTGRES=1`
//! (set by CI), where they fail.
#![cfg(feature = "platform")]

mod common;

use helixflow_core::platform::{
    BudgetPeriod, KeyLimits, NewKey, PlatformError, Scope, Store, StoredResponse,
};
use sqlx::Connection;

async fn keys_are_created_verified_listed_and_revoked(store: &Store) {
    let mut new = NewKey::inference("ci");
    new.owner = Some("alice".into());
    new.models = Some(vec!["smollm2-135m-instruct".into()]);
    new.limits = KeyLimits {
        rpm: Some(60),
        tpm: Some(10_000),
        budget_tokens: Some(1_000_000),
        budget_period: Some(BudgetPeriod::Month),
    };
    let created = store.create_key(new).await.unwrap();
    assert!(created.secret.starts_with(&created.key.prefix));
    let key = store.verify_key(&created.secret).await.unwrap().unwrap();
    assert_eq!(key, created.key);
    assert!(key.has_scope(Scope::Inference) && !key.has_scope(Scope::Admin));
    assert!(key.allows_model("smollm2-135m-instruct") && !key.allows_model("other"));
    assert_eq!(key.limits.budget_period, Some(BudgetPeriod::Month));

    // A wrong secret with a real prefix, a made-up key, and junk are all refused.
    let mut wrong = created.secret.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(store.verify_key(&wrong).await.unwrap(), None);
    assert_eq!(
        store
            .verify_key("hfk_AAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .await
            .unwrap(),
        None
    );
    for junk in ["", "x", "hfk_", "hfk_' OR 1=1 --_x", &"hfk_".repeat(10_000)] {
        assert_eq!(store.verify_key(junk).await.unwrap(), None, "{junk:.20}");
    }

    let admin = store
        .create_key(NewKey {
            scopes: vec![Scope::Admin, Scope::Inference, Scope::Admin],
            ..NewKey::inference("ops")
        })
        .await
        .unwrap();
    assert_eq!(admin.key.scopes, [Scope::Admin, Scope::Inference]);
    let listed = store.list_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|k| k.id == created.key.id));

    assert!(store.revoke_key(&created.key.id).await.unwrap());
    assert_eq!(store.verify_key(&created.secret).await.unwrap(), None);
    let revoked = store.get_key(&created.key.id).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(!store.revoke_key("key_missing").await.unwrap());
    assert!(store.verify_key(&admin.secret).await.unwrap().is_some());
}
on_both!(keys, keys_are_created_verified_listed_and_revoked);

/// Ids and names PostgreSQL would refuse (a NUL byte) or that are absurdly long are refused
/// (or match nothing) without a database error.
async fn hostile_ids_and_names_are_refused_cleanly(store: &Store) {
    for id in [
        "key_\0",
        "a\0b",
        &"k".repeat(100_000),
        "key_'; DROP TABLE api_keys; --",
    ] {
        assert_eq!(store.get_key(id).await.unwrap(), None);
        assert!(!store.revoke_key(id).await.unwrap());
    }
    let hostile = [
        NewKey::inference("a\0b"),
        NewKey {
            owner: Some("o\u{1b}[2J".into()),
            ..NewKey::inference("ok")
        },
        NewKey {
            owner: Some("o".repeat(1000)),
            ..NewKey::inference("ok")
        },
        NewKey {
            models: Some(vec!["m\0".into()]),
            ..NewKey::inference("ok")
        },
    ];
    for new in hostile {
        assert!(matches!(
            store.create_key(new).await,
            Err(PlatformError::Invalid(_))
        ));
    }
    assert!(store.list_keys().await.unwrap().is_empty());
}
on_both!(hostile_keys, hostile_ids_and_names_are_refused_cleanly);

async fn expired_keys_and_invalid_requests_are_refused(store: &Store) {
    // A key that would be born expired is refused outright.
    let born_expired = store
        .create_key(NewKey {
            expires_at: Some(1),
            ..NewKey::inference("old")
        })
        .await;
    assert!(matches!(born_expired, Err(PlatformError::Invalid(_))));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expiring = store
        .create_key(NewKey {
            expires_at: Some(now + 1),
            ..NewKey::inference("short-lived")
        })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(store.verify_key(&expiring.secret).await.unwrap(), None);
    let future = store
        .create_key(NewKey {
            expires_at: Some(i64::MAX),
            ..NewKey::inference("new")
        })
        .await
        .unwrap();
    assert!(store.verify_key(&future.secret).await.unwrap().is_some());

    let hostile = "Robert'); DROP TABLE api_keys; --";
    let stored = store.create_key(NewKey::inference(hostile)).await.unwrap();
    assert_eq!(
        store.get_key(&stored.key.id).await.unwrap().unwrap().name,
        hostile
    );
    for bad in [
        NewKey::inference(""),
        NewKey::inference("x".repeat(201)),
        NewKey {
            scopes: Vec::new(),
            ..NewKey::inference("none")
        },
        NewKey {
            models: Some(vec!["a,b".into()]),
            ..NewKey::inference("comma")
        },
        NewKey {
            limits: KeyLimits {
                budget_tokens: Some(5),
                ..KeyLimits::default()
            },
            ..NewKey::inference("half budget")
        },
    ] {
        assert!(matches!(
            store.create_key(bad).await,
            Err(PlatformError::Invalid(_))
        ));
    }
    assert_eq!(store.list_keys().await.unwrap().len(), 3);
    assert!(store.get_key(hostile).await.unwrap().is_none());
}
on_both!(
    expiry_and_validation,
    expired_keys_and_invalid_requests_are_refused
);

async fn migrating_twice_is_harmless(store: &Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
}
on_both!(migrations, migrating_twice_is_harmless);

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let fresh = common::stores::sqlite().await;
    // A migration this version does not know, as a newer HelixFlow would have left.
    let dir = fresh.dir.as_ref().unwrap().path().to_path_buf();
    let url = format!("sqlite://{}", dir.join("store.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, X'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let err = fresh.store.migrate().await.unwrap_err();
    assert!(
        matches!(err, PlatformError::NewerSchema { version: 9999 }),
        "{err}"
    );
    assert!(err.to_string().contains("newer version"));
    fresh.finish().await;
}

#[test]
fn the_environment_picks_the_database() {
    // One test owns these variables: tests run in threads of one process.
    let dir = std::path::Path::new("/data");
    let set = |vars: &[(&str, &str)]| {
        for name in ["DATABASE_URL", "DATABASE_TYPE", "DATABASE_PATH"] {
            std::env::remove_var(name);
        }
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        Store::url_from_env(dir)
    };
    assert_eq!(set(&[]).unwrap(), "sqlite:///data/helixflow.db");
    assert_eq!(
        set(&[("DATABASE_URL", "postgres://db/x")]).unwrap(),
        "postgres://db/x"
    );
    assert_eq!(
        set(&[("DATABASE_TYPE", "sqlite"), ("DATABASE_PATH", "/tmp/a.db")]).unwrap(),
        "sqlite:///tmp/a.db"
    );
    assert_eq!(
        set(&[
            ("DATABASE_TYPE", "postgres"),
            ("DATABASE_URL", "postgres://h/db")
        ])
        .unwrap(),
        "postgres://h/db"
    );
    assert!(set(&[("DATABASE_TYPE", "postgres")]).is_err());
    assert!(set(&[("DATABASE_TYPE", "oracle")]).is_err());
    set(&[]).unwrap();
}

async fn the_first_admin_key_is_made_once(store: &Store) {
    store
        .create_key(NewKey::inference("not admin"))
        .await
        .unwrap();
    let first = store
        .bootstrap_admin_key()
        .await
        .unwrap()
        .expect("no admin key yet");
    assert!(first.key.has_scope(Scope::Admin) && first.key.has_scope(Scope::Inference));
    assert!(store.bootstrap_admin_key().await.unwrap().is_none());
    // Revoking the only admin key lets the next start make a new one.
    store.revoke_key(&first.key.id).await.unwrap();
    let second = store.bootstrap_admin_key().await.unwrap().unwrap();
    assert_ne!(second.secret, first.secret);
}
on_both!(bootstrap, the_first_admin_key_is_made_once);

/// Replicas starting together on one empty database: exactly one admin key is made.
async fn concurrent_bootstraps_make_one_key(store: &Store) {
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.bootstrap_admin_key().await.unwrap() })
        })
        .collect();
    let mut made = 0;
    for start in starts {
        made += usize::from(start.await.unwrap().is_some());
    }
    assert_eq!(made, 1);
    let admins = store.list_keys().await.unwrap();
    assert_eq!(admins.len(), 1);
}
on_both!(concurrent_bootstrap, concurrent_bootstraps_make_one_key);

async fn responses_are_kept_for_their_owner_only(store: &Store) {
    let response = StoredResponse {
        id: "resp_1".into(),
        owner: "key_a".into(),
        created_at: 1_800_000_000,
        conversation: r#"[{"role":"user","content":"Hi"}]"#.into(),
        response: r#"{"id":"resp_1","object":"response"}"#.into(),
    };
    store.save_response(&response).await.unwrap();
    assert_eq!(
        store.response("key_a", "resp_1").await.unwrap(),
        Some(response.clone())
    );
    // Another owner, or another id, finds nothing.
    assert_eq!(store.response("key_b", "resp_1").await.unwrap(), None);
    assert_eq!(store.response("key_a", "resp_2").await.unwrap(), None);
    // Hostile ids are data, not SQL.
    assert_eq!(store.response("key_a", "' OR '1'='1").await.unwrap(), None);
    // Saving the same id again replaces it.
    let replaced = StoredResponse {
        response: r#"{"id":"resp_1","status":"completed"}"#.into(),
        ..response
    };
    store.save_response(&replaced).await.unwrap();
    assert_eq!(
        store.response("key_a", "resp_1").await.unwrap(),
        Some(replaced)
    );
}

on_both!(responses, responses_are_kept_for_their_owner_only);
