/**
 * The actor host in cluster mode: the same `ActorHost` interface, with each message routed to
 * the process that owns its actor. Callers (the miniapp service, the relay) and the kinds do
 * not know there is a cluster.
 *
 * Where a message goes: to this process's host when the actor lives here; else to the owner
 * its lease names (`Ownership.ownerOf`, remembered until that owner refuses or goes quiet),
 * over the bus; when nobody owns it, here, where the activation takes the lease. A process
 * that receives a forwarded message hands it to its own host, which activates the actor if
 * needed (a lease another process took meanwhile refuses that, and the sender looks again).
 *
 * The bus is only the doorbell: what must not be lost is stored before it is sent (the relay's
 * inbox), or is the client's to resend (an op without an answer is resent on reconnect). A
 * message lost on the way delays work; it never loses it.
 *
 * Events cross processes as JSON: they must be plain data. `ask`'s reply function is replaced by
 * a marker on the way out and by a function that answers over the bus on the way in.
 */
import type { AnyActorRef, EventObject, SnapshotFrom } from 'xstate';
import { AppError, type ErrorCode, errorCatalog, isAppError } from '../errors.ts';
import { actorKey } from '../host/ActorKind.ts';
import type { ActorHost } from '../host/createActorHost.ts';
import type { Ownership } from '../host/Ownership.ts';
import type { Logger } from '../observability/logger.ts';
import type { Bus } from './Bus.ts';

/** Messages between the routed hosts of a cluster (on each process's bus channel). */
type HostMessage =
  | { t: 'h.post'; kind: string; id: string; event: EventObject; ref?: number; ack?: boolean }
  | { t: 'h.ask'; kind: string; id: string; event: EventObject; ref: number }
  | { t: 'h.tell'; kind: string; id: string; event: EventObject }
  | { t: 'h.ok'; ref: number }
  | { t: 'h.err'; ref: number; code: string; message: string }
  | { t: 'h.answer'; ref: number; value?: unknown; error?: { code: string; message: string } };

/** Marks where `ask`'s reply function was in a forwarded event. */
const REPLY = '\u0000reply';

/** How long a process waits for another to answer a forwarded `send` or `ask`. */
const REMOTE_TIMEOUT_MS = 10_000;

