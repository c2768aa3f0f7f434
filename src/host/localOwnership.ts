import type { Ownership } from './Ownership.ts';

/**
 * Single-node ownership: this process owns every actor. The epoch fence in `actor_leases`
 * still guards every write, so cluster mode only adds a Redlock-backed `Ownership`.
 */
export const localOwnership: Ownership = {
  acquire: async () => true,
  release: async () => {},
};
