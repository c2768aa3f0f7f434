/** A test relay: events over HTTP or the socket, and a socket that collects (and acks) sends. */
import WebSocket from 'ws';
import type { SendFrame } from '../../actors/conversationTypes.ts';
import { type ApiResponse, api } from './http.ts';

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

/**
 * What one submission of event `id` was answered: `accepted` or `duplicate` when the answer says
 * exactly that (HTTP 202 listing the id under that key alone, nothing rejected; or the socket
 * frame of that type for the id), otherwise the answer itself, so a failed assertion shows it.
 */
export function outcomeOf(id: string, answer: ApiResponse | Record<string, unknown>): string {
  if (answer.headers instanceof Headers) {
    const { status, body } = answer as ApiResponse;
    const listed = (key: string) => JSON.stringify(body?.[key]) === JSON.stringify([id]);
    const empty = (key: string) => Array.isArray(body?.[key]) && body[key].length === 0;
    if (status === 202 && empty('rejected') && Object.keys(body).length === 3) {
      if (listed('accepted') && empty('duplicates')) return 'accepted';
      if (listed('duplicates') && empty('accepted')) return 'duplicate';
    }
    return `HTTP ${status} ${JSON.stringify(body)}`;
  }
  const frame = answer as Record<string, unknown>;
  const exact = Object.keys(frame).length === 2 && frame.id === id;
  return exact && (frame.type === 'accepted' || frame.type === 'duplicate') ? frame.type : JSON.stringify(frame);
}

/**
 * Sends `e` five times at once, over HTTP (single and batch) and over `relay`'s socket, and
 * resolves with the five outcomes (see `outcomeOf`), sorted: one `accepted` and four
 * `duplicate` is the only right answer.
 */
export async function submitFiveTimes(
  base: string,
  relayToken: string,
  relay: RelayClient,
  e: Record<string, unknown>,
): Promise<string[]> {
  const answers = await Promise.all([
    postEvents(base, relayToken, e),
    relay.event(e),
    postEvents(base, relayToken, e),
    relay.event(e),
    postEvents(base, relayToken, { events: [e] }),
  ]);
  return answers.map((a) => outcomeOf(e.id as string, a)).sort();
}

export interface RelayClient {
  ws: WebSocket;
  sends: SendFrame[];
  frames: Record<string, unknown>[];
  /** Waits until a send matching `pred` arrived. */
  waitForSend(pred: (s: SendFrame) => boolean, timeoutMs?: number): Promise<SendFrame>;
  /** Waits until `count` sends matching `pred` arrived (a send delivered again counts again). */
  waitForSends(pred: (s: SendFrame) => boolean, count: number, timeoutMs?: number): Promise<SendFrame[]>;
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
        waitForSends: (pred, count, timeoutMs = 10_000) =>
          waitFor(
            () => {
              const found = sends.filter(pred);
              return found.length >= count ? found : undefined;
            },
            timeoutMs,
            `${count} sends`,
          ),
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

/**
 * Sends one more event in the chat of `o` (a direct chat, or a group, naming Sage) and waits for
 * its reply. A chat's replies are sent in order, so once this one arrived every reply to an
 * earlier event of the chat has arrived too: a reply not seen by then is not coming.
 */
export async function settleChat(
  base: string,
  token: string,
  relay: RelayClient,
  o: Pick<EventOptions, 'sender' | 'group' | 'persona'>,
): Promise<SendFrame> {
  const later = relayEvent({ ...o, text: typeof o.group === 'string' ? 'Sage, one more thing' : 'one more thing' });
  const res = await postEvents(base, token, later);
  if (res.status !== 202) throw new Error(`the settling event was refused: ${res.status} ${JSON.stringify(res.body)}`);
  return relay.waitForSend((s) => s.replyTo === later.id);
}
