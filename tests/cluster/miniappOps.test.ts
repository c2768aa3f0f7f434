/**
 * A miniapp session edited from sockets on three processes of a cluster: whichever process a
 * socket or a request reaches, every op is answered once, every socket sees the same applied
 * ops in one gap-free version order, the store holds exactly those ops at those versions, and
 * a same-field race across processes is a conflict for one of the two, never a silent
 * overwrite. Real processes, real PostgreSQL and Redis.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import { startCluster, type TestCluster } from '../helpers/cluster.ts';
import { api, createTrip } from '../helpers/http.ts';
import { redisReachable } from '../helpers/redis.ts';
import { type Opened, openSocket, refusedStatus } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const ok = await redisReachable();
const PEOPLE = ['+15557771001', '+15557771002', '+15557771003'];
const OPS_EACH = 30;
const SOCKETS_PER_USER = 4;

let cluster: TestCluster;
let tokens: string[];

beforeAll(async () => {
  cluster = await startCluster(3, { MAX_SOCKETS_PER_USER: String(SOCKETS_PER_USER) });
  tokens = await Promise.all(PEOPLE.map((p) => token(p)));
}, 60_000);

/** One socket per person, person i on node i. */
async function openAll(trip: string): Promise<Opened[]> {
  const sockets = await Promise.all(cluster.nodes.map((node, i) => openSocket(node.url, trip, tokens[i])));
  await Promise.all(sockets.map((s) => s.next('snapshot', 10_000)));
  return sockets;
}

const applied = (s: Opened) =>
  s.frames.filter((f): f is Extract<ServerFrame, { type: 'applied' }> => f.type === 'applied');

