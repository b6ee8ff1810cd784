-- Names sort by their ASCII-lowercase form on both backends (SQLite's lower() folds only
-- ASCII; PostgreSQL's follows the database's locale unless the input is COLLATE "C"), so a
-- cursor's key is the same value in Rust, SQLite and PostgreSQL.
DROP INDEX users_full_name_sort_idx;
CREATE INDEX users_full_name_sort_idx ON users ((lower(coalesce(full_name, '') COLLATE "C") COLLATE "C"), id);
