/**
 * How the server's garbage collector runs: named in the startup summary, and a warning with
 * the fix when the process may run on one core only with V8's background GC threads on.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_SEMI_SPACE_MIB,
  gcAdvice,
  gcThreads,
  SEMI_SPACE_MIB,
  semiSpaceMiB,
} from '../../src/observability/gcThreads.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { baseEnv, repoRoot, spawnServer } from '../helpers/server.ts';

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

describe('semiSpaceMiB', () => {
  it('reads the young generation’s semi-space from node’s command line, then NODE_OPTIONS, else V8’s default', () => {
    expect(semiSpaceMiB([], '')).toBe(DEFAULT_SEMI_SPACE_MIB);
    expect(semiSpaceMiB(['--max-semi-space-size=32'], '')).toBe(32);
    expect(semiSpaceMiB(['--max_semi_space_size=64'], '')).toBe(64);
    expect(semiSpaceMiB(['--max-semi-space-size', '48', '--inspect'], '')).toBe(48);
    expect(semiSpaceMiB([], '--max-old-space-size=4096 --max-semi-space-size=24')).toBe(24);
    // The command line is applied after NODE_OPTIONS: it wins; and the last of a list wins.
    expect(semiSpaceMiB(['--max-semi-space-size=8'], '--max-semi-space-size=24')).toBe(8);
    expect(semiSpaceMiB(['--max-semi-space-size=8', '--max-semi-space-size=40'], '')).toBe(40);
    // A value V8 would not take leaves the default.
    expect(semiSpaceMiB(['--max-semi-space-size=lots'], '')).toBe(DEFAULT_SEMI_SPACE_MIB);
  });
});

describe('archety start', () => {
  it('names its young generation in the summary line: the `archety` command and `npm start` give it 32 MiB', async () => {
    const db = await createTestDatabase();
    // The file run as a command: its `#!/usr/bin/env -S node --max-semi-space-size=32` line.
    const command = await spawnServer(baseEnv(db.url), ['start'], null);
    expect(command.output()).toMatch(
      new RegExp(`archety listening on \\S+ \\(.*, semi-space ${SEMI_SPACE_MIB} MiB\\)`),
    );
    const summary = command
      .output()
      .split('\n')
      .find((l) => l.includes('archety listening on'));
    expect(JSON.parse(summary ?? '{}')).toMatchObject({ semiSpaceMiB: SEMI_SPACE_MIB });
    command.child.kill('SIGTERM');
    expect(await command.exited).toEqual({ code: 0, signal: null });
    expect(JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')).scripts.start).toBe(
      `node --max-semi-space-size=${SEMI_SPACE_MIB} bin/archety.js start`,
    );
  });

  it('names its collector mode in the summary line', async () => {
    const db = await createTestDatabase();
    const single = await spawnServer(baseEnv(db.url), ['start'], ['--single-threaded-gc']);
    expect(single.output()).toMatch(/archety listening on \S+ \(.*, gc single-threaded, semi-space 16 MiB\)/);
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
      expect(pinned.output()).toMatch(/, gc background, semi-space \d+ MiB\)/);
      const warning = pinned
        .output()
        .split('\n')
        .find((l) => l.includes('one core only'));
      expect(JSON.parse(warning ?? '{}')).toMatchObject({ level: 40 });

      const flagged = await spawnServer(baseEnv(db.url), ['start'], ['--single-threaded-gc'], ['taskset', '-c', '0']);
      expect(flagged.output()).toMatch(/, gc single-threaded, semi-space \d+ MiB\)/);
      await new Promise((r) => setTimeout(r, 200));
      expect(flagged.output()).not.toMatch(/one core only/);
      for (const s of [pinned, flagged]) s.child.kill('SIGTERM');
      expect(await pinned.exited).toEqual({ code: 0, signal: null });
      expect(await flagged.exited).toEqual({ code: 0, signal: null });
    },
  );
});
