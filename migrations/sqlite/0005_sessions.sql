-- One row per login. Refresh tokens belong to a session: refresh_tokens.family_id is the
-- session's id. Every authenticated request checks its session is live.
CREATE TABLE sessions (
    id           TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    -- Absolute: SESSION_MAX_LIFETIME_SECS after the login, however often it is refreshed.
    expires_at   INTEGER NOT NULL,
    ip           TEXT,
    user_agent   TEXT,
    revoked_at   INTEGER
);
CREATE INDEX sessions_user_idx ON sessions (user_id, created_at);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);
CREATE INDEX sessions_revoked_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);

-- Refresh-token families from before sessions become sessions; one with no usable token
-- left has ended.
INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, revoked_at)
SELECT family_id, MIN(user_id), MIN(created_at), MAX(created_at), MAX(expires_at),
       CASE WHEN SUM(used_at IS NULL AND revoked_at IS NULL) = 0
            THEN MAX(COALESCE(revoked_at, used_at)) END
FROM refresh_tokens
GROUP BY family_id;
