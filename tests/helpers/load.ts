/**
 * A bounded edit load for resilience tests: every client owns one budget item of the trip
 * and keeps renaming it, so edits never conflict; each op it sees `applied` is acknowledged.
 * A socket opened again starts from its snapshot, like the page after a reconnect.
 */
import WebSocket from 'ws';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import { wsUrl } from './socket.ts';

export interface LoadResult {
  /** opIds acknowledged to their sender by an `applied` frame. */
  acked: Set<string>;
  sent: number;
  errors: ServerFrame[];
  /** Every close code of every socket, in the order they closed. */
  closeCodes: number[];
  /** Sockets opened again after the server closed one with a `reconnectOn` code. */
  reconnects: number;
}

export interface LoadOptions {
  durationMs: number;
  /** Pause between a client's ops. */
  intervalMs: number;
  /** Stop early when this resolves. */
  until?: Promise<unknown>;
  /** Close codes a client answers by opening a new socket, as the page's client does. */
  reconnectOn?: number[];
}

export interface RunningLoad {
  /** Filled in as the load runs. */
  result: LoadResult;
  /** Resolves once every client's socket has closed. */
  done: Promise<LoadResult>;
}

/** Starts the load; its result can be read while it runs. */
export function startEditLoad(base: string, sessionId: string, tokens: string[], o: LoadOptions): RunningLoad {
  const result: LoadResult = { acked: new Set(), sent: 0, errors: [], closeCodes: [], reconnects: 0 };
  let stop = false;
  const stopTimer = setTimeout(() => (stop = true), o.durationMs);
  void o.until?.then(() => (stop = true));
  /** One client: its socket, and a new one each time the server closes it with `reconnectOn`. */
  const runClient = async (token: string, k: number) => {
    const item = `item${k}`;
    const seq = { next: 0 };
    for (;;) {
      const code = await runSocket(token, item, seq);
      result.closeCodes.push(code);
      if (stop || !o.reconnectOn?.includes(code)) return;
      result.reconnects++;
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const runSocket = (token: string, item: string, seq: { next: number }) =>
    new Promise<number>((resolve) => {
      const ws = new WebSocket(wsUrl(base, sessionId), ['archety.v1', `bearer.${token}`]);
      let version = 0;
      let timer: NodeJS.Timeout | undefined;
      const send = (op: unknown) => {
        if (ws.readyState !== WebSocket.OPEN) return;
        ws.send(JSON.stringify({ type: 'op', opId: `${item}-${seq.next++}`, baseVersion: version, op }));
        result.sent++;
      };
      const tick = () => {
        if (stop) {
          ws.close();
          return;
        }
        send({ kind: 'set', path: ['budget', 'items', { id: item }, 'label'], value: `label ${seq.next}` });
        timer = setTimeout(tick, o.intervalMs);
      };
      ws.on('message', (data) => {
        const f = JSON.parse(data.toString()) as ServerFrame;
        if (f.type === 'snapshot') {
          version = f.version;
          const has = (f.state as { budget: { items: { id: string }[] } }).budget.items.some((i) => i.id === item);
          if (!has) send({ kind: 'insert', path: ['budget', 'items'], value: { id: item, label: 'new', amount: 0 } });
          clearTimeout(timer);
          timer = setTimeout(tick, o.intervalMs);
        } else if (f.type === 'applied') {
          version = Math.max(version, f.version);
          if (f.opId.startsWith(`${item}-`)) result.acked.add(f.opId);
        } else if (f.type === 'error' || f.type === 'conflict') {
          result.errors.push(f);
        }
      });
      ws.on('close', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
      ws.on('error', () => {});
    });
  const done = Promise.all(tokens.map((token, k) => runClient(token, k))).then(() => {
    clearTimeout(stopTimer);
    return result;
  });
  return { result, done };
}
