-- Token version of each account: every password, e-mail or role change
-- increments it, and tokens carrying an older version are refused.
ALTER TABLE users ADD COLUMN IF NOT EXISTS token_version bigint NOT NULL DEFAULT 0;
