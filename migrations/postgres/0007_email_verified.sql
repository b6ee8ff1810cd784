-- Whether the user proved they receive mail at their address. Accounts from before
-- verification existed count as verified, so turning REQUIRE_EMAIL_VERIFICATION on does
-- not lock them out.
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE users SET email_verified = TRUE;
