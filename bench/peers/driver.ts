/**
 * A load generator's clients and load phases, the same for every server: connect the clients
 * of this worker's rooms with the server's adapter, have each insert its item, then drive
 * label edits in a closed loop (every echo sends the next edit) or an open loop (a fixed rate,
 * whatever the answers), counting echoes, frames, latencies and every edit's outcome.
 */
import { performance } from 'node:perf_hooks';
import { emptyAccount } from '../lib/accounting.ts';
import type { OpAccount } from '../lib/protocol.ts';
import { pooled } from '../lib/upgradeClient.ts';
import { at, eld, getWorkerId, tokenFor } from '../lib/workerShared.ts';
import type { ClientAdapter, ClientHooks, PeerConnection } from './adapter.ts';
import type { PeerConnectResult, PeerLoadResult, PeerName, PeerRequest } from './protocol.ts';

interface Client {
  conn: PeerConnection;
  /** Next edit number (0 was the insert). */
  seq: number;
  /** Edit number → send time (performance.now()). */
  pending: Map<number, number>;
  dropped: boolean;
}

let clients: Client[] = [];
/** Bumped on every connect, so edit ids stay unique for the whole run. */
let generation = 0;
let account: OpAccount = emptyAccount();
let frames = 0;
let deliveries = 0;
let dropped = 0;
let closedLoop = false;
let running = false;
/** performance.now() bounds of the measured window: edits sent inside it have their latency kept. */
let winStart = Number.POSITIVE_INFINITY;
let winEnd = Number.POSITIVE_INFINITY;
let latencies: number[] = [];

async function loadAdapter(peer: PeerName): Promise<ClientAdapter> {
  switch (peer) {
    case 'archety':
      return (await import('./archety/client.ts')).archetyClient;
    case 'raw':
      return (await import('./raw/client.ts')).rawClient;
    case 'socketio':
      return (await import('./socketio/client.ts')).socketioClient;
    case 'colyseus':
      return (await import('./colyseus/client.ts')).colyseusClient;
    case 'hocuspocus':
      return (await import('./hocuspocus/client.ts')).hocuspocusClient;
  }
}

function send(c: Client, seq: number): void {
  c.pending.set(seq, performance.now());
  account.sent++;
  if (seq === 0) c.conn.insert();
  else c.conn.edit(seq);
}

function sendNext(c: Client): void {
  if (!c.dropped) send(c, c.seq++);
}

function settle(c: Client, seq: number, outcome: 'applied' | 'conflict' | 'error', code?: string): void {
  const sentAt = c.pending.get(seq);
  if (sentAt === undefined) {
    if (code) account.errorCodes[`${code}(no ref)`] = (account.errorCodes[`${code}(no ref)`] ?? 0) + 1;
    else account.unmatched++;
    return;
  }
  c.pending.delete(seq);
  account[outcome]++;
  if (code) account.errorCodes[code] = (account.errorCodes[code] ?? 0) + 1;
  if (outcome === 'applied' && sentAt >= winStart && sentAt < winEnd) latencies.push(performance.now() - sentAt);
  if (closedLoop && running) sendNext(c);
}

function hooksFor(getClient: () => Client | undefined): ClientHooks {
  return {
    frame(edits) {
      frames++;
      deliveries += edits;
    },
    echo(seq) {
      const c = getClient();
      if (c) settle(c, seq, 'applied');
    },
    conflict(seq) {
      const c = getClient();
      if (c) settle(c, seq, 'conflict');
    },
    refused(seq, code) {
      const c = getClient();
      if (c) settle(c, seq, 'error', code);
    },
    dropped() {
      const c = getClient();
      if (c && !c.dropped) {
        c.dropped = true;
        dropped++;
      }
    },
  };
}

function inFlight(): number {
  let n = 0;
  for (const c of clients) n += c.pending.size;
  return n;
}

