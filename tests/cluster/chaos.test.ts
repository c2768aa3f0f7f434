/**
 * The chaos run: three processes under a steady load (edits from SDK clients on three miniapp
 * sessions, spread over the processes, and relay events posted to any live process, answered
 * on a relay socket that follows a live process), while every 2–5 s a random process is hurt
 * at random: SIGKILL then a restart 1–3 s later, SIGSTOP for 0.5–3 × ACTOR_LEASE_MS then
 * SIGCONT, or SIGTERM (drain) then a restart. At least one process is always up. Then the
 * chaos stops, everything settles, and the accounting runs: every acknowledged op is stored once
 * at the version announced, no version was announced with two ops, each session's state is the
 * replay of its stored ops, and every event the server accepted has exactly one reply in the
 * outbox, which the relay received.
 *
 * CHAOS_DURATION_MS (default 15 s; `npm run chaos` runs 3 minutes) bounds the chaos; the seed
 * is printed, and CHAOS_SEED replays the same choices (the timing of the load is not replayed).
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import type { SendFrame } from '../../actors/conversationTypes.ts';
import { type ClusterNode, startCluster, type TestCluster, waitForReady } from '../helpers/cluster.ts';
import {
  acknowledgedSince,
  Balancer,
  expectAccounting,
  type Load,
  lineId,
  longestServiceGap,
  startLoad,
} from '../helpers/clusterLoad.ts';
import { createTrip } from '../helpers/http.ts';
import { redisReachable } from '../helpers/redis.ts';
import { connectRelay, outcomeOf, type RelayClient, relayEvent } from '../helpers/relay.ts';
import { openSocket } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';
import { createRng, type Rng } from '../hostile/rng.ts';

const ok = await redisReachable();
const DURATION_MS = Number(process.env.CHAOS_DURATION_MS ?? 15_000);
const SEED = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 32));
const LEASE_MS = 1000;
const SESSIONS = 3;
/** Direct chats the relay events come from, and how often one is posted (ms). */
const SENDERS = ['+15558802001', '+15558802002', '+15558802003', '+15558802004', '+15558802005'];
const EVENT_EVERY_MS = 150;
/** How long the load may take to settle once the chaos stopped (every edit and event answered). */
const SETTLE_MS = 20_000;
const PROGRESS_EVERY_MS = 10_000;

let cluster: TestCluster;
let balancer: Balancer;
let relayToken: string;
const start = performance.now();
const since = () => `+${((performance.now() - start) / 1000).toFixed(1)}s`;

beforeAll(async () => {
  if (!ok) return;
  cluster = await startCluster(3, {
    ACTOR_LEASE_MS: String(LEASE_MS),
    // A steady stream per sender: no sender budget in the way of a reply to each event.
    SENDER_BURST: '1000',
    SENDER_MESSAGES_PER_MINUTE: '60000',
    // Events and sends a dead process left behind are found again soon, so the run settles soon.
    RELAY_INBOX_SWEEP_MS: '500',
    RELAY_REDELIVER_MS: '2000',
    RELAY_RETRY_BACKOFF_MS: '200',
  });
  balancer = new Balancer(cluster.nodes);
  relayToken = await token('relay-chaos', { role: 'relay' });
}, 60_000);

const isUp = (node: ClusterNode) => node.child.exitCode === null && node.child.signalCode === null;

/**
 * A session created on node `s % 3` with one budget line per client, and a load of three
 * clients on it, one homed on each process.
 */
async function loadedSession(s: number): Promise<{ id: string; load: Load; token: string }> {
  const users = [0, 1, 2].map((i) => `+1555880${s}10${i}`);
  const tokens = await Promise.all(users.map((u) => token(u)));
  const node = cluster.nodes[s % 3];
  const id = await createTrip(node.url, tokens[0], { participants: users.slice(1) });
  const socket = await openSocket(node.url, id, tokens[0]);
  await socket.next('snapshot', 10_000);
  for (const i of users.keys()) {
    const opId = `add-${i}`;
    const value = { id: lineId(i), label: `line ${i}`, amount: 0 };
    socket.send({ type: 'op', opId, baseVersion: i, op: { kind: 'insert', path: ['budget', 'items'], value } });
    expect((await socket.answer(opId, 10_000)).type).toBe('applied');
  }
  socket.close();
  const load = startLoad({
    cluster,
    balancer,
    sessionId: id,
    clients: users.map((user, i) => ({ user, token: tokens[i], home: (s + i) % 3 })),
  });
  return { id, load, token: tokens[0] };
}

