import { beforeAll, describe, expect, it } from 'vitest';
import { CloseCodes, Codes } from '../../src/errors.ts';
import type { RunningServer } from '../../src/server.ts';
import { createTestDatabase } from '../helpers/db.ts';
import { api, createTrip } from '../helpers/http.ts';
import { baseEnv, spawnServer, startTestServer } from '../helpers/server.ts';
import { openSocket } from '../helpers/socket.ts';
import { token } from '../helpers/tokens.ts';

const ALICE = '+15552220001';
const MAX_FRAME = 4096;
const OPS_PER_SECOND = 20;

let server: RunningServer;
let alice: string;

beforeAll(async () => {
  const db = await createTestDatabase();
  server = await startTestServer(db.url, {
    MAX_FRAME_BYTES: String(MAX_FRAME),
    MAX_OPS_PER_SECOND: String(OPS_PER_SECOND),
  });
  alice = await token(ALICE);
});

async function open() {
  const id = await createTrip(server.url, alice);
  const s = await openSocket(server.url, id, alice);
  await s.next('snapshot');
  return s;
}

const setTitle = (opId: string, value: string, baseVersion = 0) => ({
  type: 'op',
  opId,
  baseVersion,
  op: { kind: 'set', path: ['title'], value },
});

describe('bad frames', () => {
  it('answers garbage with an error frame without ref and keeps the socket open', async () => {
    const s = await open();
    s.send('{not json');
    expect(await s.next('error')).toEqual({ type: 'error', code: Codes.invalid_json, message: expect.any(String) });
    s.send('[1,2,3]');
    expect((await s.next('error')).code).toBe(Codes.invalid_json);
    s.send(Buffer.from([0xff, 0xfe, 0x00]));
    expect((await s.next('error')).code).toBe(Codes.invalid_json);
    s.send({ type: 'dance' });
    expect((await s.next('error')).code).toBe(Codes.unknown_frame_type);
    s.send(setTitle('ok', 'Still here'));
    expect((await s.next('applied')).opId).toBe('ok');
    s.close();
  });

  it('answers an invalid op frame with validation_failed and the opId as ref', async () => {
    const s = await open();
    s.send({ type: 'op', opId: 'v1', baseVersion: -1, op: { kind: 'set', path: ['title'], value: 'x' } });
    expect(await s.next('error')).toMatchObject({ code: Codes.validation_failed, ref: 'v1' });
    s.send({ type: 'op', opId: 'v2', baseVersion: 0, op: { kind: 'explode', path: ['title'] } });
    expect(await s.next('error')).toMatchObject({ code: Codes.validation_failed, ref: 'v2' });
    s.send({ type: 'op', opId: 'v3', baseVersion: 0, op: { kind: 'set', path: ['title'] } });
    expect(await s.next('error')).toMatchObject({ code: Codes.validation_failed, ref: 'v3' });
    s.send({ type: 'resume', since: 'yesterday' });
    expect((await s.next('error')).code).toBe(Codes.validation_failed);
    s.close();
  });

  it('refuses ops that do not fit the trip planner with invalid_op, ahead-of-version ops with invalid_base_version', async () => {
    const s = await open();
    const cases = [
      { kind: 'set', path: ['dates'], value: { start: '2026-05-10', end: '2026-05-01' } },
      { kind: 'set', path: ['dates', 'start'], value: '2026-02-30' },
      { kind: 'set', path: ['budget', 'currency'], value: 'euro' },
      { kind: 'insert', path: ['days'], value: { id: 'd1', items: [], extra: true } },
      { kind: 'insert', path: ['days'], index: 5, value: { id: 'd1', items: [] } },
      { kind: 'remove', path: ['title'] },
      { kind: 'set', path: ['nope'], value: 1 },
    ];
    for (const [i, op] of cases.entries()) {
      s.send({ type: 'op', opId: `bad${i}`, baseVersion: 0, op });
      expect(await s.next('error')).toMatchObject({ code: Codes.invalid_op, ref: `bad${i}` });
    }
    s.send(setTitle('ahead', 'x', 99));
    expect(await s.next('error')).toMatchObject({ code: Codes.invalid_base_version, ref: 'ahead' });
    s.close();
  });

  it('answers frames over MAX_FRAME_BYTES with frame_too_large and closes with 1009 beyond 16 times that', async () => {
    // Its own process: with the server in the test's process, the socket opened right after
    // the oversized frame was sometimes dropped (1006) — an artefact of client and server
    // sharing one event loop that a separate process never shows (checked 20 times in a row).
    const db = await createTestDatabase();
    const own = await spawnServer(baseEnv(db.url, { MAX_FRAME_BYTES: String(MAX_FRAME) }));
    const s = await openSocket(own.url, await createTrip(own.url, alice), alice);
    await s.next('snapshot');
    s.send(setTitle('big', 'x'.repeat(MAX_FRAME)));
    expect((await s.next('error')).code).toBe(Codes.frame_too_large);
    s.send(setTitle('huge', 'x'.repeat(MAX_FRAME * 17)));
    expect((await s.closed).code).toBe(CloseCodes.tooBig);
    // The server goes on serving everyone else.
    const next = await openSocket(own.url, await createTrip(own.url, alice), alice);
    expect((await next.next('snapshot')).type).toBe('snapshot');
    next.close();
    own.child.kill('SIGTERM');
    expect((await own.exited).code).toBe(0);
  });

  it('closes a socket that sends more than 100 bad frames within a minute with 1008', async () => {
    const s = await open();
    for (let i = 0; i < 101; i++) s.send('nope');
    const closed = await s.closed;
    expect(closed.code).toBe(CloseCodes.policyViolation);
    expect(s.frames.filter((f) => f.type === 'error')).toHaveLength(100);
  });

  it('answers rate_limited above MAX_OPS_PER_SECOND and applies the rest', async () => {
    const s = await open();
    const n = OPS_PER_SECOND + 10;
    for (let i = 0; i < n; i++) s.send(setTitle(`r${i}`, `T${i}`, i));
    await expect.poll(() => s.frames.filter((f) => f.type === 'applied' || f.type === 'error').length).toBe(n);
    const limited = s.frames.filter((f) => f.type === 'error' && f.code === Codes.rate_limited);
    expect(limited.length).toBeGreaterThanOrEqual(n - OPS_PER_SECOND - 2);
    expect(s.frames.filter((f) => f.type === 'applied').length).toBe(n - limited.length);
    s.close();
  });
});

