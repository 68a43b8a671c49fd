//! The gRPC administration services (`proto/helixflow/v1/admin.proto`): `Auth` (keys and
//! access tokens) and `Monitoring` (statistics and usage). Every call needs the `admin` scope.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::{self, Stream};
use helixflow_core::calendar::utc_date_string;
use helixflow_core::platform::{
    ApiKey, BudgetPeriod, KeyLimits, NewKey, PlatformError, Scope, Store, UsageFilter, UsageGroup,
};
use tonic::{Request, Response, Status};

use super::{proto, Phase};
use crate::auth::{bearer, scoped_caller};
use crate::error::ApiError;
use crate::state::AppState;
use crate::status::{check, snapshot, CredentialInfo};
use tokio::sync::watch;

/// The loaded state, if the caller of `request` has the `admin` scope.
pub(super) async fn admin<'a, T>(
    slot: &'a OnceLock<AppState>,
    request: &Request<T>,
) -> Result<&'a AppState, Status> {
    let state = slot
        .get()
        .ok_or_else(|| ApiError::overloaded("the models are still loading"))?;
    let metadata = request.metadata().get("authorization");
    let token = bearer(metadata.and_then(|v| v.to_str().ok()));
    scoped_caller(state, token, Scope::Admin).await?;
    Ok(state)
}

/// The platform database, or FAILED_PRECONDITION when the server runs without one.
fn store(state: &AppState) -> Result<&Store, Status> {
    state.auth().store().ok_or_else(|| {
        Status::failed_precondition(
            "This server has no platform database (it was started with --no-database).",
        )
    })
}

/// A store failure as a status, classified as HTTP classifies it.
fn platform_status(e: PlatformError) -> Status {
    ApiError::from(e).into()
}

fn scopes(names: &[String]) -> Result<Vec<Scope>, Status> {
    names
        .iter()
        .map(|n| Scope::parse(n).map_err(platform_status))
        .collect()
}

fn limits(limits: Option<proto::Limits>) -> Result<KeyLimits, Status> {
    let limits = limits.unwrap_or_default();
    Ok(KeyLimits {
        rpm: limits.rpm,
        tpm: limits.tpm,
        budget_tokens: limits.budget_tokens,
        budget_period: limits
            .budget_period
            .as_deref()
            .map(BudgetPeriod::parse)
            .transpose()
            .map_err(platform_status)?,
    })
}

fn key(key: ApiKey) -> proto::ApiKey {
    let period = key.limits.budget_period.map(|p| match p {
        BudgetPeriod::Day => "day".to_string(),
        BudgetPeriod::Month => "month".to_string(),
    });
    proto::ApiKey {
        id: key.id,
        prefix: key.prefix,
        name: key.name,
        owner: key.owner,
        scopes: key.scopes.iter().map(|s| s.as_str().to_string()).collect(),
        models: key.models.unwrap_or_default(),
        limits: Some(proto::Limits {
            rpm: key.limits.rpm,
            tpm: key.limits.tpm,
            budget_tokens: key.limits.budget_tokens,
            budget_period: period,
        }),
        created_at: key.created_at,
        expires_at: key.expires_at,
        revoked_at: key.revoked_at,
    }
}

/// Keys and access tokens.
#[derive(Clone)]
pub struct AuthService {
    state: Arc<OnceLock<AppState>>,
}

