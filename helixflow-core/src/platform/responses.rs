//! Stored responses of the Responses API: each with its owner (the key, user or operator
//! that made it, who alone may read it), the conversation it answered (to continue from with
//! `previous_response_id`) and the response object itself, both as JSON text.

use super::store::on_pool;
use super::{Caller, PlatformError, Store};

/// A response as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredResponse {
    /// The response's id (`resp_…`).
    pub id: String,
    /// Who made it: [`Caller::owner`].
    pub owner: String,
    /// When (Unix seconds).
    pub created_at: i64,
    /// The messages it answered and its answer, as a JSON array of chat messages.
    pub conversation: String,
    /// The response object, as JSON.
    pub response: String,
}

impl Caller {
    /// Who owns what the caller stores: a key's id, a user's id, or `operator`.
    pub fn owner(&self) -> String {
        match self {
            Caller::Operator => "operator".to_owned(),
            Caller::Key(key) => key.id.clone(),
            Caller::User(session) => session.user_id.clone(),
        }
    }
}

impl Store {
    /// Keeps a response (a second one with the same id replaces the first).
    pub async fn save_response(&self, response: &StoredResponse) -> Result<(), PlatformError> {
        let sql = "INSERT INTO responses (id, owner, created_at, conversation, response) \
                   VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (id) DO UPDATE SET owner = $2, created_at = $3, \
                   conversation = $4, response = $5";
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(&response.id)
            .bind(&response.owner)
            .bind(response.created_at)
            .bind(&response.conversation)
            .bind(&response.response)
            .execute(pool)
            .await
            .map(|_| ())?);
        Ok(())
    }

    /// Response `id` if `owner` made it.
    pub async fn response(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<StoredResponse>, PlatformError> {
        let sql = "SELECT id, owner, created_at, conversation, response FROM responses \
                   WHERE id = $1 AND owner = $2";
        Ok(on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(id)
            .bind(owner)
            .fetch_optional(pool)
            .await?))
    }
}
