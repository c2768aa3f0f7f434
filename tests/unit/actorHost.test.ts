import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { type AnyActorRef, assign, createActor, fromPromise, setup } from 'xstate';
import { AppError, Codes } from '../../src/errors.ts';
import { createActorHost } from '../../src/host/createActorHost.ts';
import { localOwnership } from '../../src/host/localOwnership.ts';

/** Takes `work` events one at a time; each takes a few ms of "I/O" while tagged busy. */
const worker = setup({
  types: { context: {} as { done: number[] }, events: {} as { type: 'work'; n: number } | { type: 'passivate' } },
  actors: { io: fromPromise<void, { n: number }>(async () => new Promise((r) => setTimeout(r, 3))) },
}).createMachine({
  context: { done: [] },
  initial: 'idle',
  states: {
    idle: { on: { work: 'busy', passivate: 'stopped' } },
    busy: {
      tags: ['busy'],
      entry: assign({ done: ({ context, event }) => [...context.done, (event as { n: number }).n] }),
      invoke: { src: 'io', input: ({ event }) => ({ n: (event as { n: number }).n }), onDone: 'idle' },
    },
    stopped: { type: 'final' },
  },
  output: ({ context }) => context,
});

function host(idleMs = 60_000, maxActivations = 4, activationMs = 0) {
  const actors = new Map<string, ReturnType<typeof createActor<typeof worker>>>();
  let activating = 0;
  const activationPeak = { value: 0 };
  const h = createActorHost({
    bumpEpoch: async () => 1,
    ownership: localOwnership,
    idleMs,
    maxActivations,
    log: pino({ level: 'silent' }),
  });
  const stopped: unknown[] = [];
  h.register({
    name: 'worker',
    passivateEvent: { type: 'passivate' },
    isIdle: (s) => s.value === 'idle',
    async activate(id) {
      activating++;
      activationPeak.value = Math.max(activationPeak.value, activating);
      try {
        if (activationMs) await new Promise((r) => setTimeout(r, activationMs));
        if (id === 'missing') return null;
        const actor = createActor(worker);
        actors.set(id, actor);
        return actor;
      } finally {
        activating--;
      }
    },
    onStopped: (_id, output) => stopped.push(output),
  });
  return { h, actors, stopped, activationPeak };
}

describe('the actor host', () => {
  it('delivers every message, in order, never while the actor is busy', async () => {
    const { h, actors } = host();
    await Promise.all(Array.from({ length: 20 }, (_, n) => h.send('worker', 'a', { type: 'work', n })));
    await expect.poll(() => actors.get('a')?.getSnapshot().context.done.length).toBe(20);
    expect(actors.get('a')?.getSnapshot().context.done).toEqual(Array.from({ length: 20 }, (_, n) => n));
  });

  it('activates at most maxActivations actors at once; the others wait their turn, and all are served', async () => {
    const { h, actors, activationPeak } = host(60_000, 3, 5);
    await Promise.all(Array.from({ length: 30 }, (_, n) => h.send('worker', `many-${n}`, { type: 'work', n })));
    expect(activationPeak.value).toBe(3);
    await expect
      .poll(() => [...actors.values()].filter((a) => a.getSnapshot().context.done.length === 1).length)
      .toBe(30);
  });

  it('refuses the messages of actors still waiting for their activation when it stops', async () => {
    const { h, actors } = host(60_000, 1, 30);
    const first = h.send('worker', 'first', { type: 'work', n: 1 }).catch(() => undefined);
    const waiting = h.send('worker', 'waiting', { type: 'work', n: 2 }).catch((err: unknown) => err);
    await h.stopAll(2000);
    await first;
    expect(await waiting).toMatchObject({ code: 'shutting_down' });
    expect(actors.has('waiting')).toBe(false);
    expect(h.counts().worker).toBe(0);
  });

  it('rejects messages for an actor that does not exist', async () => {
    const { h } = host();
    await expect(h.send('worker', 'missing', { type: 'work', n: 1 })).rejects.toMatchObject({
      code: 'session_not_found',
    });
  });

  it('passivates an idle actor and activates it again for the next message', async () => {
    const { h, stopped } = host(60);
    await h.send('worker', 'b', { type: 'work', n: 1 });
    await expect.poll(() => h.counts().worker, { timeout: 2000 }).toBe(0);
    expect(stopped).toHaveLength(1);
    await h.send('worker', 'b', { type: 'work', n: 2 });
    expect(h.has('worker', 'b')).toBe(true);
  });

  it('passivates everything on stopAll and refuses new messages', async () => {
    const { h } = host();
    await h.send('worker', 'c', { type: 'work', n: 1 });
    await h.stopAll(2000);
    expect(h.counts().worker).toBe(0);
    await expect(h.send('worker', 'c', { type: 'work', n: 2 })).rejects.toMatchObject({ code: 'shutting_down' });
  });
});

