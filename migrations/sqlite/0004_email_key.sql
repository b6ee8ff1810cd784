-- Emails are unique under one case fold, computed by Roster (full Unicode lowercase) and
-- stored, so both backends and the Rust code compare the same key: SQLite's lower() folds
-- only ASCII letters, and PostgreSQL's depends on the database's locale. Rows with other
-- letters are re-folded by Roster in this same transaction.
ALTER TABLE users ADD COLUMN email_key TEXT;
UPDATE users SET email_key = lower(email);
DROP INDEX users_email_lower_key;
CREATE UNIQUE INDEX users_email_key ON users (email_key);
