-- 007: conversations owing an answer. A throttled burst is answered once, after BURST_QUIET_MS
-- of quiet, by a timer of the conversation's actor; a restart or a takeover loses that timer
-- (XState does not set a restored state's timers). `owing_since` is the time of the last
-- commit that left the conversation owing an answer (NULL otherwise): the relay's sweep finds
-- the conversations owing one for longer than the quiet time through the partial index and
-- resumes them. Only a change of owing touches the index: an ordinary commit writes NULL over
-- NULL and stays a HOT update.
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS owing_since timestamptz;
UPDATE conversations SET owing_since = updated_at
 WHERE owing_since IS NULL AND jsonb_typeof(snapshot->'context'->'owed') IN ('array', 'object')
   AND snapshot->'context'->'owed' <> '[]'::jsonb;
CREATE INDEX IF NOT EXISTS conversations_owing_idx ON conversations (owing_since) WHERE owing_since IS NOT NULL;
