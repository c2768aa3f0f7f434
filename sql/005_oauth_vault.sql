-- 005: the OAuth token vault. Integration status and scopes, refresh attempts with backoff, and
-- the refresh claim (which process refreshes a token, until when); pending authorizations
-- (`state`, single use, 10 minutes) in a table of their own. Tokens stay JWE (dir + A256GCM)
-- under VAULT_KEYS; a revoked integration keeps its row (status, scopes) without tokens.
ALTER TABLE oauth_tokens
  ALTER COLUMN enc_access DROP NOT NULL,
  ADD COLUMN status          text NOT NULL DEFAULT 'connected'
                             CHECK (status IN ('connected', 'refresh_failed', 'revoked')),
  ADD COLUMN scopes          text NOT NULL DEFAULT '',     -- space-separated, as granted
  ADD COLUMN kid             text,                         -- VAULT_KEYS key the tokens are encrypted under
  ADD COLUMN attempts        integer NOT NULL DEFAULT 0,   -- failed refresh attempts since the last success
  ADD COLUMN next_attempt_at timestamptz,                  -- backoff: not refreshed by the job before this
  ADD COLUMN last_error      text,                         -- why the last refresh failed (never a token)
  ADD COLUMN claim_id        uuid,                         -- the refresh in progress (fences its write)
  ADD COLUMN claimed_until   timestamptz,                  -- its lease: another process may claim after it
  ADD COLUMN created_at      timestamptz NOT NULL DEFAULT now();
-- Query: the refresh job's claim (src/store/oauthRepository.ts `claimDue`),
--   SELECT … FROM oauth_tokens WHERE expires_at < now() + $ahead AND status = 'connected' AND …
--   ORDER BY expires_at LIMIT $batch FOR UPDATE SKIP LOCKED
-- is served by 001's oauth_tokens_expires_idx (expires_at).
-- Query: `archety vault rotate`, `SELECT … FROM oauth_tokens WHERE kid IS DISTINCT FROM $1 LIMIT $2`
--   (a sequential scan: rotation is rare and reads every row once).
-- Query: `GET /v1/integrations`, `SELECT … FROM oauth_tokens WHERE user_id = $1`: the primary key.

CREATE TABLE oauth_states (
  state_hash   text PRIMARY KEY,          -- SHA-256 (base64url) of the `state`: the state itself is never stored
  user_id      text NOT NULL,
  provider     text NOT NULL,
  enc_verifier text NOT NULL,             -- the PKCE code verifier, JWE under VAULT_KEYS
  kid          text NOT NULL,
  expires_at   timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
-- Query: the callback, `DELETE FROM oauth_states WHERE state_hash = $1 RETURNING …`: the primary key.
-- Query: pruning, `DELETE FROM oauth_states WHERE expires_at < now() - interval '1 hour'`
CREATE INDEX oauth_states_expires_idx ON oauth_states (expires_at);
