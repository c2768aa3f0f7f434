-- 003: relay inbox attempts (an event that keeps failing is retried with backoff, then marked
-- `failed`), and retention of processed inbox payloads and acknowledged outbox rows.
ALTER TABLE relay_inbox
  ADD COLUMN attempts        integer NOT NULL DEFAULT 0,    -- failed processing attempts
  ADD COLUMN next_attempt_at timestamptz,                   -- backoff: not delivered again before this
  ADD COLUMN last_error      text,                          -- why the last attempt failed (no client text)
  ADD COLUMN stripped        smallint NOT NULL DEFAULT 0;   -- 0 whole payload, 1 attachment data removed, 2 payload removed

-- Query: the admin list, `SELECT … FROM relay_inbox WHERE status = 'failed' AND seq > $1 ORDER BY seq LIMIT $2`
CREATE INDEX relay_inbox_failed_idx ON relay_inbox (seq) WHERE status = 'failed';

-- Query: retention, `UPDATE relay_inbox SET payload = … WHERE status = 'processed' AND stripped < $n
--   AND processed_at < $cutoff` (attachment data after 1 h, the whole payload after INBOX_RETENTION_HOURS)
CREATE INDEX relay_inbox_retention_idx ON relay_inbox (processed_at) WHERE status = 'processed' AND stripped < 2;

-- Query: retention, `DELETE FROM relay_outbox WHERE status = 'acked' AND acked_at < $1`
CREATE INDEX relay_outbox_acked_idx ON relay_outbox (acked_at) WHERE status = 'acked';
