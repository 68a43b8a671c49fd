//! The gRPC `Models` service (`admin.proto`): the models in memory, loaded and unloaded while
//! serving, as `/v1/admin/models` does over HTTP. Every call needs the `admin` scope.

use std::sync::{Arc, OnceLock};

use helixflow_core::registry::{KeepAlive, ModelStatus, Unloaded};
use tonic::{Request, Response, Status};

use super::admin::admin;
use super::proto;
use crate::error::ApiError;
use crate::state::AppState;

/// Loading and unloading models.
#[derive(Clone)]
pub struct ModelsService {
    state: Arc<OnceLock<AppState>>,
}

impl ModelsService {
    /// A service that answers once `state` is set.
    pub fn new(state: Arc<OnceLock<AppState>>) -> Self {
        Self { state }
    }
}

fn in_memory(status: ModelStatus) -> proto::ModelInMemory {
    proto::ModelInMemory {
        state: status.state.as_str().to_string(),
        kind: status.kind.map(|k| k.to_string()).unwrap_or_default(),
        memory_bytes: status.footprint.total(),
        in_flight: status.in_flight as u64,
        loaded_at: status.loaded_at,
        last_used: status.last_used,
        expires_at: status.expires_at,
        id: status.id,
    }
}

#[tonic::async_trait]
impl proto::models_server::Models for ModelsService {
    async fn list_models(
        &self,
        request: Request<proto::ListModelsInMemoryRequest>,
    ) -> Result<Response<proto::ListModelsInMemoryResponse>, Status> {
        let state = admin(&self.state, &request).await?;
        let memory = state.models().memory();
        Ok(Response::new(proto::ListModelsInMemoryResponse {
            models: state.models().list().into_iter().map(in_memory).collect(),
            reserved_bytes: memory.reserved_bytes,
            budget_bytes: memory.budget_bytes,
        }))
    }

    async fn load_model(
        &self,
        request: Request<proto::LoadModelRequest>,
    ) -> Result<Response<proto::ModelInMemory>, Status> {
        let models = admin(&self.state, &request).await?.models().clone();
        let request = request.into_inner();
        let keep_alive = match request.keep_alive.trim() {
            "" => None,
            text => Some(KeepAlive::parse(text).map_err(ApiError::from)?),
        };
        let status = tokio::task::spawn_blocking(move || models.load(&request.model, keep_alive))
            .await
            .map_err(|e| ApiError::internal(format!("loading the model failed: {e}")))?
            .map_err(ApiError::from)?;
        Ok(Response::new(in_memory(status)))
    }

    async fn unload_model(
        &self,
        request: Request<proto::UnloadModelRequest>,
    ) -> Result<Response<proto::UnloadModelResponse>, Status> {
        let state = admin(&self.state, &request).await?;
        let in_flight = match state
            .models()
            .unload(&request.get_ref().model)
            .map_err(ApiError::from)?
        {
            Unloaded::Now => 0,
            Unloaded::WhenIdle { in_flight } => in_flight as u64,
        };
        Ok(Response::new(proto::UnloadModelResponse {
            unloaded: in_flight == 0,
            in_flight,
        }))
    }
}
