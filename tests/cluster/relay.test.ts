/**
 * The relay path across the processes of a cluster: events posted to any process are answered
 * on a relay socket connected to any other, in order per chat and each once; one event posted
 * to every process at once is processed once; with relay sockets on two processes the newest
 * receives every send, and once it is gone (closed, or its process killed) the other receives
 * what it did not acknowledge. Real processes, real PostgreSQL and Redis.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { SendFrame } from '../../actors/conversationTypes.ts';
import { startCluster, type TestCluster } from '../helpers/cluster.ts';
import { REDIS_URL, redisReachable } from '../helpers/redis.ts';
import { connectRelay, outcomeOf, postEvents, relayEvent, settleChat } from '../helpers/relay.ts';
import { token } from '../helpers/tokens.ts';

const ok = await redisReachable();

let cluster: TestCluster;
let relayToken: string;
let redis: Redis;

beforeAll(async () => {
  if (!ok) return;
  cluster = await startCluster(3, {
    // Several events per sender in a few seconds: no sender budget in the way.
    SENDER_BURST: '100',
    SENDER_MESSAGES_PER_MINUTE: '6000',
    // A killed process's leases (its actors, the relay's delivery) lapse soon, and its events are swept soon.
    ACTOR_LEASE_MS: '2000',
    RELAY_INBOX_SWEEP_MS: '500',
  });
  relayToken = await token('relay-cluster', { role: 'relay' });
  redis = new Redis(REDIS_URL);
}, 60_000);

afterAll(() => redis?.disconnect());

/** The relay receiver's key (`src/relay/redisRelayReceiver.ts`): which process delivers, null when none. */
const receiverKey = () => redis.get(`${cluster.redisPrefix}relay:receiver`);

/** Waits until the process that delivers is another than `before` (null: until one does). */
function receiverChangedFrom(before: string | null): Promise<string> {
  return vi.waitFor(
    async () => {
      const now = await receiverKey();
      if (!now || now === before) throw new Error(`the receiver is still ${before}`);
      return now;
    },
    { timeout: 5000, interval: 20 },
  );
}

function noReceiver(): Promise<void> {
  return vi.waitFor(
    async () => {
      if (await receiverKey()) throw new Error('a process still delivers');
    },
    { timeout: 5000, interval: 20 },
  );
}

/** Every outbox row of the chats of `senders`, in outbox (commit) order. */
async function outbox(senders: string[]): Promise<{ id: string; chat: string; status: string }[]> {
  const { rows } = await cluster.db.pool.query(
    'SELECT id, chat, status FROM relay_outbox WHERE chat = ANY($1) ORDER BY seq',
    [senders.map((s) => `iMessage;-;${s}`)],
  );
  return rows;
}

const idsByChat = (sends: { id: string; chat: string | { guid: string } }[]) => {
  const byChat = new Map<string, string[]>();
  for (const s of sends) {
    const chat = typeof s.chat === 'string' ? s.chat : s.chat.guid;
    byChat.set(chat, [...(byChat.get(chat) ?? []), s.id]);
  }
  return Object.fromEntries(byChat);
};

async function post(node: number, e: Record<string, unknown>): Promise<void> {
  const res = await postEvents(cluster.nodes[node].url, relayToken, e);
  expect(outcomeOf(e.id as string, res)).toBe('accepted');
}

