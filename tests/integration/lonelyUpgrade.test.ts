/**
 * A socket upgraded while the process has no other socket open stays open.
 *
 * uWebSockets.js 20.30 can close a socket upgraded after an `await` (the token's verification)
 * a few milliseconds after its `open`, without a close frame, when the upgrade runs in
 * `res.cork` (uWebSockets pull request 1929; whether it does depends on the heap). A process's
 * first upgrades are where it showed: a benchmark's lone relay socket stayed closed and its
 * replies waited in the outbox, and a test's relay socket saw no `send`. Under `--cpu-prof`
 * (another heap layout) the old upgrade closed 1 to 3 of 30 lone sockets of a fresh server.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createTestDatabase } from '../helpers/db.ts';
import { baseEnv, spawnServer } from '../helpers/server.ts';
import { token } from '../helpers/tokens.ts';

const SOCKETS = 60;
/** The fault closed its sockets within 5 ms of their `open`. */
const WATCH_MS = 40;

describe('an upgrade with no other socket open', () => {
  it(`keeps each of ${SOCKETS} lone sockets of a fresh process open`, async () => {
    const db = await createTestDatabase();
    const profiles = mkdtempSync(path.join(os.tmpdir(), 'archety-lonely-'));
    const server = await spawnServer(baseEnv(db.url), ['start'], ['--cpu-prof', `--cpu-prof-dir=${profiles}`]);
    const relayToken = await token('relay-lonely', { role: 'relay' });
    const closedEarly: string[] = [];
    for (let i = 0; i < SOCKETS; i++) {
      const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/relay`, ['archety.v1', `bearer.${relayToken}`]);
      let closed: number | undefined;
      const gone = new Promise<void>((resolve) =>
        ws.on('close', (code) => {
          closed = code;
          resolve();
        }),
      );
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      await new Promise((resolve) => setTimeout(resolve, WATCH_MS));
      if (closed !== undefined) closedEarly.push(`socket ${i + 1}: closed with ${closed}`);
      ws.close();
      await gone;
      // The server has seen the close: the next socket is alone again.
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(closedEarly).toEqual([]);
    server.child.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    rmSync(profiles, { recursive: true, force: true });
  }, 60_000);
});