describe.skipIf(!ok)('a session edited from three processes', () => {
  it('answers every op once and shows every socket the same gap-free order, as stored', async () => {
    const trip = await createTrip(cluster.nodes[0].url, tokens[0], { participants: PEOPLE.slice(1) });
    // A read wakes the session on node-1: the sockets on node-2 and node-3 are remote to it.
    expect((await api(cluster.nodes[0].url, 'GET', `/v1/miniapps/${trip}`, { token: tokens[0] })).status).toBe(200);
    const sockets = await openAll(trip);

    // Each person first adds a budget line of their own (inserts into one list conflict when
    // concurrent: retried from the latest version), then edits only their own line.
    const lastVersion = (s: Opened) => Math.max(0, ...applied(s).map((f) => f.version));
    await Promise.all(
      sockets.map(async (s, i) => {
        for (let attempt = 0; ; attempt++) {
          const opId = `add-${i}-${attempt}`;
          s.send({
            type: 'op',
            opId,
            baseVersion: lastVersion(s),
            op: { kind: 'insert', path: ['budget', 'items'], value: { id: `line-${i}`, label: PEOPLE[i], amount: 0 } },
          });
          const answer = await s.answer(opId, 10_000);
          if (answer.type === 'applied') return;
          expect(answer.type, JSON.stringify(answer)).toBe('conflict');
          expect(attempt).toBeLessThan(10);
        }
      }),
    );
    const opIds = sockets.map((_, i) => Array.from({ length: OPS_EACH }, (_, n) => `amount-${i}-${n}`));
    for (const [i, s] of sockets.entries()) {
      const base = lastVersion(s);
      for (const [n, opId] of opIds[i].entries()) {
        s.send({
          type: 'op',
          opId,
          baseVersion: base,
          op: { kind: 'set', path: ['budget', 'items', { id: `line-${i}` }, 'amount'], value: n + 1 },
        });
      }
    }
    const answers = await Promise.all(sockets.flatMap((s, i) => opIds[i].map((opId) => s.answer(opId, 15_000))));
    expect(answers.filter((a) => a.type !== 'applied')).toEqual([]);

    // Every socket, wherever it is, saw the same ops at the same versions, 1 to the last.
    const total = (await api(cluster.nodes[2].url, 'GET', `/v1/miniapps/${trip}`, { token: tokens[2] })).body;
    expect(total.version).toBeGreaterThanOrEqual(3 + 3 * OPS_EACH);
    await Promise.all(sockets.map((s) => expect.poll(() => lastVersion(s), { timeout: 10_000 }).toBe(total.version)));
    const seen = sockets.map((s) => applied(s).map((f) => `${f.version}:${f.opId}`));
    expect(seen[1]).toEqual(seen[0]);
    expect(seen[2]).toEqual(seen[0]);
    expect(applied(sockets[0]).map((f) => f.version)).toEqual(Array.from({ length: total.version }, (_, v) => v + 1));

    // The store holds exactly those ops, once each, at the versions announced.
    const { rows } = await cluster.db.pool.query<{ version: string; op_id: string }>(
      'SELECT version, op_id FROM miniapp_ops WHERE session_id = $1 ORDER BY version',
      [trip],
    );
    expect(rows.map((r) => `${r.version}:${r.op_id}`)).toEqual(seen[0]);
    // Each person's last amount stands, read through a process that holds no socket of theirs.
    const items = total.state.budget.items as { id: string; amount: number }[];
    for (let i = 0; i < 3; i++) expect(items.find((it) => it.id === `line-${i}`)?.amount).toBe(OPS_EACH);
    // Everyone is seen online by everyone.
    for (const s of sockets)
      await expect
        .poll(() => [...s.frames].reverse().find((f) => f.type === 'presence'), { timeout: 5000 })
        .toMatchObject({ online: expect.arrayContaining(PEOPLE) });
    // A socket that leaves from another process than the session's is gone for everyone.
    sockets[1].close();
    await expect
      .poll(() => [...sockets[0].frames].reverse().find((f) => f.type === 'presence'), { timeout: 5000 })
      .toEqual({ type: 'presence', online: [PEOPLE[0], PEOPLE[2]].sort() });
    for (const s of sockets) s.close();
  }, 60_000);

  it('turns a same-field race across processes into one applied op and one conflict', async () => {
    const trip = await createTrip(cluster.nodes[1].url, tokens[0], { participants: PEOPLE.slice(1) });
    const [a, b] = await openAll(trip);
    a.send({ type: 'op', opId: 'title-a', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'From A' } });
    b.send({ type: 'op', opId: 'title-b', baseVersion: 0, op: { kind: 'set', path: ['title'], value: 'From B' } });
    const outcomes = [await a.answer('title-a', 10_000), await b.answer('title-b', 10_000)].map((f) => f.type).sort();
    expect(outcomes).toEqual(['applied', 'conflict']);
    const view = (await api(cluster.nodes[2].url, 'GET', `/v1/miniapps/${trip}`, { token: tokens[2] })).body;
    expect(view.version).toBe(1);
    expect(['From A', 'From B']).toContain(view.state.title);
    a.close();
    b.close();
  }, 30_000);

  it("counts a user's sockets across the cluster: past MAX_SOCKETS_PER_USER, 429 on any process", async () => {
    // A user of their own: the sockets of the other tests do not count against them.
    const dana = await token('+15557771009');
    const trip = await createTrip(cluster.nodes[0].url, dana);
    const opened: Opened[] = [];
    for (let i = 0; i < SOCKETS_PER_USER; i++) opened.push(await openSocket(cluster.nodes[i % 3].url, trip, dana));
    for (const node of cluster.nodes) expect(await refusedStatus(node.url, trip, dana)).toBe(429);
    opened[0].close();
    await opened[0].closed;
    await expect
      .poll(() =>
        openSocket(cluster.nodes[2].url, trip, dana).then(
          (s) => {
            opened.push(s);
            return true;
          },
          () => false,
        ),
      )
      .toBe(true);
    for (const s of opened) s.close();
  });

  it('reports every process in /ready as a member of the cluster', async () => {
    for (const node of cluster.nodes) {
      const ready = await api(node.url, 'GET', '/ready');
      expect(ready.status).toBe(200);
      expect(ready.body).toMatchObject({ mode: 'cluster', node: node.nodeId, redis: { reachable: true } });
    }
    // The sessions of this file ran somewhere: leases were taken, and messages crossed the bus.
    const metrics = await Promise.all(cluster.nodes.map((n) => api(n.url, 'GET', '/metrics')));
    const sum = (pattern: RegExp) =>
      metrics.reduce((total, m) => total + Number(pattern.exec(m.body as string)?.[1] ?? 0), 0);
    expect(sum(/^archety_cluster_lease_events_total\{event="acquired"\} (\d+)/m)).toBeGreaterThanOrEqual(3);
    expect(sum(/^archety_cluster_bus_messages_total\{event="published"\} (\d+)/m)).toBeGreaterThan(0);
    expect(sum(/^archety_cluster_leases_held (\d+)/m)).toBeGreaterThanOrEqual(1);
  });
  it('a socket on a process that died leaves its session: presence drops it within seconds', async () => {
    const trip = await createTrip(cluster.nodes[0].url, tokens[0], { participants: PEOPLE.slice(1) });
    expect((await api(cluster.nodes[0].url, 'GET', `/v1/miniapps/${trip}`, { token: tokens[0] })).status).toBe(200);
    const here = await openSocket(cluster.nodes[0].url, trip, tokens[0]);
    await here.next('snapshot', 10_000);
    const there = await openSocket(cluster.nodes[2].url, trip, tokens[2]);
    await there.next('snapshot', 10_000);
    const lastPresence = () => [...here.frames].reverse().find((f) => f.type === 'presence');
    await expect
      .poll(lastPresence, { timeout: 5000 })
      .toEqual({ type: 'presence', online: [PEOPLE[0], PEOPLE[2]].sort() });
    // node-3 dies without a word: its socket cannot say it left.
    await cluster.nodes[2].kill('SIGKILL');
    await expect.poll(lastPresence, { timeout: 15_000 }).toEqual({ type: 'presence', online: [PEOPLE[0]] });
    here.close();
  }, 30_000);
});
