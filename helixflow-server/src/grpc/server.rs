//! Running the gRPC server: TLS, authentication, health, graceful shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpListener;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use tonic_health::ServingStatus;

use super::proto::inference_server::InferenceServer;
use super::InferenceService;
use crate::auth::constant_time_eq;
use crate::error::ApiError;
use crate::serve::ServeError;
use crate::state::AppState;

/// Refuses calls without `authorization: Bearer <key>` when the server has a key.
#[derive(Clone)]
struct RequireKey(Option<Arc<str>>);

impl Interceptor for RequireKey {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(key) = &self.0 else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(presented.as_bytes(), key.as_bytes()) {
            Ok(request)
        } else {
            Err(ApiError::unauthorized().into())
        }
    }
}

/// Serves the inference and health services on `listener` until `shutdown` resolves, then
/// lets in-flight calls finish. `ready` resolves with the loaded state (or never, if loading
/// fails); until then health says NOT_SERVING and calls are UNAVAILABLE.
pub async fn serve_grpc(
    listener: TcpListener,
    tls: Option<(PathBuf, PathBuf)>,
    api_key: Option<String>,
    ready: impl Future<Output = AppState> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
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
    let mut builder = Server::builder();
    if let Some((cert, key)) = tls {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ServeError::Io {
                what: format!("reading {}", path.display()),
                source,
            })
        };
        let identity = Identity::from_pem(read(&cert)?, read(&key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServeError::Config(format!("gRPC TLS: {e}")))?;
    }
    let inference = InferenceServer::with_interceptor(
        InferenceService::new(slot),
        RequireKey(api_key.map(Arc::from)),
    );
    builder
        .add_service(health_service)
        .add_service(inference)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
        .map_err(|e| ServeError::Config(format!("the gRPC server failed: {e}")))
}
