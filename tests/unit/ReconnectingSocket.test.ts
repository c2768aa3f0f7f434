/**
 * The client SDK's connection loop (`src/client/ReconnectingSocket.ts`): when a dropped socket
 * is reopened, after how long, and when it gives up. Fake timers drive the backoff.
 */
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CloseCodes } from '../../actors/closeCodes.ts';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import {
  backoffDelayMs,
  ReconnectingSocket,
  type ReconnectingSocketOptions,
} from '../../src/client/ReconnectingSocket.ts';
import { fakeWebSockets } from './fakeWebSocket.ts';

const bounds = { minDelayMs: 100, maxDelayMs: 1000 };

/** A socket with recording handlers; `synced` says whether the client got a snapshot. */
function setup(options: Partial<ReconnectingSocketOptions> = {}, synced = true) {
  const { WebSocket, sockets } = fakeWebSockets();
  const frames: ServerFrame[] = [];
  const ended: { code: number; reason: string; reconnecting: boolean }[] = [];
  let opened = 0;
  const socket = new ReconnectingSocket(
    { url: 'ws://server/v1/miniapp/s1', token: 'jwt', WebSocket, reconnect: bounds, ...options },
    {
      opening: () => opened++,
      frame: (frame) => frames.push(frame),
      synced: () => synced,
      ended: (code, reason, reconnecting) => ended.push({ code, reason, reconnecting }),
    },
  );
  return { socket, sockets, frames, ended, opened: () => opened };
}

