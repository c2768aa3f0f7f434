/**
 * The first run, as a new user meets it: `archety` alone prints the help; a database the
 * server cannot use is one line on stderr naming it and the fix (no stack, no password);
 * `archety token` never invents a secret no server uses. The real CLI, the real PostgreSQL.
 * (The embedded default and its data directory lock: embeddedStart.test.ts.)
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, inject, it } from 'vitest';
import { onCleanup } from '../helpers/cleanup.ts';
import { withDatabase } from '../helpers/db.ts';
import { repoRoot } from '../helpers/server.ts';
import { TEST_SECRET } from '../helpers/tokens.ts';

const run = promisify(execFile);

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `archety <args>` to its end (20 s at most) and returns its exit code and output. */
async function archety(args: string[], env: Record<string, string> = {}, cwd = repoRoot): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(process.execPath, [path.join(repoRoot, 'bin/archety.js'), ...args], {
      cwd,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', LOG_FORMAT: 'json', ...env },
      timeout: 20_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** The one stderr line of a failed start: exit code 1, a single line, no stack frames. */
function oneLine(outcome: Outcome): string {
  expect(outcome.code).toBe(1);
  const lines = outcome.stderr.split('\n').filter(Boolean);
  expect(lines).toHaveLength(1);
  expect(outcome.stderr + outcome.stdout).not.toMatch(/^\s+at /m);
  return lines[0];
}

function unique(prefix: string): string {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}`;
}

/** A port on 127.0.0.1 that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const admin = () => new URL(inject('pgAdminUrl'));

describe('archety with no command', () => {
  it('prints the help and exits 0, starting nothing', async () => {
    const outcome = await archety([]);
    expect(outcome).toMatchObject({ code: 0, stderr: '' });
    expect(outcome.stdout).toContain('Usage: archety <command> [options]');
    expect(outcome.stdout).not.toContain('listening');
  });
});

describe('archety start against a database it cannot use', () => {
  for (const command of ['start', 'migrate']) {
    it(`\`${command}\`: a database that does not exist is one line with the createdb to run`, async () => {
      const name = unique('archety_missing');
      const line = oneLine(
        await archety([command], { DATABASE_URL: withDatabase(inject('pgAdminUrl'), name), JWT_SECRET: TEST_SECRET }),
      );
      expect(line).toMatch(
        new RegExp(`^archety: database "${name}" does not exist on .*\\(createdb (-h \\S+ -p \\d+ )?${name}\\)`),
      );
    });
  }

  it('a role that does not exist is one line naming it, with the createuser to run', async () => {
    const role = unique('archety_nobody');
    const url = admin();
    url.username = role;
    const line = oneLine(await archety(['start'], { DATABASE_URL: url.toString(), JWT_SECRET: TEST_SECRET }));
    expect(line).toMatch(
      new RegExp(`^archety: role "${role}" does not exist on .*\\(createuser (-h \\S+ -p \\d+ )?${role}\\)`),
    );
  });

  it('a port nothing listens on is one line naming host:port, without the password', async () => {
    const port = await closedPort();
    const line = oneLine(
      await archety(['start'], {
        DATABASE_URL: `postgres://archety:pw-do-not-print@127.0.0.1:${port}/archety`,
        JWT_SECRET: TEST_SECRET,
      }),
    );
    expect(line).toBe(
      `archety: cannot connect to PostgreSQL on 127.0.0.1:${port} (connection refused): is PostgreSQL running on 127.0.0.1:${port}? Check DATABASE_URL`,
    );
  });

  it('a host that does not resolve is one line naming it', async () => {
    const line = oneLine(
      await archety(['start'], {
        DATABASE_URL: 'postgres://archety@no-such-host.invalid/archety',
        JWT_SECRET: TEST_SECRET,
      }),
    );
    expect(line).toBe('archety: cannot resolve the host "no-such-host.invalid" of DATABASE_URL: check DATABASE_URL');
  });
});

describe('archety token without the server’s secret', () => {
  it('fails in one line saying where it looked, and creates nothing', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'archety-token-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const outcome = await archety(['token', '--sub', '+15551234567'], {}, dir);
    expect(oneLine(outcome)).toBe(
      `archety token: no JWT secret: JWT_SECRET is unset and ${path.join(dir, '.data', 'jwt-secret')} does not exist; start the server once with this DATA_DIR (it creates the secret), or set JWT_SECRET, or DATA_DIR to the server's data directory`,
    );
    expect(outcome.stdout).toBe('');
    expect(await readdir(dir)).toEqual([]);
  });

  it('fails the same way for a DATA_DIR no server has used, leaving it untouched', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'archety-token-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const dataDir = path.join(dir, 'data');
    const outcome = await archety(['token', '--sub', '+15551234567'], { DATA_DIR: dataDir }, dir);
    expect(oneLine(outcome)).toContain(`${path.join(dataDir, 'jwt-secret')} does not exist`);
    expect(await readdir(dir)).toEqual([]);
  });
});
