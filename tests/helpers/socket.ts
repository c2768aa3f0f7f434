/** A raw protocol client for tests: opens sockets with either token carrier and reads frames. */
import WebSocket from 'ws';
import type { ServerFrame } from '../../actors/miniappFrames.ts';

export interface Opened {
  ws: WebSocket;
  protocol: string;
  frames: ServerFrame[];
  /**
   * Resolves with the next frame matching `type` (frames already received count). Only for
   * frames nothing else can come before (the snapshot, an answer to a frame without an id):
   * wait for your own op with `answer`.
   */
  next<T extends ServerFrame['type']>(type: T, timeoutMs?: number): Promise<Extract<ServerFrame, { type: T }>>;
  /**
   * Resolves with the frame that answers the op `opId` — its `applied` or `conflict`, or an
   * `error` whose `ref` is `opId` — whatever other traffic arrives before or after it.
   */
  answer(opId: string, timeoutMs?: number): Promise<AnswerFrame>;
  /** Resolves with the close code and reason. */
  closed: Promise<{ code: number; reason: string }>;
  send(frame: unknown): void;
  close(): void;
}

export type AnswerFrame = Extract<ServerFrame, { type: 'applied' | 'conflict' | 'error' }>;

const answers = (opId: string) => (f: ServerFrame) =>
  ((f.type === 'applied' || f.type === 'conflict') && f.opId === opId) || (f.type === 'error' && f.ref === opId);

export function wsUrl(base: string, sessionId: string, query = ''): string {
  return `${base.replace(/^http/, 'ws')}/v1/miniapp/${encodeURIComponent(sessionId)}${query}`;
}

/** Opens a socket; rejects with the HTTP status when the upgrade is refused. */
export function openSocket(
  base: string,
  sessionId: string,
  token: string | undefined,
  carrier: 'protocol' | 'query' = 'protocol',
): Promise<Opened> {
  const url = wsUrl(base, sessionId, carrier === 'query' && token ? `?token=${encodeURIComponent(token)}` : '');
  const protocols =
    carrier === 'protocol' && token
      ? ['archety.v1', `bearer.${token}`]
      : carrier === 'protocol'
        ? ['archety.v1']
        : undefined;
  const ws = new WebSocket(url, protocols);
  const frames: ServerFrame[] = [];
  const cursor = new Map<string, number>();
  const waiters: (() => void)[] = [];
  ws.on('message', (data) => {
    frames.push(JSON.parse(data.toString()));
    for (const w of waiters.splice(0)) w();
  });
  let closedWith = '';
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => {
      closedWith = `${code} ${reason.toString()}`.trim();
      resolve({ code, reason: reason.toString() });
      for (const w of waiters.splice(0)) w();
    }),
  );
  /** The first frame (by arrival) that `matches`, now or when it arrives; `found` gets its index. */
  const waitFor = (
    matches: (f: ServerFrame, idx: number) => boolean,
    found: (idx: number) => void,
    what: string,
    timeoutMs: number,
  ) =>
    new Promise<ServerFrame>((res, rej) => {
      const timer = setTimeout(
        () => rej(new Error(`no ${what} within ${timeoutMs} ms; got ${JSON.stringify(frames).slice(0, 500)}`)),
        timeoutMs,
      );
      const look = () => {
        const i = frames.findIndex(matches);
        if (i >= 0) {
          found(i);
          clearTimeout(timer);
          res(frames[i]);
        } else if (ws.readyState === WebSocket.CLOSED) {
          clearTimeout(timer);
          rej(new Error(`socket closed (${closedWith}) before ${what}`));
        } else {
          waiters.push(look);
        }
      };
      look();
    });
  return new Promise((resolve, reject) => {
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () =>
        reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode, body })),
      );
    });
    ws.on('error', (err) => reject(err));
    ws.on('open', () =>
      resolve({
        ws,
        protocol: ws.protocol,
        frames,
        closed,
        send: (frame) => ws.send(typeof frame === 'string' || Buffer.isBuffer(frame) ? frame : JSON.stringify(frame)),
        close: () => ws.close(),
        next(type, timeoutMs = 5000) {
          const from = cursor.get(type) ?? 0;
          return waitFor(
            (f, idx) => idx >= from && f.type === type,
            (idx) => cursor.set(type, idx + 1),
            `a ${type} frame`,
            timeoutMs,
          ) as never;
        },
        answer(opId, timeoutMs = 5000) {
          return waitFor(
            (f) => answers(opId)(f),
            () => {},
            `the answer to op ${opId}`,
            timeoutMs,
          ) as Promise<AnswerFrame>;
        },
      }),
    );
  });
}

/** The HTTP status of a refused upgrade (fails the test when the upgrade succeeds). */
export async function refusedStatus(
  base: string,
  sessionId: string,
  token: string | undefined,
  carrier: 'protocol' | 'query' = 'protocol',
): Promise<number> {
  try {
    const s = await openSocket(base, sessionId, token, carrier);
    s.close();
    throw new Error('the upgrade was accepted');
  } catch (err) {
    const status = (err as { status?: number }).status;
    if (status === undefined) throw err;
    return status;
  }
}
