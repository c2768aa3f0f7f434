-- 001: the whole schema of DESIGN.md. Forward-only; every index names the query it serves.

-- Ownership fence: activation bumps `epoch`; every write transaction of an actor checks it.
CREATE TABLE actor_leases (
  key        text PRIMARY KEY,            -- '<kind>:<id>', e.g. 'miniapp:ms_…', 'conversation:group_…'
  epoch      bigint NOT NULL,
  owner      text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- Queries: activation `INSERT … ON CONFLICT (key) DO UPDATE SET epoch = epoch + 1 … RETURNING epoch`,
-- and the group commit's fence `SELECT key FROM actor_leases JOIN unnest(keys, epochs) … FOR SHARE`:
-- both served by the primary key.

CREATE TABLE conversations (
  key        text PRIMARY KEY,             -- 'user_{phone}_persona_{id}' or 'group_{chat_guid}'
  kind       text NOT NULL CHECK (kind IN ('direct', 'group')),
  persona    text NOT NULL,
  chat_guid  text NOT NULL,
  version    bigint NOT NULL DEFAULT 0,
  snapshot   jsonb,                        -- the conversation actor's persisted XState snapshot
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
  id               text PRIMARY KEY,
  conversation_key text NOT NULL REFERENCES conversations (key),
  sender           text NOT NULL,          -- E.164 phone number, or the persona for outbound
  direction        text NOT NULL CHECK (direction IN ('in', 'out')),
  text             text,
  attachments      jsonb NOT NULL DEFAULT '[]',
  created_at       timestamptz NOT NULL DEFAULT now()
);
-- Query: history and the prompt's recent turns,
--   SELECT … FROM messages WHERE conversation_key = $1 AND created_at < $2 ORDER BY created_at DESC LIMIT $3
CREATE INDEX messages_conversation_created_idx ON messages (conversation_key, created_at DESC);
-- Query: everything one person sent (data export and deletion requests),
--   SELECT … FROM messages WHERE sender = $1
CREATE INDEX messages_sender_idx ON messages (sender);

CREATE TABLE memories (
  id                bigserial PRIMARY KEY,
  container_tag     text NOT NULL,         -- 'user_{phone}_persona_{id}' or 'group_{chat_guid}'
  content           text NOT NULL,
  tsv               tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
  source_message_id text REFERENCES messages (id),
  created_at        timestamptz NOT NULL DEFAULT now()
);
-- Query: memory search, always within one container,
--   SELECT … FROM memories WHERE container_tag = $1 AND tsv @@ websearch_to_tsquery('english', $2) ORDER BY ts_rank(…) DESC LIMIT $3
CREATE INDEX memories_tsv_idx ON memories USING gin (tsv);
-- Query: the latest memories of one container ("forget that", recent context),
--   SELECT … FROM memories WHERE container_tag = $1 ORDER BY created_at DESC, id DESC LIMIT $2
CREATE INDEX memories_container_created_idx ON memories (container_tag, created_at DESC, id DESC);

CREATE TABLE relationship_state (
  user_id             text NOT NULL,
  persona_id          text NOT NULL,
  counters            jsonb NOT NULL DEFAULT '{}',
  stage               text NOT NULL DEFAULT 'new',
  last_interaction_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, persona_id)
);
-- Query: `SELECT … FROM relationship_state WHERE user_id = $1 AND persona_id = $2` and its upsert:
-- served by the primary key (user_id, persona_id).

CREATE TABLE miniapp_sessions (
  id         text PRIMARY KEY,
  app        text NOT NULL,
  owner      text NOT NULL,                -- user id of the creator
  chat_guid  text,                         -- the chat it was opened from, if any
  state      jsonb NOT NULL,               -- checkpoint: the state at `version`
  version    bigint NOT NULL DEFAULT 0,    -- version of `state`; later ops are in miniapp_ops
  is_active  boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- Query: a person's open miniapps,
--   SELECT … FROM miniapp_sessions WHERE owner = $1 AND is_active
CREATE INDEX miniapp_sessions_owner_active_idx ON miniapp_sessions (owner, is_active) WHERE is_active;

CREATE TABLE miniapp_participants (
  session_id text NOT NULL REFERENCES miniapp_sessions (id) ON DELETE CASCADE,
  user_id    text NOT NULL,
  added_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (session_id, user_id)
);
-- Query: the upgrade's authorization `SELECT … WHERE session_id = $1 AND user_id = $2` and the
-- participant list `WHERE session_id = $1`: served by the primary key.
-- Query: the sessions a person takes part in, `SELECT session_id FROM miniapp_participants WHERE user_id = $1`
CREATE INDEX miniapp_participants_user_idx ON miniapp_participants (user_id);

CREATE TABLE miniapp_ops (
  session_id text NOT NULL REFERENCES miniapp_sessions (id) ON DELETE CASCADE,
  version    bigint NOT NULL,
  op_id      text NOT NULL,
  by_user    text NOT NULL,
  op         jsonb NOT NULL,
  touched    jsonb NOT NULL,               -- the path it touched, for conflict checks after a restart
  at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (session_id, version)
);
-- Query: resume, conflict checks and rehydration,
--   SELECT … FROM miniapp_ops WHERE session_id = $1 AND version > $2 [AND version < $3] ORDER BY version
-- served by the primary key (session_id, version).
-- Query: retention, `DELETE FROM miniapp_ops WHERE at < now() - interval '24 hours' AND …`
CREATE INDEX miniapp_ops_at_idx ON miniapp_ops (at);

CREATE TABLE relay_inbox (
  seq              bigserial PRIMARY KEY,
  event_id         text NOT NULL UNIQUE,   -- the relay's idempotency key
  conversation_key text NOT NULL,
  payload          jsonb NOT NULL,
  status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed', 'failed')),
  received_at      timestamptz NOT NULL DEFAULT now(),
  processed_at     timestamptz
);
-- Query: idempotent ingest, `INSERT … ON CONFLICT (event_id) DO NOTHING`: served by the unique index.
-- Query: recovery after a restart,
--   SELECT … FROM relay_inbox WHERE status = 'pending' ORDER BY seq
CREATE INDEX relay_inbox_pending_idx ON relay_inbox (seq) WHERE status = 'pending';

CREATE TABLE relay_outbox (
  id               text PRIMARY KEY,
  seq              bigserial NOT NULL UNIQUE,  -- delivery order
  chat             text NOT NULL,              -- chat guid; sends are ordered per chat
  conversation_key text NOT NULL,
  payload          jsonb NOT NULL,             -- the `send` frame
  status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'acked')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  acked_at         timestamptz
);
-- Query: (re)delivery, `SELECT … FROM relay_outbox WHERE status = 'pending' ORDER BY seq LIMIT $1`
CREATE INDEX relay_outbox_pending_idx ON relay_outbox (seq) WHERE status = 'pending';

CREATE TABLE oauth_tokens (
  user_id       text NOT NULL,
  provider      text NOT NULL,
  enc_access    text NOT NULL,             -- JWE (dir + A256GCM)
  enc_refresh   text,
  expires_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, provider)
);
-- Query: refresh sweep, `SELECT … FROM oauth_tokens WHERE expires_at < now() + interval '10 minutes'`
CREATE INDEX oauth_tokens_expires_idx ON oauth_tokens (expires_at);
