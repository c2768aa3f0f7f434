-- 002: the socket that sent each op. Ops from one socket never conflict with each other,
-- also when the older ones are read back from here (beyond the in-memory log, or after a
-- restart). Connection ids are unique across processes and restarts.
ALTER TABLE miniapp_ops ADD COLUMN conn text;