describe('ReconnectingSocket', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    // The jitter at its least: every delay is half the doubled one.
    vi.spyOn(Math, 'random').mockReturnValue(0);
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  it('opens the URL with the protocol and the token as subprotocols, and passes frames on', async () => {
    const { socket, sockets, frames, opened } = setup();
    await socket.open();
    expect(sockets[0].url).toBe('ws://server/v1/miniapp/s1');
    expect(sockets[0].protocols).toEqual(['archety.v1', 'bearer.jwt']);
    expect(opened()).toBe(1);
    sockets[0].accept();
    sockets[0].onmessage?.({ data: 'not json' });
    sockets[0].receive({ type: 'presence', online: ['ann'] });
    expect(frames).toEqual([{ type: 'presence', online: ['ann'] }]);
  });

  it('sends only while the socket is open', async () => {
    const { socket, sockets } = setup();
    await socket.open();
    socket.send({ type: 'resume', since: 1 });
    expect(socket.isOpen).toBe(false);
    sockets[0].accept();
    socket.send({ type: 'resume', since: 2 });
    expect(sockets[0].sent).toEqual([{ type: 'resume', since: 2 }]);
  });

  it('reopens a dropped socket after a doubling delay, asking for a fresh token each time', async () => {
    let minted = 0;
    const { socket, sockets, ended } = setup({ token: () => `jwt${++minted}` });
    await socket.open();
    for (const [i, delay] of [50, 100, 200].entries()) {
      sockets[i].accept().end(CloseCodes.internalError, 'session unavailable');
      expect(ended.at(-1)).toEqual({
        code: CloseCodes.internalError,
        reason: 'session unavailable',
        reconnecting: true,
      });
      await vi.advanceTimersByTimeAsync(delay - 1);
      expect(sockets).toHaveLength(i + 1);
      await vi.advanceTimersByTimeAsync(1);
      expect(sockets).toHaveLength(i + 2);
    }
    expect(sockets[3].protocols).toEqual(['archety.v1', 'bearer.jwt4']);
  });

  it('starts the backoff afresh once told the client is in step again', async () => {
    const { socket, sockets } = setup();
    await socket.open();
    sockets[0].end(CloseCodes.abnormal);
    await vi.advanceTimersByTimeAsync(50);
    sockets[1].end(CloseCodes.abnormal);
    await vi.advanceTimersByTimeAsync(100);
    socket.resetBackoff();
    sockets[2].end(CloseCodes.abnormal);
    await vi.advanceTimersByTimeAsync(50);
    expect(sockets).toHaveLength(4);
  });

  it('gives up when the socket ends before the client ever got a snapshot (the upgrade was refused)', async () => {
    const { socket, sockets, ended } = setup({}, false);
    await socket.open();
    sockets[0].end(CloseCodes.abnormal);
    await vi.runAllTimersAsync();
    expect(sockets).toHaveLength(1);
    expect(ended).toEqual([{ code: CloseCodes.abnormal, reason: '', reconnecting: false }]);
  });

  it('gives up when a fixed token expired, but reconnects when it can mint a new one', async () => {
    const fixed = setup();
    await fixed.socket.open();
    fixed.sockets[0].accept().end(CloseCodes.policyViolation, 'token expired');
    await vi.runAllTimersAsync();
    expect(fixed.sockets).toHaveLength(1);
    expect(fixed.ended.at(-1)?.reconnecting).toBe(false);

    const minting = setup({ token: () => 'fresh' });
    await minting.socket.open();
    minting.sockets[0].accept().end(CloseCodes.policyViolation, 'token expired');
    await vi.advanceTimersByTimeAsync(50);
    expect(minting.sockets).toHaveLength(2);
  });

  it('gives up at the first drop when reconnecting is disabled', async () => {
    const { socket, sockets, ended } = setup({ reconnect: false });
    await socket.open();
    sockets[0].accept().end(CloseCodes.goingAway, 'server shutting down');
    await vi.runAllTimersAsync();
    expect(sockets).toHaveLength(1);
    expect(ended).toEqual([{ code: CloseCodes.goingAway, reason: 'server shutting down', reconnecting: false }]);
  });

  it('closes normally on close(), cancels a pending reconnect and reports nothing more', async () => {
    const { socket, sockets, ended } = setup();
    await socket.open();
    sockets[0].accept().end(CloseCodes.abnormal);
    socket.close();
    await vi.runAllTimersAsync();
    expect(sockets).toHaveLength(1);
    expect(ended).toHaveLength(1);

    const open = setup();
    await open.socket.open();
    open.sockets[0].accept();
    open.socket.close();
    expect(open.sockets[0].closedWith).toEqual({ code: CloseCodes.normal, reason: 'bye' });
    open.sockets[0].end(CloseCodes.normal, 'bye');
    expect(open.ended).toEqual([]);
  });

  it('closes with the resync code to start again from a fresh snapshot', async () => {
    const { socket, sockets } = setup();
    await socket.open();
    sockets[0].accept();
    socket.resync('gap');
    expect(sockets[0].closedWith).toEqual({ code: CloseCodes.resync, reason: 'gap' });
    sockets[0].end(CloseCodes.resync, 'gap');
    await vi.advanceTimersByTimeAsync(50);
    expect(sockets).toHaveLength(2);
  });

  it('opens no socket when closed while the token was being fetched', async () => {
    const { socket, sockets } = setup({ token: async () => 'late' });
    const opening = socket.open();
    socket.close();
    await opening;
    expect(sockets).toHaveLength(0);
  });
});

describe('backoffDelayMs', () => {
  it('waits between half and all of the doubled delay, never past the maximum, and never less for a later attempt', () => {
    const boundsArb = fc
      .tuple(fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 0, max: 60_000 }))
      .map(([min, extra]) => ({ minDelayMs: min, maxDelayMs: min + extra }));
    fc.assert(
      fc.property(boundsArb, fc.nat(40), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (b, n, r) => {
        const full = Math.min(b.maxDelayMs, b.minDelayMs * 2 ** n);
        const delay = backoffDelayMs(n, b, r);
        expect(delay).toBeGreaterThanOrEqual(full / 2);
        expect(delay).toBeLessThan(full + 1e-9);
        expect(delay).toBeLessThanOrEqual(b.maxDelayMs);
        expect(backoffDelayMs(n + 1, b, r)).toBeGreaterThanOrEqual(delay);
      }),
    );
  });
});
