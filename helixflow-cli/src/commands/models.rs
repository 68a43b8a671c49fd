//! `helixflow models pull|list`, and `load|unload|ps` against a running server.

use anyhow::{Context, Result};
use helixflow_core::source::{self, ModelHome, ModelSpec, StderrProgress};
use serde_json::{json, Value};

use crate::args::{ModelsArgs, ModelsCommand, ServerArgs};
use crate::client::Server;

/// Runs the command.
pub fn run(args: ModelsArgs) -> Result<()> {
    run_command(args.command)
}

/// Runs one `models` command (also reached as `helixflow pull|ls|ps|rm`).
pub fn run_command(command: ModelsCommand) -> Result<()> {
    let home = ModelHome::from_env()?;
    match command {
        ModelsCommand::Rm { id } => {
            let removed = source::remove_cached(&home, &id)?;
            println!("deleted '{id}' ({})", human_size(removed));
        }
        ModelsCommand::Load {
            id,
            keep_alive,
            server,
        } => {
            let body = json!({"model": id, "keep_alive": keep_alive});
            let model = call(&server, "POST", "/v1/admin/models/load", Some(&body))?;
            println!(
                "{id} is loaded ({}, {})",
                human_size(model["memory_bytes"].as_u64().unwrap_or(0)),
                until(&model)
            );
        }
        ModelsCommand::Unload { id, server } => {
            let body = json!({"model": id});
            let answer = call(&server, "POST", "/v1/admin/models/unload", Some(&body))?;
            if answer["unloaded"].as_bool() == Some(true) {
                println!("{id} is unloaded");
            } else {
                println!(
                    "{id} will be unloaded when its {} requests in flight end",
                    answer["in_flight"]
                );
            }
        }
        ModelsCommand::Ps { json, server } => {
            let answer = call(&server, "GET", "/v1/admin/models", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print_ps(&answer);
            }
        }
        ModelsCommand::Pull { id } => {
            let resolved = source::pull(&ModelSpec::parse(&id)?, &home, &StderrProgress)?;
            println!(
                "{} ({}) is at {}",
                resolved.name,
                resolved.kind,
                resolved.path.display()
            );
        }
        ModelsCommand::List { json } => {
            let models = source::list_cached(&home)?;
            if json {
                let list: Vec<_> = models
                    .iter()
                    .map(|m| json!({"id": m.id, "path": m.path, "size_bytes": m.size_bytes, "verified": m.verified, "license": m.license}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                if models.is_empty() {
                    println!("no models in {}", home.root().display());
                } else {
                    println!("{:<40} {:>10}  {:<8} PATH", "ID", "SIZE", "VERIFIED");
                    for m in models {
                        println!(
                            "{:<40} {:>10}  {:<8} {}",
                            m.id,
                            human_size(m.size_bytes),
                            if m.verified { "yes" } else { "-" },
                            m.path.display()
                        );
                    }
                }
                println!("\nbuilt-in models (`helixflow models pull ID`):");
                for entry in source::builtin_models() {
                    println!("  {:<24} {}", entry.id, entry.description);
                    println!("  {:<24} license: {}", "", entry.license);
                }
            }
        }
    }
    Ok(())
}

/// Calls the server `server` names with its admin key.
fn call(server: &ServerArgs, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let data_dir = super::data_dir(server.data_dir.as_deref())?;
    let api_key = match &server.api_key {
        Some(key) => Some(key.clone()),
        None => std::fs::read_to_string(data_dir.join("admin-key"))
            .ok()
            .map(|k| k.trim().to_string()),
    };
    let own_cert = data_dir.join("localhost-cert.pem");
    let cacert = server
        .cacert
        .clone()
        .or_else(|| own_cert.is_file().then_some(own_cert));
    let server = Server::new(&server.server, cacert.as_deref(), api_key)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(server.call(method, path, body))
}

/// When an idle model goes, as `ps` says it.
fn until(model: &Value) -> String {
    let now = helixflow_core::completion::unix_now();
    match (model["in_flight"].as_u64(), model["expires_at"].as_u64()) {
        (Some(n), _) if n > 0 => format!("{n} requests in flight"),
        (_, Some(at)) => format!("unloaded in {}s if idle", at.saturating_sub(now)),
        _ if model["state"] == "loaded" => "kept until unloaded".to_string(),
        _ => "-".to_string(),
    }
}

/// The `ps` table.
fn print_ps(answer: &Value) {
    let budget = answer["budget_bytes"]
        .as_u64()
        .map_or_else(|| "no budget".to_string(), human_size);
    println!(
        "memory: {} of {budget}",
        human_size(answer["reserved_bytes"].as_u64().unwrap_or(0))
    );
    println!(
        "{:<32} {:<10} {:<10} {:>10}  UNTIL",
        "ID", "STATE", "KIND", "MEMORY"
    );
    for model in answer["data"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {:<10} {:<10} {:>10}  {}",
            model["id"].as_str().unwrap_or(""),
            model["state"].as_str().unwrap_or(""),
            model["kind"].as_str().unwrap_or("-"),
            human_size(model["memory_bytes"].as_u64().unwrap_or(0)),
            until(model)
        );
    }
}

/// `123.4 MB` style sizes.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}