export interface RoutedHostDeps {
  local: ActorHost;
  ownership: Ownership;
  bus: Bus;
  log: Logger;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

export function createRoutedHost({ local, ownership, bus, log }: RoutedHostDeps): ActorHost {
  const self = bus.self;
  /** Owners learned from leases, by actor key: looked up again once one refuses or times out. */
  const owners = new Map<string, string>();
  const pending = new Map<number, Pending>();
  /** Forwarded posts whose refusal may still come back, by ref. */
  const posts = new Map<number, { at: number; refused: (err: Error) => void }>();
  const postSweep = setInterval(() => {
    const before = Date.now() - REMOTE_TIMEOUT_MS;
    for (const [ref, post] of posts) {
      if (post.at >= before) break;
      posts.delete(ref);
    }
  }, REMOTE_TIMEOUT_MS);
  postSweep.unref();
  let nextRef = 1;

  /** The process to send `kind:id`'s messages to: this one when it runs the actor or nobody does. */
  async function ownerOf(kind: string, id: string): Promise<string> {
    if (local.has(kind, id)) return self;
    const key = actorKey(kind, id);
    const known = owners.get(key);
    if (known) return known;
    const owner = (await ownership.ownerOf(key)) ?? self;
    if (owner !== self) owners.set(key, owner);
    return owner;
  }

  function forget(kind: string, id: string): void {
    owners.delete(actorKey(kind, id));
  }

  /** Sends `message` to `to` and waits for its answer (`h.ok`, `h.err`, `h.answer`). */
  function request(to: string, message: HostMessage & { ref: number }): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(message.ref);
        reject(new AppError('session_unavailable', 'the process that runs this session did not answer; retry'));
      }, REMOTE_TIMEOUT_MS);
      pending.set(message.ref, { resolve, reject, timer });
      bus.send(to, message);
    });
  }

  /** Hands `event` to this process's host; on a refusal, looks again whether another process took the actor. */
  function postHere(kind: string, id: string, event: EventObject, rejected: (err: Error) => void, retried: boolean) {
    local.post(kind, id, event, (err) => {
      if (retried) return rejected(err);
      // The activation may have lost the lease to another process: find it and send there.
      ownership.ownerOf(actorKey(kind, id)).then(
        (owner) => {
          if (owner && owner !== self) routePost(kind, id, event, rejected, true, owner);
          else rejected(err);
        },
        () => rejected(err),
      );
    });
  }

  function routePost(
    kind: string,
    id: string,
    event: EventObject,
    rejected: (err: Error) => void,
    retried: boolean,
    knownOwner?: string,
  ): void {
    const deliver = (owner: string) => {
      if (owner === self) return postHere(kind, id, event, rejected, retried);
      const ref = nextRef++;
      // Only a refusal comes back (an op's answer reaches its socket from the owner itself):
      // remembered a while, without a timer each (a busy session forwards a batch every turn).
      posts.set(ref, {
        at: Date.now(),
        refused: (err) => {
          log.debug({ kind, owner, code: (err as AppError).code }, 'a forwarded message was refused; looking again');
          forget(kind, id);
          if (retried) rejected(err);
          else routePost(kind, id, event, rejected, true);
        },
      });
      bus.send(owner, { t: 'h.post', kind, id, event, ref } satisfies HostMessage);
    };
    if (knownOwner) deliver(knownOwner);
    else ownerOf(kind, id).then(deliver, (err) => rejected(unavailable(err)));
  }

  bus.onMessage((raw, from) => {
    const message = raw as HostMessage;
    switch (message?.t) {
      case 'h.post': {
        const { kind, id, event, ref, ack } = message;
        const refused = (err: unknown) => {
          if (ref !== undefined) bus.send(from, { t: 'h.err', ref, ...describe(err) } satisfies HostMessage);
        };
        if (ack && ref !== undefined)
          local.send(kind, id, event).then(() => bus.send(from, { t: 'h.ok', ref } satisfies HostMessage), refused);
        else local.post(kind, id, event, refused);
        return;
      }
      case 'h.tell':
        local.tell(message.kind, message.id, message.event);
        return;
      case 'h.ask': {
        const { kind, id, event, ref } = message;
        const build = (reply: (value: unknown) => void) => withReply(event, reply);
        local.ask(kind, id, build).then(
          (value) =>
            bus.send(from, {
              t: 'h.answer',
              ref,
              ...(value instanceof Error ? { error: describe(value) } : { value }),
            } satisfies HostMessage),
          (err) => bus.send(from, { t: 'h.err', ref, ...describe(err) } satisfies HostMessage),
        );
        return;
      }
      case 'h.ok':
      case 'h.answer':
      case 'h.err': {
        const post = posts.get(message.ref);
        if (post && message.t === 'h.err') {
          posts.delete(message.ref);
          post.refused(appError(message));
          return;
        }
        const waiting = pending.get(message.ref);
        if (!waiting) return;
        pending.delete(message.ref);
        clearTimeout(waiting.timer);
        if (message.t === 'h.err') waiting.reject(appError(message));
        else if (message.t === 'h.answer' && message.error) waiting.resolve(appError(message.error));
        else waiting.resolve(message.t === 'h.answer' ? message.value : undefined);
        return;
      }
    }
  });

  const host: ActorHost = {
    register: (kind) => local.register(kind),

    async send(kind, id, event) {
      for (let attempt = 0; ; attempt++) {
        const owner = await ownerOf(kind, id).catch((err) => Promise.reject(unavailable(err)));
        try {
          if (owner === self) return await local.send(kind, id, event);
          await request(owner, { t: 'h.post', kind, id, event, ref: nextRef++, ack: true });
          return;
        } catch (err) {
          forget(kind, id);
          const moved = attempt === 0 && (await ownership.ownerOf(actorKey(kind, id)).catch(() => null));
          if (!moved || moved === owner) throw err;
        }
      }
    },

    post(kind, id, event, rejected) {
      if (local.has(kind, id)) local.post(kind, id, event, rejected);
      else routePost(kind, id, event, rejected, false);
    },

    tell(kind, id, event) {
      if (local.has(kind, id)) return local.tell(kind, id, event);
      // Only an owner elsewhere can hold it; a lookup that fails drops it, as for a dead actor.
      ownerOf(kind, id).then(
        (owner) => {
          if (owner !== self) bus.send(owner, { t: 'h.tell', kind, id, event } satisfies HostMessage);
        },
        () => {},
      );
    },

    async ask<R>(kind: string, id: string, build: (reply: (value: R) => void) => EventObject, timeoutMs?: number) {
      const owner = await ownerOf(kind, id).catch((err) => Promise.reject(unavailable(err)));
      if (owner === self) return local.ask(kind, id, build, timeoutMs);
      const event = withReply(build(() => {}) as EventObject, REPLY);
      try {
        return (await request(owner, { t: 'h.ask', kind, id, event, ref: nextRef++ })) as R;
      } catch (err) {
        forget(kind, id);
        throw err;
      }
    },

    peek: (kind, id): SnapshotFrom<AnyActorRef> | undefined => local.peek(kind, id),
    has: (kind, id) => local.has(kind, id),
    counts: () => local.counts(),

    async stopAll(timeoutMs) {
      await local.stopAll(timeoutMs);
      clearInterval(postSweep);
      posts.clear();
      for (const [ref, waiting] of pending) {
        clearTimeout(waiting.timer);
        waiting.reject(new AppError('shutting_down', 'the server is shutting down'));
        pending.delete(ref);
      }
    },
  };
  return host;
}

/**
 * `event` with its function-valued fields replaced by `reply` (a function, on the way in), or
 * each function replaced by the marker (on the way out, when `reply` is the marker).
 */
function withReply(event: EventObject, reply: unknown): EventObject {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(event)) {
    out[k] = typeof v === 'function' || v === REPLY ? reply : v;
  }
  return out as EventObject;
}

function describe(err: unknown): { code: string; message: string } {
  return isAppError(err)
    ? { code: err.code, message: err.message }
    : { code: 'internal_error', message: 'the session could not be reached' };
}

function appError(e: { code: string; message: string }): AppError {
  const code = (e.code in errorCatalog ? e.code : 'internal_error') as ErrorCode;
  return new AppError(code, e.message);
}

function unavailable(err: unknown): AppError {
  return isAppError(err)
    ? err
    : new AppError('session_unavailable', 'cluster ownership is unavailable (Redis); retry', { cause: err });
}
