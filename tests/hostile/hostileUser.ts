/**
 * The hostile user: from its own loopback address, for the length of the run, it sends random
 * poison on every door the server has — its own trip's socket (poisoned ops, wrong types,
 * unknown and binary frames, invalid UTF-8, frames past every size limit, floods of `resume`),
 * floods of upgrades with bad, expired, unsigned and `sid` tokens, attempts to join the good
 * users' trips, HTTP bodies that never arrive or arrive a byte at a time, bad JSON, poisoned
 * trip titles and participants, and relay batches of poisoned events. Everything it sends and
 * every answer it gets is counted in `tally`.
 */
import WebSocket from 'ws';
import { onCleanup } from '../helpers/cleanup.ts';
import { createHttpAbuse } from './hostileHttp.ts';
import type { Poison } from './poison.ts';
import { INVALID_UTF8, ONE_MB } from './poison.ts';
import type { Rng } from './rng.ts';
import type { Tally } from './Tally.ts';

export interface HostileTokens {
  user: string;
  relay: string;
  expired: string;
  badSignature: string;
  unsigned: string;
  /** A share link of the hostile user's own trip. */
  sidOwn: string;
}

export interface HostileOptions {
  base: string;
  localAddress: string;
  tokens: HostileTokens;
  ownTrip: string;
  goodTrips: string[];
  rng: Rng;
  poison: Poison;
  tally: Tally;
}

/** Sockets the hostile user keeps from its floods: with bursts of 20 upgrades it passes MAX_SOCKETS_PER_USER (20), and after each burst it is back under it, so its own socket can reopen. */
const KEPT_OPEN = 15;

/** Frames of 2 and 3 MB, built once: the hostile user's CPU is shared with the good users'. */
const HUGE_FRAMES = {
  2: `{"type":"op","opId":"huge","baseVersion":0,"op":{"kind":"set","path":["title"],"value":"${ONE_MB.repeat(2)}"}}`,
  3: `{"type":"op","opId":"huge","baseVersion":0,"op":{"kind":"set","path":["title"],"value":"${ONE_MB.repeat(3)}"}}`,
};

