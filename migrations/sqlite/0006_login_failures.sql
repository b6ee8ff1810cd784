-- Failed password checks per account (keyed by the folded email, whether or not an
-- account has it), in the database so the limit holds across instances. A window starts
-- at the first failure and lasts LOGIN_FAILURE_WINDOW_SECS.
CREATE TABLE login_failures (
    email_key    TEXT    PRIMARY KEY,
    failures     INTEGER NOT NULL,
    window_start INTEGER NOT NULL
);
CREATE INDEX login_failures_window_idx ON login_failures (window_start);
