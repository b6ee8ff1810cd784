-- Substring search that stays fast at a million users: ILIKE '%term%' uses trigram GIN
-- indexes for terms of 3+ characters.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX users_email_trgm_idx ON users USING gin (email gin_trgm_ops);
CREATE INDEX users_full_name_trgm_idx ON users USING gin (full_name gin_trgm_ops);

-- Sorting by name without sorting the table.
CREATE INDEX users_full_name_sort_idx ON users ((lower(coalesce(full_name, ''))) COLLATE "C", id);