export function createHostileUser(o: HostileOptions) {
  const { base, localAddress, tokens, rng, poison, tally } = o;
  const { http, httpAbuse } = createHttpAbuse(o);
  const wsBase = base.replace(/^http/, 'ws');
  let own: WebSocket | undefined;
  let ownVersion = 0;
  let relaySocket: WebSocket | undefined;
  const kept: WebSocket[] = [];
  /** Set when the run is over: the hostile user's own hang-ups are not the server's answers. */
  let stopped = false;
  /** Sockets the hostile user closed itself: their close is not the server's answer. */
  const hungUp = new WeakSet<WebSocket>();
  const hangUp = (ws: WebSocket | undefined) => {
    if (!ws) return;
    hungUp.add(ws);
    ws.close();
  };
  onCleanup(() => {
    for (const ws of [own, relaySocket, ...kept]) ws?.terminate();
  });

  /** One upgrade from the hostile address; `kind` names what was tried. */
  function upgrade(kind: string, path: string, token: string | undefined): Promise<WebSocket | undefined> {
    const protocols = token === undefined ? ['archety.v1'] : ['archety.v1', `bearer.${token}`];
    const ws = new WebSocket(`${wsBase}${path}`, protocols, { localAddress, handshakeTimeout: 10_000 });
    return new Promise((resolve) => {
      let settled = false;
      const settle = (outcome: string | number, opened?: WebSocket) => {
        if (settled) return;
        settled = true;
        tally.add(`upgrade:${kind}`, outcome);
        resolve(opened);
      };
      ws.on('unexpected-response', (_req, res) => {
        settle(res.statusCode ?? 0);
        res.resume();
        ws.terminate();
      });
      ws.on('error', (err) => settle(`error ${(err as NodeJS.ErrnoException).code ?? err.message}`));
      ws.on('open', () => settle('open', ws));
    });
  }

  /** Counts every frame the server sends to a hostile socket, and how it closes. */
  function watch(ws: WebSocket, endpoint: string): void {
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString());
      tally.add(`recv:${endpoint}`, f.type === 'error' ? `error:${f.code}` : f.type);
      if ((f.type === 'applied' || f.type === 'snapshot') && typeof f.version === 'number')
        ownVersion = Math.max(ownVersion, f.version);
    });
    ws.on('close', (code) => {
      if (!stopped && !hungUp.has(ws)) tally.add(`close:${endpoint}`, code);
    });
  }

  let reopening: Promise<WebSocket | undefined> | undefined;
  /** The hostile user's socket on its own trip; reopened (once, whichever worker asks) after a close. */
  function ownSocket(): Promise<WebSocket | undefined> {
    if (own?.readyState === WebSocket.OPEN) return Promise.resolve(own);
    reopening ??= upgrade('own-trip', `/v1/miniapp/${o.ownTrip}`, tokens.user).then((ws) => {
      reopening = undefined;
      own?.terminate();
      own = ws;
      if (ws) watch(ws, 'miniapp');
      return ws;
    });
    return reopening;
  }

  /** Sends on `ws` and resolves once the bytes are handed to the kernel. */
  const write = (ws: WebSocket, data: string | Buffer, binary = false) =>
    new Promise<void>((resolve) => ws.send(data, { binary }, () => resolve()));

  async function frame(kind: 'poison' | 'binary' | 'invalid-utf8' | 'huge' | 'resume-flood'): Promise<void> {
    const ws = await ownSocket();
    if (!ws) return;
    if (kind === 'poison') {
      const f = poison.miniappFrame(ownVersion);
      tally.add('frame', f.kind);
      await write(ws, f.text);
    } else if (kind === 'binary') {
      tally.add('frame', 'binary');
      await write(ws, Buffer.from(`{"type":"op","opId":"b","baseVersion":0}`), true);
    } else if (kind === 'invalid-utf8') {
      tally.add('frame', 'invalid-utf8');
      await write(ws, Buffer.concat([Buffer.from('{"type":"op","opId":"'), INVALID_UTF8, Buffer.from('"}')]));
    } else if (kind === 'huge') {
      // 2 MB is past 16 × MAX_FRAME_BYTES (1009); 3 MB past uWebSockets.js' own 32 × (dropped).
      const size = rng.pick([2, 3] as const);
      tally.add('frame', `huge-${size}mb`);
      await write(ws, HUGE_FRAMES[size]);
    } else {
      const count = 60 + rng.int(60);
      tally.add('frame', `resume-flood-x${count >= 100 ? '100+' : '60+'}`);
      for (let i = 0; i < count; i++) ws.send(`{"type":"resume","since":${rng.int(3)}}`);
      await write(ws, `{"type":"resume","since":0}`);
    }
  }

  /** A burst of upgrades with every kind of bad token, to its own, the good users' and unknown trips. */
  async function upgradeFlood(): Promise<void> {
    const count = 5 + rng.int(16);
    await Promise.all(
      Array.from({ length: count }, async () => {
        const [kind, token] = rng.pick<[string, string | undefined]>([
          ['no-token', undefined],
          ['garbage-token', 'not.a.jwt'],
          ['expired-token', tokens.expired],
          ['bad-signature', tokens.badSignature],
          ['alg-none', tokens.unsigned],
          ['relay-token', tokens.relay],
          ['sid-own', tokens.sidOwn],
          ['own-valid', tokens.user],
        ]);
        const target = rng.pick([
          `/v1/miniapp/${o.ownTrip}`,
          `/v1/miniapp/${rng.pick(o.goodTrips)}`,
          '/v1/miniapp/ms_unknown',
          '/v1/relay',
        ]);
        const where =
          target === '/v1/relay'
            ? 'relay'
            : target.includes(o.ownTrip)
              ? 'own'
              : target.includes('unknown')
                ? 'unknown'
                : 'good';
        // A relay-role token on /v1/relay would be the relay itself (it would receive every send).
        if (where === 'relay' && kind === 'relay-token') return;
        const ws = await upgrade(`${kind}->${where}`, target, token);
        if (!ws) return;
        watch(ws, where === 'relay' ? 'relay' : 'miniapp');
        kept.push(ws);
        while (kept.length > KEPT_OPEN) hangUp(kept.shift());
      }),
    );
  }

  /** Opens 20 to 29 sockets at once with its own token: past MAX_SOCKETS_PER_USER (20). */
  async function hoardSockets(): Promise<void> {
    await Promise.all(
      Array.from({ length: 20 + rng.int(10) }, async () => {
        const ws = await upgrade('hoard->own', `/v1/miniapp/${o.ownTrip}`, tokens.user);
        if (!ws) return;
        watch(ws, 'miniapp');
        kept.push(ws);
      }),
    );
    while (kept.length > KEPT_OPEN) hangUp(kept.shift());
  }

  /** 30 to 79 requests at once for good users' trips: past the address's request burst. */
  async function requestFlood(): Promise<void> {
    await Promise.all(
      Array.from({ length: 30 + rng.int(50) }, async () =>
        tally.add('join-good:get-flood', await http('GET', `/v1/miniapps/${rng.pick(o.goodTrips)}`, tokens.user, '')),
      ),
    );
  }

  /** Tries to get into a good user's trip: it is not a participant. */
  async function join(): Promise<void> {
    const trip = rng.pick(o.goodTrips);
    const how = rng.pick(['ws', 'get', 'add-self', 'sid-own-ws']);
    if (how === 'ws') {
      const ws = await upgrade('join-good', `/v1/miniapp/${trip}`, tokens.user);
      ws?.terminate();
      return;
    }
    if (how === 'sid-own-ws') {
      const ws = await upgrade('join-good-with-sid', `/v1/miniapp/${trip}`, tokens.sidOwn);
      ws?.terminate();
      return;
    }
    const request =
      how === 'get'
        ? { method: 'GET', path: `/v1/miniapps/${trip}`, body: '' }
        : { method: 'POST', path: `/v1/miniapps/${trip}/participants`, body: JSON.stringify({ user: '+19990000666' }) };
    tally.add(`join-good:${how}`, await http(request.method, request.path, tokens.user, request.body));
  }

  /** A relay batch of poisoned events (sometimes one event, sometimes over the 100 limit). */
  async function relayBatch(): Promise<void> {
    const size = rng.weighted({ one: 2, some: 6, max: 1, over: 1 });
    const count = { one: 1, some: 2 + rng.int(20), max: 100, over: 101 }[size];
    const events = Array.from({ length: count }, () => poison.relayEvent());
    for (const e of events) tally.add('relay-event', e.kind);
    const body = count === 1 ? events[0].text : `{"events":[${events.map((e) => e.text).join(',')}]}`;
    const outcome = await http('POST', '/v1/relay/events', tokens.relay, body);
    tally.add(`http:relay-${size}`, outcome);
  }

  /** Poisoned frames on the hostile relay's socket while it is open (it is never the newest). */
  async function relayFrame(): Promise<void> {
    if (relaySocket?.readyState !== WebSocket.OPEN) return;
    const e = poison.relayEvent();
    const text = rng.pick([
      `{"type":"event","event":${e.text}}`,
      `{"type":"ack","id":${poison.value()}}`,
      `{"type":${poison.value()}}`,
      '{"type":"event","event":"x"}',
    ]);
    tally.add('relay-frame', e.kind);
    await write(relaySocket, text);
  }

  /** What a worker does next, by weight. */
  const ACTIONS = {
    'frame-poison': 30,
    'frame-binary': 3,
    'frame-invalid-utf8': 2,
    'frame-huge': 1,
    'frame-resume-flood': 2,
    'upgrade-flood': 4,
    'hoard-sockets': 1,
    'request-flood': 1,
    join: 4,
    'huge-unauthenticated': 3,
    'huge-held': 2,
    slowloris: 2,
    'miniapp-over-64k': 1,
    'bad-body': 4,
    'wrong-content-type': 1,
    'poisoned-trip': 4,
    'poisoned-participant': 2,
    'sid-token': 2,
    'relay-batch': 6,
    'relay-frame': 3,
  };

  /** HOSTILE_ACTIONS (comma-separated names of ACTIONS) narrows the run to those, to find which one does harm. */
  const only = process.env.HOSTILE_ACTIONS?.split(',').filter(Boolean);
  const actions = only ? Object.fromEntries(Object.entries(ACTIONS).filter(([name]) => only.includes(name))) : ACTIONS;

  async function act(): Promise<void> {
    if (Object.keys(actions).length === 0) return new Promise((r) => setTimeout(r, 50));
    const action = rng.weighted(actions as typeof ACTIONS);
    if (action.startsWith('frame-')) return frame(action.slice('frame-'.length) as never);
    if (action === 'upgrade-flood') return upgradeFlood();
    if (action === 'join') return join();
    if (action === 'hoard-sockets') return hoardSockets();
    if (action === 'request-flood') return requestFlood();
    if (action === 'relay-batch') return relayBatch();
    if (action === 'relay-frame') return relayFrame();
    return httpAbuse(action);
  }

  return {
    /** Opens the hostile relay's socket: before the good relay's, so the good relay stays the newest. */
    async connectRelay(): Promise<void> {
      relaySocket = await upgrade('relay-own', '/v1/relay', tokens.relay);
      if (relaySocket) watch(relaySocket, 'relay');
    },
    /** Runs `workers` loops of random actions until `deadline` (ms since the epoch). */
    async run(workers: number, deadline: number): Promise<void> {
      await Promise.all(
        Array.from({ length: workers }, async () => {
          while (Date.now() < deadline) await act();
        }),
      );
      stopped = true;
      for (const ws of [own, relaySocket, ...kept]) ws?.terminate();
    },
  };
}
