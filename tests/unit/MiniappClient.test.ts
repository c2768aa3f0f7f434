/**
 * The client SDK as its users see it (`src/client/MiniappClient.ts`), against a scripted socket:
 * the confirmed state and the view, what it sends when, and what becomes of pending edits when
 * the server refuses them or the socket drops. The real server's side is in
 * tests/integration/miniappFrames.test.ts and the page's in tests/e2e/.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CloseCodes } from '../../actors/closeCodes.ts';
import type { AppliedOp, ServerFrame } from '../../actors/miniappFrames.ts';
import type { Op } from '../../actors/ops.ts';
import { type ConflictEvent, MiniappClient, type MiniappClientEvents } from '../../src/client/MiniappClient.ts';
import { type FakeWebSocket, fakeWebSockets } from './fakeWebSocket.ts';
import { type Trip, trip } from './tripPlannerArbitraries.ts';

const RECONNECT_MS = 10;

const setTitle = (value: string): Op => ({ kind: 'set', path: ['title'], value });
const setCurrency = (value: string): Op => ({ kind: 'set', path: ['budget', 'currency'], value });
const addMember = (value: string): Op => ({ kind: 'insert', path: ['members'], value });

const snapshot = (version: number, state: Trip = trip()): ServerFrame => ({
  type: 'snapshot',
  version,
  state,
  participants: ['ann', 'bob'],
  online: ['ann'],
});
const appliedOp = (version: number, op: Op, opId = `theirs${version}`, by = 'bob'): AppliedOp => ({
  opId,
  by,
  version,
  op,
});
const applied = (...args: Parameters<typeof appliedOp>): ServerFrame => ({ type: 'applied', ...appliedOp(...args) });

/** A client on a scripted socket, recording its events. */
function connect() {
  const { WebSocket, sockets } = fakeWebSockets();
  const client = new MiniappClient({
    baseUrl: 'http://server/',
    sessionId: 'trip 1',
    token: () => 'jwt',
    WebSocket,
    reconnect: { minDelayMs: RECONNECT_MS, maxDelayMs: RECONNECT_MS },
  });
  const record = <K extends keyof MiniappClientEvents>(type: K) => {
    const list: MiniappClientEvents[K][] = [];
    client.on(type, (e) => list.push(e));
    return list;
  };
  const conflicts = record('conflict');
  const errors = record('error');
  const statuses = record('status');
  /** The socket the client has now, once it exists. */
  const socket = async (): Promise<FakeWebSocket> => {
    await vi.waitFor(() => expect(sockets.length).toBeGreaterThan(0));
    return sockets[sockets.length - 1];
  };
  return { client, sockets, socket, conflicts, errors, statuses };
}

/** Drops the current socket and returns the next one, accepted. */
async function reconnect(c: ReturnType<typeof connect>): Promise<FakeWebSocket> {
  const before = c.sockets.length;
  (await c.socket()).end(CloseCodes.abnormal);
  await vi.advanceTimersByTimeAsync(RECONNECT_MS);
  expect(c.sockets).toHaveLength(before + 1);
  return (await c.socket()).accept();
}

