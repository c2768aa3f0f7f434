/**
 * A generator's load phases: `ws` sockets on the load rooms, each editing its own budget
 * item; closed loop (every acknowledgement sends the next op) or open loop (a fixed rate,
 * whatever the answers); counts, send → own `applied` latencies and op accounting.
 *
 * Frame handling is deliberately cheap (string scanning for `applied` frames, JSON.parse for
 * the rest): the generator must not be what is measured.
 */
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import type { ConnectResult, LoadResult, OpAccount, Target, WorkerRequest } from './protocol.ts';
import { pooled } from './upgradeClient.ts';
import { at, eld, getWorkerId, tokenFor, wsBase } from './workerShared.ts';

/** `{"type":"applied","opId":"` — Archety's applied frames (and the raw relay's copies) start so. */
const APPLIED_PREFIX = '{"type":"applied","opId":"';
/** Emitted on a socket by its message handler when its snapshot arrived. */
const SNAPSHOT_EVENT = 'bench:snapshot';
const WS_OPTIONS: WebSocket.ClientOptions = {
  perMessageDeflate: false,
  skipUTF8Validation: true,
  handshakeTimeout: 30_000,
};

interface Client {
  ws: WebSocket;
  prefix: string;
  item: string;
  /** Its room's index in this worker's rooms, and its index in that room. */
  room: number;
  slot: number;
  user: string;
  seq: number;
  /** Latest version seen (the baseVersion of the next op). */
  version: number;
  /** opId → send time (performance.now()). */
  pending: Map<string, number>;
  closed: boolean;
  items?: Set<string>;
}

let target: Target = 'archety';
let clients: Client[] = [];
/** Bumped on every connect, so opIds stay unique for the whole run (the server dedups by opId). */
let generation = 0;
let account: OpAccount = freshAccount();
let frames = 0;
let closedDuring = 0;
/** Closed loop: each acknowledgement sends the next op. */
let closedLoop = false;
let running = false;
/** performance.now() bounds of the measured window; ops sent inside it have their latency kept. */
let winStart = Number.POSITIVE_INFINITY;
let winEnd = Number.POSITIVE_INFINITY;
let latencies: number[] = [];

function freshAccount(): OpAccount {
  return { sent: 0, applied: 0, conflict: 0, error: 0, inFlight: 0, errorCodes: {}, unmatched: 0 };
}

function opFrame(c: Client, opId: string, seq: number): string {
  const op = `{"kind":"set","path":["budget","items",{"id":"${c.item}"},"label"],"value":"label ${seq}"}`;
  // The raw relay gets the frame Archety would publish, so both fan out the same bytes.
  return target === 'archety'
    ? `{"type":"op","opId":"${opId}","baseVersion":${c.version},"op":${op}}`
    : `{"type":"applied","opId":"${opId}","by":"${c.user}","version":${seq},"op":${op}}`;
}

function sendOp(c: Client): void {
  if (c.closed) return;
  const seq = c.seq++;
  const opId = c.prefix + seq;
  c.pending.set(opId, performance.now());
  account.sent++;
  c.ws.send(opFrame(c, opId, seq));
}

function settle(c: Client, opId: string, outcome: 'applied' | 'conflict' | 'error', code?: string): void {
  const sentAt = c.pending.get(opId);
  if (sentAt === undefined) {
    account.unmatched++;
    return;
  }
  c.pending.delete(opId);
  account[outcome]++;
  if (code) account.errorCodes[code] = (account.errorCodes[code] ?? 0) + 1;
  if (outcome === 'applied' && sentAt >= winStart && sentAt < winEnd) latencies.push(performance.now() - sentAt);
  if (closedLoop && running) sendOp(c);
}

