/**
 * Reading memories, always within one container. Writes happen in the conversation's group
 * commit (`src/store/conversationRepository.ts`), with the same tag. There is deliberately no
 * method without a tag and no query across tags.
 */
import { type Pool, query } from '../store/pool.ts';
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
   * What answering a message needs, in one round trip: full-text matches within the container,
   * best first, then its latest memories, both through the container index. The matches are
   * found among the container's own memories (`OFFSET 0` keeps the planner from flattening
   * the subquery): a full-text index over all containers would scan every user's memories
   * that share a common word (sql/004).
   */
  recall: `(SELECT id, content, 0 AS rank
              FROM (SELECT id, content, tsv, created_at FROM memories WHERE container_tag = $1 OFFSET 0) mine
             WHERE $2::text IS NOT NULL AND tsv @@ to_tsquery('english', $2)
             ORDER BY ts_rank(tsv, to_tsquery('english', $2)) DESC, created_at DESC, id DESC LIMIT $3)
           UNION ALL
           (SELECT id, content, 1 AS rank FROM memories WHERE container_tag = $1
             ORDER BY created_at DESC, id DESC LIMIT $3)`,
} as const;

export class MemoryStore {
  constructor(private readonly pool: Pool) {}

  private check(tag: ContainerTag): void {
    // The type already says so; this keeps a cast from smuggling in anything else.
    if (!isContainerTag(tag)) throw new Error('memories are only read within a conversation container');
  }

  /** What the model is shown: the matches for `text`, then the latest, without repeats. */
  async recall(tag: ContainerTag, text: string, limit = 8): Promise<string[]> {
    this.check(tag);
    const { rows } = await query<{ id: string; content: string; rank: number }>(
      this.pool,
      memoryQueries.recall,
      [tag, searchTerms(text), 5],
      { idempotent: true },
    );
    const seen = new Set<string>();
    const out: string[] = [];
    for (const m of rows) {
      if (seen.has(m.id)) continue;
      seen.add(m.id);
      out.push(m.content);
    }
    return out.slice(0, limit);
  }
}
