//! The gRPC administration services (`proto/helixflow/v1/admin.proto`): `Auth` (keys and
//! access tokens) and `Monitoring` (statistics and usage). Every call needs the `admin` scope.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::{self, Stream};
use helixflow_core::calendar::utc_date_string;
use helixflow_core::platform::{
    ApiKey, BudgetPeriod, Caller, KeyLimits, NewKey, PlatformError, Scope, Store, UsageFilter,
    UsageGroup,
};
use tonic::{Request, Response, Status};

use super::proto;
use crate::auth::{bearer, scoped_caller};
use crate::error::ApiError;
use crate::state::AppState;

/// The loaded state, if the caller of `request` has the `admin` scope.
async fn admin<'a, T>(
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

/// A store failure as a status: the caller's mistakes are INVALID_ARGUMENT, the rest INTERNAL.
fn platform_status(e: PlatformError) -> Status {
    match e {
        PlatformError::Invalid(message) => Status::invalid_argument(message),
        other => Status::internal(other.to_string()),
    }
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
        let caller = state
            .auth()
            .authenticate(Some(&credential))
            .await
            .map_err(platform_status)?;
        Ok(Response::new(validation(caller)))
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
fn validation(caller: Option<Caller>) -> proto::ValidateResponse {
    let all_scopes = || vec!["inference".to_string(), "admin".to_string()];
    match caller {
        None => proto::ValidateResponse::default(),
        Some(Caller::Operator) => proto::ValidateResponse {
            valid: true,
            kind: "operator".into(),
            scopes: all_scopes(),
            ..Default::default()
        },
        Some(Caller::Key(k)) => proto::ValidateResponse {
            valid: true,
            kind: "key".into(),
            id: k.id.clone(),
            scopes: k.scopes.iter().map(|s| s.as_str().to_string()).collect(),
            models: k.models.clone().unwrap_or_default(),
            expires_at: k.expires_at,
        },
        Some(Caller::User(session)) => proto::ValidateResponse {
            valid: true,
            kind: "user".into(),
            id: session.user_id.clone(),
            scopes: session
                .scopes
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
            models: Vec::new(),
            expires_at: Some(session.expires_at),
        },
    }
}

/// Statistics and usage.
#[derive(Clone)]
pub struct MonitoringService {
    state: Arc<OnceLock<AppState>>,
}

impl MonitoringService {
    /// A service that answers once `state` is set.
    pub fn new(state: Arc<OnceLock<AppState>>) -> Self {
        Self { state }
    }
}

/// The statistics of the server and of each chat model's engine now.
fn stats(state: &AppState) -> proto::Stats {
    let totals = state.metrics().totals();
    let engines = state
        .models()
        .engines()
        .map(|engine| {
            let s = engine.stats();
            proto::EngineStats {
                model: engine.model().name().to_string(),
                waiting_requests: s.waiting_requests as u64,
                running_requests: s.running_requests as u64,
                running_sequences: s.running_seqs as u64,
                kv_blocks_total: s.kv_blocks_total as u64,
                kv_blocks_used: s.kv_blocks_used as u64,
                kv_blocks_free: s.kv_blocks_free as u64,
                kv_blocks_cached: s.kv_blocks_cached as u64,
                prefix_cache_hits: s.prefix_cache_hits,
                preemptions: s.preemptions,
                cancelled_requests: s.cancelled_requests,
                steps: s.steps,
                tokens_generated: s.tokens_generated,
                prefill_tokens: s.prefill_tokens,
            }
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    proto::Stats {
        timestamp_ms: i64::try_from(now.as_millis()).unwrap_or(i64::MAX),
        uptime_seconds: now.as_secs().saturating_sub(state.started()),
        requests_total: totals.requests,
        prompt_tokens_total: totals.prompt_tokens,
        completion_tokens_total: totals.completion_tokens,
        engines,
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
        // Ends when the caller goes away: tonic drops the stream.
        let feed = stream::unfold((state, ticks), |(state, mut ticks)| async move {
            ticks.tick().await;
            Some((Ok(stats(&state)), (state, ticks)))
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
