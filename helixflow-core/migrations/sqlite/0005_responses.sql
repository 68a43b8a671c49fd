-- Responses of the Responses API, kept for `GET /v1/responses/{id}` and
-- `previous_response_id`: each readable only by its owner (a key's id, a user's id, or
-- `operator`). `conversation` is the JSON array of chat messages it answered plus its answer;
-- `response` the response object.
CREATE TABLE responses (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    conversation TEXT NOT NULL,
    response     TEXT NOT NULL
);
CREATE INDEX responses_owner ON responses (owner, created_at);
