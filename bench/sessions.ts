/**
 * `npm run bench:sessions`: what live miniapp sessions cost the process, with no I/O at all —
 * the session machine, its rules and its op log, driven in memory.
 *
 * Many sessions, each with its sockets joined, take ops one at a time (a `set` on a budget item
 * addressed by id, the shape of an edit in the trip planner), each followed by its `committed`
 * event as the group commit would send it. Printed:
 * - CPU per op through the two transitions (`ops`, then `committed`), and ops/s on one core;
 * - the V8 heap still in use after a full GC, per session and per logged op: what a server
 *   holding this many sessions keeps in memory, which a major GC must mark each time.
 *
 * The network, PostgreSQL and the host's mailbox are left out on purpose (`bench:miniapp`
 * measures them): this isolates the actor itself, the part every op of every session pays.
 */
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import vm from 'node:vm';
import { createActor } from 'xstate';
import { tripPlanner } from '../actors/apps/tripPlanner.ts';
import { type MiniappActor, miniappMachine } from '../actors/miniapp.machine.ts';
import { LOG_WINDOW, type MiniappContext } from '../actors/miniappSession.ts';
import { applyOp, type Op } from '../actors/ops.ts';
import { integerOption, parsedOrExit } from './lib/commandLine.ts';
import { fmt } from './lib/stats.ts';

const USAGE = `Usage: npm run bench:sessions [-- options]

The miniapp session machine alone (no network, no database): CPU per op through its two
transitions, and the heap live sessions keep, per session and per logged op. Seconds.

Options:
  --sessions N   live sessions (default 1000)
  --sockets N    sockets joined to each (default 10)
  --ops N        ops each session takes (default 1200; the log keeps the last 256)
  --stale N      how many versions behind each op's base is (default 0; at most 255: an op based
                 further back than the in-memory log would read the store, which is not here)
  --quick        a small run (100 sessions, 300 ops each): the smoke test
  -h, --help     show this help
`;

interface Options {
  sessions: number;
  sockets: number;
  ops: number;
  stale: number;
  quick: boolean;
}

function parse(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      sessions: { type: 'string' },
      sockets: { type: 'string' },
      ops: { type: 'string' },
      stale: { type: 'string' },
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  const quick = values.quick === true;
  const stale = integerOption('stale', values.stale, 0) ?? 0;
  if (stale >= LOG_WINDOW) {
    throw new Error(`--stale must be below ${LOG_WINDOW} (the ops a session keeps in memory), got ${stale}`);
  }
  return {
    sessions: integerOption('sessions', values.sessions, 1) ?? (quick ? 100 : 1000),
    sockets: integerOption('sockets', values.sockets, 1) ?? 10,
    ops: integerOption('ops', values.ops, 1) ?? (quick ? 300 : 1200),
    stale,
    quick,
  };
}

const ITEMS = 10;

/** A trip whose budget holds ITEMS items, `item-0` … */
function startingState(): unknown {
  let state: unknown = tripPlanner.initialState({ title: 'bench' });
  for (let k = 0; k < ITEMS; k++) {
    const op: Op = {
      kind: 'insert',
      path: ['budget', 'items'],
      value: { id: `item-${k}`, label: `item ${k}`, amount: k },
    };
    const result = applyOp(tripPlanner.schema, state, op);
    if (!result.ok) throw new Error(result.message);
    state = result.state;
  }
  return state;
}

function main(): void {
  const o = parsedOrExit('bench:sessions', USAGE, () => parse(process.argv.slice(2)));
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;

  // Commits come back after the turn that queued them, as from the group commit.
  let committing: (() => void)[] = [];
  const machine = miniappMachine.provide({
    actions: {
      send: () => {},
      publish: () => {},
      attach: () => {},
      detach: () => {},
      persistOp: ({ self }, { entry }) => {
        const version = entry.version;
        committing.push(() => self.send({ type: 'committed', version }));
      },
      persistCheckpoint: () => {},
      persistParticipant: () => {},
    },
  });
  const state = startingState();
  const users = Array.from({ length: o.sockets }, (_, u) => `user-${u}`);

  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const sessions: MiniappActor[] = [];
  const versions: number[] = [];
  for (let i = 0; i < o.sessions; i++) {
    const actor = createActor(machine, {
      input: {
        sessionId: `s${i}`,
        app: tripPlanner.name,
        state,
        version: 0,
        checkpointVersion: 0,
        participants: users,
        log: [],
      },
    });
    actor.start();
    for (let u = 0; u < o.sockets; u++) actor.send({ type: 'join', conn: `s${i}-c${u}`, user: users[u] });
    sessions.push(actor);
    versions.push(0);
  }

  let sent = 0;
  const round = () => {
    for (let i = 0; i < o.sessions; i++) {
      const u = sent % o.sockets;
      sent++;
      sessions[i].send({
        type: 'ops',
        requests: [
          {
            type: 'op',
            conn: `s${i}-c${u}`,
            by: users[u],
            opId: `op-${sent}`,
            baseVersion: Math.max(0, versions[i] - o.stale),
            op: { kind: 'set', path: ['budget', 'items', { id: `item-${sent % ITEMS}` }, 'amount'], value: sent },
            receivedAt: 0,
          },
        ],
      });
      versions[i]++;
    }
    const now = committing;
    committing = [];
    for (const commit of now) commit();
  };

  // Warm up (and fill the logs), then measure the rest.
  const warm = Math.min(o.ops, Math.max(20, Math.floor(o.ops / 4)));
  for (let r = 0; r < warm; r++) round();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let r = warm; r < o.ops; r++) round();
  const cpu = process.cpuUsage(cpu0);
  const wallMs = performance.now() - t0;
  const measured = Math.max(1, (o.ops - warm) * o.sessions);

  gc();
  const live = process.memoryUsage().heapUsed - heapBefore;
  let logged = 0;
  for (const s of sessions) {
    const context = s.getSnapshot().context as MiniappContext;
    if (context.version !== o.ops || context.committedVersion !== o.ops) {
      throw new Error(`session at version ${context.version} (committed ${context.committedVersion}), not ${o.ops}`);
    }
    logged += context.log.length;
  }
  const cpuUs = (cpu.user + cpu.system) / measured;

  console.log(
    `bench:sessions: ${fmt(o.sessions)} sessions × ${o.sockets} sockets, ${fmt(o.ops)} ops each (base ${o.stale} behind), Node ${process.version}`,
  );
  console.log('');
  console.log('| figure | value |');
  console.log('|---|---:|');
  console.log(
    `| CPU per op (\`ops\` + \`committed\` transitions; ${fmt(measured)} ops measured) | ${cpuUs.toFixed(1)} µs → ${fmt(1e6 / cpuUs)} ops/s on one core (wall ${((wallMs * 1000) / measured).toFixed(1)} µs) |`,
  );
  console.log(`| heap live after a full GC | ${(live / 2 ** 20).toFixed(1)} MiB |`);
  console.log(`| per session | ${fmt(live / o.sessions / 1024, 1)} KiB |`);
  console.log(`| logged ops held | ${fmt(logged)} (${fmt(logged / o.sessions)} per session) |`);
  console.log(`| per logged op (the session's other state included) | ${fmt(live / Math.max(1, logged))} B |`);
  for (const s of sessions) s.stop();
}

main();
