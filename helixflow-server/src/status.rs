//! What the server is doing now and what a credential is: the values that the HTTP admin
//! routes (`/v1/admin/stats`, `/v1/admin/validate`) and the gRPC `Monitoring` and `Auth`
//! services both answer with.

use helixflow_core::platform::{Caller, Scope};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// One chat model's engine.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct EngineSnapshot {
    /// The model.
    pub(crate) model: String,
    /// Requests waiting for admission.
    pub(crate) waiting_requests: u64,
    /// Requests being generated.
    pub(crate) running_requests: u64,
    /// Sequences (choices) being generated.
    pub(crate) running_sequences: u64,
    /// KV cache blocks the memory budget allows.
    pub(crate) kv_blocks_total: u64,
    /// KV cache blocks in use by sequences.
    pub(crate) kv_blocks_used: u64,
    /// KV cache blocks free (unused cached blocks included).
    pub(crate) kv_blocks_free: u64,
    /// KV cache blocks held by the prefix cache.
    pub(crate) kv_blocks_cached: u64,
    /// Prompt blocks reused from the prefix cache.
    pub(crate) prefix_cache_hits: u64,
    /// Requests preempted for lack of KV blocks.
    pub(crate) preemptions: u64,
    /// Requests cancelled by their client.
    pub(crate) cancelled_requests: u64,
    /// Engine steps run.
    pub(crate) steps: u64,
    /// Tokens generated.
    pub(crate) tokens_generated: u64,
    /// Prompt tokens computed (prefill, recomputation included).
    pub(crate) prefill_tokens: u64,
}

/// The server's statistics at one moment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct StatsSnapshot {
    /// When they were read (Unix milliseconds).
    pub(crate) timestamp_ms: i64,
    /// Seconds since the server started.
    pub(crate) uptime_seconds: u64,
    /// HTTP requests answered, by any route and status.
    pub(crate) requests_total: u64,
    /// Prompt tokens that reached an engine.
    pub(crate) prompt_tokens_total: u64,
    /// Tokens generated.
    pub(crate) completion_tokens_total: u64,
    /// Each chat model's engine.
    pub(crate) engines: Vec<EngineSnapshot>,
}

/// The statistics of the server and of each chat model's engine now.
pub(crate) fn snapshot(state: &AppState) -> StatsSnapshot {
    let totals = state.metrics().totals();
    let engines = state
        .models()
        .engines()
        .iter()
        .map(|engine| {
            let s = engine.stats();
            EngineSnapshot {
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
    StatsSnapshot {
        timestamp_ms: i64::try_from(now.as_millis()).unwrap_or(i64::MAX),
        uptime_seconds: now.as_secs().saturating_sub(state.started()),
        requests_total: totals.requests,
        prompt_tokens_total: totals.prompt_tokens,
        completion_tokens_total: totals.completion_tokens,
        engines,
    }
}

/// What a credential is now.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct CredentialInfo {
    /// Whether it is accepted now.
    pub(crate) valid: bool,
    /// `operator`, `key` or `user`; absent when not valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<&'static str>,
    /// The key's or the user's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// What it may do.
    pub(crate) scopes: Vec<Scope>,
    /// The models it may use; absent: every model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) models: Option<Vec<String>>,
    /// When it stops working (Unix seconds), if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<i64>,
}

/// What `caller` (an authenticated credential, or `None`) is.
pub(crate) fn credential_info(caller: Option<Caller>) -> CredentialInfo {
    match caller {
        None => CredentialInfo::default(),
        Some(Caller::Operator) => CredentialInfo {
            valid: true,
            kind: Some("operator"),
            scopes: vec![Scope::Inference, Scope::Admin],
            ..CredentialInfo::default()
        },
        Some(Caller::Key(key)) => CredentialInfo {
            valid: true,
            kind: Some("key"),
            id: Some(key.id.clone()),
            scopes: key.scopes.clone(),
            models: key.models.clone(),
            expires_at: key.expires_at,
        },
        Some(Caller::User(session)) => CredentialInfo {
            valid: true,
            kind: Some("user"),
            id: Some(session.user_id.clone()),
            scopes: session.scopes.clone(),
            models: None,
            expires_at: Some(session.expires_at),
        },
    }
}

/// What a credential is now: 200 with `valid: false` for one that is refused.
pub(crate) async fn check(state: &AppState, credential: &str) -> Result<CredentialInfo, ApiError> {
    let caller = state
        .auth()
        .authenticate(Some(credential))
        .await
        .map_err(|e| ApiError::internal(format!("checking the credential failed: {e}")))?;
    Ok(credential_info(caller))
}
