/**
 * The cluster channel (`src/cluster/clusterChannel.ts`) against an in-memory bus and a recording
 * local channel: what reaches which process in which order, how a session's sockets follow its
 * owner, and how sockets of a dead process are made to leave.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import { createClusterChannel } from '../../src/cluster/clusterChannel.ts';
import type { MiniappChannel } from '../../src/miniapp/createMiniappKind.ts';
import { memoryBus } from '../helpers/memoryBus.ts';

const log = pino({ level: 'silent' });
const turn = () => new Promise((resolve) => setImmediate(resolve));

/** A local channel that records what it was asked to do. */
function recording(): MiniappChannel & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    send: (conn, frame) => calls.push(`send ${conn} ${frame.type}`),
    publish: (sessionId, frame) => calls.push(`publish ${sessionId} ${frame.type}`),
    attach: (conn, sessionId) => calls.push(`attach ${conn} ${sessionId}`),
    detach: (conn, sessionId) => calls.push(`detach ${conn} ${sessionId}`),
    closeSession: (sessionId, code) => calls.push(`close ${sessionId} ${code}`),
    watch: async () => {},
    unwatch: () => {},
    handOver: (sessionId) => calls.push(`handOver ${sessionId}`),
  };
}

const applied = (version: number): ServerFrame => ({
  type: 'applied',
  opId: `o${version}`,
  by: 'u',
  version,
  op: { kind: 'set', path: ['title'], value: 'x' },
});
const snapshot: ServerFrame = { type: 'snapshot', version: 0, state: {}, participants: [], online: [] };

