//! Quotas, rate limits and usage accounting, on SQLite and on PostgreSQL: exact limits,
//! reservations settled to real usage, budget periods, replicas racing on one database, the
//! batching usage recorder, usage reports and default limits for new keys.
#![cfg(feature = "platform")]

mod common;

use std::time::Duration;

use helixflow_core::platform::{
    ApiKey, BudgetPeriod, Caller, KeyLimits, Limit, Meter, MeteredRequest, NewKey, QuotaError,
    QuotaRefusal, Store, UsageFilter, UsageGroup, UsageRecord, UsageRecorder, CLIENT_CLOSED,
};

/// 2024-02-29T12:00:30Z: thirty seconds into a minute, on a leap day.
const NOON: i64 = 1_709_208_030;
const DAY: i64 = 86_400;

async fn key(store: &Store, limits: KeyLimits) -> ApiKey {
    store
        .create_key_exact(NewKey {
            limits,
            ..NewKey::inference("limited")
        })
        .await
        .unwrap()
        .key
}

fn refused(result: Result<impl std::fmt::Debug, QuotaError>) -> QuotaRefusal {
    match result {
        Err(QuotaError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn requests_per_minute_are_exact(store: &Store) {
    let key = key(
        store,
        KeyLimits {
            rpm: Some(5),
            ..KeyLimits::default()
        },
    )
    .await;
    for i in 0..5 {
        let admitted = store.reserve(&key, 1_000_000, NOON).await.unwrap();
        let status = admitted.status();
        assert_eq!(status.len(), 1, "only the limits the key has");
        assert_eq!(status[0].limit, Limit::Requests);
        assert_eq!((status[0].max, status[0].remaining), (5, 4 - i));
        assert_eq!(status[0].reset_after, 30);
    }
    let refusal = refused(store.reserve(&key, 1, NOON + 10).await);
    assert_eq!(refusal.limit, Limit::Requests);
    assert_eq!((refusal.max, refusal.used, refusal.requested), (5, 5, 1));
    assert_eq!(refusal.retry_after, 20);
    assert!(!refusal.never_fits());
    assert!(
        refusal.to_string().contains("try again in 20s"),
        "{refusal}"
    );
    // The next minute starts over.
    let next = store.reserve(&key, 1, NOON + 30).await.unwrap();
    assert_eq!(next.status()[0].remaining, 4);
    assert_eq!(next.status()[0].reset_after, 60);

    // A key allowing no requests at all says so.
    let none = key_with_rpm(store, 0).await;
    let refusal = refused(store.reserve(&none, 1, NOON).await);
    assert!(refusal.never_fits() && refusal.to_string().contains("allows no requests"));
}
on_both!(rpm, requests_per_minute_are_exact);

async fn key_with_rpm(store: &Store, rpm: u64) -> ApiKey {
    key(
        store,
        KeyLimits {
            rpm: Some(rpm),
            ..KeyLimits::default()
        },
    )
    .await
}

async fn tokens_are_reserved_then_settled(store: &Store) {
    let key = key(
        store,
        KeyLimits {
            tpm: Some(1_000),
            ..KeyLimits::default()
        },
    )
    .await;
    let first = store.reserve(&key, 600, NOON).await.unwrap();
    assert_eq!(first.tokens(), 600);
    assert_eq!(first.status()[0].limit, Limit::Tokens);
    assert_eq!(first.status()[0].remaining, 400);
    let refusal = refused(store.reserve(&key, 600, NOON).await);
    assert_eq!(refusal.limit, Limit::Tokens);
    assert_eq!((refusal.used, refusal.requested), (600, 600));
    assert_eq!(refusal.status[0].remaining, 400);
    // The first request used 100 of its 600: the rest comes back.
    store.settle(&first, 100).await.unwrap();
    let second = store.reserve(&key, 600, NOON).await.unwrap();
    assert_eq!(second.status()[0].remaining, 300);
    // Using more than reserved (an estimate that was low) is charged.
    store.settle(&second, 700).await.unwrap();
    refused(store.reserve(&key, 201, NOON).await);
    let third = store.reserve(&key, 200, NOON).await.unwrap();
    assert_eq!(third.status()[0].remaining, 0);
    // A refund never takes a counter below zero, even settled twice.
    store.settle(&third, 0).await.unwrap();
    store.settle(&third, 0).await.unwrap();
    store.settle(&first, 0).await.unwrap();
    store.settle(&second, 0).await.unwrap();
    let all = store.reserve(&key, 1_000, NOON).await.unwrap();
    assert_eq!(all.status()[0].remaining, 0);

    // A request larger than the limit itself is refused without taking anything.
    let refusal = refused(store.reserve(&key, 1_001, NOON + 60).await);
    assert!(refusal.never_fits());
    assert!(
        refusal.to_string().contains("lower max_tokens"),
        "{refusal}"
    );
    let fresh = store.reserve(&key, 1_000, NOON + 60).await.unwrap();
    assert_eq!(fresh.status()[0].remaining, 0);
}
on_both!(tpm, tokens_are_reserved_then_settled);

async fn budgets_cover_a_day_or_a_month(store: &Store) {
    let budget = |period| KeyLimits {
        budget_tokens: Some(1_000),
        budget_period: Some(period),
        ..KeyLimits::default()
    };
    let daily = key(store, budget(BudgetPeriod::Day)).await;
    store.reserve(&daily, 800, NOON).await.unwrap();
    let refusal = refused(store.reserve(&daily, 300, NOON + 3_600).await);
    assert_eq!(refusal.limit, Limit::Budget);
    // Until midnight UTC.
    assert_eq!(refusal.retry_after, (12 * 3_600 - 30 - 3_600) as u64);
    let tomorrow = store.reserve(&daily, 300, NOON + 12 * 3_600).await.unwrap();
    assert_eq!(tomorrow.status()[0].remaining, 700);

    let monthly = key(store, budget(BudgetPeriod::Month)).await;
    store.reserve(&monthly, 900, NOON - 20 * DAY).await.unwrap();
    let refusal = refused(store.reserve(&monthly, 200, NOON).await);
    // 2024-02-29 12:00:30 to 2024-03-01 00:00:00.
    assert_eq!(refusal.retry_after, (12 * 3_600 - 30) as u64);
    let march = store.reserve(&monthly, 200, NOON + DAY).await.unwrap();
    assert_eq!(march.status()[0].remaining, 800);

    // Every limit at once: the first that refuses takes nothing from the others.
    let all = key(
        store,
        KeyLimits {
            rpm: Some(100),
            tpm: Some(10_000),
            ..budget(BudgetPeriod::Day)
        },
    )
    .await;
    let admitted = store.reserve(&all, 700, NOON).await.unwrap();
    let limits: Vec<Limit> = admitted.status().iter().map(|s| s.limit).collect();
    assert_eq!(limits, [Limit::Requests, Limit::Tokens, Limit::Budget]);
    let refusal = refused(store.reserve(&all, 700, NOON).await);
    assert_eq!(refusal.limit, Limit::Budget);
    let remaining: Vec<u64> = refusal.status.iter().map(|s| s.remaining).collect();
    assert_eq!(
        remaining,
        [99, 9_300, 300],
        "the refused request took nothing"
    );
}
on_both!(budget, budgets_cover_a_day_or_a_month);

/// 32 requests race for a budget from two replicas (two connection pools on one database):
/// exactly as many as fit are admitted, never more.
async fn replicas_never_exceed_a_budget(fresh: &common::stores::Fresh) {
    let other = Store::connect(&fresh.url).await.unwrap();
    let key = key(
        &fresh.store,
        KeyLimits {
            tpm: Some(1_000_000),
            budget_tokens: Some(1_000),
            budget_period: Some(BudgetPeriod::Day),
            ..KeyLimits::default()
        },
    )
    .await;
    let attempts: Vec<_> = (0..32u64)
        .map(|i| {
            let store = if i % 2 == 0 {
                fresh.store.clone()
            } else {
                other.clone()
            };
            let key = key.clone();
            // Sizes 60..=153: a mix that cannot all fit.
            let tokens = 60 + i * 3;
            tokio::spawn(async move {
                match store.reserve(&key, tokens, NOON).await {
                    Ok(reservation) => Some((tokens, reservation)),
                    Err(QuotaError::Refused(_)) => None,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for attempt in attempts {
        admitted.extend(attempt.await.unwrap());
    }
    let reserved: u64 = admitted.iter().map(|(tokens, _)| tokens).sum();
    assert!(reserved <= 1_000, "reserved {reserved} of a budget of 1000");
    assert!(admitted.len() >= 6, "only {} admitted", admitted.len());
    // What is left is exactly the budget minus what was admitted.
    let left = 1_000 - reserved;
    if left > 0 {
        other.reserve(&key, left, NOON).await.unwrap();
    }
    refused(fresh.store.reserve(&key, 1, NOON).await);
    // Settling every admitted request to nothing gives all of it back, across replicas.
    for (i, (_, reservation)) in admitted.iter().enumerate() {
        let store = if i % 2 == 0 { &other } else { &fresh.store };
        store.settle(reservation, 0).await.unwrap();
    }
    refused(other.reserve(&key, reserved + 1, NOON).await);
    other.reserve(&key, reserved, NOON).await.unwrap();
    other.close().await;
}

mod replicas {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        let fresh = crate::common::stores::sqlite().await;
        super::replicas_never_exceed_a_budget(&fresh).await;
        fresh.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        if let Some(fresh) = crate::common::stores::postgres().await {
            super::replicas_never_exceed_a_budget(&fresh).await;
            fresh.finish().await;
        }
    }
}

fn record(key: Option<&str>, model: &str, day: i64, prompt: u64, completion: u64) -> UsageRecord {
    UsageRecord {
        request_id: Some(format!("req-{model}-{day}-{prompt}-{completion}")),
        key_id: key.map(str::to_string),
        user_id: None,
        model: model.into(),
        endpoint: "/v1/chat/completions".into(),
        prompt_tokens: prompt,
        completion_tokens: completion,
        status: 200,
        cancelled: false,
        ttft_ms: Some(12),
        latency_ms: 345,
        created_at: NOON + day * DAY,
    }
}

async fn usage_is_reported_by_key_model_and_day(store: &Store) {
    let mut records = vec![
        record(Some("key_a"), "chat", 0, 10, 5),
        record(Some("key_a"), "chat", 0, 20, 5),
        record(Some("key_a"), "embed", 1, 7, 0),
        record(Some("key_b"), "chat", 1, 1, 1),
        record(None, "chat", 2, 100, 50),
    ];
    records[1].cancelled = true;
    records[1].status = CLIENT_CLOSED;
    records[3].status = 504;
    records[4].user_id = Some("user_1".into());
    store.insert_usage(&records).await.unwrap();

    let all = UsageFilter::default();
    let total = store.usage_report(&all, &[]).await.unwrap();
    assert_eq!(total.len(), 1);
    let t = &total[0];
    assert_eq!(
        (t.requests, t.prompt_tokens, t.completion_tokens),
        (5, 138, 61)
    );
    assert_eq!((t.cancelled, t.failed), (1, 2));

    let by_key = store.usage_report(&all, &[UsageGroup::Key]).await.unwrap();
    let keys: Vec<(Option<&str>, u64)> = by_key
        .iter()
        .map(|t| (t.key_id.as_deref(), t.prompt_tokens))
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.contains(&(Some("key_a"), 37)) && keys.contains(&(None, 100)));
    assert!(by_key.iter().all(|t| t.model.is_none() && t.day.is_none()));

    let by_day_and_model = store
        .usage_report(&all, &[UsageGroup::Model, UsageGroup::Day])
        .await
        .unwrap();
    let rows: Vec<(i64, &str, u64)> = by_day_and_model
        .iter()
        .map(|t| (t.day.unwrap(), t.model.as_deref().unwrap(), t.requests))
        .collect();
    let midnight = NOON - NOON % DAY;
    assert_eq!(
        rows,
        [
            (midnight, "chat", 2),
            (midnight + DAY, "chat", 1),
            (midnight + DAY, "embed", 1),
            (midnight + 2 * DAY, "chat", 1),
        ]
    );

    // Filters: a key, a user, a time range (since inclusive, until exclusive).
    let key_a = UsageFilter {
        key_id: Some("key_a".into()),
        ..UsageFilter::default()
    };
    let days = store
        .usage_report(&key_a, &[UsageGroup::Day])
        .await
        .unwrap();
    assert_eq!(days.len(), 2);
    let user = UsageFilter {
        user_id: Some("user_1".into()),
        ..UsageFilter::default()
    };
    assert_eq!(store.usage_report(&user, &[]).await.unwrap()[0].requests, 1);
    let range = UsageFilter {
        since: Some(NOON + DAY),
        until: Some(NOON + 2 * DAY),
        ..UsageFilter::default()
    };
    assert_eq!(
        store.usage_report(&range, &[]).await.unwrap()[0].requests,
        2
    );
    let nothing = UsageFilter {
        key_id: Some("' OR 1=1 --".into()),
        ..UsageFilter::default()
    };
    assert!(store.usage_report(&nothing, &[]).await.unwrap().is_empty());

    // The records themselves, newest first.
    let listed = store.usage_records(&all, 3).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0], records[4]);
    assert!(listed[1].created_at >= listed[2].created_at);
    let cancelled = store.usage_records(&key_a, 100).await.unwrap();
    assert!(cancelled.contains(&records[1]));
}
on_both!(reports, usage_is_reported_by_key_model_and_day);

async fn the_recorder_batches_and_loses_nothing(store: &Store) {
    let recorder = UsageRecorder::start(store.clone());
    // Many writers at once, more than one batch.
    let writers: Vec<_> = (0..5)
        .map(|w| {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    assert!(recorder.record(record(Some("key_w"), "chat", 0, w, i)));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    recorder.flush().await.unwrap();
    let filter = UsageFilter {
        key_id: Some("key_w".into()),
        ..UsageFilter::default()
    };
    let totals = store.usage_report(&filter, &[]).await.unwrap();
    assert_eq!(totals[0].requests, 2_500);
    assert_eq!(totals[0].completion_tokens, 5 * (0..500).sum::<u64>());

    // Without a flush, the interval stores a record on its own.
    recorder.record(record(Some("key_tick"), "chat", 0, 1, 1));
    let tick = UsageFilter {
        key_id: Some("key_tick".into()),
        ..UsageFilter::default()
    };
    let mut waited = Duration::ZERO;
    while store.usage_report(&tick, &[]).await.unwrap().is_empty() {
        assert!(
            waited < Duration::from_secs(30),
            "the record was never stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }

    // Closing stores what is queued; later records are refused, not silently lost.
    for i in 0..10 {
        recorder.record(record(Some("key_close"), "chat", 0, 1, i));
    }
    recorder.close().await.unwrap();
    recorder.close().await.unwrap();
    assert!(!recorder.record(record(Some("key_close"), "chat", 0, 1, 99)));
    assert!(recorder.flush().await.is_err());
    let closed = UsageFilter {
        key_id: Some("key_close".into()),
        ..UsageFilter::default()
    };
    assert_eq!(
        store.usage_report(&closed, &[]).await.unwrap()[0].requests,
        10
    );
}
on_both!(recorder, the_recorder_batches_and_loses_nothing);

fn request(prompt: u64, max: u64) -> MeteredRequest {
    MeteredRequest {
        request_id: Some(format!("cmpl-{prompt}-{max}")),
        model: "chat".into(),
        endpoint: "/v1/completions".into(),
        prompt_tokens: prompt,
        max_completion_tokens: max,
    }
}

async fn the_meter_settles_records_and_refuses(store: &Store) {
    let meter = Meter::start(store.clone());
    let limited = key(
        store,
        KeyLimits {
            rpm: Some(10),
            tpm: Some(1_000),
            ..KeyLimits::default()
        },
    )
    .await;
    let caller = Caller::Key(Box::new(limited.clone()));
    let minute = helixflow_core::completion::unix_now() / 60;

    // Finished: settled to the real usage.
    let done = meter.admit(&caller, request(10, 90)).await.unwrap();
    let tokens = done.limits().iter().find(|s| s.limit == Limit::Tokens);
    assert_eq!(tokens.unwrap().remaining, 900);
    done.progress().token();
    done.finish(10, 5);
    // Dropped mid-way (the client left): cancelled, charged for the 3 tokens it generated.
    let dropped = meter.admit(&caller, request(20, 100)).await.unwrap();
    dropped.progress().prompt();
    for _ in 0..3 {
        dropped.progress().token();
    }
    drop(dropped);
    // Failed with the timeout: cancelled too, recorded with its status.
    let timed_out = meter.admit(&caller, request(30, 100)).await.unwrap();
    timed_out.progress().prompt();
    timed_out.progress().token();
    timed_out.cancel(504);
    // Dropped while still queued: nothing was processed, nothing is charged.
    drop(meter.admit(&caller, request(50, 100)).await.unwrap());
    // Never ran: everything back, no record.
    meter
        .admit(&caller, request(40, 100))
        .await
        .unwrap()
        .discard();
    // Too large for the limit: refused, nothing taken.
    match meter.admit(&caller, request(500, 600)).await {
        Err(QuotaError::Refused(r)) => assert!(r.never_fits()),
        other => panic!("{other:?}"),
    }
    // The operator is never limited; an unlimited key neither.
    let unlimited = Caller::Key(Box::new(key(store, KeyLimits::default()).await));
    for caller in [Caller::Operator, unlimited] {
        let admitted = meter.admit(&caller, request(1, 1_000_000)).await.unwrap();
        assert!(admitted.limits().is_empty());
        admitted.finish(1, 1);
    }

    meter.close(Duration::from_secs(30)).await.unwrap();
    // 15 + 23 + 31 tokens are used: exactly the rest of the minute is left (unless the
    // minute turned over meanwhile, which starts the counters over).
    let now = helixflow_core::completion::unix_now();
    if now / 60 == minute {
        let now = now as i64;
        store
            .reserve(&limited, 1_000 - 15 - 23 - 31, now)
            .await
            .unwrap();
        refused(store.reserve(&limited, 1, now).await);
    }

    let filter = UsageFilter {
        key_id: Some(limited.id.clone()),
        ..UsageFilter::default()
    };
    let mut records = store.usage_records(&filter, 100).await.unwrap();
    records.sort_by_key(|r| r.prompt_tokens);
    let summary: Vec<(u64, u64, u16, bool)> = records
        .iter()
        .map(|r| (r.prompt_tokens, r.completion_tokens, r.status, r.cancelled))
        .collect();
    assert_eq!(
        summary,
        [
            (0, 0, CLIENT_CLOSED, true),
            (10, 5, 200, false),
            (20, 3, CLIENT_CLOSED, true),
            (30, 1, 504, true)
        ]
    );
    assert!(records[1].ttft_ms.is_some() && records[1].key_id == Some(limited.id.clone()));
    assert_eq!(records[1].request_id.as_deref(), Some("cmpl-10-90"));
    assert!(records[0].ttft_ms.is_none());
    assert_eq!(
        store
            .usage_report(&UsageFilter::default(), &[])
            .await
            .unwrap()[0]
            .requests,
        6
    );

    // Without a store, the meter admits everything and records nothing.
    let off = Meter::off();
    let admitted = off.admit(&caller, request(1, 1)).await.unwrap();
    assert!(admitted.limits().is_empty() && !off.is_on());
    drop(admitted);
    off.close(Duration::ZERO).await.unwrap();
}
on_both!(meter, the_meter_settles_records_and_refuses);

async fn new_keys_take_the_default_limits(store: &Store) {
    assert_eq!(store.key_defaults().await.unwrap(), KeyLimits::default());
    let defaults = KeyLimits {
        rpm: Some(60),
        tpm: None,
        budget_tokens: Some(100_000),
        budget_period: Some(BudgetPeriod::Month),
    };
    store.set_key_defaults(&defaults).await.unwrap();
    assert_eq!(store.key_defaults().await.unwrap(), defaults);
    // Unset limits come from the defaults; set ones stay (a budget as a whole).
    let plain = store.create_key(NewKey::inference("plain")).await.unwrap();
    assert_eq!(plain.key.limits, defaults);
    let own = store
        .create_key(NewKey {
            limits: KeyLimits {
                rpm: Some(5),
                tpm: Some(7),
                budget_tokens: Some(9),
                budget_period: Some(BudgetPeriod::Day),
            },
            ..NewKey::inference("own")
        })
        .await
        .unwrap();
    assert_eq!(own.key.limits.rpm, Some(5));
    assert_eq!(own.key.limits.budget_period, Some(BudgetPeriod::Day));
    let exact = store
        .create_key_exact(NewKey::inference("unlimited"))
        .await
        .unwrap();
    assert!(exact.key.limits.is_unlimited());
    // A half budget is refused and changes nothing.
    let half = KeyLimits {
        budget_tokens: Some(1),
        ..KeyLimits::default()
    };
    assert!(store.set_key_defaults(&half).await.is_err());
    assert_eq!(store.key_defaults().await.unwrap(), defaults);
    store.set_key_defaults(&KeyLimits::default()).await.unwrap();
    let after = store.create_key(NewKey::inference("after")).await.unwrap();
    assert!(after.key.limits.is_unlimited());
}
on_both!(defaults, new_keys_take_the_default_limits);

async fn unlimited_keys_need_no_database(store: &Store) {
    let unlimited = key(store, KeyLimits::default()).await;
    store.close().await;
    let admitted = store.reserve(&unlimited, 1_000_000, NOON).await.unwrap();
    assert!(admitted.status().is_empty());
    store.settle(&admitted, 5).await.unwrap();
}
on_both!(unlimited, unlimited_keys_need_no_database);

/// An admission whose caller stops waiting (the client went away while the database was
/// reserving) still ends: the reservation is given back, and nothing stays held.
async fn an_abandoned_admission_gives_its_reservation_back(store: &Store) {
    let meter = Meter::start(store.clone());
    let budgeted = key(
        store,
        KeyLimits {
            budget_tokens: Some(1_000),
            budget_period: Some(BudgetPeriod::Month),
            ..KeyLimits::default()
        },
    )
    .await;
    let caller = Caller::Key(Box::new(budgeted));
    for _ in 0..8 {
        // Polled once, then dropped mid-admission.
        tokio::select! {
            biased;
            outcome = meter.admit(&caller, request(400, 600)) => {
                panic!("an admission needs the database: {outcome:?}")
            }
            () = std::future::ready(()) => {}
        }
    }
    // Each abandoned admission ends on its own; then the whole budget is free again.
    let mut whole = None;
    for _ in 0..100 {
        match meter.admit(&caller, request(400, 600)).await {
            Ok(admitted) => {
                whole = Some(admitted);
                break;
            }
            Err(QuotaError::Refused(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    }
    whole.expect("the budget came back").discard();
    meter.close(Duration::from_secs(10)).await.unwrap();
}
on_both!(abandoned, an_abandoned_admission_gives_its_reservation_back);