impl AuthService {
    /// A service that answers once `state` is set.
    pub fn new(state: Arc<OnceLock<AppState>>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl proto::auth_server::Auth for AuthService {
    async fn create_key(
        &self,
        request: Request<proto::CreateKeyRequest>,
    ) -> Result<Response<proto::CreateKeyResponse>, Status> {
        let state = admin(&self.state, &request).await?;
        let request = request.into_inner();
        let mut new = NewKey::inference(request.name);
        new.owner = request.owner;
        if !request.scopes.is_empty() {
            new.scopes = scopes(&request.scopes)?;
        }
        new.models = (!request.models.is_empty()).then_some(request.models);
        new.limits = limits(request.limits)?;
        new.expires_at = request.expires_at;
        let created = store(state)?
            .create_key(new)
            .await
            .map_err(platform_status)?;
        Ok(Response::new(proto::CreateKeyResponse {
            key: Some(key(created.key)),
            secret: created.secret,
        }))
    }

    async fn list_keys(
        &self,
        request: Request<proto::ListKeysRequest>,
    ) -> Result<Response<proto::ListKeysResponse>, Status> {
        let state = admin(&self.state, &request).await?;
        let keys = store(state)?.list_keys().await.map_err(platform_status)?;
        Ok(Response::new(proto::ListKeysResponse {
            keys: keys.into_iter().map(key).collect(),
        }))
    }

    async fn revoke_key(
        &self,
        request: Request<proto::RevokeKeyRequest>,
    ) -> Result<Response<proto::RevokeKeyResponse>, Status> {
        let state = admin(&self.state, &request).await?;
        let id = request.into_inner().id;
        if !store(state)?
            .revoke_key(&id)
            .await
            .map_err(platform_status)?
        {
            return Err(Status::not_found(format!("No key has the id `{id}`.")));
        }
        state.auth().forget(&id);
        Ok(Response::new(proto::RevokeKeyResponse {
            id,
            revoked: true,
        }))
    }

    async fn validate(
        &self,
        request: Request<proto::ValidateRequest>,
    ) -> Result<Response<proto::ValidateResponse>, Status> {
        let state = admin(&self.state, &request).await?;
        let credential = request.into_inner().credential;
        Ok(Response::new(validation(check(state, &credential).await?)))
    }

    async fn revoke_token(
        &self,
        request: Request<proto::RevokeTokenRequest>,
    ) -> Result<Response<proto::RevokeTokenResponse>, Status> {
        let state = admin(&self.state, &request).await?;
        let store = store(state)?;
        let (jti, user_id, expires_at) = match request.into_inner().target {
            Some(proto::revoke_token_request::Target::Token(token)) => {
                let id = store
                    .token_id(&token)
                    .await
                    .map_err(platform_status)?
                    .ok_or_else(|| {
                        Status::invalid_argument("This is not a token of this server.")
                    })?;
                (id.jti, Some(id.user_id), Some(id.expires_at))
            }
            Some(proto::revoke_token_request::Target::Jti(jti)) => (jti, None, None),
            None => return Err(Status::invalid_argument("give a token or its jti")),
        };
        store
            .revoke_token(&jti, user_id.as_deref(), expires_at)
            .await
            .map_err(platform_status)?;
        state.auth().forget_token(&jti);
        Ok(Response::new(proto::RevokeTokenResponse {
            jti,
            revoked: true,
        }))
    }
}

/// What a credential is, as `Validate` reports it.
fn validation(info: CredentialInfo) -> proto::ValidateResponse {
    proto::ValidateResponse {
        valid: info.valid,
        kind: info.kind.unwrap_or_default().to_string(),
        id: info.id.unwrap_or_default(),
        scopes: info.scopes.iter().map(|s| s.as_str().to_string()).collect(),
        models: info.models.unwrap_or_default(),
        expires_at: info.expires_at,
    }
}

/// Statistics and usage.
#[derive(Clone)]
pub struct MonitoringService {
    state: Arc<OnceLock<AppState>>,
    phase: watch::Receiver<Phase>,
}

impl MonitoringService {
    /// A service that answers once `state` is set.
    pub fn new(state: Arc<OnceLock<AppState>>) -> Self {
        Self {
            state,
            phase: Phase::never(),
        }
    }

    /// The same service, ending its stats feeds when `phase` reaches [`Phase::Draining`].
    pub fn with_phase(self, phase: watch::Receiver<Phase>) -> Self {
        Self { phase, ..self }
    }
}

/// The statistics of the server and of each chat model's engine now.
fn stats(state: &AppState) -> proto::Stats {
    let now = snapshot(state);
    proto::Stats {
        timestamp_ms: now.timestamp_ms,
        uptime_seconds: now.uptime_seconds,
        requests_total: now.requests_total,
        prompt_tokens_total: now.prompt_tokens_total,
        completion_tokens_total: now.completion_tokens_total,
        engines: now
            .engines
            .into_iter()
            .map(|e| proto::EngineStats {
                model: e.model,
                waiting_requests: e.waiting_requests,
                running_requests: e.running_requests,
                running_sequences: e.running_sequences,
                kv_blocks_total: e.kv_blocks_total,
                kv_blocks_used: e.kv_blocks_used,
                kv_blocks_free: e.kv_blocks_free,
                kv_blocks_cached: e.kv_blocks_cached,
                prefix_cache_hits: e.prefix_cache_hits,
                preemptions: e.preemptions,
                cancelled_requests: e.cancelled_requests,
                steps: e.steps,
                tokens_generated: e.tokens_generated,
                prefill_tokens: e.prefill_tokens,
            })
            .collect(),
    }
}

/// A feed of statistics.
type StatsStream = Pin<Box<dyn Stream<Item = Result<proto::Stats, Status>> + Send>>;

/// The shortest interval `WatchStats` accepts, so a caller cannot make it spin.
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);

#[tonic::async_trait]
impl proto::monitoring_server::Monitoring for MonitoringService {
    type WatchStatsStream = StatsStream;

    async fn get_stats(
        &self,
        request: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::Stats>, Status> {
        let state = admin(&self.state, &request).await?;
        Ok(Response::new(stats(state)))
    }

    async fn watch_stats(
        &self,
        request: Request<proto::WatchStatsRequest>,
    ) -> Result<Response<StatsStream>, Status> {
        let state = admin(&self.state, &request).await?.clone();
        let interval = match request.into_inner().interval_ms {
            0 => Duration::from_secs(1),
            ms => Duration::from_millis(u64::from(ms)).max(MIN_WATCH_INTERVAL),
        };
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Ends when the caller goes away (tonic drops the stream) or the server shuts down.
        let start = (state, ticks, self.phase.clone());
        let feed = stream::unfold(start, |(state, mut ticks, mut phase)| async move {
            tokio::select! {
                _ = ticks.tick() => Some((Ok(stats(&state)), (state, ticks, phase))),
                () = Phase::reached(&mut phase, Phase::Draining) => None,
            }
        });
        Ok(Response::new(Box::pin(feed)))
    }

    async fn get_usage(
        &self,
        request: Request<proto::GetUsageRequest>,
    ) -> Result<Response<proto::GetUsageResponse>, Status> {
        let state = admin(&self.state, &request).await?;
        let request = request.into_inner();
        let group = match request.group_by.as_str() {
            "" => UsageGroup::Day,
            name => UsageGroup::parse(name).map_err(platform_status)?,
        };
        let filter = UsageFilter {
            since: request.start_time,
            until: request.end_time,
            ..UsageFilter::default()
        };
        let totals = store(state)?
            .usage_report(&filter, &[group])
            .await
            .map_err(platform_status)?;
        let groups = totals
            .into_iter()
            .map(|t| proto::UsageGroup {
                group: match group {
                    UsageGroup::Key => t.key_id.unwrap_or_default(),
                    UsageGroup::Model => t.model.unwrap_or_default(),
                    UsageGroup::Day => t.day.map(utc_date_string).unwrap_or_default(),
                },
                requests: t.requests,
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                cancelled_requests: t.cancelled,
            })
            .collect();
        Ok(Response::new(proto::GetUsageResponse { groups }))
    }
}
