-- The durable outbox: mail, webhooks and deferred jobs are rows written in the same
-- transaction as the change that causes them, and delivered afterwards by a background
-- sender with retries. A row is leased (locked_until) while it is being delivered.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    topic           TEXT    NOT NULL,
    -- Rows with the same key are delivered in id order, one at a time (webhooks per user).
    ordering_key    TEXT,
    payload         TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    locked_until    TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    last_error      TEXT
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_ordering_idx ON outbox (ordering_key, id)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
CREATE INDEX outbox_finished_idx ON outbox (finished_at) WHERE status <> 'pending';
CREATE INDEX outbox_failed_idx ON outbox (id) WHERE status = 'failed';

-- One-time tokens (password reset, email verification, invitation), stored hashed. One
-- per user and kind: a newer token replaces the older one.
CREATE TABLE one_time_tokens (
    token_hash TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    user_id    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The address the link was sent to: a verification is void once the email changed.
    email_key  TEXT    NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, kind)
);
CREATE INDEX one_time_tokens_expires_idx ON one_time_tokens (expires_at);
