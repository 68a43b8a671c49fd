//! Users, passwords and access tokens, run against SQLite and against PostgreSQL (see
//! `common/stores.rs` for how the PostgreSQL half finds its server).
#![cfg(feature = "platform")]

mod common;

use std::time::{Duration, Instant};

use helixflow_core::platform::{
    looks_like_jwt, AccessToken, Authenticator, Caller, LoginOutcome, LoginPolicy, NewUser,
    PlatformError, Scope, Store, CACHE_TTL,
};

const PASSWORD: &str = "correct horse battery";

async fn token(store: &Store, username: &str) -> AccessToken {
    match store.login(username, PASSWORD).await.unwrap() {
        LoginOutcome::Issued(token) => token,
        other => panic!("{username} could not log in: {other:?}"),
    }
}

async fn users_are_created_listed_and_disabled(store: &Store) {
    let alice = store
        .create_user(NewUser::inference("alice", PASSWORD))
        .await
        .unwrap();
    assert!(alice.id.starts_with("usr_"), "{}", alice.id);
    assert_eq!(alice.scopes, [Scope::Inference]);
    assert!(alice.is_active());
    let admin = store
        .create_user(NewUser {
            scopes: vec![Scope::Admin, Scope::Inference, Scope::Admin],
            ..NewUser::inference("ops@example.com", PASSWORD)
        })
        .await
        .unwrap();
    assert_eq!(admin.scopes, [Scope::Admin, Scope::Inference]);

    // Oldest first; by name within the same second.
    let listed = store.list_users().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&alice) && listed.contains(&admin));
    assert_eq!(
        store.get_user(&alice.id).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.get_user_by_name("ops@example.com").await.unwrap(),
        Some(admin.clone())
    );
    assert_eq!(store.get_user("usr_nope").await.unwrap(), None);

    // A username is taken once.
    let taken = store
        .create_user(NewUser::inference("alice", "another password"))
        .await
        .unwrap_err();
    assert!(matches!(taken, PlatformError::Conflict(_)), "{taken}");

    // Passwords: the right one finds the user; a wrong one or an unknown user finds none.
    let found = store.verify_password("alice", PASSWORD).await.unwrap();
    assert_eq!(found.map(|u| u.id), Some(alice.id.clone()));
    assert_eq!(store.verify_password("alice", "wrong").await.unwrap(), None);
    assert_eq!(
        store.verify_password("nobody", PASSWORD).await.unwrap(),
        None
    );

    // Disabling keeps the first time; an unknown id is `false`.
    assert!(store.disable_user(&alice.id).await.unwrap());
    let disabled = store.get_user(&alice.id).await.unwrap().unwrap();
    assert!(!disabled.is_active());
    assert!(store.disable_user(&alice.id).await.unwrap());
    assert_eq!(store.get_user(&alice.id).await.unwrap(), Some(disabled));
    assert!(!store.disable_user("usr_nope").await.unwrap());
    assert!(store
        .get_user(&admin.id)
        .await
        .unwrap()
        .unwrap()
        .is_active());
}
on_both!(users, users_are_created_listed_and_disabled);

async fn invalid_and_hostile_users_are_refused(store: &Store) {
    let huge = "x".repeat(100_000);
    let bad_names = [
        "",
        "a b",
        "x'; DROP TABLE users; --",
        "' OR '1'='1",
        "robert\0",
        "ünïcode",
        &"a".repeat(65),
        &huge,
    ];
    for name in bad_names {
        let refused = store
            .create_user(NewUser::inference(name, PASSWORD))
            .await
            .unwrap_err();
        assert!(matches!(refused, PlatformError::Invalid(_)), "{name:.40}");
        // Looking such names up, or logging in with them, finds nobody and breaks nothing.
        assert_eq!(store.get_user_by_name(name).await.unwrap(), None);
        assert_eq!(store.get_user(name).await.unwrap(), None);
        assert!(!store.disable_user(name).await.unwrap());
        assert_eq!(
            store.login(name, PASSWORD).await.unwrap(),
            LoginOutcome::BadCredentials
        );
    }
    for password in ["short", &huge] {
        let refused = store
            .create_user(NewUser::inference("bob", password))
            .await
            .unwrap_err();
        assert!(matches!(refused, PlatformError::Invalid(_)), "{refused}");
    }
    let no_scope = NewUser {
        scopes: vec![],
        ..NewUser::inference("bob", PASSWORD)
    };
    assert!(matches!(
        store.create_user(no_scope).await,
        Err(PlatformError::Invalid(_))
    ));
    assert!(store.list_users().await.unwrap().is_empty());
    for jti in ["", "x'; DELETE FROM revoked_tokens; --", &huge] {
        assert!(matches!(
            store.revoke_token(jti, None, None).await,
            Err(PlatformError::Invalid(_))
        ));
    }

    // Quotes and the like are plain characters of a password.
    let sql = "p'); DROP TABLE users; --";
    store
        .create_user(NewUser::inference("bob", sql))
        .await
        .unwrap();
    assert!(store.verify_password("bob", sql).await.unwrap().is_some());
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    // Over-long passwords at login are wrong passwords.
    assert_eq!(
        store.login("bob", &huge).await.unwrap(),
        LoginOutcome::BadCredentials
    );
}
on_both!(hostile, invalid_and_hostile_users_are_refused);