describe.skipIf(!ok)('the relay across a cluster', () => {
  it('answers events posted to other processes on a relay socket of a third, in order per chat, each once', async () => {
    await noReceiver();
    const relay = await connectRelay(cluster.nodes[2].url, relayToken, { autoAck: true });
    await receiverChangedFrom(null);
    const senders = ['+15558800001', '+15558800002', '+15558800003', '+15558800004', '+15558800005'];
    const EACH = 4;
    // Chats in parallel, each chat's events one after another: the first to node-2 (its
    // conversation runs there), the others to node-1 (which forwards them to node-2).
    await Promise.all(
      senders.map(async (sender) => {
        for (let n = 0; n < EACH; n++) await post(n === 0 ? 1 : 0, relayEvent({ sender, text: `message ${n}` }));
      }),
    );
    const posted = Date.now();
    const total = senders.length * EACH;
    await relay.waitForSends(() => true, total, 15_000);
    // The receiver's periodic pass is 5 s apart: replies this soon were rung in.
    expect(Date.now() - posted).toBeLessThan(2000);
    await vi.waitFor(
      async () => {
        const rows = await outbox(senders);
        expect(rows.filter((r) => r.status === 'acked')).toHaveLength(total);
      },
      { timeout: 5000, interval: 50 },
    );
    const rows = await outbox(senders);
    expect(rows).toHaveLength(total);
    // Each send once, and each chat's sends in the order they were committed.
    expect(relay.sends).toHaveLength(total);
    expect(idsByChat(relay.sends)).toEqual(idsByChat(rows));
    await relay.close();
  });

  it('processes an event posted to every process at once exactly once', async () => {
    await noReceiver();
    const relay = await connectRelay(cluster.nodes[1].url, relayToken, { autoAck: true });
    await receiverChangedFrom(null);
    const sender = '+15558800011';
    const e = relayEvent({ sender, text: 'posted three times' });
    const answers = await Promise.all(cluster.nodes.map((node) => postEvents(node.url, relayToken, e)));
    expect(answers.map((a) => outcomeOf(e.id as string, a)).sort()).toEqual(['accepted', 'duplicate', 'duplicate']);
    await relay.waitForSend((s) => s.replyTo === e.id);
    // The chat's replies go out in order: once a later one arrived, a second reply to `e` is not coming.
    await settleChat(cluster.nodes[2].url, relayToken, relay, { sender });
    expect(relay.sends.filter((s) => s.replyTo === e.id)).toHaveLength(1);
    expect((await outbox([sender])).length).toBe(2);
    await relay.close();
  });

  it('delivers to the newest of two relay sockets, then what it left unacknowledged to the other', async () => {
    await noReceiver();
    const older = await connectRelay(cluster.nodes[0].url, relayToken);
    const first = await receiverChangedFrom(null);
    const newer = await connectRelay(cluster.nodes[1].url, relayToken);
    await receiverChangedFrom(first);

    const senders = ['+15558800021', '+15558800022', '+15558800023', '+15558800024'];
    const events = senders.flatMap((sender) => [0, 1].map((n) => relayEvent({ sender, text: `message ${n}` })));
    for (const [i, e] of events.entries()) await post(i % 3, e);
    const sent = await newer.waitForSends(() => true, events.length, 15_000);
    expect(new Set(sent.map((s) => s.replyTo))).toEqual(new Set(events.map((e) => e.id)));
    expect(older.sends).toEqual([]);

    // The newer relay acknowledges half of them, durably, and goes away.
    const acked = sent.filter((_, i) => i % 2 === 0);
    for (const s of acked) newer.ack(s.id);
    await vi.waitFor(
      async () => {
        const rows = await outbox(senders);
        expect(rows.filter((r) => r.status === 'acked').map((r) => r.id)).toEqual(
          expect.arrayContaining(acked.map((s) => s.id)),
        );
      },
      { timeout: 5000, interval: 50 },
    );
    await newer.close();

    // The older one receives the others, the same frames, and nothing acknowledged.
    const unacked = sent.filter((_, i) => i % 2 === 1);
    const redelivered = await older.waitForSends(() => true, unacked.length, 10_000);
    const byId = (a: SendFrame, b: SendFrame) => a.id.localeCompare(b.id);
    expect([...redelivered].sort(byId)).toEqual([...unacked].sort(byId));
    // A later reply comes after every earlier unacknowledged one: none of the acknowledged came.
    const later = await settleChat(cluster.nodes[2].url, relayToken, older, { sender: senders[0] });
    expect(older.sends.map((s) => s.id).sort()).toEqual([...unacked.map((s) => s.id), later.id].sort());
    for (const s of older.sends) older.ack(s.id);
    await older.close();
  });

  it('hands the delivery to a relay socket on another process when the receiving process dies', async () => {
    await noReceiver();
    const survivor = await connectRelay(cluster.nodes[0].url, relayToken);
    const first = await receiverChangedFrom(null);
    const doomed = await connectRelay(cluster.nodes[2].url, relayToken);
    await receiverChangedFrom(first);
    const senders = ['+15558800031', '+15558800032', '+15558800033'];
    const events = senders.map((sender) => relayEvent({ sender, text: 'before the crash' }));
    // Their conversations run on node-3, which dies before any send is acknowledged.
    for (const e of events) await post(2, e);
    // Only the replies to these events count: a send of an earlier test whose acknowledgement was
    // not committed yet when its relay left may reach the new receiver too (it is still pending).
    const ours = (s: SendFrame) => events.some((e) => e.id === s.replyTo);
    const sent = await doomed.waitForSends(ours, events.length, 10_000);
    await cluster.nodes[2].kill('SIGKILL');

    const redelivered = await survivor.waitForSends(ours, sent.length, 10_000);
    const byId = (a: SendFrame, b: SendFrame) => a.id.localeCompare(b.id);
    expect([...redelivered].sort(byId)).toEqual([...sent].sort(byId));
    // A chat of the dead process goes on, answered once on the survivor, after its earlier reply.
    const later = relayEvent({ sender: senders[0], text: 'after the crash' });
    await post(1, later);
    const reply = await survivor.waitForSend((s) => s.replyTo === later.id, 15_000);
    const rows = await outbox(senders);
    expect(rows.map((r) => r.id)).toEqual(expect.arrayContaining([...sent.map((s) => s.id), reply.id]));
    expect(rows).toHaveLength(events.length + 1);
    const chats = senders.map((s) => `iMessage;-;${s}`);
    expect(idsByChat(survivor.sends.filter((s) => chats.includes(s.chat.guid)))).toEqual(idsByChat(rows));
    await survivor.close();
  });
});
