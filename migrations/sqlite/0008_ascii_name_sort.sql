-- PostgreSQL re-creates its name sort index (ASCII-only folding, as SQLite's lower()
-- already does); nothing changes here. Kept so both backends share version numbers.
SELECT 1;