/** One relay event and what became of it: `acked` once a POST of it was answered 202 accepted or duplicate. */
interface Posted {
  id: string;
  acked: boolean;
  /** Each attempt's outcome: `accepted`, `duplicate`, `HTTP …`, or the network error. */
  attempts: string[];
}

const TRANSIENT = /^HTTP (502|503|504)|^(TypeError|AbortError|TimeoutError)/;

/**
 * Relay events posted at a steady pace to a random live process, each retried elsewhere (same
 * id) after a 503 or a connection error until a 202; and a relay socket (acking every send)
 * that reconnects to a live process whenever its own closes.
 */
function startRelayLoad(rng: Rng) {
  const posted: Posted[] = [];
  const relays: RelayClient[] = [];
  const inFlight = new Set<Promise<void>>();
  let running = true;

  const post = async (e: Record<string, unknown>): Promise<void> => {
    const record: Posted = { id: e.id as string, acked: false, attempts: [] };
    posted.push(record);
    for (let attempt = 0; attempt < 20 && !record.acked; attempt++) {
      const node = balancer.pick(rng.int(3));
      const outcome = await postOnce(node.url, e).catch((err: Error) => `${err.name}: ${err.message}`);
      record.attempts.push(`${node.nodeId} ${outcome}`);
      record.acked = outcome === 'accepted' || outcome === 'duplicate';
      if (!record.acked && !TRANSIENT.test(outcome)) return;
      if (!record.acked) await delay(100 + rng.int(200));
    }
  };

  const postOnce = async (base: string, e: Record<string, unknown>): Promise<string> => {
    const res = await fetch(`${base}/v1/relay/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${relayToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(e),
      // A paused process holds the request: give up on it as a client would, and go elsewhere.
      signal: AbortSignal.timeout(2000),
    });
    const text = await res.text();
    return outcomeOf(e.id as string, { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : {} });
  };

  const follow = async (): Promise<void> => {
    while (running) {
      const node = balancer.pick(rng.int(3));
      try {
        const relay = await connectRelay(node.url, relayToken, { autoAck: true });
        relays.push(relay);
        relay.ws.on('close', () => void (running && follow()));
        return;
      } catch {
        await delay(200);
      }
    }
  };

  const pace = async (): Promise<void> => {
    for (let n = 0; running; n++) {
      const p = post(relayEvent({ sender: rng.pick(SENDERS), text: `message ${n}` }));
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      await delay(EVENT_EVERY_MS);
    }
  };

  const pacing = follow().then(pace);
  return {
    posted,
    /** Every send any of the relay's sockets received (a send delivered again counts again). */
    sends: (): SendFrame[] => relays.flatMap((r) => r.sends),
    /** Stops posting; resolves once every POST in flight has its outcome. */
    async stop(): Promise<void> {
      running = false;
      await pacing;
      await Promise.all([...inFlight]);
    },
    async close(): Promise<void> {
      running = false;
      await Promise.all(relays.map((r) => r.close()));
    },
  };
}

type Action = 'SIGKILL' | 'SIGSTOP' | 'SIGTERM';

/**
 * Hurts a random process every 2–5 s until `deadline` (performance.now()), never the last one
 * up; each hurt process is marked down in the balancer (as a health check would) until it is
 * ready again. `stop` waits until every process is back.
 */
function startChaos(rng: Rng, deadline: number) {
  const log: string[] = [];
  const counts: Record<Action, number> = { SIGKILL: 0, SIGSTOP: 0, SIGTERM: 0 };
  const hurt = new Set<ClusterNode>();
  const actions = new Set<Promise<void>>();

  const recover = async (node: ClusterNode, what: string): Promise<void> => {
    if (!isUp(node)) await node.restart();
    await waitForReady(node);
    balancer.markUp(node);
    hurt.delete(node);
    log.push(`${since()} ${node.nodeId} ready again (${what})`);
  };

  const act = async (node: ClusterNode, action: Action): Promise<void> => {
    balancer.markDown(node);
    if (action === 'SIGSTOP') {
      const pauseMs = Math.round((0.5 + rng.next() * 2.5) * LEASE_MS);
      log.push(`${since()} SIGSTOP ${node.nodeId} for ${pauseMs} ms`);
      node.stop();
      await delay(pauseMs);
      node.cont();
      return recover(node, 'SIGCONT');
    }
    const downMs = action === 'SIGKILL' ? 1000 + rng.int(2000) : 0;
    log.push(`${since()} ${action} ${node.nodeId}${downMs ? `, restart after ${downMs} ms` : ''}`);
    const exit = await node.kill(action);
    log.push(`${since()} ${node.nodeId} exited ${JSON.stringify(exit)}`);
    await delay(downMs);
    return recover(node, 'restarted');
  };

  const run = async (): Promise<void> => {
    while (performance.now() < deadline) {
      await delay(2000 + rng.int(3000));
      if (performance.now() >= deadline) break;
      const action = rng.pick<Action>(['SIGKILL', 'SIGSTOP', 'SIGTERM']);
      const node = rng.pick(cluster.nodes);
      const up = cluster.nodes.filter((n) => !hurt.has(n));
      if (hurt.has(node) || up.length < 2) {
        log.push(`${since()} skipped ${action} of ${node.nodeId}: ${hurt.has(node) ? 'already hurt' : 'last one up'}`);
        continue;
      }
      hurt.add(node);
      counts[action]++;
      const p = act(node, action);
      actions.add(p);
      void p.finally(() => actions.delete(p));
    }
  };
  const running = run();

  return {
    log,
    counts,
    hurt: () => [...hurt].map((n) => n.nodeId),
    async stop(): Promise<void> {
      await running;
      await Promise.all([...actions]);
    },
  };
}

const acknowledged = (loads: Load[]) =>
  loads.reduce((n, load) => n + load.clients.reduce((m, c) => m + acknowledgedSince(c, 0), 0), 0);

/** Writes each node's output next to the seed, for a failed run's investigation; returns the paths. */
function saveOutputs(): string[] {
  return cluster.nodes.map((node) => {
    const file = path.join(os.tmpdir(), `chaos-${SEED}-${node.nodeId}.log`);
    writeFileSync(file, node.output());
    return file;
  });
}

describe.skipIf(!ok)('chaos in a cluster under load', () => {
  let loads: Load[] = [];
  let relayLoad: ReturnType<typeof startRelayLoad> | undefined;

  afterAll(async () => {
    for (const load of loads) load.close();
    await relayLoad?.close();
  });

  it(
    'loses no acknowledged op and answers every accepted event once, whatever process is killed, paused or drained',
    async () => {
      console.info(`[chaos] seed=${SEED} duration=${DURATION_MS}ms (replay with CHAOS_SEED=${SEED})`);
      const sessions = await Promise.all(Array.from({ length: SESSIONS }, (_, s) => loadedSession(s)));
      loads = sessions.map((s) => s.load);
      await Promise.all(loads.map((load) => load.connected()));
      relayLoad = startRelayLoad(createRng(SEED ^ 0x5eed));
      const relay = relayLoad;

      const chaosFrom = performance.now();
      const chaos = startChaos(createRng(SEED), chaosFrom + DURATION_MS);
      const replied = () => new Set(relay.sends().map((s) => s.replyTo));
      const accepted = () => relay.posted.filter((p) => p.acked);
      onTestFailed(() => {
        console.error(`[chaos] FAILED seed=${SEED}; actions:\n  ${chaos.log.join('\n  ')}`);
        console.error(`[chaos] node outputs: ${saveOutputs().join(' ')}`);
      });
      const progress = setInterval(() => {
        const events = accepted();
        const answered = replied();
        console.info(
          `[chaos] ${since()} actions=${JSON.stringify(chaos.counts)} hurt=[${chaos.hurt()}] ops acked=${acknowledged(loads)} events accepted=${events.length} replied=${events.filter((e) => answered.has(e.id)).length}`,
        );
      }, PROGRESS_EVERY_MS);
      try {
        await chaos.stop();
      } finally {
        clearInterval(progress);
      }
      await relay.stop();

      // Settle: every edit answered, every accepted event replied to.
      await Promise.all(loads.map((load) => load.stop(SETTLE_MS)));
      await expect
        .poll(
          () => {
            const answered = replied();
            return accepted()
              .filter((e) => !answered.has(e.id))
              .map((e) => e.id);
          },
          {
            timeout: SETTLE_MS,
            interval: 200,
            message: 'accepted events the relay received no reply to',
          },
        )
        .toEqual([]);

      const readFrom = cluster.nodes[0];
      const accountings = [];
      for (const s of sessions) accountings.push(await expectAccounting(s.load, cluster, s.id, readFrom, s.token));
      const replies = await expectOneReplyEach(relay.posted, relay.sends());
      const gap = Math.max(...loads.map((load) => longestServiceGap(load, chaosFrom).ms));
      const events = accepted();
      console.info(
        `[chaos] seed=${SEED} duration=${DURATION_MS}ms actions=${JSON.stringify(chaos.counts)} ops acked=${accountings.reduce((n, a) => n + a.acknowledged, 0)} stored=${accountings.reduce((n, a) => n + a.stored, 0)} conflicts=${accountings.reduce((n, a) => n + a.conflicts, 0)} events posted=${relay.posted.length} accepted=${events.length} replied=${replies} sends received=${relay.sends().length} longest service gap=${gap}ms`,
      );
    },
    DURATION_MS + 90_000,
  );
});

/**
 * Every accepted event has exactly one outbox row replying to it, which the relay received
 * (possibly more than once: a send is redelivered until acknowledged); no event has two, and no
 * row answers an event nobody posted. Resolves with the number of accepted events replied to.
 */
async function expectOneReplyEach(posted: Posted[], sends: SendFrame[]): Promise<number> {
  const { rows } = await cluster.db.pool.query<{ id: string; reply_to: string; status: string }>(
    `SELECT id, payload->>'replyTo' AS reply_to, status FROM relay_outbox`,
  );
  const byEvent = new Map<string, string[]>();
  for (const r of rows) byEvent.set(r.reply_to, [...(byEvent.get(r.reply_to) ?? []), r.id]);
  const ids = new Set(posted.map((p) => p.id));
  expect(
    rows.filter((r) => !ids.has(r.reply_to)).map((r) => r.id),
    'outbox rows replying to no event posted',
  ).toEqual([]);
  expect(
    [...byEvent].filter(([, rowIds]) => rowIds.length > 1),
    'events with more than one reply in the outbox',
  ).toEqual([]);
  const accepted = posted.filter((p) => p.acked);
  const notOnce = accepted.filter((p) => byEvent.get(p.id)?.length !== 1);
  expect(
    notOnce.map((p) => `${p.id}: ${byEvent.get(p.id)?.length ?? 0} rows (${p.attempts.join('; ')})`),
    'accepted events without exactly one reply in the outbox',
  ).toEqual([]);
  const received = new Map<string, Set<string>>();
  for (const s of sends) received.set(s.replyTo, (received.get(s.replyTo) ?? new Set()).add(s.id));
  const unlike = accepted.filter((p) => {
    const got = [...(received.get(p.id) ?? [])];
    return got.length !== 1 || got[0] !== byEvent.get(p.id)?.[0];
  });
  expect(
    unlike.map((p) => `${p.id}: outbox ${byEvent.get(p.id)}, received ${[...(received.get(p.id) ?? [])]}`),
    'accepted events whose stored reply the relay did not receive (or received another)',
  ).toEqual([]);
  const refused = posted.filter((p) => !p.acked && !TRANSIENT.test(p.attempts.at(-1)?.replace(/^\S+ /, '') ?? ''));
  expect(
    refused.map((p) => `${p.id}: ${p.attempts.join('; ')}`),
    'events refused for a reason other than a process being down',
  ).toEqual([]);
  return accepted.length;
}
