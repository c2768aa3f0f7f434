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
  search: `SELECT id, content FROM memories
            WHERE container_tag = $1 AND tsv @@ to_tsquery('english', $2)
            ORDER BY ts_rank(tsv, to_tsquery('english', $2)) DESC, created_at DESC, id DESC LIMIT $3`,
  latest: 'SELECT id, content FROM memories WHERE container_tag = $1 ORDER BY created_at DESC, id DESC LIMIT $2',
} as const;

export class MemoryStore {
  constructor(private readonly pool: Pool) {}

  private check(tag: ContainerTag): void {
    // The type already says so; this keeps a cast from smuggling in anything else.
    if (!isContainerTag(tag)) throw new Error('memories are only read within a conversation container');
  }

  /** Memories of `tag` matching words of `text`, best first (full-text search on `tsv`). */
  async search(tag: ContainerTag, text: string, limit: number): Promise<Memory[]> {
    this.check(tag);
    const terms = searchTerms(text);
    if (!terms) return [];
    const { rows } = await query<{ id: string; content: string }>(
      this.pool,
      memoryQueries.search,
      [tag, terms, limit],
      {
        idempotent: true,
      },
    );
    return rows.map((r) => ({ id: Number(r.id), content: r.content }));
  }

  /** The most recent memories of `tag`, newest first. */
  async latest(tag: ContainerTag, limit: number): Promise<Memory[]> {
    this.check(tag);
    const { rows } = await query<{ id: string; content: string }>(this.pool, memoryQueries.latest, [tag, limit], {
      idempotent: true,
    });
    return rows.map((r) => ({ id: Number(r.id), content: r.content }));
  }

  /** What the model is shown: the matches for `text`, then the latest, without repeats. */
  async recall(tag: ContainerTag, text: string, limit = 8): Promise<string[]> {
    const [found, recent] = await Promise.all([this.search(tag, text, 5), this.latest(tag, 5)]);
    const seen = new Set<number>();
    const out: string[] = [];
    for (const m of [...found, ...recent]) {
      if (seen.has(m.id)) continue;
      seen.add(m.id);
      out.push(m.content);
    }
    return out.slice(0, limit);
  }
}
