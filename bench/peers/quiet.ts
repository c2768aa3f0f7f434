/**
 * Measurements taken while another benchmark runs on this 2-core machine are worthless: wait
 * (polling) until none runs, up to a limit, and say what happened.
 */
import { spawnSync } from 'node:child_process';
import { progress, sleep } from '../lib/progress.ts';

/** The other benchmarks of this repository, by their command lines. */
const OTHERS = 'bench/(miniapp|relay|loadWorker)';

/** Command lines of other benchmark processes running now. */
export function otherBenchmarks(): string[] {
  const r = spawnSync('pgrep', ['-af', OTHERS], { encoding: 'utf8' });
  return (r.stdout ?? '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith(`${process.pid} `) && !l.includes('pgrep'));
}

/** Waits (polling every `pollMs`) until no other benchmark runs, for at most `maxMs`. */
export async function waitForQuiet(maxMs: number, pollMs = 30_000): Promise<{ waitedMs: number; busy: string[] }> {
  const started = Date.now();
  let busy = otherBenchmarks();
  while (busy.length && Date.now() - started < maxMs) {
    progress(`  another benchmark is running (${busy[0]}${busy.length > 1 ? ` +${busy.length - 1}` : ''}): waiting`);
    await sleep(Math.min(pollMs, maxMs - (Date.now() - started)));
    busy = otherBenchmarks();
  }
  return { waitedMs: Date.now() - started, busy };
}
