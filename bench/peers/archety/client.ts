/**
 * Archety's client, as docs/protocol.md describes it: a WebSocket on `/v1/miniapp/:sessionId` with
 * the JWT in `Sec-WebSocket-Protocol: archety.v1, bearer.<jwt>`; the `snapshot` on open; `op`
 * frames with `baseVersion` = the latest version seen (so a client's edits of its own item
 * never conflict); the own echo is its own `applied` frame, which every client of the session
 * receives after the op is committed to PostgreSQL.
 *
 * `applied` frames are recognised by their prefix and scanned, not parsed: the generator must
 * not be what is measured (the other adapters use their libraries' own decoding).
 */
import WebSocket from 'ws';
import {
  type ClientAdapter,
  type ClientHooks,
  type ConnectOutcome,
  type ConnectSpec,
  itemId,
  labelFor,
  ownSeq,
  withTimeout,
} from '../adapter.ts';

const APPLIED_PREFIX = '{"type":"applied","opId":"';

/** Options shared with the raw relay's adapter, which uses the same client. */
export const WS_OPTIONS: WebSocket.ClientOptions = {
  perMessageDeflate: false,
  handshakeTimeout: 30_000,
};

/** A client's two trip-planner ops, as JSON: inserting its own budget item, and setting its label. */
export function budgetOps(item: string, amount: number): { insert: string; edit: (seq: number) => string } {
  return {
    insert: JSON.stringify({
      kind: 'insert',
      path: ['budget', 'items'],
      value: { id: item, label: labelFor(0), amount },
    }),
    edit: (seq) => `{"kind":"set","path":["budget","items",{"id":"${item}"},"label"],"value":"${labelFor(seq)}"}`,
  };
}

/** The version in an `applied` frame, read after `from`. */
function versionOf(s: string, from: number): number {
  let i = s.indexOf('"version":', from) + 10;
  let v = 0;
  for (let ch = s.charCodeAt(i); ch >= 48 && ch <= 57; ch = s.charCodeAt(++i)) v = v * 10 + (ch - 48);
  return v;
}

export const archetyClient: ClientAdapter = {
  connect(spec: ConnectSpec, hooks: ClientHooks): Promise<ConnectOutcome> {
    const url = `${spec.baseUrl.replace(/^http/, 'ws')}/v1/miniapp/${encodeURIComponent(spec.room)}`;
    const item = itemId(spec.index);
    const ops = budgetOps(item, spec.index);
    let version = 0;
    let hasItem = false;
    let closing = false;
    const ws = new WebSocket(url, ['archety.v1', `bearer.${spec.token}`], WS_OPTIONS);
    const send = (seq: number, op: string) =>
      ws.send(`{"type":"op","opId":"${spec.prefix}${seq}","baseVersion":${version},"op":${op}}`);
    const conn = {
      get hasItem() {
        return hasItem;
      },
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
      ws.on('message', (data: Buffer) => {
        const s = data.toString();
        if (s.startsWith(APPLIED_PREFIX)) {
          const end = s.indexOf('"', APPLIED_PREFIX.length);
          const v = versionOf(s, end);
          if (v > version) version = v;
          hooks.frame(1);
          const seq = ownSeq(s.slice(APPLIED_PREFIX.length, end), spec.prefix);
          if (seq >= 0) hooks.echo(seq);
          return;
        }
        const f = JSON.parse(s) as {
          type: string;
          version?: number;
          opId?: string;
          ref?: string;
          code?: string;
          state?: { budget?: { items?: { id: string }[] } };
        };
        if (f.type === 'snapshot') {
          version = Math.max(version, f.version ?? 0);
          hasItem = (f.state?.budget?.items ?? []).some((it) => it.id === item);
          resolve({ ok: true, conn });
        } else if (f.type === 'conflict' && f.opId) {
          version = Math.max(version, f.version ?? 0);
          const seq = ownSeq(f.opId, spec.prefix);
          if (seq >= 0) hooks.conflict(seq);
        } else if (f.type === 'error') {
          const seq = f.ref ? ownSeq(f.ref, spec.prefix) : -1;
          hooks.refused(seq, f.code ?? 'error');
        }
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

/** Closes `ws` and resolves once it is closed (terminating it after 10 s). */
export function closeWs(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => ws.terminate(), 10_000);
    ws.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.close(1000);
  });
}
