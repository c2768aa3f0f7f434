/**
 * HTTP over raw TCP from a chosen local address, so the hostile user controls exactly which
 * bytes reach the server and when: a `Content-Length` its body never reaches, a body trickled
 * byte by byte, bytes that are not UTF-8. Answers are reduced to `"<status> <error code>"`.
 */
import net from 'node:net';
import { onCleanup } from '../helpers/cleanup.ts';

export interface RawRequest {
  method: string;
  path: string;
  headers: Record<string, string | number>;
  /** Body bytes sent right after the head. */
  body?: string | Buffer;
  /** Further body bytes sent one at a time, `trickleMs` apart (a slowloris body). */
  trickle?: { bytes: Buffer; everyMs: number };
  /** How long to wait for an answer once everything is sent before hanging up (ms). */
  holdMs: number;
}

const open = new Set<net.Socket>();
onCleanup(() => {
  for (const s of open) s.destroy();
});

/** Sends `request` from `localAddress`; resolves with the answer or what happened instead. */
export function rawRequest(base: string, localAddress: string, request: RawRequest): Promise<string> {
  const { hostname, port } = new URL(base);
  const head = [
    `${request.method} ${request.path} HTTP/1.1`,
    'Host: archety.test',
    ...Object.entries(request.headers).map(([k, v]) => `${k}: ${v}`),
    '',
    '',
  ].join('\r\n');
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port), localAddress });
    open.add(socket);
    let received = Buffer.alloc(0);
    let timer: NodeJS.Timeout | undefined;
    let trickle: NodeJS.Timeout | undefined;
    const finish = (outcome: string) => {
      clearTimeout(timer);
      clearInterval(trickle);
      open.delete(socket);
      socket.destroy();
      resolve(outcome);
    };
    const hold = () => {
      timer = setTimeout(() => finish('no answer'), request.holdMs);
    };
    socket.on('error', (err: NodeJS.ErrnoException) => finish(`error ${err.code ?? err.message}`));
    socket.on('close', () => finish(received.length ? answerOf(received, true) : 'closed'));
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      const answer = answerOf(received, false);
      if (answer) finish(answer);
    });
    socket.once('connect', () => {
      socket.write(head);
      if (request.body?.length) socket.write(request.body);
      const t = request.trickle;
      if (!t) return hold();
      let i = 0;
      trickle = setInterval(() => {
        if (i >= t.bytes.length) {
          clearInterval(trickle);
          hold();
          return;
        }
        socket.write(t.bytes.subarray(i, i + 1));
        i++;
      }, t.everyMs);
    });
  });
}

/** `"<status> <code>"` once a whole response is in `data` (or whatever arrived, when `closed`). */
function answerOf(data: Buffer, closed: boolean): string {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) return closed ? 'garbled' : '';
  const [statusLine, ...lines] = data.subarray(0, end).toString('latin1').split('\r\n');
  const lengthLine = lines.find((l) => /^content-length:/i.test(l));
  const length = lengthLine ? Number(lengthLine.slice(lengthLine.indexOf(':') + 1)) : 0;
  if (data.length < end + 4 + length && !closed) return '';
  const status = statusLine.split(' ')[1];
  try {
    const body = JSON.parse(data.subarray(end + 4, end + 4 + length).toString());
    return body?.error?.code ? `${status} ${body.error.code}` : status;
  } catch {
    return status;
  }
}
