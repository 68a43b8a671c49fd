//! `helixflow bench --platform`: what the platform adds to each request. Requests arrive at a
//! fixed rate (an open loop, so a slow database shows as latency, not as a lower rate); each
//! authenticates its API key, is admitted against the key's limits (the quota reservation, a
//! database transaction), and finishes (the settlement and the usage record, off the request
//! path). The time a request waits for authentication and admission is what it pays.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use helixflow_core::platform::{
    Authenticator, BudgetPeriod, KeyLimits, Meter, MeteredRequest, NewKey, Store,
};
use serde_json::json;

use crate::args::BenchArgs;

/// Tokens each simulated request reserves and then reports.
const PROMPT_TOKENS: u64 = 64;
const COMPLETION_TOKENS: u64 = 128;

/// One measured configuration.
struct Case {
    label: &'static str,
    limits: KeyLimits,
}

/// Runs the benchmark on `DATABASE_URL`, else on a temporary SQLite file.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let temporary = std::env::temp_dir().join(format!(
        "helixflow-bench-platform-{}.db",
        std::process::id()
    ));
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("sqlite://{}", temporary.display()));
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let results = runtime.block_on(measure(args, &url));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", temporary.display()));
    }
    let results = results?;
    let backend = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    if args.json {
        println!(
            "{}",
            json!({"backend": backend, "rate": args.rate, "seconds": args.seconds, "cases": results})
        );
        return Ok(());
    }
    println!(
        "platform overhead on {backend}, {} requests/s for {} s (auth + admission on the \
         request path; settlement and usage records off it)",
        args.rate, args.seconds
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "case", "requests", "p50 µs", "p99 µs", "max µs", "achieved/s", "drain ms"
    );
    for r in &results {
        println!(
            "{:<34} {:>9} {:>9.0} {:>9.0} {:>9.0} {:>11.0} {:>9.0}",
            r["case"].as_str().unwrap_or_default(),
            r["requests"],
            r["p50_us"].as_f64().unwrap_or_default(),
            r["p99_us"].as_f64().unwrap_or_default(),
            r["max_us"].as_f64().unwrap_or_default(),
            r["achieved_rate"].as_f64().unwrap_or_default(),
            r["drain_ms"].as_f64().unwrap_or_default(),
        );
    }
    Ok(())
}

async fn measure(args: &BenchArgs, url: &str) -> Result<Vec<serde_json::Value>> {
    let store = Store::connect(url).await?;
    store.migrate().await?;
    // Limits far above the load, so every request takes the full path and none is refused.
    let cases = [
        Case {
            label: "key with rpm, tpm and budget",
            limits: KeyLimits {
                rpm: Some(1 << 40),
                tpm: Some(1 << 50),
                budget_tokens: Some(1 << 60),
                budget_period: Some(BudgetPeriod::Month),
            },
        },
        Case {
            label: "key without limits",
            limits: KeyLimits::default(),
        },
    ];
    let mut results = Vec::new();
    for case in cases {
        let key = store
            .create_key_exact(NewKey {
                limits: case.limits.clone(),
                ..NewKey::inference(format!("bench {}", case.label))
            })
            .await?;
        let auth = Arc::new(Authenticator::new(Some(store.clone()), None));
        let meter = Meter::start(store.clone());
        let (latencies, elapsed) = open_loop(args, &auth, &meter, &key.secret).await?;
        let drain = Instant::now();
        meter
            .close(Duration::from_secs(60))
            .await
            .context("storing the usage records")?;
        let drain_ms = drain.elapsed().as_secs_f64() * 1e3;
        let sorted = {
            let mut v = latencies;
            v.sort_by(f64::total_cmp);
            v
        };
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        results.push(json!({
            "case": case.label,
            "requests": sorted.len(),
            "p50_us": at(0.5),
            "p99_us": at(0.99),
            "max_us": at(1.0),
            "achieved_rate": sorted.len() as f64 / elapsed.as_secs_f64(),
            "drain_ms": drain_ms,
        }));
    }
    store.close().await;
    Ok(results)
}

/// Sends `rate × seconds` requests at their scheduled times; returns each one's time spent in
/// authentication and admission (µs), and how long the arrivals took.
async fn open_loop(
    args: &BenchArgs,
    auth: &Arc<Authenticator>,
    meter: &Meter,
    secret: &str,
) -> Result<(Vec<f64>, Duration)> {
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs(1) / u32::try_from(args.rate).unwrap_or(u32::MAX);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + interval * u32::try_from(i).unwrap_or(u32::MAX)).await;
        let (auth, meter, secret) = (auth.clone(), meter.clone(), secret.to_string());
        let latencies = latencies.clone();
        tasks.spawn(async move {
            let begun = Instant::now();
            let caller = auth
                .authenticate(Some(&secret))
                .await?
                .context("the benchmark key was refused")?;
            let metered = meter
                .admit(
                    &caller,
                    MeteredRequest {
                        request_id: None,
                        model: "bench".into(),
                        endpoint: "/v1/completions".into(),
                        prompt_tokens: PROMPT_TOKENS,
                        max_completion_tokens: COMPLETION_TOKENS,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("admission failed: {e}"))?;
            let paid = begun.elapsed().as_secs_f64() * 1e6;
            metered.finish(PROMPT_TOKENS, COMPLETION_TOKENS);
            latencies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(paid);
            anyhow::Ok(())
        });
    }
    let arrivals = start.elapsed();
    while let Some(done) = tasks.join_next().await {
        done.context("a request task panicked")??;
    }
    let latencies = std::mem::take(
        &mut *latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok((latencies, arrivals))
}
