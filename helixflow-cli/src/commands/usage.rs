//! `helixflow usage`: totals of the platform store's usage records by key, model and day, or
//! the records themselves, with the server running or not.

use anyhow::{Context, Result};
use helixflow_core::calendar::utc_date_string as date;
use helixflow_core::completion::unix_now;
use helixflow_core::platform::{UsageFilter, UsageGroup, UsageRecord, UsageTotals};

use crate::args::UsageArgs;
use crate::commands::db::open_store;
use crate::commands::keys::parse_duration;

/// Runs `helixflow usage`.
pub fn run(args: UsageArgs) -> Result<()> {
    let since = unix_now() as i64 - parse_duration(&args.since).context("--since")?;
    let mut groups: Vec<UsageGroup> = Vec::new();
    for name in &args.group_by {
        let group = UsageGroup::parse(name)?;
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    let filter = UsageFilter {
        key_id: args.key,
        user_id: args.user,
        since: Some(since),
        until: None,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let store = open_store(&args.store).await?;
        let result = if args.records {
            store
                .usage_records(&filter, args.limit)
                .await
                .map_err(anyhow::Error::from)
                .and_then(|records| print_records(&records, args.json))
        } else {
            store
                .usage_report(&filter, &groups)
                .await
                .map_err(anyhow::Error::from)
                .and_then(|totals| print_totals(&totals, &groups, args.json))
        };
        store.close().await;
        result
    })
}

fn print_totals(totals: &[UsageTotals], groups: &[UsageGroup], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(totals)?);
        return Ok(());
    }
    let mut header = String::new();
    for group in groups {
        header += match group {
            UsageGroup::Day => "day         ",
            UsageGroup::Key => "key                    ",
            UsageGroup::Model => "model                          ",
        };
    }
    println!(
        "{header}{:>9} {:>12} {:>12} {:>9} {:>7}",
        "requests", "prompt", "completion", "cancelled", "failed"
    );
    for total in totals {
        let mut line = String::new();
        for group in groups {
            line += &match group {
                UsageGroup::Day => format!("{:<12}", total.day.map(date).unwrap_or_default()),
                UsageGroup::Key => {
                    format!("{:<23}", total.key_id.as_deref().unwrap_or("(operator)"))
                }
                UsageGroup::Model => format!("{:<31}", total.model.as_deref().unwrap_or("")),
            };
        }
        println!(
            "{line}{:>9} {:>12} {:>12} {:>9} {:>7}",
            total.requests,
            total.prompt_tokens,
            total.completion_tokens,
            total.cancelled,
            total.failed
        );
    }
    Ok(())
}

fn print_records(records: &[UsageRecord], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(records)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<22} {:<24} {:<22} {:>7} {:>7} {:>6} {:>8}",
        "day", "key", "model", "endpoint", "prompt", "compl.", "status", "ms"
    );
    for r in records {
        println!(
            "{:<12} {:<22} {:<24} {:<22} {:>7} {:>7} {:>6} {:>8}",
            date(r.created_at),
            r.key_id.as_deref().unwrap_or("(operator)"),
            r.model,
            r.endpoint,
            r.prompt_tokens,
            r.completion_tokens,
            if r.cancelled {
                format!("{}*", r.status)
            } else {
                r.status.to_string()
            },
            r.latency_ms
        );
    }
    Ok(())
}