describe('resume', () => {
  it('sends the applied frames after `since` on resume, and nothing when up to date', async () => {
    const id = await createTrip(server.url, alice);
    const a = await openSocket(server.url, id, alice);
    await a.next('snapshot');
    for (let i = 0; i < 5; i++) {
      a.send(setTitle(`t${i}`, `Title ${i}`, i));
      await a.next('applied');
    }
    a.close();
    const b = await openSocket(server.url, id, alice);
    expect((await b.next('snapshot')).version).toBe(5);
    b.send({ type: 'resume', since: 2 });
    const replayed = [await b.next('applied'), await b.next('applied'), await b.next('applied')];
    expect(replayed.map((f) => [f.version, f.opId])).toEqual([
      [3, 't2'],
      [4, 't3'],
      [5, 't4'],
    ]);
    b.send({ type: 'resume', since: 5 });
    b.send(setTitle('after', 'Final', 5));
    expect((await b.next('applied')).opId).toBe('after');
    b.close();
  });

  it('does not apply a resent op twice: the sender gets its applied frame again', async () => {
    const s = await open();
    s.send(setTitle('once', 'Once'));
    expect((await s.next('applied')).version).toBe(1);
    s.send(setTitle('once', 'Once'));
    const again = await s.next('applied');
    expect(again).toMatchObject({ opId: 'once', version: 1 });
    s.close();
  });
});

describe('slow consumers', () => {
  it('drops a socket that stops reading once it is past the backpressure limit; the others go on', async () => {
    const db = await createTestDatabase();
    // Its own process: a server sharing the test's event loop would stall the fast reader too.
    const small = await spawnServer(
      baseEnv(db.url, { WS_MAX_BACKPRESSURE_BYTES: '65536', MAX_OPS_PER_SECOND: '100000' }),
    );
    const id = await createTrip(small.url, alice);
    const slow = await openSocket(small.url, id, alice);
    await slow.next('snapshot');
    // Stop reading: the kernel's buffers fill, then the server's queue for this socket.
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const fast = await openSocket(small.url, id, alice);
    await fast.next('snapshot');
    const open = async () =>
      Number(
        /archety_sockets_open\{endpoint="miniapp"\} (\d+)/.exec((await api(small.url, 'GET', '/metrics')).body)?.[1],
      );
    expect(await open()).toBe(2);
    // Large frames (an item's notes, near their 2,000-character limit) fill the kernel's
    // buffers in seconds rather than the half minute small ones took.
    const notes = 'n'.repeat(1900);
    const applied = () => fast.frames.filter((f) => f.type === 'applied') as { version: number }[];
    let sent = 0;
    fast.send({
      type: 'op',
      opId: `n${sent++}`,
      baseVersion: 0,
      op: { kind: 'insert', path: ['days'], value: { id: 'd1', items: [{ id: 'i1', title: 'Museum' }] } },
    });
    await expect.poll(() => applied().length).toBe(1);
    const pump = setInterval(() => {
      const base = applied().at(-1)?.version ?? 0;
      for (let i = 0; i < 40; i++)
        fast.send({
          type: 'op',
          opId: `n${sent++}`,
          baseVersion: base,
          op: { kind: 'set', path: ['days', { id: 'd1' }, 'items', { id: 'i1' }, 'notes'], value: `${notes}${sent}` },
        });
    }, 40);
    try {
      // The paused client cannot notice the drop; the server's socket count shows it.
      await expect.poll(open, { timeout: 30_000, interval: 200 }).toBe(1);
    } finally {
      clearInterval(pump);
    }
    expect(fast.ws.readyState).toBe(1);
    // The reader that kept up saw every op, in order.
    await expect.poll(() => applied().length, { timeout: 10_000 }).toBe(sent);
    expect(applied().map((f) => f.version)).toEqual(applied().map((_, i) => i + 1));
    fast.close();
  }, 60_000);
});
