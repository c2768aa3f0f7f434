/**
 * Whether V8's garbage collector works in background threads, and whether it should.
 *
 * By default V8 marks, sweeps and scavenges partly in background threads, to spare the main
 * thread — which pays off when those threads have another core to run on. A process that may
 * run on one core only (pinned with `taskset` or a cpuset, or a one-vCPU machine) gains
 * nothing from them: they take the event loop's own core, a scheduler slice at a time, and
 * every op that arrives meanwhile waits. Started as `node --single-threaded-gc`, V8 does the
 * same work on the main thread, in small incremental steps between messages. Measured on one
 * core (bench/README.md, "eleventh part"): the event loop waited for its core 14–20 % of the
 * time at saturation instead of 22–30 %, and the many-quiet-sessions p99 was 9–19 ms in five runs
 * of six (114 ms in one) against 9–54 ms without the flag.
 *
 * The flag can only be given on node's command line: V8 refuses it in NODE_OPTIONS, and
 * turning background marking off in a running process aborts it at its next collection.
 *
 * And how large V8's young generation may grow (its semi-space, `--max-semi-space-size`, in
 * MiB; 16 by default in Node 20). A young-generation collection (a scavenge) costs what
 * survives it: every object still in use is copied. A server has a steady set of work in
 * flight — relay events waiting for their commit, their replies for the relay's ack — that
 * outlives every scavenge it meets; with twice the semi-space there are half the scavenges,
 * each copying about the same. Measured under `npm run bench:relay` (bench/README.md, "twelfth
 * part"): 88 µs of scavenges per relay event with 16 MiB, 44 with 32, 35 with 64. So the server
 * is started with 32 (`npm start`, `npm run cluster`, the `archety` command itself), which the
 * summary line states; the young generation (two semi-spaces) then takes up to 64 MiB, not 32.
 */
import os from 'node:os';

/** The flags that keep V8's collector on the main thread (`--single-threaded` implies the other). */
const SINGLE_THREADED = new Set([
  '--single-threaded-gc',
  '--single_threaded_gc',
  '--single-threaded',
  '--single_threaded',
]);

export type GcThreads = 'single-threaded' | 'background';

/** V8's largest semi-space in Node 20 on 64-bit, in MiB (the young generation is twice that). */
export const DEFAULT_SEMI_SPACE_MIB = 16;
/** What `npm start`, `npm run cluster` and the `archety` command start the server with. */
export const SEMI_SPACE_MIB = 32;

const SEMI_SPACE = /^--max[-_]semi[-_]space[-_]size(?:=(.*))?$/;

/**
 * The largest semi-space of this process (MiB): the last `--max-semi-space-size` of
 * `NODE_OPTIONS`, then of node's command line (which wins), else V8's default.
 */
export function semiSpaceMiB(
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string = process.env.NODE_OPTIONS ?? '',
): number {
  let mib = DEFAULT_SEMI_SPACE_MIB;
  for (const args of [nodeOptions.split(/\s+/).filter(Boolean), execArgv]) {
    args.forEach((arg, i) => {
      const m = SEMI_SPACE.exec(arg);
      if (!m) return;
      const n = Number(m[1] ?? args[i + 1]);
      if (Number.isInteger(n) && n > 0) mib = n;
    });
  }
  return mib;
}

/** How this process's collector runs, from node's command line. */
export function gcThreads(execArgv: readonly string[] = process.execArgv): GcThreads {
  return execArgv.some((a) => SINGLE_THREADED.has(a)) ? 'single-threaded' : 'background';
}

/**
 * The flags that make a child process collect garbage as this one does: its collector mode, and
 * its semi-space when not V8's default (what `archety cluster` gives its nodes).
 */
export function collectorFlags(
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string = process.env.NODE_OPTIONS ?? '',
): string[] {
  const mib = semiSpaceMiB(execArgv, nodeOptions);
  return [
    ...(gcThreads(execArgv) === 'single-threaded' ? ['--single-threaded-gc'] : []),
    ...(mib !== DEFAULT_SEMI_SPACE_MIB ? [`--max-semi-space-size=${mib}`] : []),
  ];
}

/**
 * The advice to log at startup, or null: when the process may use one core only and its
 * collector still runs background threads.
 */
export function gcAdvice(
  cores: number = os.availableParallelism(),
  execArgv: readonly string[] = process.execArgv,
): string | null {
  if (cores > 1 || gcThreads(execArgv) === 'single-threaded') return null;
  return (
    'this process may run on one core only, and V8 collects garbage in background threads that ' +
    'take that core from the event loop: start it as `node --single-threaded-gc bin/archety.js start` ' +
    '(see docs/operations.md, "On one core")'
  );
}
