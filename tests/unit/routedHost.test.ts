/**
 * The routed host (`src/cluster/routedHost.ts`) against an in-memory bus, a recording local
 * host and a lease table the test sets: where posts go.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createRoutedHost } from '../../src/cluster/routedHost.ts';
import { AppError } from '../../src/errors.ts';
import type { ActorHost } from '../../src/host/createActorHost.ts';
import type { Ownership } from '../../src/host/Ownership.ts';
import { memoryBus } from '../helpers/memoryBus.ts';

const log = pino({ level: 'silent' });
const FAILOVER_MS = 2000;

/** A local host that runs nothing: it records what it is posted (as the actor would receive it). */
function recordingHost(): ActorHost & { received: string[] } {
  const received: string[] = [];
  return {
    received,
    register: () => {},
    send: async (_kind, _id, event) => {
      received.push((event as unknown as { n: string }).n);
    },
    post: (_kind, _id, event) => {
      received.push((event as unknown as { n: string }).n);
    },
    tell: () => {},
    ask: async () => undefined as never,
    peek: () => undefined,
    has: () => false,
    counts: () => ({}),
    stopAll: async () => {},
  };
}

/** Leases as the test sets them: `holder` owns every actor. */
function leases(initial: string | null): Ownership & { holder: string | null } {
  const o = {
    holder: initial,
    acquire: async () => true,
    release: async () => {},
    ownerOf: async () => o.holder,
    onLost: () => {},
    close: async () => {},
  };
  return o;
}

const post = (n: string) => ({ type: 'ops', n });

describe('the routed host', () => {
  it('forwards posts to the owner its lease names', async () => {
    const bus = memoryBus();
    const ownerHost = recordingHost();
    createRoutedHost({
      local: ownerHost,
      ownership: leases('A'),
      bus: bus.join('A'),
      log,
      failoverMs: FAILOVER_MS,
    });
    const router = createRoutedHost({
      local: recordingHost(),
      ownership: leases('A'),
      bus: bus.join('B'),
      log,
      failoverMs: FAILOVER_MS,
    });
    for (const n of ['1', '2', '3']) router.post('miniapp', 's1', post(n), () => {});
    await expect.poll(() => ownerHost.received).toEqual(['1', '2', '3']);
  });

  it('sends what waited for a local activation that lost the lease on to the process that took it', async () => {
    // Nobody holds the actor: this process starts activating it, and a second post joins that
    // activation; meanwhile another process takes the lease (a drain handed the actor over),
    // so the activation fails both. Neither may reach its sender as an error.
    const bus = memoryBus();
    const winner = recordingHost();
    createRoutedHost({ local: winner, ownership: leases('A'), bus: bus.join('A'), log, failoverMs: FAILOVER_MS });
    const queued: ((err: Error) => void)[] = [];
    let activating = false;
    const loser: ActorHost = {
      ...recordingHost(),
      has: () => activating,
      post: (_kind, _id, _event, rejected) => {
        activating = true;
        queued.push(rejected);
      },
    };
    const lease = leases(null);
    const router = createRoutedHost({
      local: loser,
      ownership: lease,
      bus: bus.join('B'),
      log,
      failoverMs: FAILOVER_MS,
    });
    const refused: string[] = [];
    for (const n of ['1', '2']) {
      router.post('miniapp', 's1', post(n), (err) => refused.push(`${n}: ${err.message}`));
      await expect.poll(() => queued.length).toBe(Number(n));
    }
    lease.holder = 'A';
    activating = false;
    for (const rejected of queued.splice(0))
      rejected(new AppError('session_unavailable', 'miniapp:s1 is owned by another node'));
    await expect.poll(() => winner.received).toEqual(['1', '2']);
    expect(refused).toEqual([]);
  });
});
