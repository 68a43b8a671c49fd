//! Running the gRPC server: TLS, authentication, health, graceful shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use super::proto::auth_server::AuthServer;
use super::proto::inference_server::InferenceServer;
use super::proto::models_server::ModelsServer;
use super::proto::monitoring_server::MonitoringServer;
use super::{AuthService, InferenceService, ModelsService, MonitoringService, Phase};
use crate::connections::{Admitted, ConnectionGate, ConnectionLimits};
use crate::serve::ServeError;
use crate::state::AppState;

/// Serves the inference, administration and health services on `listener` until `shutdown`
/// resolves, then lets in-flight calls finish for `grace` and cuts off the streams still open.
/// Calls authenticate as HTTP requests do (`authorization: Bearer <key>` metadata). `ready`
/// resolves with the loaded state (or never, if loading fails); until then health says
/// NOT_SERVING and calls are UNAVAILABLE.
pub async fn serve_grpc(
    listener: TcpListener,
    tls: Option<(PathBuf, PathBuf)>,
    ready: impl Future<Output = AppState> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    (gate, limits): (ConnectionGate, ConnectionLimits),
) -> Result<(), ServeError> {
    let slot: Arc<OnceLock<AppState>> = Arc::default();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<InferenceServer<InferenceService>>()
        .await;
    {
        let slot = slot.clone();
        tokio::spawn(async move {
            let _ = slot.set(ready.await);
            health.set_service_status("", ServingStatus::Serving).await;
            health
                .set_serving::<InferenceServer<InferenceService>>()
                .await;
        });
    }
    let mut builder = Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.idle_timeout))
        .http2_keepalive_timeout(Some(limits.idle_timeout));
    if let Some((cert, key)) = tls {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ServeError::Io {
                what: format!("reading {}", path.display()),
                source,
            })
        };
        let identity = Identity::from_pem(read(&cert)?, read(&key)?);
        builder = builder
            .tls_config(
                ServerTlsConfig::new()
                    .identity(identity)
                    .timeout(limits.idle_timeout),
            )
            .map_err(|e| ServeError::Config(format!("gRPC TLS: {e}")))?;
    }
    // Draining when the shutdown comes; `grace` later, streams still open are cut off, so
    // that every generation has ended (and been accounted for) when this returns.
    let (phase_tx, phase) = tokio::sync::watch::channel(Phase::Serving);
    let shutdown = async move {
        shutdown.await;
        let _ = phase_tx.send(Phase::Draining);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = phase_tx.send(Phase::Cut);
        });
    };
    let inference = InferenceServer::new(InferenceService::new(slot.clone()));
    let auth = AuthServer::new(AuthService::new(slot.clone()));
    let models = ModelsServer::new(ModelsService::new(slot.clone()));
    let monitoring = MonitoringServer::new(MonitoringService::new(slot).with_phase(phase));
    builder
        .add_service(health_service)
        .add_service(inference)
        .add_service(auth)
        .add_service(models)
        .add_service(monitoring)
        .serve_with_incoming_shutdown(
            admitted(TcpIncoming::from(listener), gate, limits.idle_timeout),
            shutdown,
        )
        .await
        .map_err(|e| ServeError::Config(format!("the gRPC server failed: {e}")))
}

/// The connections of `incoming` that `gate` admits; the others are closed at once.
fn admitted(
    incoming: TcpIncoming,
    gate: ConnectionGate,
    first_byte: Duration,
) -> impl futures_util::Stream<Item = std::io::Result<Admitted<tokio::net::TcpStream>>> {
    use futures_util::StreamExt;
    incoming.filter_map(move |connection| {
        let admitted = match connection {
            Ok(stream) => gate
                .admit()
                .map(|permit| Ok(Admitted::new(stream, permit, first_byte))),
            Err(e) => Some(Err(e)),
        };
        std::future::ready(admitted)
    })
}
