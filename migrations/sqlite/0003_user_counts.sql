-- Dashboard totals kept by triggers in the writing transaction: O(1) to read at any size,
-- where counting even through indexes grows with the table. Bulk loads pause the per-row
-- triggers (search_index_control.paused) and add their batch set-wise.
CREATE TABLE user_counts (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    total      INTEGER NOT NULL,
    inactive   INTEGER NOT NULL,
    superusers INTEGER NOT NULL
);
INSERT INTO user_counts (id, total, inactive, superusers)
SELECT 1, COUNT(*), COALESCE(SUM(is_active = 0), 0), COALESCE(SUM(is_superuser = 1), 0) FROM users;

CREATE TRIGGER user_counts_after_insert AFTER INSERT ON users
WHEN (SELECT paused FROM search_index_control WHERE id = 1) = 0
BEGIN
    UPDATE user_counts
    SET total = total + 1,
        inactive = inactive + (new.is_active = 0),
        superusers = superusers + (new.is_superuser = 1)
    WHERE id = 1;
END;

CREATE TRIGGER user_counts_after_delete AFTER DELETE ON users
BEGIN
    UPDATE user_counts
    SET total = total - 1,
        inactive = inactive - (old.is_active = 0),
        superusers = superusers - (old.is_superuser = 1)
    WHERE id = 1;
END;

CREATE TRIGGER user_counts_after_update AFTER UPDATE OF is_active, is_superuser ON users
BEGIN
    UPDATE user_counts
    SET inactive = inactive + (new.is_active = 0) - (old.is_active = 0),
        superusers = superusers + (new.is_superuser = 1) - (old.is_superuser = 1)
    WHERE id = 1;
END;
