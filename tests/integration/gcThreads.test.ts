/**
 * How the server's garbage collector runs: named in the startup summary, and a warning with
 * the fix when the process may run on one core only with V8's background GC threads on.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { gcAdvice, gcThreads } from '../../src/observability/gcThreads.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { baseEnv, spawnServer } from '../helpers/server.ts';

const taskset = spawnSync('taskset', ['--version'], { stdio: 'ignore' }).status === 0;
if (!taskset) console.warn('gcThreads.test.ts: no `taskset` here; the one-core start is NOT tested');

describe('gcThreads / gcAdvice', () => {
  it('reads the collector mode from node’s command line', () => {
    expect(gcThreads([])).toBe('background');
    expect(gcThreads(['--inspect', '--max-old-space-size=512'])).toBe('background');
    expect(gcThreads(['--single-threaded-gc'])).toBe('single-threaded');
    expect(gcThreads(['--single_threaded_gc'])).toBe('single-threaded');
    expect(gcThreads(['--single-threaded'])).toBe('single-threaded');
  });

  it('advises the flag only on one core with background threads', () => {
    expect(gcAdvice(1, [])).toMatch(/one core only.*node --single-threaded-gc bin\/archety\.js start/);
    expect(gcAdvice(1, ['--single-threaded-gc'])).toBeNull();
    expect(gcAdvice(2, [])).toBeNull();
    expect(gcAdvice(64, ['--single-threaded-gc'])).toBeNull();
  });
});

describe('archety start', () => {
  it('names its collector mode in the summary line', async () => {
    const db = await createTestDatabase();
    const single = await spawnServer(baseEnv(db.url), ['start'], ['--single-threaded-gc']);
    expect(single.output()).toMatch(/archety listening on \S+ \(.*, gc single-threaded\)/);
    expect(single.output()).not.toMatch(/one core only/);
    single.child.kill('SIGTERM');
    expect(await single.exited).toEqual({ code: 0, signal: null });
  });

  it.skipIf(!taskset)(
    'on one core with background GC threads: warns, naming the flag; with the flag: no warning',
    async () => {
      const db = await createTestDatabase();
      const pinned = await spawnServer(baseEnv(db.url), ['start'], [], ['taskset', '-c', '0']);
      // The warning follows the summary line: wait for it rather than read the output once.
      await expect.poll(() => pinned.output(), { timeout: 5000 }).toMatch(/one core only.*--single-threaded-gc/);
      expect(pinned.output()).toMatch(/, gc background\)/);
      const warning = pinned
        .output()
        .split('\n')
        .find((l) => l.includes('one core only'));
      expect(JSON.parse(warning ?? '{}')).toMatchObject({ level: 40 });

      const flagged = await spawnServer(baseEnv(db.url), ['start'], ['--single-threaded-gc'], ['taskset', '-c', '0']);
      expect(flagged.output()).toMatch(/, gc single-threaded\)/);
      await new Promise((r) => setTimeout(r, 200));
      expect(flagged.output()).not.toMatch(/one core only/);
      for (const s of [pinned, flagged]) s.child.kill('SIGTERM');
      expect(await pinned.exited).toEqual({ code: 0, signal: null });
      expect(await flagged.exited).toEqual({ code: 0, signal: null });
    },
  );
});
