/**
 * A load-generator process of the miniapp benchmark, driven by the parent over IPC: the load
 * phases (`lib/loadDriver.ts`: `ws` sockets, closed or open loop) and the socket phase
 * (`lib/upgradeClient.ts`: held sockets and upgrade bursts with a minimal client). Every
 * answer carries this process's CPU time and event-loop delay, so a saturated generator is
 * visible in the results.
 *
 * Run by the parent as `node --max-semi-space-size=8 --import tsx bench/loadWorker.ts`.
 */
import type { Socket } from 'node:net';
import { connect, disconnect, load } from './lib/loadDriver.ts';
import type { OpenResult, WorkerReply, WorkerRequest } from './lib/protocol.ts';
import { closeRaw, type OpenJob, pooled, rawUpgrade } from './lib/upgradeClient.ts';
import { at, configureTokens, eld, tokenFor, wsBase } from './lib/workerShared.ts';

let held: Socket[] = [];
let prepared: OpenJob[] = [];
let burstSockets: Socket[] = [];

/** One distinct token per socket, minted before the clock starts. */
async function prepare(req: Extract<WorkerRequest, { cmd: 'prepare' }>): Promise<{ sockets: number }> {
  prepared = [];
  for (const room of req.rooms) {
    const route = req.target === 'archety' ? '/v1/miniapp/' : '/room/';
    const url = new URL(`${wsBase(req.baseUrl)}${route}${encodeURIComponent(room.sessionId)}`);
    for (const user of room.users) prepared.push({ url, token: await tokenFor(user, true) });
  }
  return { sockets: prepared.length };
}

/** Opens the prepared sockets with `concurrency` upgrades in flight from `startAt` on. */
async function openPrepared<S>(
  req: Extract<WorkerRequest, { cmd: 'hold' | 'burst' }>,
  open: (job: OpenJob) => Promise<{ ok: true; socket: S } | { ok: false; reason: string }>,
): Promise<{ sockets: S[]; result: OpenResult }> {
  const jobs = prepared;
  prepared = [];
  const sockets: S[] = [];
  const failures: Record<string, number> = {};
  let lastOpenAt = 0;
  await new Promise((r) => at(req.startAt, () => r(undefined)));
  eld.reset();
  const cpu0 = process.cpuUsage();
  await pooled(
    jobs.map((job) => async () => {
      const opened = await open(job);
      if (!opened.ok) {
        failures[opened.reason] = (failures[opened.reason] ?? 0) + 1;
        return;
      }
      lastOpenAt = Date.now();
      sockets.push(opened.socket);
    }),
    req.concurrency,
  );
  const cpu = process.cpuUsage(cpu0);
  return {
    sockets,
    result: {
      opened: sockets.length,
      failed: jobs.length - sockets.length,
      failures,
      lastOpenAt,
      eldP99Ms: eld.percentile(99) / 1e6,
      cpuMs: (cpu.user + cpu.system) / 1000,
    },
  };
}

function reply(msg: WorkerReply): void {
  process.send?.(msg);
}

async function handle(req: WorkerRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'init':
      configureTokens(req.workerId, req.jwt);
      return { pid: process.pid };
    case 'connect':
      return connect(req);
    case 'saturate':
    case 'rate':
      return load(req);
    case 'disconnect':
      return disconnect();
    case 'prepare':
      return prepare(req);
    case 'hold': {
      const { sockets, result } = await openPrepared(req, (job) => rawUpgrade(job, true));
      held.push(...sockets);
      return result;
    }
    case 'burst': {
      const { sockets, result } = await openPrepared(req, (job) => rawUpgrade(job, false));
      burstSockets = sockets;
      return result;
    }
    case 'releaseBurst': {
      const n = burstSockets.length;
      await closeRaw(burstSockets);
      burstSockets = [];
      return { closed: n };
    }
    case 'release': {
      const n = held.length;
      await closeRaw(held);
      held = [];
      return { closed: n };
    }
    case 'exit':
      setImmediate(() => process.exit(0));
      return {};
  }
}

process.on('message', (req: WorkerRequest) => {
  handle(req).then(
    (result) => reply({ id: req.id, ok: true, result }),
    (err: unknown) =>
      reply({ id: req.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
});
process.on('disconnect', () => process.exit(0));
