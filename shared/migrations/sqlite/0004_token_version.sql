-- Token version of each account: every password, e-mail or role change
-- increments it, and tokens carrying an older version are refused.
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0 CHECK (token_version >= 0);
