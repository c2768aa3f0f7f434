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

/**
 * How long a forwarded post is remembered for a refusal to come back (a refusal is sent as soon
 * as the owner's host refuses; what it holds is the whole event, so not for long).
 */
const REFUSAL_WINDOW_MS = 5_000;

/** How long a process waits for another to answer a forwarded `send` or `ask`. */
const REMOTE_TIMEOUT_MS = 10_000;

export interface RoutedHostDeps {
  local: ActorHost;
  ownership: Ownership;
  bus: Bus;
  log: Logger;
  /**
   * How long a message waits for an owner that is gone (nobody listens on its channel) to
   * lose its lease: ACTOR_LEASE_MS and a margin. Then another process takes the actor.
   */
  failoverMs: number;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  leaseCheck: NodeJS.Timeout;
}

/** Routing attempts for one message: a refusal or a gone owner makes it look again, this often at most. */
const MAX_ATTEMPTS = 3;

/** Thrown inside the router when the process a message went to is gone: look for the next owner. */
class OwnerGone extends Error {
  constructor(readonly owner: string) {
    super(`process ${owner} is gone`);
  }
}

export function createRoutedHost({ local, ownership, bus, log, failoverMs }: RoutedHostDeps): ActorHost {
  const self = bus.self;
  /**
   * Owners learned from leases, by actor key, and until when they are believed: looked up
   * again after that, or once one refuses or is gone. A paused owner still listens on the bus
   * (it hears, and says nothing): only a fresh look at the lease finds the process that took
   * over, so an entry lives a fraction of the failover time.
   */
  const owners = new Map<string, { owner: string; until: number }>();
  const ownerTtlMs = Math.max(100, Math.floor(failoverMs / 8));
  const leaseCheckMs = Math.max(100, Math.floor(failoverMs / 4));
  const pending = new Map<number, Pending>();
  /** Forwarded posts whose refusal may still come back, by ref. */
  const posts = new Map<number, { at: number; refused: (err: Error) => void }>();
  const postSweep = setInterval(() => {
    const before = Date.now() - REFUSAL_WINDOW_MS;
    for (const [ref, post] of posts) {
      if (post.at >= before) break;
      posts.delete(ref);
    }
    // Owners looked up long ago are looked up again anyway: their entries go.
    const now = performance.now();
    for (const [key, known] of owners) if (known.until <= now) owners.delete(key);
  }, REFUSAL_WINDOW_MS);
  postSweep.unref();
  let nextRef = 1;

  /** The process to send `kind:id`'s messages to: this one when it runs the actor or nobody does. */
  async function ownerOf(kind: string, id: string): Promise<string> {
    if (local.has(kind, id)) return self;
    const key = actorKey(kind, id);
    const known = owners.get(key);
    if (known && known.until > performance.now()) return known.owner;
    const owner = (await ownership.ownerOf(key).catch((err) => Promise.reject(unavailable(err)))) ?? self;
    if (owner !== self) owners.set(key, { owner, until: performance.now() + ownerTtlMs });
    else owners.delete(key);
    return owner;
  }

  /**
   * The next owner after `gone` stopped listening: its lease outlives it by up to
   * ACTOR_LEASE_MS (a killed process cannot release it), so look until it changes.
   */
  async function nextOwner(kind: string, id: string, gone: string): Promise<string> {
    owners.delete(actorKey(kind, id));
    const deadline = Date.now() + failoverMs;
    for (let wait = 50; ; wait = Math.min(wait * 2, 500)) {
      const owner = await ownerOf(kind, id);
      if (owner !== gone) return owner;
      owners.delete(actorKey(kind, id));
      if (Date.now() >= deadline)
        throw new AppError('session_unavailable', 'the process that ran this session is gone; retry');
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  /** After `err` from `owner`: where to try next, or undefined when the message should fail with it. */
  async function retarget(kind: string, id: string, owner: string, err: unknown): Promise<string | undefined> {
    // A process that is gone, or draining (it hands its actors over as they passivate): wait
    // for the lease to move rather than fail what another process will take in a moment.
    if (err instanceof OwnerGone || (isAppError(err) && err.code === 'shutting_down' && owner !== self))
      return nextOwner(kind, id, owner);
    owners.delete(actorKey(kind, id));
    // A refusal: the actor may have moved (its lease taken by another process) meanwhile.
    const now = await ownerOf(kind, id).catch(() => owner);
    // Refused here because another process held the lease, which nobody holds any more (a
    // drain handed the actor over between the two looks): take it here after all.
    if (now === self && owner === self && isAppError(err) && err.code === 'session_unavailable') return self;
    return now === owner ? undefined : now;
  }

  /** Takes a request out of `pending` and stops its timers: the one who takes it settles it. */
  function take(ref: number): Pending | undefined {
    const waiting = pending.get(ref);
    if (!waiting) return undefined;
    pending.delete(ref);
    clearTimeout(waiting.timer);
    clearInterval(waiting.leaseCheck);
    return waiting;
  }

  /**
   * Sends `message` to `to` and waits for its answer (`h.ok`, `h.err`, `h.answer`). A paused
   * owner hears and says nothing until it wakes: while waiting, the lease is looked at every
   * quarter of the failover time, and once it no longer names `to` the message goes to the next
   * owner (what `to` does with it when it wakes is fenced: it lost the actor).
   */
  function request(to: string, message: HostMessage & { t: 'h.post' | 'h.ask'; ref: number }): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const { ref } = message;
      const timer = setTimeout(() => {
        if (!take(ref)) return;
        // No answer: when that process no longer listens at all (its death went unnoticed: a
        // pattern subscriber on the prefix makes every message look heard), look for the next owner.
        bus.present([to]).then(
          (present) =>
            reject(
              present.has(to)
                ? new AppError('session_unavailable', 'the process that runs this session did not answer; retry')
                : new OwnerGone(to),
            ),
          () => reject(new AppError('session_unavailable', 'the process that runs this session did not answer; retry')),
        );
      }, REMOTE_TIMEOUT_MS);
      const key = actorKey(message.kind, message.id);
      const leaseCheck = setInterval(() => {
        ownership.ownerOf(key).then(
          (owner) => {
            if (owner !== to) take(ref)?.reject(new OwnerGone(to));
          },
          () => {},
        );
      }, leaseCheckMs);
      pending.set(ref, { resolve, reject, timer, leaseCheck });
      bus.send(to, message, () => take(ref)?.reject(new OwnerGone(to)));
    });
  }

  /** Delivers a post to `owner` (this process or another); on a refusal or a gone owner, tries the next. */
  function postTo(
    owner: string,
    kind: string,
    id: string,
    event: EventObject,
    rejected: (err: Error) => void,
    attempt: number,
  ): void {
    const failed = (err: Error) => {
      if (attempt >= MAX_ATTEMPTS) return rejected(err instanceof OwnerGone ? unavailable(err) : err);
      log.debug({ kind, owner, err: err.message }, 'a message for an actor did not land; looking for its owner again');
      retarget(kind, id, owner, err).then(
        (next) => (next === undefined ? rejected(err) : postTo(next, kind, id, event, rejected, attempt + 1)),
        (e) => rejected(unavailable(e)),
      );
    };
    if (owner === self) {
      local.post(kind, id, event, failed);
      return;
    }
    const ref = nextRef++;
    // Only a refusal comes back (an op's answer reaches its socket from the owner itself):
    // remembered a while, without a timer each (a busy session forwards a batch every turn).
    posts.set(ref, { at: Date.now(), refused: failed });
    bus.send(owner, { t: 'h.post', kind, id, event, ref } satisfies HostMessage, () => {
      if (posts.delete(ref)) failed(new OwnerGone(owner));
    });
  }

  /** Runs `once` against the owner, and again against the next one after a refusal or a gone owner. */
  async function withOwner<T>(kind: string, id: string, once: (owner: string) => Promise<T>): Promise<T> {
    let owner = await ownerOf(kind, id);
    for (let attempt = 1; ; attempt++) {
      try {
        return await once(owner);
      } catch (err) {
        const next = attempt < MAX_ATTEMPTS ? await retarget(kind, id, owner, err) : undefined;
        if (next === undefined) throw err instanceof OwnerGone ? unavailable(err) : err;
        owner = next;
      }
    }
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
        const waiting = take(message.ref);
        if (!waiting) return;
        if (message.t === 'h.err') waiting.reject(appError(message));
        else if (message.t === 'h.answer' && message.error) waiting.resolve(appError(message.error));
        else waiting.resolve(message.t === 'h.answer' ? message.value : undefined);
        return;
      }
    }
  });

  const host: ActorHost = {
    register: (kind) => local.register(kind),

    send(kind, id, event) {
      return withOwner(kind, id, async (owner) => {
        if (owner === self) return local.send(kind, id, event);
        await request(owner, { t: 'h.post', kind, id, event, ref: nextRef++, ack: true });
      });
    },

    post(kind, id, event, rejected) {
      // Here, through `postTo` all the same: an activation under way may yet lose the lease to
      // another process (a drain handing the actor over), and what waited for it goes there.
      if (local.has(kind, id)) return postTo(self, kind, id, event, rejected, 1);
      ownerOf(kind, id).then(
        (owner) => postTo(owner, kind, id, event, rejected, 1),
        (err) => rejected(unavailable(err)),
      );
    },

    tell(kind, id, event) {
      if (local.has(kind, id)) return local.tell(kind, id, event);
      // Only an owner elsewhere can hold it; if that is gone, so is the actor it ran.
      ownerOf(kind, id).then(
        (owner) => {
          if (owner !== self) bus.send(owner, { t: 'h.tell', kind, id, event } satisfies HostMessage);
        },
        () => {},
      );
    },

    ask<R>(kind: string, id: string, build: (reply: (value: R) => void) => EventObject, timeoutMs?: number) {
      return withOwner(kind, id, async (owner) => {
        if (owner === self) return local.ask(kind, id, build, timeoutMs);
        const event = withReply(build(() => {}) as EventObject, REPLY);
        return (await request(owner, { t: 'h.ask', kind, id, event, ref: nextRef++ })) as R;
      });
    },

    peek: (kind, id): SnapshotFrom<AnyActorRef> | undefined => local.peek(kind, id),
    has: (kind, id) => local.has(kind, id),
    counts: () => local.counts(),

    async stopAll(timeoutMs) {
      await local.stopAll(timeoutMs);
      clearInterval(postSweep);
      posts.clear();
      for (const ref of [...pending.keys()])
        take(ref)?.reject(new AppError('shutting_down', 'the server is shutting down'));
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