async function waitUntil(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

/** Connects one client per user of every room; rooms are opened one client first (Colyseus creates the room on it). */
export async function connect(req: Extract<PeerRequest, { cmd: 'connect' }>): Promise<PeerConnectResult> {
  const started = performance.now();
  const adapter = await loadAdapter(req.peer);
  account = emptyAccount();
  dropped = 0;
  generation++;
  const tokens = new Map<string, string>();
  for (const room of req.rooms) for (const u of room.users) if (!tokens.has(u)) tokens.set(u, await tokenFor(u, false));
  const failures: Record<string, number> = {};
  const open = async (r: number, k: number) => {
    const room = req.rooms[r];
    let client: Client | undefined;
    const outcome = await adapter.connect(
      {
        baseUrl: req.baseUrl,
        room: room.id,
        user: room.users[k],
        index: k,
        token: tokens.get(room.users[k]) as string,
        prefix: `w${getWorkerId()}g${generation}r${r}c${k}-`,
      },
      hooksFor(() => client),
    );
    if (!outcome.ok) {
      failures[outcome.reason] = (failures[outcome.reason] ?? 0) + 1;
      return;
    }
    client = { conn: outcome.conn, seq: 1, pending: new Map(), dropped: false };
    clients.push(client);
  };
  await pooled(
    req.rooms.map((_, r) => () => open(r, 0)),
    req.concurrency,
  );
  await pooled(
    req.rooms.flatMap((room, r) => room.users.slice(1).map((_, k) => () => open(r, k + 1))),
    req.concurrency,
  );
  for (const c of clients) if (!c.conn.hasItem) send(c, 0);
  await waitUntil(() => inFlight() === 0, 30_000);
  account.inFlight = inFlight();
  const setup = account;
  account = emptyAccount();
  const failed = Object.values(failures).reduce((a, b) => a + b, 0);
  return { clients: clients.length, failed, failures, setup, ms: performance.now() - started };
}

/** Runs one load phase and reports its window and its accounting. */
export function load(req: Extract<PeerRequest, { cmd: 'load' }>): Promise<PeerLoadResult> {
  account = emptyAccount();
  frames = 0;
  deliveries = 0;
  dropped = 0;
  latencies = [];
  winStart = Number.POSITIVE_INFINITY;
  winEnd = Number.POSITIVE_INFINITY;
  closedLoop = req.mode === 'closed';
  return new Promise((resolve) => {
    let snap0 = { applied: 0, frames: 0, deliveries: 0, sent: 0, cpu: 0, t: 0 };
    let ticker: NodeJS.Timeout | undefined;
    at(req.startAt, () => {
      running = true;
      const live = clients.filter((c) => !c.dropped);
      if (req.mode === 'closed') {
        for (const c of live) for (let i = 0; i < req.window; i++) sendNext(c);
        return;
      }
      const t0 = performance.now();
      let cursor = 0;
      let sentHere = 0;
      const tick = () => {
        if (!running || live.length === 0) return;
        const due = Math.floor((req.rate * (performance.now() - t0)) / 1000) - sentHere;
        for (let i = 0; i < due; i++) {
          sendNext(live[cursor]);
          cursor = (cursor + 1) % live.length;
          sentHere++;
        }
        ticker = setTimeout(tick, 1);
      };
      tick();
    });
    at(req.startAt + req.warmMs, () => {
      const cpu = process.cpuUsage();
      snap0 = { applied: account.applied, frames, deliveries, sent: account.sent, cpu: cpu.user + cpu.system, t: 0 };
      snap0.t = performance.now();
      winStart = snap0.t;
      eld.reset();
    });
    at(req.startAt + req.warmMs + req.measureMs, async () => {
      const t = performance.now();
      winEnd = t;
      running = false;
      clearTimeout(ticker);
      const cpu = process.cpuUsage();
      const window = {
        applied: account.applied - snap0.applied,
        frames: frames - snap0.frames,
        deliveries: deliveries - snap0.deliveries,
        sent: account.sent - snap0.sent,
        ms: t - snap0.t,
        eldP99Ms: eld.percentile(99) / 1e6,
        cpuMs: (cpu.user + cpu.system - snap0.cpu) / 1000,
      };
      await waitUntil(() => inFlight() === 0, req.drainMs);
      account.inFlight = inFlight();
      resolve({ window, account, latencies, dropped });
    });
  });
}

export async function disconnect(): Promise<{ closed: number }> {
  const all = clients;
  clients = [];
  await Promise.all(all.map((c) => c.conn.close()));
  return { closed: all.length };
}
