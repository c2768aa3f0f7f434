/**
 * A well-behaved user: one socket on their own trip, sending ops at a steady pace and
 * matching every answer to its op by `opId`, and a direct chat with Sage whose events the
 * relay posts over HTTP at a steady pace. It records everything it sent and every answer.
 */

import { postEvents, relayEvent } from '../helpers/relay.ts';
import type { AnswerFrame, Opened } from '../helpers/socket.ts';

export interface GoodUser {
  phone: string;
  trip: string;
  socket: Opened;
  /** Every op sent, by opId, with its answer once it came. */
  ops: Map<string, { sentAt: number; answer?: AnswerFrame; answeredAt?: number }>;
  /** Every event posted: its id and how the POST was answered. */
  events: { id: string; status: number; body: unknown }[];
  /** The socket's close code, if it closed. */
  closed?: number;
}

export function goodUser(phone: string, trip: string, socket: Opened): GoodUser {
  const user: GoodUser = { phone, trip, socket, ops: new Map(), events: [] };
  socket.ws.on('message', (data) => {
    const f = JSON.parse(data.toString());
    const opId = f.type === 'error' ? f.ref : f.opId;
    const op = typeof opId === 'string' ? user.ops.get(opId) : undefined;
    if (op && !op.answer && (f.type === 'applied' || f.type === 'conflict' || f.type === 'error')) {
      op.answer = f;
      op.answeredAt = performance.now();
    }
  });
  socket.ws.on('close', (code) => {
    user.closed = code;
  });
  return user;
}

/**
 * Waits for the next tick of a steady pace (`everyMs` apart, ms of performance.now()) and
 * resolves with the one after it. Ticks this process was too busy to keep are made up for,
 * but at most two at once, so the pace never turns into a burst.
 */
function tick(due: number, everyMs: number): Promise<number> {
  const now = performance.now();
  const at = Math.max(due, now - everyMs);
  return new Promise((resolve) => setTimeout(() => resolve(at + everyMs), Math.max(0, at - now)));
}

/**
 * Edits the trip every `everyMs` until `deadline` (ms since the epoch): the title, then a day
 * added, its items set, and the day removed again, so the trip never grows. Ops from one
 * socket never conflict with each other, so the base is the latest version seen.
 */
export async function editSteadily(user: GoodUser, everyMs: number, deadline: number): Promise<void> {
  let due = performance.now() + everyMs;
  for (let n = 0; Date.now() < deadline; n++) {
    const version = Math.max(
      0,
      ...[...user.ops.values()].map((o) => (o.answer?.type === 'applied' ? o.answer.version : 0)),
    );
    const day = `d${Math.floor(n / 4)}`;
    const op = [
      { kind: 'set', path: ['title'], value: `Trip ${n}` },
      { kind: 'insert', path: ['days'], value: { id: day, date: null, items: [] } },
      { kind: 'set', path: ['days', { id: day }, 'items'], value: [{ id: 'i1', title: `Item ${n}`, time: '09:30' }] },
      { kind: 'remove', path: ['days', { id: day }] },
    ][n % 4];
    const opId = `${user.phone}-${n}`;
    user.ops.set(opId, { sentAt: performance.now() });
    user.socket.send({ type: 'op', opId, baseVersion: version, op });
    due = await tick(due, everyMs);
  }
}

/** Posts one event of the user's direct chat every `everyMs` until `deadline`. */
export async function chatSteadily(
  user: GoodUser,
  base: string,
  relayToken: string,
  everyMs: number,
  deadline: number,
): Promise<void> {
  let due = performance.now() + everyMs;
  for (let n = 0; Date.now() < deadline; n++) {
    const event = relayEvent({ id: `good_${user.phone}_${n}`, sender: user.phone, text: `Hello Sage, message ${n}` });
    const res = await postEvents(base, relayToken, event);
    user.events.push({ id: event.id as string, status: res.status, body: res.body });
    due = await tick(due, everyMs);
  }
}
