-- Substring search that stays fast at a million users: a trigram index over email and
-- full_name. It only narrows the candidates; the LIKE of the query decides, so results
-- are exactly the literal substring rule.
CREATE VIRTUAL TABLE users_search USING fts5(
    email, full_name,
    content = 'users', content_rowid = 'id',
    tokenize = 'trigram'
);
INSERT INTO users_search (users_search) VALUES ('rebuild');

-- Bulk inserts pause the per-row trigger and feed the index set-wise in the same
-- transaction (one writer at a time, so no other writer ever sees it paused).
CREATE TABLE search_index_control (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    paused INTEGER NOT NULL DEFAULT 0
);
INSERT INTO search_index_control (id, paused) VALUES (1, 0);

CREATE TRIGGER users_search_after_insert AFTER INSERT ON users
WHEN (SELECT paused FROM search_index_control WHERE id = 1) = 0
BEGIN
    INSERT INTO users_search (rowid, email, full_name) VALUES (new.id, new.email, new.full_name);
END;

CREATE TRIGGER users_search_after_delete AFTER DELETE ON users
BEGIN
    INSERT INTO users_search (users_search, rowid, email, full_name)
    VALUES ('delete', old.id, old.email, old.full_name);
END;

CREATE TRIGGER users_search_after_update AFTER UPDATE OF email, full_name ON users
BEGIN
    INSERT INTO users_search (users_search, rowid, email, full_name)
    VALUES ('delete', old.id, old.email, old.full_name);
    INSERT INTO users_search (rowid, email, full_name) VALUES (new.id, new.email, new.full_name);
END;

-- Sorting by name without sorting the table.
CREATE INDEX users_full_name_sort_idx ON users (lower(coalesce(full_name, '')));
