-- The audit trail: one row per change to an account or a session, written in the same
-- transaction as the change. No foreign keys: events outlive the users they name.
CREATE TABLE audit_events (
    id         BIGSERIAL   PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    -- Byte order, so `user.*` is the range [user., user/) whatever the database collation.
    action     TEXT        COLLATE "C" NOT NULL,
    actor_id   BIGINT,
    actor_ip   TEXT,
    target_id  BIGINT,
    request_id TEXT,
    -- JSON; never a secret's value.
    details    JSONB   NOT NULL DEFAULT '{}'
);
-- Newest first is by id; each filter has an index ending in id, so a filtered page is an
-- index range read backwards.
CREATE INDEX audit_events_action_idx ON audit_events (action, id);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, id) WHERE actor_id IS NOT NULL;
CREATE INDEX audit_events_target_idx ON audit_events (target_id, id) WHERE target_id IS NOT NULL;
CREATE INDEX audit_events_at_idx ON audit_events (at);