describe('MiniappClient', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('resynchronises when an edit goes unanswered for answerTimeoutMs (a server process died holding it)', async () => {
    const c = connect();
    const ws = (await c.socket()).accept();
    ws.receive(snapshot(0));
    const edit = c.client.apply(setTitle('Porto'));
    await vi.advanceTimersByTimeAsync(9_000);
    expect(ws.closedWith).toBeNull();
    await vi.advanceTimersByTimeAsync(3_600);
    expect(ws.closedWith).toEqual({ code: CloseCodes.resync, reason: 'unanswered' });
    ws.end(CloseCodes.resync, 'unanswered');
    await vi.advanceTimersByTimeAsync(RECONNECT_MS);
    const next = (await c.socket()).accept();
    next.receive(snapshot(0));
    // Nothing landed meanwhile: the edit is sent again on the new socket, and stays pending.
    expect(next.sent).toEqual([{ type: 'op', opId: edit.opId, baseVersion: 0, op: edit.op }]);
    expect(c.client.pending).toEqual([edit]);
    c.client.close();
  });

  it('opens the session URL, and refuses edits until the first snapshot', async () => {
    const c = connect();
    const ws = await c.socket();
    expect(ws.url).toBe('ws://server/v1/miniapp/trip%201');
    expect(() => c.client.apply(setTitle('Porto'))).toThrow(/first snapshot/);
    ws.accept().receive(snapshot(3));
    expect(c.client.status).toBe('open');
    expect(c.client.participants).toEqual(['ann', 'bob']);
    expect(() => c.client.apply(setTitle('Porto'), { baseVersion: 4 })).toThrow(/between 0 and 3/);
    expect(() => c.client.apply({ kind: 'remove', path: ['days', 0] })).toThrow();
    expect(ws.sent).toEqual([]);
  });

  it('shows a pending edit in the view at once, and in the confirmed state once applied', async () => {
    const c = connect();
    const ws = (await c.socket()).accept();
    ws.receive(snapshot(0));
    const edit = c.client.apply(setTitle('Porto'));
    expect(ws.sent).toEqual([{ type: 'op', opId: edit.opId, baseVersion: 0, op: edit.op }]);
    expect(c.client.view).toMatchObject({ title: 'Porto' });
    expect(c.client.confirmed).toMatchObject({ title: 'Lisbon' });
    ws.receive(applied(1, setCurrency('EUR')));
    expect(c.client.view).toMatchObject({ title: 'Porto', budget: { currency: 'EUR' } });
    ws.receive(applied(2, edit.op, edit.opId, 'ann'));
    expect(c.client.confirmed).toMatchObject({ title: 'Porto', budget: { currency: 'EUR' } });
    expect(c.client.pending).toEqual([]);
    await expect(c.client.settled()).resolves.toBeUndefined();
  });

  it("reports the server's conflict with only the ops on the edit's field, the view back to the server's", async () => {
    const c = connect();
    const ws = (await c.socket()).accept();
    ws.receive(snapshot(0));
    const edit = c.client.apply(setTitle('Porto'));
    const mine = c.client.apply(setCurrency('EUR'));
    ws.receive(applied(1, mine.op, mine.opId, 'ann'));
    const theirs = appliedOp(2, setTitle('Lisbon!'));
    ws.receive({ type: 'applied', ...theirs });
    ws.receive({
      type: 'conflict',
      opId: edit.opId,
      version: 2,
      ops: [appliedOp(1, mine.op, mine.opId, 'ann'), theirs],
    });
    expect(c.conflicts).toEqual([{ edit, ops: [theirs] }]);
    expect(c.client.view).toMatchObject({ title: 'Lisbon!' });
  });

  it('after a reconnect, learns which edits landed, reports a clash and resends the rest on the new version', async () => {
    const c = connect();
    const first = (await c.socket()).accept();
    first.receive(snapshot(0));
    first.receive(applied(1, setTitle('Lisbon, again')));
    const landed = c.client.apply(setTitle('Porto'));
    const clashing = c.client.apply(setCurrency('EUR'));
    const kept = c.client.apply(addMember('ann'));
    let seenAtConflict: { pending: string[]; currency: string } | null = null;
    c.client.on('conflict', () => {
      const view = c.client.view as Trip;
      seenAtConflict = { pending: c.client.pending.map((p) => p.opId), currency: view.budget.currency };
    });

    const second = await reconnect(c);
    second.receive(snapshot(4, { ...trip({ title: 'Porto' }), budget: { currency: 'JPY', items: [] } }));
    expect(second.sent).toEqual([{ type: 'resume', since: 1 }]);
    expect(c.statuses.map((s) => s.status)).toEqual(['open', 'reconnecting', 'open']);
    second.receive(applied(2, landed.op, landed.opId, 'ann'));
    second.receive(applied(3, setCurrency('JPY')));
    second.receive(applied(4, { kind: 'set', path: ['dates', 'end'], value: '2027-05-09' }));

    expect(c.conflicts).toEqual([{ edit: clashing, ops: [appliedOp(3, setCurrency('JPY'))] }]);
    expect(seenAtConflict).toEqual({ pending: [kept.opId], currency: 'JPY' });
    expect(second.sent.slice(1)).toEqual([{ type: 'op', opId: kept.opId, baseVersion: 4, op: kept.op }]);
    expect(c.client.pending).toEqual([{ ...kept, baseVersion: 4 }]);
    expect(c.client.view).toMatchObject({ members: ['ann'], budget: { currency: 'JPY' } });
  });

  it('settles when the re-check after a reconnect reports the last pending edit as a conflict', async () => {
    const c = connect();
    const first = (await c.socket()).accept();
    first.receive(snapshot(0));
    first.receive(applied(1, setCurrency('USD')));
    c.client.apply(setTitle('Porto'));
    const settled = c.client.settled();
    const second = await reconnect(c);
    second.receive(snapshot(2, trip({ title: 'Lisbon!' })));
    second.receive(applied(2, setTitle('Lisbon!')));
    await expect(settled).resolves.toBeUndefined();
    expect(c.conflicts).toHaveLength(1);
  });

  it('reports every pending edit as unconfirmed when the resume is answered with a snapshot', async () => {
    const c = connect();
    const first = (await c.socket()).accept();
    first.receive(snapshot(0));
    const a = c.client.apply(setTitle('Porto'));
    const second = await reconnect(c);
    second.receive(snapshot(5));
    second.receive(snapshot(5));
    expect(c.conflicts).toEqual([{ edit: a, ops: [], unconfirmed: true }] satisfies ConflictEvent[]);
    expect(c.client.pending).toEqual([]);
    expect(c.client.view).toMatchObject({ title: 'Lisbon' });
  });

  it('drops the socket with the resync code on a version gap or an op its state refuses', async () => {
    const gap = connect();
    const ws = (await gap.socket()).accept();
    ws.receive(snapshot(0));
    ws.receive(applied(2, setTitle('x')));
    expect(ws.closedWith).toEqual({ code: CloseCodes.resync, reason: 'gap' });
    expect(gap.client.version).toBe(0);

    const diverged = connect();
    const ws2 = (await diverged.socket()).accept();
    ws2.receive(snapshot(0));
    ws2.receive(applied(1, { kind: 'remove', path: ['days', { id: 'missing' }] }));
    expect(ws2.closedWith).toEqual({ code: CloseCodes.resync, reason: 'diverged' });
  });

  it('sends an edit refused only for now again after a delay, and reports one refused for good', async () => {
    const c = connect();
    const ws = (await c.socket()).accept();
    ws.receive(snapshot(0));
    const edit = c.client.apply(setTitle('Porto'));
    ws.receive({ type: 'error', code: 'rate_limited', message: 'slow down', ref: edit.opId });
    expect(c.errors).toEqual([]);
    await vi.advanceTimersByTimeAsync(500);
    expect(ws.sent.map((f) => f.type === 'op' && f.opId)).toEqual([edit.opId, edit.opId]);
    ws.receive({ type: 'error', code: 'validation_failed', message: 'too long', ref: edit.opId });
    expect(c.errors).toEqual([{ code: 'validation_failed', message: 'too long', edit }]);
    expect(c.client.view).toMatchObject({ title: 'Lisbon' });
  });

  it('closes for good, with the code, when the first socket ends before any snapshot', async () => {
    const c = connect();
    (await c.socket()).end(CloseCodes.abnormal);
    await vi.runAllTimersAsync();
    expect(c.sockets).toHaveLength(1);
    expect(c.statuses).toEqual([{ status: 'closed', code: CloseCodes.abnormal, reason: '' }]);
  });

  it('closes the socket normally on close() and does not reconnect', async () => {
    const c = connect();
    const ws = (await c.socket()).accept();
    ws.receive(snapshot(0));
    c.client.close();
    expect(ws.closedWith).toEqual({ code: CloseCodes.normal, reason: 'bye' });
    ws.end(CloseCodes.normal, 'bye');
    await vi.runAllTimersAsync();
    expect(c.sockets).toHaveLength(1);
    expect(c.statuses.map((s) => s.status)).toEqual(['open', 'closed']);
  });
});
