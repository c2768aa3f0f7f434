/**
 * The correlation id of the work in progress (an HTTP request, a socket upgrade, a relay
 * event), for log lines: the logger adds it to every line written while it is set.
 *
 * It is set for the synchronous extent of a call (`withContext`), not carried through
 * `await`s: that would take AsyncLocalStorage, whose hooks on Node 20 run for every promise
 * the process makes once it is used — 12 % of a relay event's server CPU (bench/README.md).
 * What is said synchronously inside the call carries it, and so does whatever an actor does
 * for a message sent from inside it (the mailbox restores the sender's id around the
 * delivery). A line written after an `await` names its id itself (`reqId`), as the request
 * line, the error answers and the conversation's steps do.
 */
import { randomUUID } from 'node:crypto';

export interface RequestContext {
  /** Correlation id: `x-request-id`, an event id, or a socket's connection id. */
  reqId: string;
}

let current: RequestContext | undefined;

/** Runs `fn` with `context` set; restored when `fn` returns or throws (an async `fn` returns at its first `await`). */
export function withContext<T>(context: RequestContext, fn: () => T): T {
  const outer = current;
  current = context;
  try {
    return fn();
  } finally {
    current = outer;
  }
}

export function currentContext(): RequestContext | undefined {
  return current;
}

/** A fresh correlation id. */
export function newRequestId(): string {
  return randomUUID();
}
