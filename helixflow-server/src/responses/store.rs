//! Where responses are kept for `GET /v1/responses/{id}` and `previous_response_id`: the
//! platform database, each with its owner (a key reads only its own), or, for a server
//! without one, the most recent ones in memory.

use std::collections::VecDeque;
use std::sync::Mutex;

use helixflow_core::chat_template::ChatMessage;
use helixflow_core::platform::{Caller, StoredResponse};
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

/// How many responses a server without a database keeps.
pub(crate) const IN_MEMORY: usize = 1024;

/// The responses of a server without a database, newest last.
#[derive(Debug, Default)]
pub(crate) struct MemoryResponses(Mutex<VecDeque<StoredResponse>>);

impl MemoryResponses {
    fn save(&self, response: StoredResponse) {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() == IN_MEMORY {
            kept.pop_front();
        }
        kept.push_back(response);
    }

    fn find(&self, owner: &str, id: &str) -> Option<StoredResponse> {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.iter()
            .rev()
            .find(|r| r.id == id && r.owner == owner)
            .cloned()
    }
}

/// Keeps `response` (the object) for `caller`, with the conversation it answered and its
/// answer, for a later response to continue.
pub(crate) async fn save(
    state: &AppState,
    caller: &Caller,
    response: &Value,
    mut conversation: Vec<ChatMessage>,
    reply: ChatMessage,
) -> Result<(), ApiError> {
    conversation.push(reply);
    let stored = StoredResponse {
        id: response["id"].as_str().unwrap_or_default().to_owned(),
        owner: caller.owner(),
        created_at: response["created_at"].as_i64().unwrap_or_default(),
        conversation: serde_json::to_string(&conversation)
            .map_err(|e| ApiError::internal(format!("storing the response: {e}")))?,
        response: response.to_string(),
    };
    match state.auth().store() {
        Some(store) => store.save_response(&stored).await.map_err(ApiError::from),
        None => {
            state.memory_responses().save(stored);
            Ok(())
        }
    }
}

/// Response `id` of `caller`, or a 404 naming `param` (a key never sees another's).
pub(crate) async fn find(
    state: &AppState,
    caller: &Caller,
    id: &str,
    param: Option<&str>,
) -> Result<StoredResponse, ApiError> {
    let owner = caller.owner();
    let found = match state.auth().store() {
        Some(store) => store.response(&owner, id).await.map_err(ApiError::from)?,
        None => state.memory_responses().find(&owner, id),
    };
    found.ok_or_else(|| ApiError {
        param: param.map(str::to_owned),
        ..ApiError::of_class(
            helixflow_core::ErrorClass::ModelNotFound,
            format!("Response with id '{id}' not found."),
        )
    })
}

/// The conversation of response `id` (its input and its answer), to continue from.
pub(crate) async fn conversation(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Vec<ChatMessage>, ApiError> {
    let stored = find(state, caller, id, Some("previous_response_id")).await?;
    serde_json::from_str(&stored.conversation)
        .map_err(|e| ApiError::internal(format!("the stored response {id} is unreadable: {e}")))
}
