//! Running the server: load the models, start the engine, bind HTTPS (or HTTP), and shut
//! down gracefully.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use helixflow_core::engine::EngineConfig;
use helixflow_core::platform::{Authenticator, CreatedKey, LoginPolicy, Meter, Store};
use helixflow_core::registry::ModelRegistry;
use helixflow_core::source::StderrProgress;

use tower::ServiceExt;

use crate::error::ApiError;
use crate::state::AppState;

/// How the server speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Plain HTTP (behind a TLS-terminating proxy).
    Off,
    /// A certificate chain and private key in PEM files.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A self-signed certificate for `localhost`, made once and kept in the data directory.
    SelfSigned,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    pub port: u16,
    /// gRPC port (0 picks a free one); `None` serves no gRPC.
    pub grpc_port: Option<u16>,
    /// TLS mode.
    pub tls: Tls,
    /// The models to serve: ids or paths, chat and embedding models alike.
    pub models: Vec<String>,
    /// The operator key `/v1` requests may present (every scope).
    pub api_key: Option<String>,
    /// The platform's database (`sqlite://...` or `postgres://...`), whose API keys are
    /// accepted beside the operator key; `None` serves without one.
    pub database_url: Option<String>,
    /// Where the server keeps its files: the self-signed certificate, the first admin key of
    /// a new database.
    pub data_dir: PathBuf,
    /// Allow a non-loopback address without a key.
    pub insecure_no_auth: bool,
    /// The engine's settings.
    pub engine: EngineConfig,
    /// Request body limit in bytes.
    pub body_limit: usize,
    /// How long in-flight requests may run after a shutdown request.
    pub grace: Duration,
    /// How long one generation may run before it is cut off (504, or an error event).
    pub request_timeout: Duration,
    /// How long an access token from a login lasts (1 s to a day).
    pub token_lifetime: Duration,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unsafe or inconsistent.
    #[error("{0}")]
    Config(String),
    /// A model could not be found or loaded.
    #[error(transparent)]
    Core(#[from] helixflow_core::Error),
    /// The platform's database could not be opened or migrated.
    #[error(transparent)]
    Platform(#[from] helixflow_core::platform::PlatformError),
    /// Binding, TLS or the certificate files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// How long a shutdown waits, after the servers drained, for the last requests' usage to be
/// settled and stored.
const ACCOUNTING_WAIT: Duration = Duration::from_secs(10);

/// Where the server listens, once it does.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// The HTTPS (or HTTP) address.
    pub http: SocketAddr,
    /// The gRPC address, when gRPC is served.
    pub grpc: Option<SocketAddr>,
}

/// Listens at once, loads the models, then serves HTTP and gRPC until `shutdown` resolves;
/// in-flight requests then get `config.grace` to finish. `on_listen` is told the bound
/// addresses (useful with port 0).
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(Listening) + Send + 'static,
) -> Result<(), ServeError> {
    let open = config.api_key.is_none() && config.database_url.is_none();
    if !config.host.is_loopback() && open && !config.insecure_no_auth {
        return Err(ServeError::Config(format!(
            "refusing to listen on {} without an API key: set --api-key (or HELIXFLOW_API_KEY), \
             or pass --insecure-no-auth",
            config.host
        )));
    }
    // Checked before the database is touched: a bad setting changes nothing.
    let policy = LoginPolicy {
        token_lifetime: config.token_lifetime,
        ..LoginPolicy::default()
    };
    policy.validate()?;
    let store = match &config.database_url {
        Some(url) => {
            let store = Store::connect(url).await?;
            store.migrate().await?;
            if let Some(created) = store.bootstrap_admin_key().await? {
                announce_admin_key(&config.data_dir, &created)?;
            }
            Some(store)
        }
        None => None,
    };
    // Quotas and usage records go to the same store as the keys.
    let meter = store.clone().map(Meter::start).unwrap_or_default();
    let auth = Authenticator::new(store, config.api_key.clone()).with_login_policy(policy)?;
    let tls = match &config.tls {
        Tls::Off => None,
        Tls::Files { cert, key } => Some((cert.clone(), key.clone())),
        Tls::SelfSigned => Some(self_signed(&config.data_dir)?),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    // ring is the one crypto provider compiled in; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // One shutdown request reaches both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let handle = Handle::new();
    let grace = config.grace;
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: letting in-flight requests finish for {grace:?}");
            let _ = stop.send(true);
            handle.graceful_shutdown(Some(grace));
        });
    }
    let stop_requested = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|&s| s).await;
        }
    };

    // Listen at once; until the models are loaded `/health` answers and everything else,
    // `/ready` included, is a 503 (gRPC: UNAVAILABLE, health NOT_SERVING).
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<AppState>();
    let grpc = match config.grpc_port {
        Some(port) => {
            let listener = tokio::net::TcpListener::bind((config.host, port))
                .await
                .map_err(io(format!("binding gRPC to {}:{port}", config.host)))?;
            let bound = listener
                .local_addr()
                .map_err(io("reading the gRPC address"))?;
            eprintln!("helixflow: gRPC on {bound}");
            let ready = async move {
                match ready_rx.await {
                    Ok(state) => state,
                    Err(_) => std::future::pending().await,
                }
            };
            let served =
                crate::grpc::serve_grpc(listener, tls.clone(), ready, stop_requested(), grace);
            Some((bound, tokio::spawn(served)))
        }
        None => None,
    };
    let grpc_addr = grpc.as_ref().map(|(addr, _)| *addr);
    let app_slot: Arc<OnceLock<Router>> = Arc::default();
    let service = loading_router(app_slot.clone()).into_make_service();
    let addr = SocketAddr::new(config.host, config.port);
    let server = match &tls {
        None => tokio::spawn(
            axum_server::bind(addr)
                .handle(handle.clone())
                .serve(service),
        ),
        Some((cert, key)) => {
            let rustls = RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(io(format!(
                    "loading {} and {}",
                    cert.display(),
                    key.display()
                )))?;
            tokio::spawn(
                axum_server::bind_rustls(addr, rustls)
                    .handle(handle.clone())
                    .serve(service),
            )
        }
    };
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Some(http) = handle.listening().await {
                eprintln!("helixflow: serving on {scheme}://{http}");
                on_listen(Listening {
                    http,
                    grpc: grpc_addr,
                });
            }
        });
    }

    let loaded = {
        let config = config.clone();
        let meter = meter.clone();
        tokio::task::spawn_blocking(move || {
            load_state(&config).map(|s| s.with_auth(auth).with_meter(meter))
        })
        .await
        .map_err(|e| ServeError::Config(format!("model loading panicked: {e}")))
        .and_then(|r| r)
    };
    match loaded {
        Ok(state) => {
            let state = state
                .with_body_limit(config.body_limit)
                .with_request_timeout(config.request_timeout);
            let _ = app_slot.set(crate::router(state.clone()));
            let _ = ready_tx.send(state);
            eprintln!("helixflow: models loaded, ready");
        }
        Err(e) => {
            handle.shutdown();
            let _ = server.await;
            if let Some((_, task)) = grpc {
                task.abort();
            }
            return Err(e);
        }
    }
    let http = server
        .await
        .map_err(|e| ServeError::Config(format!("the server task failed: {e}")))
        .and_then(|served| served.map_err(io(format!("serving on {addr}"))));
    let grpc = match grpc {
        // gRPC cuts its streams off at the end of the grace period; a little more is left for
        // them to end.
        Some((_, task)) => match tokio::time::timeout(grace + Duration::from_secs(5), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(ServeError::Config(format!("the gRPC task failed: {e}"))),
            Err(_) => {
                tracing::warn!("gRPC calls still running after the grace period");
                Ok(())
            }
        },
        None => Ok(()),
    };
    // Every request has ended (or was cut off): settle and store the last usage records.
    if let Err(e) = meter.close(ACCOUNTING_WAIT).await {
        eprintln!("helixflow: storing the last usage records failed: {e}");
    }
    grpc?;
    http
}

