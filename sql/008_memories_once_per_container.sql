-- 008: a container remembers a fact once.
--
-- A person who says "I love hiking" on ten days had ten identical memories: the model was shown
-- the same line several times in the few it sees with a message (crowding out the others),
-- every message's search read and ranked each copy, and "forget that" deleted only the newest
-- copy, so Sage still remembered what it had been told to forget. Now a fact said again moves
-- the memory it already is to the message that said it last — a new id and date, as if it were
-- new — so it is recalled among the latest and "forget that" after it forgets the fact itself.
-- The key hashes the content: a photo's description has no length bound a btree entry fits.
-- Copies already stored go, the newest of each is kept.
DELETE FROM memories WHERE id IN (
  SELECT id FROM (
    SELECT id, row_number() OVER (PARTITION BY container_tag, content ORDER BY created_at DESC, id DESC) AS copy
      FROM memories) m
   WHERE copy > 1);
-- Query: remembering, `INSERT INTO memories … ON CONFLICT (container_tag, md5(content)) DO UPDATE`
CREATE UNIQUE INDEX IF NOT EXISTS memories_container_content_key ON memories (container_tag, md5(content));