describe('ownership', () => {
  /** A host whose kind fails to rehydrate `broken`, finds no `missing`, and records ownership calls. */
  function recordingHost() {
    const calls: string[] = [];
    const h = createActorHost({
      bumpEpoch: async () => 1,
      ownership: {
        acquire: async (key) => {
          calls.push(`acquire ${key}`);
          return key !== 'worker:elsewhere';
        },
        release: async (key) => {
          calls.push(`release ${key}`);
        },
        ownerOf: async () => null,
        onLost: () => {},
        close: async () => {},
      },
      idleMs: 60_000,
      maxActivations: 4,
      log: pino({ level: 'silent' }),
    });
    h.register({
      name: 'worker',
      passivateEvent: { type: 'passivate' },
      isIdle: () => true,
      async activate(id) {
        if (id === 'broken') throw new Error('the store is unreadable');
        if (id === 'missing') return null;
        return createActor(worker);
      },
      onStopped: () => {},
    });
    return { h, calls };
  }

  it('gives up what it acquired when an activation fails or finds nothing, and never what it did not get', async () => {
    const { h, calls } = recordingHost();
    await expect(h.send('worker', 'broken', { type: 'work', n: 1 })).rejects.toThrow(/unreadable/);
    await expect(h.send('worker', 'missing', { type: 'work', n: 1 })).rejects.toThrow(/no worker missing/);
    await expect(h.send('worker', 'elsewhere', { type: 'work', n: 1 })).rejects.toThrow(/owned by another node/);
    await expect
      .poll(() => calls)
      .toEqual([
        'acquire worker:broken',
        'release worker:broken',
        'acquire worker:missing',
        'release worker:missing',
        'acquire worker:elsewhere',
      ]);
  });
});

describe('a lost lease', () => {
  /** Takes `hold` events and stays busy on each until it is stopped: messages queue behind it. */
  const holder = setup({
    types: { events: {} as { type: 'hold' } | { type: 'passivate' } },
    actors: { io: fromPromise<void>(() => new Promise<void>(() => {})) },
  }).createMachine({
    initial: 'idle',
    states: {
      idle: { on: { hold: 'busy', passivate: 'saved' } },
      busy: { tags: ['busy'], invoke: { src: 'io' } },
      saved: { type: 'final' },
    },
    output: { reason: 'passivated' },
  });

  /** An ownership that grants everything, records releases, and loses a lease when told. */
  function losingHost(activate: (id: string) => Promise<AnyActorRef | null> = async () => createActor(holder)) {
    const lostListeners: ((key: string) => void)[] = [];
    const released: string[] = [];
    let acquired = 0;
    const stopped: { id: string; output: unknown }[] = [];
    const h = createActorHost({
      bumpEpoch: async () => 1,
      ownership: {
        acquire: async () => {
          acquired++;
          return true;
        },
        release: async (key) => {
          released.push(key);
        },
        ownerOf: async () => null,
        onLost: (listener) => lostListeners.push(listener),
        close: async () => {},
      },
      idleMs: 60_000,
      maxActivations: 4,
      log: pino({ level: 'silent' }),
    });
    const actors: AnyActorRef[] = [];
    h.register({
      name: 'holder',
      passivateEvent: { type: 'passivate' },
      isIdle: () => true,
      async activate(id) {
        const actor = await activate(id);
        if (actor) actors.push(actor);
        return actor;
      },
      onStopped: (id, output) => stopped.push({ id, output }),
    });
    const lose = (key: string) => {
      for (const listener of lostListeners) listener(key);
    };
    return { h, lose, released, stopped, actors, acquired: () => acquired };
  }

  it('stops the actor at once without passivating it, refuses what waits for it, and releases nothing', async () => {
    const { h, lose, released, stopped, actors } = losingHost();
    await h.send('holder', 'a', { type: 'hold' });
    const waiting = [1, 2, 3].map(() => h.send('holder', 'a', { type: 'hold' }).catch((err: unknown) => err));
    lose('holder:a');
    for (const err of await Promise.all(waiting)) {
      expect(err).toBeInstanceOf(AppError);
      expect(err).toMatchObject({ code: Codes.session_unavailable });
    }
    // Stopped mid-work: it never saw the passivate event, so it never reached its final state.
    expect(actors[0].getSnapshot().status).toBe('stopped');
    expect(stopped).toEqual([{ id: 'a', output: { reason: 'fenced', message: 'lease lost' } }]);
    expect(released).toEqual([]);
    expect(h.has('holder', 'a')).toBe(false);
    expect(h.counts().holder).toBe(0);
  });

  it('activates the actor again for the next message', async () => {
    const { h, lose, actors, acquired } = losingHost();
    await h.send('holder', 'b', { type: 'hold' });
    lose('holder:b');
    await h.send('holder', 'b', { type: 'hold' });
    expect(acquired()).toBe(2);
    expect(actors).toHaveLength(2);
    expect(actors[1].getSnapshot().status).toBe('active');
  });

  it('never starts an actor whose lease was lost while it was being rehydrated', async () => {
    let rehydrated!: () => void;
    const actor = createActor(holder);
    const starts = vi.spyOn(actor, 'start');
    const { h, lose, released, stopped, actors } = losingHost(async () => {
      await new Promise<void>((resolve) => {
        rehydrated = resolve;
      });
      return actor;
    });
    const message = h.send('holder', 'c', { type: 'hold' }).catch((err: unknown) => err);
    await vi.waitFor(() => expect(rehydrated).toBeTypeOf('function'));
    lose('holder:c');
    expect(await message).toMatchObject({ code: Codes.session_unavailable });
    rehydrated();
    await vi.waitFor(() => expect(actors).toHaveLength(1));
    // The host's activation goes on in the microtasks after the kind's answer: let them all run.
    await new Promise((r) => setImmediate(r));
    expect(starts).toHaveBeenCalledTimes(0);
    expect(h.has('holder', 'c')).toBe(false);
    expect(stopped).toEqual([]);
    expect(released).toEqual([]);
  });

  it('ignores a lost lease of an actor that is not running here', async () => {
    const { h, lose, stopped } = losingHost();
    await h.send('holder', 'd', { type: 'hold' });
    lose('holder:elsewhere');
    expect(h.has('holder', 'd')).toBe(true);
    expect(stopped).toEqual([]);
  });
});