/// Serves `/health` and 503s until the real application is in `slot`, then hands every
/// request to it.
fn loading_router(slot: Arc<OnceLock<Router>>) -> Router {
    Router::new().fallback(move |request: Request| {
        let slot = slot.clone();
        async move {
            match slot.get() {
                Some(app) => app.clone().oneshot(request).await.into_response(),
                None if request.uri().path() == "/health" => {
                    axum::Json(serde_json::json!({"status": "ok"})).into_response()
                }
                None => ApiError::overloaded("the models are still loading").into_response(),
            }
        }
    })
}

/// Resolves and loads the models and starts an engine for each chat model.
fn load_state(config: &ServeConfig) -> Result<AppState, ServeError> {
    if config.models.is_empty() {
        return Err(ServeError::Config("no model to serve".into()));
    }
    let models = ModelRegistry::load(&config.models, &config.engine, &StderrProgress)?;
    Ok(AppState::new(models, config.api_key.clone()))
}

/// The self-signed certificate and key in `dir`, made on first use.
fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), ServeError> {
    let (cert, key) = (
        dir.join("localhost-cert.pem"),
        dir.join("localhost-key.pem"),
    );
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| ServeError::Config(format!("generating a certificate: {e}")))?;
    std::fs::write(&cert, generated.cert.pem())
        .map_err(io(format!("writing {}", cert.display())))?;
    write_private(&key, &generated.key_pair.serialize_pem())?;
    eprintln!(
        "helixflow: generated a self-signed certificate for localhost: {} (clients must trust \
         it or skip verification; pass --tls-cert/--tls-key for a real one)",
        cert.display()
    );
    Ok((cert, key))
}

/// Prints a bootstrap admin key once and keeps it in a file only its owner can read.
fn announce_admin_key(dir: &Path, created: &CreatedKey) -> Result<(), ServeError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let file = dir.join("admin-key");
    write_private(&file, &format!("{}\n", created.secret))?;
    eprintln!(
        "helixflow: the database had no admin key; created {} (prefix {}):\n\n    {}\n\n\
         It is shown only now and kept in {} (mode 0600). Rotate it: create another admin key \
         (helixflow keys create --name NAME --scopes admin,inference), then \
         helixflow keys revoke {}.",
        created.key.id,
        created.key.prefix,
        created.secret,
        file.display(),
        created.key.id
    );
    Ok(())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &str) -> Result<(), ServeError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(io(format!("writing {}", path.display())))
}