function onFrame(c: Client, s: string): void {
  if (s.startsWith(APPLIED_PREFIX)) {
    frames++;
    const end = s.indexOf('"', APPLIED_PREFIX.length);
    const opId = s.slice(APPLIED_PREFIX.length, end);
    let i = s.indexOf('"version":', end) + 10;
    let v = 0;
    for (let ch = s.charCodeAt(i); ch >= 48 && ch <= 57; ch = s.charCodeAt(++i)) v = v * 10 + (ch - 48);
    if (v > c.version) c.version = v;
    if (opId.startsWith(c.prefix)) settle(c, opId, 'applied');
    return;
  }
  const f = JSON.parse(s) as {
    type: string;
    version?: number;
    opId?: string;
    ref?: string;
    code?: string;
    state?: { budget?: { items?: { id: string }[] } };
  };
  if (f.type === 'snapshot') {
    c.version = Math.max(c.version, f.version ?? 0);
    c.items = new Set((f.state?.budget?.items ?? []).map((it) => it.id));
    c.ws.emit(SNAPSHOT_EVENT);
  } else if (f.type === 'conflict' && f.opId) {
    c.version = Math.max(c.version, f.version ?? 0);
    settle(c, f.opId, 'conflict');
  } else if (f.type === 'error') {
    if (f.ref && c.pending.has(f.ref)) settle(c, f.ref, 'error', f.code);
    else account.errorCodes[`${f.code}(no ref)`] = (account.errorCodes[`${f.code}(no ref)`] ?? 0) + 1;
  }
}

/**
 * Opens one socket; resolves once it is open (`ready: 'open'`) or once its first snapshot
 * frame came (`'snapshot'`, signalled by the message handler `onCreated` attaches).
 */
function openSocket(
  url: string,
  protocols: string[] | undefined,
  ready: 'open' | 'snapshot',
  onCreated: (ws: WebSocket) => void,
): Promise<{ ws: WebSocket; ok: true } | { ok: false; reason: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, protocols, WS_OPTIONS);
    let done = false;
    const finish = (r: { ws: WebSocket; ok: true } | { ok: false; reason: string }) => {
      if (done) return;
      done = true;
      resolve(r);
    };
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      finish({ ok: false, reason: `http_${res.statusCode}` });
      ws.terminate();
    });
    ws.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, reason: err.code ?? err.message.slice(0, 60) }));
    ws.on('close', (code) => finish({ ok: false, reason: `closed_${code}` }));
    onCreated(ws);
    ws.once(ready === 'snapshot' ? SNAPSHOT_EVENT : 'open', () => finish({ ws, ok: true }));
  });
}

export async function connect(req: Extract<WorkerRequest, { cmd: 'connect' }>): Promise<ConnectResult> {
  const started = performance.now();
  target = req.target;
  account = freshAccount();
  generation++;
  const tokens = new Map<string, string>();
  if (target === 'archety') {
    for (const room of req.rooms)
      for (const u of room.users) if (!tokens.has(u)) tokens.set(u, await tokenFor(u, false));
  }
  let failed = 0;
  const byRoom: Client[][] = req.rooms.map(() => []);
  const tasks = req.rooms.flatMap((room, r) =>
    room.users.map((user, k) => async () => {
      const c: Client = {
        ws: undefined as unknown as WebSocket,
        prefix: `w${getWorkerId()}g${generation}r${r}c${k}-`,
        item: `item-${k}`,
        room: r,
        slot: k,
        user,
        seq: 0,
        version: 0,
        pending: new Map(),
        closed: false,
      };
      const url =
        target === 'archety'
          ? `${wsBase(req.baseUrl)}/v1/miniapp/${encodeURIComponent(room.sessionId)}`
          : `${wsBase(req.baseUrl)}/room/${encodeURIComponent(room.sessionId)}`;
      const protocols = target === 'archety' ? ['archety.v1', `bearer.${tokens.get(user)}`] : undefined;
      const opened = await openSocket(url, protocols, target === 'archety' ? 'snapshot' : 'open', (ws) => {
        c.ws = ws;
        ws.on('message', (data: Buffer) => onFrame(c, data.toString()));
      });
      if (!opened.ok) {
        failed++;
        return;
      }
      c.ws = opened.ws;
      c.ws.on('close', () => {
        c.closed = true;
        if (running) closedDuring++;
      });
      c.ws.on('error', () => {});
      clients.push(c);
      byRoom[r][k] = c;
    }),
  );
  await pooled(tasks, req.concurrency);
  if (target === 'archety') await ensureItems(byRoom);
  const setup = account;
  account = freshAccount();
  return { sockets: clients.length, failed, setup, ms: performance.now() - started };
}

