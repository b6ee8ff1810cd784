-- Timestamps are UTC microseconds since the Unix epoch.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    email           TEXT    NOT NULL CHECK (length(email) <= 254),
    full_name       TEXT    CHECK (full_name IS NULL OR length(full_name) <= 255),
    hashed_password TEXT    NOT NULL,
    is_active       INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    is_superuser    INTEGER NOT NULL DEFAULT 0 CHECK (is_superuser IN (0, 1)),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX users_is_active_idx ON users (is_active);
CREATE INDEX users_is_superuser_idx ON users (is_superuser);
CREATE INDEX users_created_at_idx ON users (created_at);
CREATE INDEX users_is_active_created_at_idx ON users (is_active, created_at);
-- Partial indexes: the dashboard and filtered lists count the rare flag values cheaply.
CREATE INDEX users_active_partial_idx ON users (is_active) WHERE is_active = 1;
CREATE INDEX users_superuser_partial_idx ON users (is_superuser) WHERE is_superuser = 1;

CREATE TABLE refresh_tokens (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT    NOT NULL UNIQUE,
    family_id   TEXT    NOT NULL,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER,
    created_at  INTEGER NOT NULL
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

CREATE TABLE app_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
