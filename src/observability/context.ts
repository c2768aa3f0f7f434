/**
 * The correlation id of the work in progress (an HTTP request, a socket frame, a relay
 * event), carried through async calls with AsyncLocalStorage so every log line has it.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';

export interface RequestContext {
  /** Correlation id: `x-request-id`, an event id, or a socket's connection id. */
  reqId: string;
}

const storage = new AsyncLocalStorage<RequestContext>();

export function withContext<T>(context: RequestContext, fn: () => T): T {
  return storage.run(context, fn);
}

export function currentContext(): RequestContext | undefined {
  return storage.getStore();
}

/** A fresh correlation id. */
export function newRequestId(): string {
  return randomUUID();
}
