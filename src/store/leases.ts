/** The epoch fence of `actor_leases` (DESIGN.md "Single owner, fenced in Postgres"). */
import { type Pool, query } from './pool.ts';

/**
 * Makes `owner` the actor's owner and returns the new epoch. Any write of an earlier owner
 * committed after this fails the group commit's epoch check; a commit of theirs in flight
 * holds the lease row `FOR SHARE`, so this waits for it and rehydration then sees it.
 */
export async function bumpEpoch(pool: Pool, key: string, owner: string): Promise<number> {
  const { rows } = await query<{ epoch: string }>(
    pool,
    `INSERT INTO actor_leases (key, epoch, owner) VALUES ($1, 1, $2)
     ON CONFLICT (key) DO UPDATE SET epoch = actor_leases.epoch + 1, owner = EXCLUDED.owner, updated_at = now()
     RETURNING epoch`,
    [key, owner],
  );
  return Number(rows[0].epoch);
}
