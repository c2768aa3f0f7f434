/** A test relay: events over HTTP or the socket, and a socket that collects (and acks) sends. */
import WebSocket from 'ws';
import type { SendFrame } from '../../actors/conversation.machine.ts';
import { api } from './http.ts';

let counter = 0;

export interface EventOptions {
  id?: string;
  group?: string | false;
  sender: string;
  text?: string;
  persona?: string;
  participants?: string[];
  attachments?: { id: string; mime: string; data?: string; url?: string }[];
  replyTo?: string;
}

/** A relay event; direct unless `group` names a chat guid. */
export function relayEvent(o: EventOptions): Record<string, unknown> {
  const group = typeof o.group === 'string';
  return {
    id: o.id ?? `evt_${process.pid}_${Date.now().toString(36)}_${counter++}`,
    type: 'message',
    chat: {
      guid: group ? o.group : `iMessage;-;${o.sender}`,
      group,
      ...(o.participants ? { participants: o.participants } : {}),
    },
    sender: o.sender,
    ...(o.persona ? { persona: o.persona } : {}),
    ...(o.text !== undefined ? { text: o.text } : {}),
    ...(o.attachments ? { attachments: o.attachments } : {}),
    ...(o.replyTo ? { replyTo: o.replyTo } : {}),
    sentAt: new Date().toISOString(),
  };
}

export function postEvents(base: string, token: string, body: unknown) {
  return api(base, 'POST', '/v1/relay/events', { token, body });
}

export interface RelayClient {
  ws: WebSocket;
  sends: SendFrame[];
  frames: Record<string, unknown>[];
  /** Waits until a send matching `pred` arrived. */
  waitForSend(pred: (s: SendFrame) => boolean, timeoutMs?: number): Promise<SendFrame>;
  /** Sends an event frame and resolves with the server's answer (accepted, duplicate or error). */
  event(event: unknown): Promise<Record<string, unknown>>;
  ack(id: string): void;
  close(): Promise<void>;
}

/** Connects as a relay; with `autoAck` every send is acknowledged as it arrives. */
export function connectRelay(base: string, token: string, options: { autoAck?: boolean } = {}): Promise<RelayClient> {
  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/v1/relay`, ['archety.v1', `bearer.${token}`]);
  const sends: SendFrame[] = [];
  const frames: Record<string, unknown>[] = [];
  const listeners = new Set<() => void>();
  const claimed = new Set<number>();
  ws.on('message', (data) => {
    const f = JSON.parse(data.toString());
    frames.push(f);
    if (f.type === 'send') {
      sends.push(f);
      if (options.autoAck) ws.send(JSON.stringify({ type: 'ack', id: f.id }));
    }
    for (const l of [...listeners]) l();
  });
  const waitFor = <T>(find: () => T | undefined, timeoutMs: number, what: string) =>
    new Promise<T>((resolve, reject) => {
      const check = () => {
        const found = find();
        if (found !== undefined) {
          listeners.delete(check);
          clearTimeout(timer);
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        reject(new Error(`timed out waiting for ${what}; frames: ${JSON.stringify(frames).slice(0, 800)}`));
      }, timeoutMs);
      listeners.add(check);
      check();
    });
  return new Promise((resolve, reject) => {
    ws.on('unexpected-response', (_req, res) =>
      reject(Object.assign(new Error(`refused ${res.statusCode}`), { status: res.statusCode })),
    );
    ws.on('error', reject);
    ws.on('open', () =>
      resolve({
        ws,
        sends,
        frames,
        waitForSend: (pred, timeoutMs = 10_000) => waitFor(() => sends.find(pred), timeoutMs, 'a send'),
        event(event) {
          const id = (event as { id?: string }).id;
          ws.send(JSON.stringify({ type: 'event', event }));
          // Each answer is claimed by one call, in order, so the same event sent twice gets both answers.
          return waitFor(
            () => {
              const i = frames.findIndex(
                (f, idx) =>
                  !claimed.has(idx) &&
                  (f.type === 'accepted' || f.type === 'duplicate' ? f.id === id : f.type === 'error' && f.ref === id),
              );
              if (i < 0) return undefined;
              claimed.add(i);
              return frames[i];
            },
            10_000,
            `the answer to ${id}`,
          );
        },
        ack: (id) => ws.send(JSON.stringify({ type: 'ack', id })),
        close: () =>
          new Promise<void>((r) => {
            if (ws.readyState === WebSocket.CLOSED) return r();
            ws.once('close', () => r());
            ws.close();
          }),
      }),
    );
  });
}