describe('the cluster channel', () => {
  it("sends a turn's frames for another process's sockets as one message, in order, after its snapshot", async () => {
    const bus = memoryBus();
    const ownerLocal = recording();
    const otherLocal = recording();
    const gone: string[] = [];
    const owner = createClusterChannel(ownerLocal, bus.join('A'), log, {
      connGone: (c) => gone.push(c),
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: () => {},
    });
    const other = createClusterChannel(otherLocal, bus.join('B'), log, {
      connGone: () => {},
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: () => {},
    });
    await other.watch('s1');
    owner.send('B.1', snapshot);
    owner.attach('B.1', 's1');
    for (let v = 1; v <= 3; v++) owner.publish('s1', applied(v));
    owner.send('A.1', applied(3));
    await turn();
    expect(bus.sent.filter((m) => m.to === 'B')).toHaveLength(1);
    expect(bus.published.filter((m) => m.topic === 's:s1')).toHaveLength(1);
    expect(otherLocal.calls).toEqual([
      'send B.1 snapshot',
      'attach B.1 s1',
      'publish s1 applied',
      'publish s1 applied',
      'publish s1 applied',
    ]);
    expect(ownerLocal.calls).toEqual([
      'publish s1 applied',
      'publish s1 applied',
      'publish s1 applied',
      'send A.1 applied',
    ]);
    expect(gone).toEqual([]);
  });

  it('makes the sockets of a process that is gone leave their sessions', async () => {
    const bus = memoryBus();
    const gone: string[] = [];
    const owner = createClusterChannel(recording(), bus.join('A'), log, {
      connGone: (c, s) => gone.push(`${c} ${s}`),
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: () => {},
    });
    const b = bus.join('B');
    owner.attach('B.1', 's1');
    owner.attach('B.2', 's2');
    await turn();
    b.down();
    owner.send('B.1', applied(1));
    await turn();
    expect(gone.sort()).toEqual(['B.1 s1', 'B.2 s2']);
  });

  it('a refused watch counts for nothing: the socket that did watch keeps its subscription', async () => {
    const bus = memoryBus();
    const busB = bus.join('B');
    const other = createClusterChannel(recording(), busB, log, {
      connGone: () => {},
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: () => {},
    });
    await other.watch('s1');
    busB.down();
    await expect(other.watch('s1')).rejects.toMatchObject({ code: 'session_unavailable' });
    expect(bus.subscribers('B', 's:s1')).toBe(1);
    other.unwatch('s1');
    expect(bus.subscribers('B', 's:s1')).toBe(0);
  });

  it('resumes the sockets of a session whose owner changed without handing it over, not after a handover', async () => {
    const bus = memoryBus();
    const local = recording();
    const handedOver: string[] = [];
    const watcher = createClusterChannel(local, bus.join('W'), log, {
      connGone: () => {},
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: (sessionId) => handedOver.push(sessionId),
    });
    await watcher.watch('s1');
    await watcher.watch('s2');
    const first = createClusterChannel(recording(), bus.join('A'), log, {
      connGone: () => {},
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: () => {},
    });
    first.publish('s1', applied(1));
    first.publish('s2', applied(1));
    await turn();
    // A drains: it hands s1 and s2 over; then B runs s1 (cleanly), and C runs s2 after B died.
    first.handOver('s1');
    first.handOver('s2');
    await turn();
    // The watcher's sockets join the next owner of each (presence there counts them).
    expect(handedOver.sort()).toEqual(['s1', 's2']);
    const next = createClusterChannel(recording(), bus.join('B'), log, {
      connGone: () => {},
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: () => {},
    });
    next.publish('s1', applied(2));
    await turn();
    expect(local.calls.filter((c) => c.startsWith('close'))).toEqual([]);
    next.publish('s2', applied(2));
    const after = createClusterChannel(recording(), bus.join('C'), log, {
      connGone: () => {},
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: () => {},
    });
    await turn();
    after.publish('s2', applied(3));
    await turn();
    expect(local.calls.filter((c) => c.startsWith('close'))).toEqual(['close s2 1011']);
  });
  it('resumes at once the sockets of sessions whose owner died (not when their answers time out)', async () => {
    const bus = memoryBus();
    const local = recording();
    const watcher = createClusterChannel(local, bus.join('W'), log, {
      connGone: () => {},
      ownerCheckMs: 20,
      holders: async (ids: string[]) => ids.map(() => 'A'),
      handedOver: () => {},
    });
    await watcher.watch('s1');
    const ownerBus = bus.join('A');
    createClusterChannel(recording(), ownerBus, log, {
      connGone: () => {},
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: () => {},
    }).publish('s1', applied(1));
    await turn();
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(local.calls.filter((c) => c.startsWith('close'))).toEqual([]);
    ownerBus.down();
    await expect.poll(() => local.calls.filter((c) => c.startsWith('close'))).toEqual(['close s1 1011']);
    watcher.close();
  });
  it('resumes the sockets of sessions whose owner still listens but lost its lease (paused, cut off)', async () => {
    const bus = memoryBus();
    const local = recording();
    let holder: string | null = 'A';
    const watcher = createClusterChannel(local, bus.join('W'), log, {
      connGone: () => {},
      ownerCheckMs: 20,
      holders: async (ids: string[]) => ids.map(() => holder),
      handedOver: () => {},
    });
    await watcher.watch('s1');
    const owner = createClusterChannel(recording(), bus.join('A'), log, {
      connGone: () => {},
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: () => {},
    });
    owner.publish('s1', applied(1));
    await turn();
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(local.calls.filter((c) => c.startsWith('close'))).toEqual([]);
    holder = 'B';
    await expect.poll(() => local.calls.filter((c) => c.startsWith('close'))).toEqual(['close s1 1011']);
    watcher.close();
    owner.close();
  });

  it('leaves the sockets alone when the handover arrives while it asks who holds the lease (a drain)', async () => {
    const bus = memoryBus();
    const local = recording();
    const owner = createClusterChannel(recording(), bus.join('A'), log, {
      connGone: () => {},
      ownerCheckMs: 60_000,
      holders: async (ids: string[]) => ids.map(() => null),
      handedOver: () => {},
    });
    let asked = 0;
    const watcher = createClusterChannel(local, bus.join('W'), log, {
      connGone: () => {},
      ownerCheckMs: 20,
      holders: async (ids: string[]) => {
        asked++;
        // The owner drains meanwhile: its handover, then its lease goes to the next owner.
        owner.handOver('s1');
        await turn();
        await turn();
        return ids.map(() => 'B');
      },
      handedOver: () => {},
    });
    await watcher.watch('s1');
    owner.publish('s1', applied(1));
    await turn();
    await expect.poll(() => asked).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(local.calls.filter((c) => c.startsWith('close'))).toEqual([]);
    watcher.close();
    owner.close();
  });
});
