//! `helixflow keys`: create, list and revoke API keys in the platform's store, and set the
//! limits new keys get, with the server running or not.

use anyhow::{bail, Context, Result};
use helixflow_core::completion::unix_now;
use helixflow_core::platform::{ApiKey, BudgetPeriod, KeyLimits, NewKey, Scope};

use crate::args::{KeysArgs, KeysCommand};
use crate::commands::db::open_store;

/// Runs one `keys` subcommand.
pub fn run(args: KeysArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let store = open_store(&args.store).await?;
        let result = match args.command {
            KeysCommand::Create {
                name,
                owner,
                scopes,
                models,
                rpm,
                tpm,
                budget,
                period,
                expires_in,
                unlimited,
                json,
            } => {
                let scopes = scopes
                    .iter()
                    .map(|s| Scope::parse(s))
                    .collect::<Result<Vec<_>, _>>()?;
                let budget_period = match (budget, period.as_deref()) {
                    (None, None) => None,
                    (Some(_), Some(p)) => Some(BudgetPeriod::parse(p)?),
                    _ => bail!("--budget and --period go together"),
                };
                let expires_at = expires_in
                    .as_deref()
                    .map(parse_duration)
                    .transpose()?
                    .map(|secs| unix_now() as i64 + secs);
                let new = NewKey {
                    name,
                    owner,
                    scopes,
                    models: (!models.is_empty()).then_some(models),
                    limits: KeyLimits {
                        rpm,
                        tpm,
                        budget_tokens: budget,
                        budget_period,
                    },
                    expires_at,
                };
                let created = if unlimited {
                    store.create_key_exact(new).await?
                } else {
                    store.create_key(new).await?
                };
                if json {
                    let mut value = serde_json::to_value(&created.key)?;
                    value["key"] = created.secret.into();
                    println!("{value}");
                } else {
                    println!("{}", created.secret);
                    eprintln!(
                        "created {} ({}): the key above is shown only now; store it safely",
                        created.key.id, created.key.name
                    );
                }
                Ok(())
            }
            KeysCommand::List { json } => {
                let keys = store.list_keys().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&keys)?);
                } else {
                    print_table(&keys);
                }
                Ok(())
            }
            KeysCommand::Revoke { id } => {
                if !store.revoke_key(&id).await? {
                    bail!("no key has the id `{id}`");
                }
                eprintln!("revoked {id}");
                Ok(())
            }
            KeysCommand::Defaults {
                rpm,
                tpm,
                budget,
                period,
                clear,
                json,
            } => {
                let mut defaults = if clear {
                    KeyLimits::default()
                } else {
                    store.key_defaults().await?
                };
                let changing = clear || rpm.is_some() || tpm.is_some() || budget.is_some();
                defaults.rpm = rpm.or(defaults.rpm);
                defaults.tpm = tpm.or(defaults.tpm);
                if let (Some(budget), Some(period)) = (budget, period.as_deref()) {
                    defaults.budget_tokens = Some(budget);
                    defaults.budget_period = Some(BudgetPeriod::parse(period)?);
                }
                if changing {
                    store.set_key_defaults(&defaults).await?;
                }
                if json {
                    println!("{}", serde_json::to_string(&defaults)?);
                } else {
                    print_defaults(&defaults);
                }
                Ok(())
            }
        };
        store.close().await;
        result
    })
}

fn print_defaults(defaults: &KeyLimits) {
    let limit = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
    println!("rpm     {}", limit(defaults.rpm));
    println!("tpm     {}", limit(defaults.tpm));
    match (defaults.budget_tokens, defaults.budget_period) {
        (Some(tokens), Some(period)) => println!("budget  {tokens} per {}", period.as_str()),
        _ => println!("budget  unlimited"),
    }
}

fn print_table(keys: &[ApiKey]) {
    println!(
        "{:<22} {:<18} {:<20} {:<17} {:>6} {:>8} {:<8}",
        "id", "prefix", "name", "scopes", "rpm", "tpm", "state"
    );
    let now = unix_now() as i64;
    for key in keys {
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        let limit = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
        let state = if key.revoked_at.is_some() {
            "revoked"
        } else if !key.is_active(now) {
            "expired"
        } else {
            "active"
        };
        println!(
            "{:<22} {:<18} {:<20} {:<17} {:>6} {:>8} {:<8}",
            key.id,
            key.prefix,
            key.name,
            scopes.join(","),
            limit(key.limits.rpm),
            limit(key.limits.tpm),
            state
        );
    }
}

/// `30d`, `12h`, `15m`, `45s` → seconds.
pub(crate) fn parse_duration(text: &str) -> Result<i64> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("`{text}` is not a duration like 30d, 12h, 15m or 45s"))?;
    let unit = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => bail!("`{text}` is not a duration like 30d, 12h, 15m or 45s"),
    };
    n.checked_mul(unit).context("the duration is too long")
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        for bad in ["", "d", "0d", "-1d", "3w", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
