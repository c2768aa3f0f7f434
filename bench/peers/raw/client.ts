/**
 * The limit's client: a WebSocket on the raw uWebSockets.js relay (`bench/rawRelay.ts`), which
 * publishes every frame it receives to the room with no parsing, no state and no
 * authentication. Each client sends the very frame Archety would broadcast for its edit, so
 * both fan out the same bytes; the own echo is that frame coming back.
 */
import WebSocket from 'ws';
import {
  type ClientAdapter,
  type ClientHooks,
  type ConnectOutcome,
  type ConnectSpec,
  itemId,
  ownSeq,
  withTimeout,
} from '../adapter.ts';
import { budgetOps, closeWs, WS_OPTIONS } from '../archety/client.ts';

const APPLIED_PREFIX = '{"type":"applied","opId":"';

export const rawClient: ClientAdapter = {
  connect(spec: ConnectSpec, hooks: ClientHooks): Promise<ConnectOutcome> {
    const url = `${spec.baseUrl.replace(/^http/, 'ws')}/room/${encodeURIComponent(spec.room)}`;
    const ops = budgetOps(itemId(spec.index), spec.index);
    let closing = false;
    const ws = new WebSocket(url, WS_OPTIONS);
    const send = (seq: number, op: string) =>
      ws.send(`{"type":"applied","opId":"${spec.prefix}${seq}","by":"${spec.user}","version":${seq},"op":${op}}`);
    const conn = {
      hasItem: false,
      insert() {
        send(0, ops.insert);
      },
      edit(seq: number) {
        send(seq, ops.edit(seq));
      },
      close() {
        closing = true;
        return closeWs(ws);
      },
    };
    const opened = new Promise<ConnectOutcome>((resolve) => {
      ws.on('open', () => resolve({ ok: true, conn }));
      ws.on('message', (data: Buffer) => {
        const s = data.toString();
        if (!s.startsWith(APPLIED_PREFIX)) return;
        hooks.frame(1);
        const seq = ownSeq(s.slice(APPLIED_PREFIX.length, s.indexOf('"', APPLIED_PREFIX.length)), spec.prefix);
        if (seq >= 0) hooks.echo(seq);
      });
      ws.on('unexpected-response', (_req, res) => {
        res.resume();
        resolve({ ok: false, reason: `http_${res.statusCode}` });
        ws.terminate();
      });
      ws.on('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, reason: err.code ?? 'error' }));
      ws.on('close', (code) => {
        resolve({ ok: false, reason: `closed_${code}` });
        if (!closing) hooks.dropped();
      });
    });
    return withTimeout(opened, 30_000);
  },
};
