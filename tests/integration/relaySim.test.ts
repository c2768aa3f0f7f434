/**
 * `archety relay-sim` as a script: lines piped into the command go to a real server as relay
 * events, Sage's replies (offline brain) come back on the relay socket and are printed, and
 * the command exits 0 once every message that should get a reply got one.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { repoRoot, startTestServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const run = promisify(execFile);
const bin = path.join(repoRoot, 'bin/archety.js');
const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp' };

let server: RunningServer;
let relayToken: string;

beforeAll(async () => {
  const db = await createTestDatabase();
  server = await startTestServer(db.url);
  relayToken = await token('relay-sim', { role: 'relay' });
});

/** Runs `archety relay-sim` with `lines` on stdin, then ends stdin. */
function relaySim(args: string[], lines: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, 'relay-sim', ...args], { cwd: repoRoot, env, stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(lines.map((l) => `${l}\n`).join(''));
  });
}

describe('archety relay-sim', () => {
  it('sends piped lines as relay events, prints each reply once, and exits 0 when every reply came', async () => {
    const { code, stdout, stderr } = await relaySim(
      ['--url', server.url, '--token', relayToken, '--wait', '8'],
      [
        'hello Sage, I love hiking',
        '/group trip +15550000002',
        'nobody is talking to the bot here',
        'Sage, where should we go?',
      ],
    );
    expect({ code, stderr }).toMatchObject({ code: 0 });
    const replies = stdout.split('\n').filter((l) => /^\[[^\]]+\] Sage: /.test(l));
    expect(replies).toHaveLength(2);
    // One reply in each chat (the unaddressed group message gets none); chats answer independently.
    expect(replies.find((l) => l.startsWith('[direct] '))).toMatch(/^\[direct\] Sage: .*offline/);
    expect(replies.find((l) => l.startsWith('[group trip] '))).toMatch(/^\[group trip\] Sage: /);
    expect(stdout).toContain('[direct] you (+15550000001): hello Sage, I love hiking (accepted)');
    expect(stdout).toContain('[group trip] you (+15550000001): nobody is talking to the bot here (accepted)');
  }, 15_000);

  it('sends a photo inline and answers Sage with /reply in a group, where the reply gets a reply', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relay-sim-'));
    onCleanup(() => rm(dir, { recursive: true, force: true }));
    const photo = path.join(dir, 'tram.png');
    await writeFile(photo, Buffer.alloc(2048, 7));
    const { code, stdout, stderr } = await relaySim(
      ['--url', server.url, '--token', relayToken, '--as', '+15550000011', '--wait', '8'],
      [
        `/photo ${photo} the tram we took`,
        '/group lisbon +15550000012',
        'Sage, hello',
        '/reply and where should we eat?',
      ],
    );
    expect({ code, stderr }).toMatchObject({ code: 0 });
    const replies = stdout.split('\n').filter((l) => /^\[[^\]]+\] Sage: /.test(l));
    expect(replies).toHaveLength(3);
    // Replies are in order per chat; the two chats' conversations answer independently.
    const direct = replies.filter((l) => l.startsWith('[direct] '));
    const group = replies.filter((l) => l.startsWith('[group lisbon] '));
    expect(direct).toEqual([expect.stringMatching(/^\[direct\] Sage: .*PNG image/)]);
    expect(group).toHaveLength(2);
    expect(group[1]).toMatch(/^\[group lisbon\] Sage: .*where should we eat/);
    expect(stdout).toContain('[direct] you (+15550000011): [photo tram.png] the tram we took (accepted)');
  }, 15_000);

  it('lists its options and chat commands in --help', async () => {
    const { stdout } = await run(process.execPath, [bin, 'relay-sim', '--help'], { cwd: repoRoot, env });
    for (const word of [
      '--url',
      '--as',
      '--token',
      '--persona',
      '/as',
      '/direct',
      '/group',
      '/photo',
      '/reply',
      '/quit',
    ]) {
      expect(stdout).toContain(word);
    }
    const top = await run(process.execPath, [bin, '--help'], { cwd: repoRoot, env });
    expect(top.stdout).toContain('relay-sim');
  });

  it('refuses a phone number that is not E.164 with a clear message', async () => {
    const err = await run(process.execPath, [bin, 'relay-sim', '--as', '555-1234', '--token', 'x'], {
      cwd: repoRoot,
      env,
    }).catch((e) => e);
    expect(err.code).toBe(2);
    expect(err.stderr).toContain('--as must be a phone number in E.164 form');
  });
});
