-- 004: a memory search reads only the container's own memories.
--
-- The recall query matched `tsv` through a GIN index over every container's memories: a
-- common word ("love", "trip") matches a large share of all users' memories, so the scan grew
-- with the whole table, and whenever the planner's statistics lagged behind a growing table it
-- chose that global scan (50 ms per message at 145,000 memories, against 0.2 ms). The query
-- now reads the container's memories through `memories_container_created_idx` and matches
-- them there: its cost grows with one user's memories, never with everyone's. The GIN index
-- no longer serves any query and only cost every insert.
DROP INDEX IF EXISTS memories_tsv_idx;
