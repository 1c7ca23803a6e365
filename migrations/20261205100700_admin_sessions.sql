-- Up Migration

-- Sign-ins of the admin pages (`bulk-import serve`, /admin): a person signs in with an API key and gets a session
-- cookie. Only a SHA-256 of the session token is stored (the token is 32 random bytes, as an API key is), so a copy
-- of this table signs nobody in. A session acts as its key: revoking the key ends its sessions (the lookup joins
-- api_keys), deleting the key deletes them. The CSRF token of a session is derived from its token, never stored.
CREATE TABLE admin_sessions (
  token_hash   bytea       PRIMARY KEY,
  api_key_id   bigint      NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL
);
-- Sweeping expired sessions at sign-in.
CREATE INDEX admin_sessions_expires_at ON admin_sessions (expires_at);
CREATE INDEX admin_sessions_api_key ON admin_sessions (api_key_id);

-- Down Migration

DROP TABLE admin_sessions;
