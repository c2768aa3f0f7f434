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

/** How this process's collector runs, from node's command line. */
export function gcThreads(execArgv: readonly string[] = process.execArgv): GcThreads {
  return execArgv.some((a) => SINGLE_THREADED.has(a)) ? 'single-threaded' : 'background';
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
