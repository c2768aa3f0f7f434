/**
 * A bounded edit load for resilience tests: every client owns one budget item of the trip
 * and keeps renaming it, so edits never conflict; each op it sees `applied` is acknowledged.
 */
import WebSocket from 'ws';
import type { ServerFrame } from '../../actors/miniappFrames.ts';
import { wsUrl } from './socket.ts';

export interface LoadResult {
  /** opIds acknowledged to their sender by an `applied` frame. */
  acked: Set<string>;
  sent: number;
  errors: ServerFrame[];
  closeCodes: number[];
}

export interface LoadOptions {
  durationMs: number;
  /** Pause between a client's ops. */
  intervalMs: number;
  /** Stop early when this resolves. */
  until?: Promise<unknown>;
}

export async function runEditLoad(
  base: string,
  sessionId: string,
  tokens: string[],
  o: LoadOptions,
): Promise<LoadResult> {
  const result: LoadResult = { acked: new Set(), sent: 0, errors: [], closeCodes: [] };
  let stop = false;
  const stopTimer = setTimeout(() => (stop = true), o.durationMs);
  void o.until?.then(() => (stop = true));
  await Promise.all(
    tokens.map(
      (token, k) =>
        new Promise<void>((resolve) => {
          const ws = new WebSocket(wsUrl(base, sessionId), ['archety.v1', `bearer.${token}`]);
          let version = 0;
          let seq = 0;
          let timer: NodeJS.Timeout | undefined;
          const item = `item${k}`;
          const send = (op: unknown) => {
            if (ws.readyState !== WebSocket.OPEN) return;
            ws.send(JSON.stringify({ type: 'op', opId: `${item}-${seq++}`, baseVersion: version, op }));
            result.sent++;
          };
          const tick = () => {
            if (stop) {
              ws.close();
              return;
            }
            send({ kind: 'set', path: ['budget', 'items', { id: item }, 'label'], value: `label ${seq}` });
            timer = setTimeout(tick, o.intervalMs);
          };
          ws.on('message', (data) => {
            const f = JSON.parse(data.toString()) as ServerFrame;
            if (f.type === 'snapshot') {
              version = f.version;
              const has = (f.state as { budget: { items: { id: string }[] } }).budget.items.some((i) => i.id === item);
              if (!has)
                send({ kind: 'insert', path: ['budget', 'items'], value: { id: item, label: 'new', amount: 0 } });
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
            result.closeCodes.push(code);
            resolve();
          });
          ws.on('error', () => {});
        }),
    ),
  );
  clearTimeout(stopTimer);
  return result;
}
