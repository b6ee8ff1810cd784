-- Sign-ups per UTC day, kept by triggers like user_counts: the dashboard's "today" and
-- "this week" start at a UTC midnight, so each is a sum over at most eight rows here instead
-- of a walk over that many users in the created_at index (≈ 190,000 entries for a week at
-- ten million users). Days are whole multiples of 86,400,000,000 µs since the epoch.
CREATE TABLE user_signups_by_day (
    day   INTEGER PRIMARY KEY,
    users INTEGER NOT NULL
);
INSERT INTO user_signups_by_day (day, users)
SELECT created_at / 86400000000, COUNT(*) FROM users WHERE true GROUP BY 1;

-- Bulk loads pause these like the other insert triggers and add a batch's days at once.
CREATE TRIGGER user_signups_after_insert AFTER INSERT ON users
WHEN (SELECT paused FROM search_index_control WHERE id = 1) = 0
BEGIN
    INSERT INTO user_signups_by_day (day, users) VALUES (new.created_at / 86400000000, 1)
    ON CONFLICT (day) DO UPDATE SET users = users + 1;
END;

CREATE TRIGGER user_signups_after_delete AFTER DELETE ON users
BEGIN
    UPDATE user_signups_by_day SET users = users - 1 WHERE day = old.created_at / 86400000000;
END;

CREATE TRIGGER user_signups_after_update AFTER UPDATE OF created_at ON users
WHEN new.created_at / 86400000000 <> old.created_at / 86400000000
BEGIN
    UPDATE user_signups_by_day SET users = users - 1 WHERE day = old.created_at / 86400000000;
    INSERT INTO user_signups_by_day (day, users) VALUES (new.created_at / 86400000000, 1)
    ON CONFLICT (day) DO UPDATE SET users = users + 1;
END;
