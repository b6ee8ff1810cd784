-- Whether the user proved they receive mail at their address. Accounts from before
-- verification existed count as verified, so turning REQUIRE_EMAIL_VERIFICATION on does
-- not lock them out.
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0 CHECK (email_verified IN (0, 1));
UPDATE users SET email_verified = 1;
