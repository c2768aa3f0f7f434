/** The epoch fence of `actor_leases` (docs/architecture.md). */
import type { BatchWriter, GroupCommitter } from './GroupCommitter.ts';
import { prepared, run } from './pool.ts';

const LEASE = 'lease';

/** Run for every batch of activations: prepared on each connection (`prepared`). */
const takeLeases = prepared(
  'lease_take',
  `INSERT INTO actor_leases (key, epoch, owner) SELECT k, 1, $2 FROM unnest($1::text[]) AS k
   ON CONFLICT (key) DO UPDATE SET epoch = actor_leases.epoch + 1, owner = EXCLUDED.owner, updated_at = now()
   RETURNING key, epoch`,
);

/**
 * Makes `owner` the owner of the actors it is given and returns their new epochs, through
 * the group commit: activations that happen together (a relay's burst over many
 * conversations) share one transaction instead of one commit each. Any write of an earlier
 * owner committed after this fails the group commit's epoch check; a commit of theirs in
 * flight holds the lease row `FOR SHARE`, so this waits for it and rehydration then sees it.
 */
export function leaseEpochs(committer: GroupCommitter, owner: string): (key: string) => Promise<number> {
  const writer: BatchWriter<string> = async (client, keys) => {
    // One statement cannot update a row twice: a key activated twice in one batch (it
    // stopped and was needed again) takes a second statement, and gets the later epoch.
    const epochs: number[] = new Array(keys.length);
    let pending = keys.map((key, i) => ({ key, i }));
    while (pending.length) {
      const seen = new Set<string>();
      const now: typeof pending = [];
      const later: typeof pending = [];
      for (const p of pending) {
        if (seen.has(p.key)) later.push(p);
        else {
          seen.add(p.key);
          now.push(p);
        }
      }
      pending = later;
      const { rows } = await client.query<{ key: string; epoch: string }>(
        run(takeLeases, [now.map((p) => p.key), owner]),
      );
      const byKey = new Map(rows.map((r) => [r.key, Number(r.epoch)]));
      for (const p of now) epochs[p.i] = byKey.get(p.key) as number;
    }
    return epochs;
  };
  committer.register(LEASE, writer, { pinned: true });
  return (key) => committer.submit<string, number>(LEASE, null, 0, key);
}
