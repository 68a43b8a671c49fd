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
use axum_server::accept::DefaultAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;
use helixflow_core::platform::{
    write_private_file, Authenticator, CreatedKey, LoginPolicy, Meter, Store, TokenSecret,
};
use helixflow_core::registry::{ModelRegistry, RegistryConfig};
use helixflow_core::source::StderrProgress;

use tower::ServiceExt;

use crate::connections::{ConnectionGate, ConnectionLimits, GatedAcceptor};
use crate::error::ApiError;
use crate::state::{AppState, Phase};

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
    /// A second HTTP port with the same routes, for Ollama's clients (11434 by their
    /// convention; 0 picks a free one); `None` serves none.
    pub ollama_port: Option<u16>,
    /// TLS mode.
    pub tls: Tls,
    /// The models loaded at start: ids or paths, chat and embedding models alike.
    pub models: Vec<String>,
    /// How models are loaded (engine settings, templates, quantisation), which load on
    /// first use, how long idle ones stay and the memory they may take.
    pub registry: RegistryConfig,
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
    /// Request body limit in bytes.
    pub body_limit: usize,
    /// How long in-flight requests may run after a shutdown request.
    pub grace: Duration,
    /// How long one generation may run before it is cut off (504, or an error event).
    pub request_timeout: Duration,
    /// How long an access token from a login lasts (1 s to a day).
    pub token_lifetime: Duration,
    /// The file holding the secret access tokens are signed with (made on first use);
    /// `None`: `token-secret` in the data directory.
    pub token_secret_file: Option<PathBuf>,
    /// Connection limits of both listeners.
    pub connections: ConnectionLimits,
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

/// How long connections stay open after the grace period, for the streams it cut off to send
/// their shutdown error and end properly.
const CUT_MARGIN: Duration = Duration::from_secs(2);

