//! `helixflow serve`: the OpenAI-compatible server on the chosen models.

use std::time::Duration;

use anyhow::{Context, Result};
use helixflow_core::engine::{EngineConfig, KvBudget};
use helixflow_core::registry::{ChatTemplateOverride, RegistryConfig};
use helixflow_server::connections::ConnectionLimits;
use helixflow_server::{ServeConfig, Tls};

use crate::args::ServeArgs;

/// Runs the server until SIGTERM or ctrl-c, then drains in-flight requests.
pub fn run(args: ServeArgs) -> Result<()> {
    let data_dir = super::data_dir(args.data_dir.as_deref())?;
    let tls = if args.no_tls {
        Tls::Off
    } else if let (Some(cert), Some(key)) = (args.tls_cert.clone(), args.tls_key.clone()) {
        Tls::Files { cert, key }
    } else {
        Tls::SelfSigned
    };
    let database_url = platform_database(args.no_database, &data_dir)?;
    let config = ServeConfig {
        host: args.host,
        port: args.port,
        tls,
        grpc_port: (!args.no_grpc).then_some(args.grpc_port),
        ollama_port: args.ollama_port,
        models: args.model,
        registry: RegistryConfig {
            engine: EngineConfig {
                max_batched_tokens: args.max_batched_tokens,
                max_num_seqs: args.max_num_seqs,
                queue_capacity: args.queue_capacity,
                kv_budget: KvBudget::Bytes(args.kv_cache_mib << 20),
                ..EngineConfig::default()
            },
            chat_templates: args
                .chat_template
                .iter()
                .map(|arg| ChatTemplateOverride::from_arg(arg))
                .collect::<Result<_, _>>()?,
            quantize: args.quantize,
            models_dir: args.models_dir,
            allow_pull: args.allow_pull,
            keep_alive: args.keep_alive,
            memory_budget: args.memory_budget_mib.map(|mib| mib << 20),
        },
        api_key: args.api_key.filter(|k| !k.is_empty()),
        database_url,
        data_dir,
        insecure_no_auth: args.insecure_no_auth,
        body_limit: args.body_limit,
        grace: Duration::from_secs(args.grace_seconds),
        request_timeout: Duration::from_secs(args.request_timeout_seconds),
        token_lifetime: Duration::from_secs(args.token_lifetime_seconds),
        token_secret_file: args.token_secret_file,
        connections: ConnectionLimits {
            max_connections: args.max_connections,
            idle_timeout: Duration::from_secs(args.idle_timeout_seconds.max(1)),
            ..ConnectionLimits::default()
        },
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async { helixflow_server::serve(config, shutdown_signal(), |_| {}).await })?;
    eprintln!("helixflow: stopped");
    Ok(())
}

/// The platform database: `DATABASE_URL` (or `DATABASE_TYPE` with `DATABASE_PATH`), else a
/// SQLite file in the data directory; none with `--no-database`.
fn platform_database(no_database: bool, data_dir: &std::path::Path) -> Result<Option<String>> {
    if no_database {
        return Ok(None);
    }
    Ok(Some(helixflow_core::platform::Store::url_from_env(
        data_dir,
    )?))
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
