import { processId } from '../cluster/processId.ts';
import type { Ownership } from './Ownership.ts';

/**
 * Single-node ownership: this process owns every actor and never loses one. The epoch fence in
 * `actor_leases` still guards every write; cluster mode only adds a Redlock-backed `Ownership`.
 */
export const localOwnership: Ownership = {
  acquire: async () => true,
  release: async () => {},
  ownerOf: async () => processId,
  onLost: () => {},
  close: async () => {},
};