/// Where the server listens, once it does.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// The HTTPS (or HTTP) address.
    pub http: SocketAddr,
    /// The gRPC address, when gRPC is served.
    pub grpc: Option<SocketAddr>,
    /// The Ollama port's address, when it is served.
    pub ollama: Option<SocketAddr>,
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
    // A fresh machine has no data directory yet; what it holds is private (0700, files 0600).
    helixflow_core::platform::prepare_data_dir(&config.data_dir)?;
    let store = match &config.database_url {
        Some(url) => {
            let secret_file = config
                .token_secret_file
                .clone()
                .unwrap_or_else(|| config.data_dir.join("token-secret"));
            let secret = TokenSecret::load_or_create(&secret_file)?;
            let store = Store::connect(url).await?.with_token_secret(secret);
            store.migrate().await?;
            store.check_token_secret().await?;
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

    // One shutdown request reaches both servers: they drain, and `grace` later the
    // generations still running end with a shutdown error, which their connections get a
    // moment to deliver.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (phase_tx, phase) = tokio::sync::watch::channel(Phase::Serving);
    let handle = Handle::new();
    let ollama_handle = Handle::new();
    let grace = config.grace;
    {
        let (handle, ollama_handle) = (handle.clone(), ollama_handle.clone());
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: letting in-flight requests finish for {grace:?}");
            let _ = stop.send(true);
            let _ = phase_tx.send(Phase::Draining);
            handle.graceful_shutdown(Some(grace + CUT_MARGIN));
            ollama_handle.graceful_shutdown(Some(grace + CUT_MARGIN));
            tokio::time::sleep(grace).await;
            let _ = phase_tx.send(Phase::Cut);
        });
    }
    if let Some(open_files) = crate::connections::raise_open_files_limit() {
        let needed = 2 * config.connections.max_connections as u64 + 256;
        if open_files < needed {
            tracing::warn!(
                "the open-files limit ({open_files}) is below what --max-connections {} needs \
                 on both listeners ({needed}); raise it (ulimit -n) or lower --max-connections",
                config.connections.max_connections
            );
        }
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
            let gate = ConnectionGate::new(config.connections.max_connections, "gRPC");
            let served = crate::grpc::serve_grpc(
                listener,
                tls.clone(),
                ready,
                stop_requested(),
                grace,
                (gate, config.connections),
            );
            Some((bound, tokio::spawn(served)))
        }
        None => None,
    };
    let grpc_addr = grpc.as_ref().map(|(addr, _)| *addr);
    let app_slot: Arc<OnceLock<Router>> = Arc::default();
    let service = loading_router(app_slot.clone()).into_make_service();
    let addr = SocketAddr::new(config.host, config.port);
    let limits = config.connections;
    let gate = ConnectionGate::new(limits.max_connections, "HTTP");
    let server = spawn_http(addr, tls.as_ref(), gate, limits, &handle, service.clone()).await?;
    let ollama = match config.ollama_port {
        Some(port) => {
            let addr = SocketAddr::new(config.host, port);
            let gate = ConnectionGate::new(limits.max_connections, "Ollama");
            let task =
                spawn_http(addr, tls.as_ref(), gate, limits, &ollama_handle, service).await?;
            Some(task)
        }
        None => None,
    };
    let ollama_listening = config.ollama_port.map(|_| ollama_handle.clone());
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Some(http) = handle.listening().await {
                eprintln!("helixflow: serving on {scheme}://{http}");
                let ollama = match ollama_listening {
                    Some(handle) => handle.listening().await,
                    None => None,
                };
                if let Some(ollama) = ollama {
                    eprintln!("helixflow: serving Ollama's API on {scheme}://{ollama}");
                }
                on_listen(Listening {
                    http,
                    grpc: grpc_addr,
                    ollama,
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
                .with_request_timeout(config.request_timeout)
                .with_phase(phase);
            let _ = app_slot.set(crate::router(state.clone()));
            let _ = ready_tx.send(state);
            eprintln!("helixflow: models loaded, ready");
        }
        Err(e) => {
            handle.shutdown();
            ollama_handle.shutdown();
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
    if let Some(task) = ollama {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("helixflow: the Ollama port failed: {e}"),
            Err(e) => eprintln!("helixflow: the Ollama port's task failed: {e}"),
        }
    }
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

/// Serves `service` on `addr` (over TLS with `tls`'s certificate and key), its connections
/// gated and limited, shut down through `handle`.
async fn spawn_http(
    addr: SocketAddr,
    tls: Option<&(PathBuf, PathBuf)>,
    gate: ConnectionGate,
    limits: ConnectionLimits,
    handle: &Handle,
    service: axum::routing::IntoMakeService<Router>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, ServeError> {
    let gated = GatedAcceptor::new(DefaultAcceptor, gate, limits.idle_timeout);
    Ok(match tls {
        None => {
            let mut server = axum_server::bind(addr)
                .acceptor(gated)
                .handle(handle.clone());
            crate::connections::configure(server.http_builder(), &limits);
            tokio::spawn(server.serve(service))
        }
        Some((cert, key)) => {
            let rustls = RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(io(format!(
                    "loading {} and {}",
                    cert.display(),
                    key.display()
                )))?;
            let acceptor = RustlsAcceptor::new(rustls)
                .handshake_timeout(limits.idle_timeout)
                .acceptor(gated);
            let mut server = axum_server::bind(addr)
                .acceptor(acceptor)
                .handle(handle.clone());
            crate::connections::configure(server.http_builder(), &limits);
            tokio::spawn(server.serve(service))
        }
    })
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
    let registry = &config.registry;
    if config.models.is_empty() && registry.models_dir.is_none() && !registry.allow_pull {
        return Err(ServeError::Config(
            "no model to serve: name one, or give --models-dir or --allow-pull to load \
             models on first use"
                .into(),
        ));
    }
    let models = ModelRegistry::start(registry.clone(), &config.models, &StderrProgress)?;
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
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| ServeError::Config(format!("generating a certificate: {e}")))?;
    write_private_file(&cert, generated.cert.pem().as_bytes())?;
    write_private_file(&key, generated.key_pair.serialize_pem().as_bytes())?;
    eprintln!(
        "helixflow: generated a self-signed certificate for localhost: {} (clients must trust \
         it or skip verification; pass --tls-cert/--tls-key for a real one)",
        cert.display()
    );
    Ok((cert, key))
}

/// Prints a bootstrap admin key once and keeps it in a file only its owner can read.
fn announce_admin_key(dir: &Path, created: &CreatedKey) -> Result<(), ServeError> {
    let file = dir.join("admin-key");
    write_private_file(&file, format!("{}\n", created.secret).as_bytes())?;
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
