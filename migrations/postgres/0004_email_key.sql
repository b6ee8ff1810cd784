-- Emails are unique under one case fold, computed by Roster (full Unicode lowercase) and
-- stored, so both backends and the Rust code compare the same key: lower() depends on the
-- database's locale. Rows with non-ASCII letters are re-folded by Roster in this same
-- transaction. COLLATE "C": byte order, as on SQLite; the index also serves the email sort.
ALTER TABLE users ADD COLUMN email_key TEXT;
UPDATE users SET email_key = lower(email);
ALTER TABLE users ALTER COLUMN email_key SET NOT NULL;
DROP INDEX users_email_lower_key;
CREATE UNIQUE INDEX users_email_key ON users (email_key COLLATE "C");