/// Waits until `auth` refuses `token`, failing past `CACHE_TTL` and some slack.
async fn refused_within_the_window(auth: &Authenticator, token: &str, since: Instant) {
    while auth.authenticate(Some(token)).await.unwrap().is_some() {
        assert!(
            since.elapsed() <= CACHE_TTL + Duration::from_millis(500),
            "still accepted after {:?}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn access_tokens_work_until_logout(store: &Store) {
    let alice = store
        .create_user(NewUser::inference("alice", PASSWORD))
        .await
        .unwrap();
    let issued = token(store, "alice").await;
    assert!(looks_like_jwt(&issued.token));
    assert_eq!(issued.user_id, alice.id);
    assert_eq!(issued.expires_in, 15 * 60);
    assert!(!format!("{issued:?}").contains(&issued.token));

    // Two replicas: their own authenticators over the one database.
    let here = Authenticator::new(Some(store.clone()), Some("operator".into()));
    let there = Authenticator::new(Some(store.clone()), None);
    for auth in [&here, &there] {
        let caller = auth
            .authenticate(Some(&issued.token))
            .await
            .unwrap()
            .expect("a fresh token works");
        let Caller::User(session) = &caller else {
            panic!("{caller:?}")
        };
        assert_eq!(
            (session.username.as_str(), session.jti.as_str()),
            ("alice", issued.jti.as_str())
        );
        assert_eq!(session.expires_at, issued.expires_at);
        assert!(caller.has_scope(Scope::Inference) && !caller.has_scope(Scope::Admin));
        assert!(caller.allows_model("any-model"));
        assert_eq!(caller.user_id(), Some(alice.id.as_str()));
        assert_eq!(caller.key(), None);
        assert_eq!(caller.label(), "alice");
    }
    // The operator key is untouched.
    assert_eq!(
        here.authenticate(Some("operator")).await.unwrap(),
        Some(Caller::Operator)
    );

    // Logout on `here`: refused there at once, and by the other replica within the window.
    let id = store.token_id(&issued.token).await.unwrap().unwrap();
    assert_eq!(
        (id.jti.as_str(), id.user_id.as_str()),
        (issued.jti.as_str(), alice.id.as_str())
    );
    store
        .revoke_token(&id.jti, Some(&id.user_id), Some(id.expires_at))
        .await
        .unwrap();
    here.forget_token(&id.jti);
    let revoked = Instant::now();
    assert_eq!(here.authenticate(Some(&issued.token)).await.unwrap(), None);
    refused_within_the_window(&there, &issued.token, revoked).await;
    assert_eq!(store.verify_token(&issued.token).await.unwrap(), None);
    // Revoking twice is harmless; a new login gives a new, working token.
    store.revoke_token(&id.jti, None, None).await.unwrap();
    let again = token(store, "alice").await;
    assert_ne!(again.jti, issued.jti);
    assert!(there
        .authenticate(Some(&again.token))
        .await
        .unwrap()
        .is_some());

    // An admin revoking by the token id alone.
    store.revoke_token(&again.jti, None, None).await.unwrap();
    here.forget_token(&again.jti);
    assert_eq!(here.authenticate(Some(&again.token)).await.unwrap(), None);
    assert_eq!(store.token_id("not.a.token").await.unwrap(), None);
}
on_both!(logout, access_tokens_work_until_logout);

async fn disabled_users_lose_their_tokens(store: &Store) {
    let alice = store
        .create_user(NewUser::inference("alice", PASSWORD))
        .await
        .unwrap();
    let issued = token(store, "alice").await;
    let here = Authenticator::new(Some(store.clone()), None);
    let there = Authenticator::new(Some(store.clone()), None);
    for auth in [&here, &there] {
        assert!(auth
            .authenticate(Some(&issued.token))
            .await
            .unwrap()
            .is_some());
    }
    assert!(store.disable_user(&alice.id).await.unwrap());
    here.forget_user(&alice.id);
    let disabled = Instant::now();
    assert_eq!(here.authenticate(Some(&issued.token)).await.unwrap(), None);
    refused_within_the_window(&there, &issued.token, disabled).await;
    // The right password now says disabled; a wrong one says nothing more than it would.
    assert_eq!(
        store.login("alice", PASSWORD).await.unwrap(),
        LoginOutcome::Disabled
    );
    assert_eq!(
        store.login("alice", "wrong password").await.unwrap(),
        LoginOutcome::BadCredentials
    );
}
on_both!(disabled, disabled_users_lose_their_tokens);

async fn expired_and_tampered_tokens_are_refused(store: &Store) {
    let admin = store
        .create_user(NewUser {
            scopes: vec![Scope::Admin, Scope::Inference],
            ..NewUser::inference("root", PASSWORD)
        })
        .await
        .unwrap();
    let alice = store
        .create_user(NewUser::inference("alice", PASSWORD))
        .await
        .unwrap();
    let auth = Authenticator::new(Some(store.clone()), None);

    // A one-second token works, then is refused, cache or not.
    let short = store
        .issue_token(&alice, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(auth
        .authenticate(Some(&short.token))
        .await
        .unwrap()
        .is_some());
    let issued = Instant::now();
    while store.verify_token(&short.token).await.unwrap().is_some() {
        assert!(issued.elapsed() < Duration::from_secs(3), "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(auth.authenticate(Some(&short.token)).await.unwrap(), None);
    assert!(store.issue_token(&alice, Duration::ZERO).await.is_err());

    // Tampering: alice's claims with the admin's id, a flipped signature, a "none" algorithm.
    let good = token(store, "alice").await.token;
    let rooted = token(store, "root").await.token;
    let parts: Vec<&str> = good.split('.').collect();
    let root_parts: Vec<&str> = rooted.split('.').collect();
    let mut flipped = parts[2].to_string();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    let forged = [
        format!("{}.{}.{}", parts[0], root_parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], flipped),
        format!("{none}.{}.{}", parts[1], parts[2]),
        format!("{none}.{}.", parts[1]),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}x"),
    ];
    for token in &forged {
        assert_eq!(store.verify_token(token).await.unwrap(), None, "{token}");
        assert_eq!(
            auth.authenticate(Some(token)).await.unwrap(),
            None,
            "{token}"
        );
    }
    // The genuine ones still work, with their own scopes.
    let root = auth.authenticate(Some(&rooted)).await.unwrap().unwrap();
    assert!(root.has_scope(Scope::Admin));
    assert_eq!(root.user_id(), Some(admin.id.as_str()));
    assert!(auth.authenticate(Some(&good)).await.unwrap().is_some());
}
on_both!(tampering, expired_and_tampered_tokens_are_refused);

async fn failed_logins_are_limited_across_replicas(store: &Store) {
    store
        .create_user(NewUser::inference("alice", PASSWORD))
        .await
        .unwrap();
    store
        .create_user(NewUser::inference("bob", PASSWORD))
        .await
        .unwrap();
    // The default: ten failures a minute per username, counted in the database, so two
    // replicas (here: two handles) share the count.
    let other = store.clone();
    for attempt in 0..10 {
        let replica = if attempt % 2 == 0 { store } else { &other };
        assert_eq!(
            replica.login("alice", "wrong password").await.unwrap(),
            LoginOutcome::BadCredentials,
            "attempt {attempt}"
        );
    }
    for replica in [store, &other] {
        match replica.login("alice", PASSWORD).await.unwrap() {
            LoginOutcome::RateLimited { retry_after } => {
                assert!((1..=60).contains(&retry_after.as_secs()), "{retry_after:?}");
            }
            other => panic!("not limited: {other:?}"),
        }
    }
    // Unknown usernames are limited just the same, and other users are not affected.
    for _ in 0..10 {
        assert_eq!(
            store.login("mallory", PASSWORD).await.unwrap(),
            LoginOutcome::BadCredentials
        );
    }
    assert!(matches!(
        other.login("mallory", PASSWORD).await.unwrap(),
        LoginOutcome::RateLimited { .. }
    ));
    token(store, "bob").await;

    // A short window: concurrent guesses cannot slip past the limit; successes do not count;
    // the window ends.
    let policy = LoginPolicy {
        max_failures: 3,
        failure_window: Duration::from_secs(2),
        ..LoginPolicy::default()
    };
    for _ in 0..5 {
        let outcome = store.login_with("bob", PASSWORD, &policy).await.unwrap();
        assert!(matches!(outcome, LoginOutcome::Issued(_)), "{outcome:?}");
    }
    let guesses = (0..8).map(|i| {
        let (store, policy) = (store.clone(), policy);
        tokio::spawn(async move {
            let guess = format!("guess number {i}");
            store.login_with("bob", &guess, &policy).await.unwrap()
        })
    });
    let mut outcomes = Vec::new();
    for guess in guesses {
        outcomes.push(guess.await.unwrap());
    }
    let wrong = outcomes
        .iter()
        .filter(|o| **o == LoginOutcome::BadCredentials)
        .count();
    assert_eq!(wrong, 3, "{outcomes:?}");
    let started = Instant::now();
    loop {
        match store.login_with("bob", PASSWORD, &policy).await.unwrap() {
            LoginOutcome::Issued(_) => break,
            LoginOutcome::RateLimited { .. } => {
                assert!(started.elapsed() < Duration::from_secs(5), "never reopened");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => panic!("{other:?}"),
        }
    }
}
on_both!(rate_limit, failed_logins_are_limited_across_replicas);

async fn replicas_starting_together_share_one_signing_key(store: &Store) {
    let alice = store
        .create_user(NewUser::inference("alice", PASSWORD))
        .await
        .unwrap();
    // Fresh database: every replica races to make the key; all tokens verify everywhere.
    let issued = (0..6).map(|_| {
        let (store, alice) = (store.clone(), alice.clone());
        tokio::spawn(async move {
            store
                .issue_token(&alice, Duration::from_secs(60))
                .await
                .unwrap()
        })
    });
    let auth = Authenticator::new(Some(store.clone()), None);
    for token in issued {
        let token = token.await.unwrap();
        assert!(auth
            .authenticate(Some(&token.token))
            .await
            .unwrap()
            .is_some());
    }
}
on_both!(
    signing_key,
    replicas_starting_together_share_one_signing_key
);

/// Issue 19: the database holds no key that signs tokens. A server with another secret can
/// neither issue nor check tokens, and a token signed with anything the database stores is
/// refused.
#[tokio::test]
async fn a_copy_of_the_database_alone_mints_no_tokens() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use helixflow_core::platform::TokenSecret;
    use hmac::{Hmac, Mac};
    use sqlx::Connection;

    let fresh = common::stores::sqlite().await;
    let store = &fresh.store;
    let alice = store
        .create_user(NewUser::inference("alice", PASSWORD))
        .await
        .unwrap();
    let issued = store
        .issue_token(&alice, Duration::from_secs(60))
        .await
        .unwrap();

    let thief = Store::connect(&fresh.url)
        .await
        .unwrap()
        .with_token_secret(TokenSecret::from_bytes([8; 32]));
    assert!(matches!(
        thief.issue_token(&alice, Duration::from_secs(60)).await,
        Err(PlatformError::Config(_))
    ));
    assert!(thief.verify_token(&issued.token).await.is_err());
    let no_secret = Store::connect(&fresh.url).await.unwrap();
    assert!(no_secret.check_token_secret().await.is_err());

    // Forge an admin token with every value the database keeps, raw or hex-decoded.
    let mut db = sqlx::SqliteConnection::connect(&fresh.url).await.unwrap();
    let values: Vec<String> = sqlx::query_scalar("SELECT value FROM platform_secrets")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert!(!values.is_empty());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "sub": alice.id, "name": "alice", "scopes": ["inference", "admin"],
        "jti": "forged", "iat": now, "exp": now + 600,
    });
    let header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    for value in values {
        let hex: Option<Vec<u8>> = (0..value.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(value.get(i..i + 2)?, 16).ok())
            .collect();
        for key in [Some(value.as_bytes().to_vec()), hex].into_iter().flatten() {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
            mac.update(message.as_bytes());
            let forged = format!(
                "{message}.{}",
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            );
            assert_eq!(store.verify_token(&forged).await.unwrap(), None);
        }
    }
    // The genuine token still works with the server's secret.
    assert!(store.verify_token(&issued.token).await.unwrap().is_some());
    fresh.finish().await;
}
