/**
 * Reading memories, always within one container. Writes happen in the conversation's group
 * commit (`src/store/conversationRepository.ts`), with the same tag. There is deliberately no
 * method without a tag and no query that matches across tags: a batched recall carries one
 * tag per request, and each request reads only its own container.
 */
import { BatchedReads } from '../store/BatchedReads.ts';
import { type Pool, prepared, query } from '../store/pool.ts';
import { type ContainerTag, isContainerTag } from './containerTag.ts';

export interface Memory {
  id: number;
  content: string;
}

/** Words of `text` as an OR query for to_tsquery (letters and digits only: nothing to escape). */
export function searchTerms(text: string): string | null {
  const words = [...new Set(text.toLowerCase().match(/[\p{L}\p{N}]{3,}/gu) ?? [])].slice(0, 16);
  return words.length ? words.join(' | ') : null;
}

export const memoryQueries = {
  /**
   * What answering a message needs, for several containers in one round trip: per request
   * (a container tag $1[n] and its search terms $2[n]), the full-text matches within that
   * container, best first, then its latest memories, both through the container index. Every
   * row carries its request's number `n`, and each lateral branch reads only its own
   * container. The matches are found among the container's own memories (`OFFSET 0` keeps the
   * planner from flattening the subquery): a full-text index over all containers would scan
   * every user's memories that share a common word (sql/004). Each request's terms are parsed
   * and stemmed once (`t`, kept apart by its own `OFFSET 0`), not once per memory compared.
   */
  recall: `SELECT q.n, m.id, m.content FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q(tag, terms, n)
           CROSS JOIN LATERAL (SELECT to_tsquery('english', q.terms) AS query OFFSET 0) t
           CROSS JOIN LATERAL (
             (SELECT id, content, 0 AS half, ts_rank(tsv, t.query) AS score, created_at
                FROM (SELECT id, content, tsv, created_at FROM memories WHERE container_tag = q.tag OFFSET 0) mine
               WHERE q.terms IS NOT NULL AND tsv @@ t.query
               ORDER BY score DESC, created_at DESC, id DESC LIMIT $3)
             UNION ALL
             (SELECT id, content, 1 AS half, 0 AS score, created_at FROM memories WHERE container_tag = q.tag
               ORDER BY created_at DESC, id DESC LIMIT $3)) m
           ORDER BY q.n, m.half, m.score DESC, m.created_at DESC, m.id DESC`,
} as const;

/** Run for every message answered: prepared on each connection (`prepared`). */
const recallStatement = prepared('memory_recall', memoryQueries.recall);

interface RecallRequest {
  tag: ContainerTag;
  terms: string | null;
}

export class MemoryStore {
  /**
   * Concurrent recalls (many conversations answering at once) share one statement
   * (`BatchedReads`), each request still read from its own container only.
   */
  private readonly recalls: BatchedReads<RecallRequest, string[]>;

  constructor(pool: Pool) {
    this.recalls = new BatchedReads(async (requests) => {
      const { rows } = await query<{ n: string; id: string; content: string }>(
        pool,
        recallStatement,
        [requests.map((r) => r.tag), requests.map((r) => r.terms), 5],
        { idempotent: true },
      );
      const found = requests.map(() => ({ seen: new Set<string>(), memories: [] as string[] }));
      for (const r of rows) {
        const f = found[Number(r.n) - 1];
        if (f.seen.has(r.id)) continue;
        f.seen.add(r.id);
        f.memories.push(r.content);
      }
      return found.map((f) => f.memories);
    });
  }

  private check(tag: ContainerTag): void {
    // The type already says so; this keeps a cast from smuggling in anything else.
    if (!isContainerTag(tag)) throw new Error('memories are only read within a conversation container');
  }

  /** What the model is shown: the matches for `text`, then the latest, without repeats. */
  async recall(tag: ContainerTag, text: string, limit = 8): Promise<string[]> {
    this.check(tag);
    return (await this.recalls.get({ tag, terms: searchTerms(text) })).slice(0, limit);
  }
}
