//! The `--config` TOML file of `helixflow serve`: it fills every setting that neither a flag
//! nor an environment variable gave.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use toml::Table;

use helixflow_core::registry::KeepAlive;

use crate::args::ServeArgs;

/// Reads `args.config` (if any) and applies it to the settings still at their defaults.
pub fn apply(args: &mut ServeArgs, matches: &ArgMatches) -> Result<()> {
    let Some(path) = args.config.clone() else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: Table = text
        .parse()
        .with_context(|| format!("parsing the config file {}", path.display()))?;
    // Unknown keys count as defaults here so that `merge` names them in its error.
    let is_default = |id: &str| {
        matches.try_contains_id(id).is_err()
            || matches!(
                matches.value_source(id),
                None | Some(ValueSource::DefaultValue)
            )
    };
    merge(args, &table, is_default).with_context(|| format!("in {}", path.display()))
}

/// Sets each field named in `table` whose setting `is_default` says nobody gave.
pub fn merge(args: &mut ServeArgs, table: &Table, is_default: impl Fn(&str) -> bool) -> Result<()> {
    for (key, value) in table {
        let id = key.replace('-', "_");
        if !is_default(&id) {
            continue;
        }
        let bad = |want: &str| -> anyhow::Error {
            anyhow::anyhow!("`{key}` must be {want}, not {value:?}")
        };
        let string = || {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("a string"))
        };
        let number = || {
            value
                .as_integer()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad("a non-negative integer"))
        };
        // One model, or a list of them.
        let strings = || match value {
            toml::Value::String(s) => Ok(vec![s.clone()]),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("a string or a list of strings")),
            _ => Err(bad("a string or a list of strings")),
        };
        let flag = || value.as_bool().ok_or_else(|| bad("true or false"));
        let path = || string().map(PathBuf::from);
        match id.as_str() {
            "host" => args.host = string()?.parse().map_err(|_| bad("an IP address"))?,
            "port" => args.port = u16::try_from(number()?).map_err(|_| bad("a port"))?,
            "model" => args.model = strings()?,
            "grpc_port" => args.grpc_port = u16::try_from(number()?).map_err(|_| bad("a port"))?,
            "no_grpc" => args.no_grpc = flag()?,
            "ollama_port" => {
                args.ollama_port = Some(u16::try_from(number()?).map_err(|_| bad("a port"))?)
            }
            "api_key" => args.api_key = Some(string()?),
            "insecure_no_auth" => args.insecure_no_auth = flag()?,
            "no_database" => args.no_database = flag()?,
            "no_tls" => args.no_tls = flag()?,
            "tls_cert" => args.tls_cert = Some(path()?),
            "tls_key" => args.tls_key = Some(path()?),
            "data_dir" => args.data_dir = Some(path()?),
            "max_batched_tokens" => args.max_batched_tokens = number()?,
            "max_num_seqs" => args.max_num_seqs = number()?,
            "kv_cache_mib" => args.kv_cache_mib = number()?,
            "models_dir" => args.models_dir = Some(path()?),
            "allow_pull" => args.allow_pull = flag()?,
            "keep_alive" => {
                args.keep_alive = match value.as_integer() {
                    Some(seconds) => KeepAlive::from_seconds(seconds as f64),
                    None => KeepAlive::parse(&string()?).ok(),
                }
                .ok_or_else(|| bad("a duration (5m) or a number of seconds"))?
            }
            "memory_budget_mib" => args.memory_budget_mib = Some(number()? as u64),
            "queue_capacity" => args.queue_capacity = number()?,
            "body_limit" => args.body_limit = number()?,
            "grace_seconds" => args.grace_seconds = number()? as u64,
            "request_timeout_seconds" => args.request_timeout_seconds = number()? as u64,
            "token_lifetime_seconds" => args.token_lifetime_seconds = number()? as u64,
            "token_secret_file" => args.token_secret_file = Some(path()?),
            "max_connections" => args.max_connections = number()?,
            "idle_timeout_seconds" => args.idle_timeout_seconds = number()? as u64,
            _ => bail!("unknown setting `{key}`"),
        }
    }
    if args.no_tls && (args.tls_cert.is_some() || args.tls_key.is_some()) {
        bail!("no_tls conflicts with tls_cert/tls_key");
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        bail!("tls_cert and tls_key go together");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn serve_args(argv: &[&str]) -> ServeArgs {
        match Cli::parse_from(["helixflow", "serve"].iter().chain(argv)).command {
            Command::Serve(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_file_fills_only_what_flags_left_at_their_defaults() {
        let mut args = serve_args(&["--port", "9000"]);
        let table: Table =
            "port = 7000\nno_tls = true\nmax-num-seqs = 8\nmodel = \"x.gguf\"\nollama_port = 11434\n\
             keep_alive = \"5m\"\nmemory_budget_mib = 2048"
                .parse()
                .unwrap();
        // As if --port had been given on the command line.
        merge(&mut args, &table, |id| id != "port").unwrap();
        assert_eq!(args.port, 9000);
        assert!(args.no_tls);
        assert_eq!(args.max_num_seqs, 8);
        assert_eq!(args.model, ["x.gguf"]);
        assert_eq!(args.ollama_port, Some(11434));
        assert_eq!(
            args.keep_alive,
            KeepAlive::For(std::time::Duration::from_secs(300))
        );
        assert_eq!(args.memory_budget_mib, Some(2048));
        let table: Table = "model = [\"a.gguf\", \"b\"]".parse().unwrap();
        merge(&mut args, &table, |_| true).unwrap();
        assert_eq!(args.model, ["a.gguf", "b"]);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        let mut args = serve_args(&[]);
        for bad in [
            "prot = 1",
            "port = \"high\"",
            "port = 70000",
            "no_tls = 1",
            "host = \"x\"",
            "model = [1]",
        ] {
            let table: Table = bad.parse().unwrap();
            assert!(merge(&mut args, &table, |_| true).is_err(), "{bad}");
        }
        let table: Table = "no_tls = true\ntls_cert = \"a.pem\"\ntls_key = \"b.pem\""
            .parse()
            .unwrap();
        assert!(merge(&mut serve_args(&[]), &table, |_| true).is_err());
    }
}
