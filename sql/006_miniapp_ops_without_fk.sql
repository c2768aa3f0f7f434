-- 006: miniapp_ops loses its foreign key to miniapp_sessions. Each op row is written by the
-- session's actor, its only writer, which exists only for a stored session; sessions are never
-- deleted (so ON DELETE CASCADE never ran). The key cost every op batch a lookup and a KEY
-- SHARE lock on each session's row (a write to its page): PostgreSQL's CPU per op was 15-18 %
-- lower without it, batches of 8 ops, 8 clients (`bench/README.md`, issue 10).
ALTER TABLE miniapp_ops DROP CONSTRAINT IF EXISTS miniapp_ops_session_id_fkey;