/** Client 0 of each room inserts the budget items its room's clients will edit. */
async function ensureItems(byRoom: Client[][]): Promise<void> {
  for (const room of byRoom) {
    const first = room.find(Boolean);
    if (!first) continue;
    for (let k = 0; k < room.length; k++) {
      const item = `item-${k}`;
      if (first.items?.has(item)) continue;
      const seq = first.seq++;
      const opId = `${first.prefix}${seq}`;
      first.pending.set(opId, performance.now());
      account.sent++;
      first.ws.send(
        JSON.stringify({
          type: 'op',
          opId,
          baseVersion: first.version,
          op: { kind: 'insert', path: ['budget', 'items'], value: { id: item, label: `item ${k}`, amount: k } },
        }),
      );
    }
  }
  await waitUntil(() => inFlight() === 0, 15_000);
  account.inFlight = inFlight();
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

/** Runs one load phase (closed or open loop) and reports its window and accounting. */
export function load(req: Extract<WorkerRequest, { cmd: 'saturate' | 'rate' }>): Promise<LoadResult> {
  account = freshAccount();
  frames = 0;
  closedDuring = 0;
  latencies = [];
  winStart = Number.POSITIVE_INFINITY;
  winEnd = Number.POSITIVE_INFINITY;
  closedLoop = req.cmd === 'saturate';
  const live = () => clients.filter((c) => !c.closed);
  return new Promise((resolve) => {
    let snap0 = { applied: 0, frames: 0, sent: 0, cpu: 0, t: 0 };
    let ticker: NodeJS.Timeout | undefined;
    at(req.startAt, () => {
      running = true;
      if (req.cmd === 'saturate') {
        for (const c of live()) for (let i = 0; i < req.window; i++) sendOp(c);
      } else {
        const t0 = performance.now();
        const open = live();
        if (req.interleave) open.sort((a, b) => a.slot - b.slot || a.room - b.room);
        let cursor = 0;
        let sentHere = 0;
        const tick = () => {
          if (!running || open.length === 0) return;
          const due = Math.floor((req.rate * (performance.now() - t0)) / 1000) - sentHere;
          for (let i = 0; i < due; i++) {
            sendOp(open[cursor]);
            cursor = (cursor + 1) % open.length;
            sentHere++;
          }
          ticker = setTimeout(tick, 1);
        };
        tick();
      }
    });
    at(req.startAt + req.warmMs, () => {
      const cpu = process.cpuUsage();
      snap0 = {
        applied: account.applied,
        frames,
        sent: account.sent,
        cpu: cpu.user + cpu.system,
        t: performance.now(),
      };
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
        sent: account.sent - snap0.sent,
        ms: t - snap0.t,
        eldP99Ms: eld.percentile(99) / 1e6,
        cpuMs: (cpu.user + cpu.system - snap0.cpu) / 1000,
      };
      await waitUntil(() => inFlight() === 0, req.drainMs);
      account.inFlight = inFlight();
      resolve({ window, account, latencies, closedDuring });
    });
  });
}

export async function disconnect(): Promise<{ closed: number }> {
  const all = clients;
  clients = [];
  await closeAll(all.map((c) => c.ws));
  return { closed: all.length };
}

async function closeAll(sockets: WebSocket[]): Promise<void> {
  const open = sockets.filter((ws) => ws && ws.readyState !== WebSocket.CLOSED);
  const closed = open.map((ws) => new Promise<void>((r) => ws.once('close', () => r())));
  for (const ws of open) ws.close(1000);
  const timeout = new Promise<void>((r) => setTimeout(r, 10_000).unref());
  await Promise.race([Promise.all(closed), timeout]);
  for (const ws of open) if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
}
