/**
 * A conversation with Sage as an XState actor: one message at a time, from screening to the
 * commit of everything it changed (messages, memories, relationship, the reply in the outbox,
 * the inbox row). While a message is being worked on the actor is tagged `busy`, so the
 * host's mailbox holds the next ones: a photo is always looked at before the message that
 * follows it is answered. All I/O is provided by the host.
 */
import { type ActorRefFrom, type AnyActorRef, assign, setup } from 'xstate';
import { parseConversationKey } from './conversationKey.ts';
import { extractMemories, isForgetCommand, SAFETY_REPLIES, seenPhoto, shouldReply } from './conversationRules.ts';
import type {
  ConversationCommit,
  ConversationContext,
  ConversationEvent,
  ConversationInput,
  ConversationOutput,
  Inbound,
  InboundAttachment,
  InboundItem,
  InboundMessage,
  MessageRow,
  Moderation,
  Recall,
  ReplyKind,
  SendFrame,
  Work,
} from './conversationTypes.ts';

const KEEP_PROCESSED = 200;
const KEEP_OUR_IDS = 50;
/** Throttled senders owed an answer at once (a flood of senders is answered in part). */
const MAX_OWED = 20;
/**
 * A batch (an event and those that waited behind it) is committed once its work has taken this
 * long (RELAY_BATCH_COMMIT_MS), and the rest follow in a batch of their own: with a model that
 * answers in seconds, each message is committed, and its reply sent, as soon as it is answered;
 * with quick answers, a batch of messages costs one commit.
 */
export const BATCH_COMMIT_MS = 20;
export const inboundId = (eventId: string) => `in_${eventId}`;
const outboundId = (m: InboundMessage, catchUp: boolean) => `out_${m.eventId}${catchUp ? '_burst' : ''}`;

/** The message without attachment bytes (what may be kept in a persisted snapshot). */
function withoutData(m: InboundMessage): InboundMessage {
  return { ...m, attachments: m.attachments.map((a) => ({ id: a.id, mime: a.mime })) };
}

function newWork(e: InboundItem): Work {
  return {
    seq: e.seq,
    message: e.message,
    throttled: e.throttled,
    catchUp: false,
    moderation: null,
    described: {},
    recall: null,
    reply: null,
    replyKind: 'none',
    owe: false,
  };
}

function catchUpWork(owed: InboundMessage): Work {
  return { ...newWork({ seq: 0, message: owed, throttled: false }), seq: null, catchUp: true };
}

/** The events of an `inbound` not processed yet (a sweep may deliver again what was processed), in order. */
export function freshItems(ctx: ConversationContext, event: Inbound): InboundItem[] {
  const fresh: InboundItem[] = ctx.processed.includes(event.seq) ? [] : [event];
  for (const item of event.more ?? []) if (!ctx.processed.includes(item.seq)) fresh.push(item);
  return fresh;
}

/** What the message asks of Sage, decided once screening and photos are done. */
function route(ctx: ConversationContext, w: Work): 'safety' | 'forget' | 'throttled' | 'silent' | 'answer' {
  const addressed = shouldReply({
    kind: ctx.kind,
    persona: ctx.persona,
    text: w.message.text,
    replyTo: w.message.replyTo,
    ourMessageIds: ctx.ourMessageIds,
  });
  // In a group Sage speaks only when spoken to, about safety and forgetting too: "forget it"
  // between friends must not delete a memory.
  if (!addressed) return 'silent';
  if (w.moderation?.flagged) return 'safety';
  if (isForgetCommand(w.message.text)) return 'forget';
  return w.throttled ? 'throttled' : 'answer';
}

/** `list` with `item` appended, its first entries dropped past `keep`: one copy, not two. */
function appendKept<T>(list: readonly T[], item: T, keep: number): T[] {
  const kept = list.slice(list.length >= keep ? list.length - keep + 1 : 0);
  kept.push(item);
  return kept;
}

/** Builds the commit of the work in progress; pure, so it is tested without a database. */
export function buildCommit(ctx: ConversationContext): ConversationCommit {
  const w = ctx.work as Work;
  const m = w.message;
  const chatGuid = ctx.chatGuid ?? m.chatGuid;
  const inbound: MessageRow | null = w.catchUp
    ? null
    : {
        id: inboundId(m.eventId),
        sender: m.sender,
        direction: 'in',
        text: m.text,
        attachments: m.attachments.map((a) => ({
          id: a.id,
          mime: a.mime,
          ...(w.described[a.id] ? { description: w.described[a.id] } : {}),
        })),
        at: m.receivedAt,
      };
  const reply = w.reply;
  const id = outboundId(m, w.catchUp);
  const outbound: MessageRow | null =
    reply === null
      ? null
      : // Just after the message it answers (the last of a burst, for a catch-up reply).
        { id, sender: ctx.persona, direction: 'out', text: reply, attachments: [], at: m.receivedAt + 1 };
  const send: SendFrame | null =
    reply === null
      ? null
      : {
          type: 'send',
          id,
          replyTo: m.eventId,
          chat: { guid: chatGuid, group: ctx.kind === 'group' },
          ...(ctx.kind === 'direct' ? { to: m.sender } : {}),
          text: reply,
        };
  const memories =
    inbound === null || w.moderation?.flagged || w.replyKind === 'safety' || w.replyKind === 'forget'
      ? []
      : [
          ...extractMemories(m.sender, m.text),
          ...Object.values(w.described)
            .filter(seenPhoto)
            .map((d) => `${m.sender} shared a photo: ${d}`),
        ].map((content) => ({ content, sourceMessageId: inbound.id }));
  const seq = w.seq;
  // A throttled burst owes one answer (to its last message); any answer to that sender pays it.
  const others = ctx.owed.filter((o) => o.sender !== m.sender);
  // Any answer to a sender pays what was owed to them.
  const owed = w.owe ? [...others, withoutData(m)].slice(-MAX_OWED) : reply !== null ? others : ctx.owed;
  const next: ConversationContext = {
    ...ctx,
    chatGuid,
    version: ctx.version + 1,
    processed: seq === null ? ctx.processed : appendKept(ctx.processed, seq, KEEP_PROCESSED),
    // Only a group reads them (a reply to one of Sage's messages is answered); a direct
    // conversation answers everything, and its snapshot, stored with every commit, stays small.
    ourMessageIds:
      reply === null || ctx.kind === 'direct' ? ctx.ourMessageIds : appendKept(ctx.ourMessageIds, id, KEEP_OUR_IDS),
    owed,
    work: null,
    stop: null,
  };
  return {
    key: ctx.key,
    kind: ctx.kind,
    persona: ctx.persona,
    chatGuid,
    version: next.version,
    inbound,
    outbound,
    send,
    memories,
    forget: w.replyKind === 'forget',
    relationship: {
      userId: m.sender,
      persona: ctx.persona,
      delta: {
        messages: inbound ? 1 : 0,
        replies: reply === null ? 0 : 1,
        photos: Object.keys(w.described).length,
      },
    },
    inboxSeq: seq,
    next,
  };
}

const notProvided = (name: string) => () => {
  throw new Error(`${name} must be provided by the actor host`);
};

/**
 * The I/O one message needs, provided by the host. Each step but `commit` may fail: the
 * message is still answered (with the fallback where the model's part failed) and committed.
 */
export interface ConversationSteps {
  /**
   * Content moderation of a text (the host falls back to the local classifier itself), for the
   * message of relay event `eventId` (its text, or the reply to it).
   */
  moderate(text: string, signal: AbortSignal, eventId: string): Promise<Moderation>;
  /** Describes the message's attachments: photos are looked at, other files only named. */
  describeAttachments(
    input: { eventId: string; attachments: InboundAttachment[] },
    signal: AbortSignal,
  ): Promise<Record<string, string>>;
  /**
   * This conversation's recent turns, its memories relevant to `text`, photos in view, the
   * stage. `unwritten`: the commits of the batch worked through before this message, not yet
   * written, whose messages and memories the recall includes.
   */
  recall(input: RecallInput, signal: AbortSignal, unwritten: readonly ConversationCommit[]): Promise<Recall>;
  /**
   * The texts of a batch's messages, said before the first is worked on: what `recall` will
   * read for each of them may be read now, together, rather than one read after the other.
   */
  lookAhead(texts: string[]): void;
  /** The model's reply; `context.work` holds the message, its screening, photos and recall. */
  think(context: ConversationContext, signal: AbortSignal): Promise<string>;
  /**
   * Commits everything a batch of messages changed, in one write; resolves once durable, with
   * whether it was applied (false: the database found its inbox rows already processed, so
   * nothing was written).
   */
  commit(commits: readonly ConversationCommit[]): Promise<boolean>;
}

/** A message worked through: its commit, durable, and what kind of reply it carried. */
export interface Processed {
  commit: ConversationCommit;
  replyKind: ReplyKind;
  applied: boolean;
  /** The relay event worked through (for a catch-up, the one its answer is owed to): its lines' correlation id. */
  eventId: string;
}

/** A batch worked through: its messages, committed in order, and those left for the next batch. */
export interface Worked {
  processed: Processed[];
  rest: InboundItem[];
}

/** What a step resolves to, or `fallback` when it fails. */
const orElse = async <T>(step: () => Promise<T>, fallback: T): Promise<T> => {
  try {
    return await step();
  } catch {
    return fallback;
  }
};

/** Recalls, asks the model and screens its reply: the part of a message the model answers. */
async function answer(
  ctx: ConversationContext,
  w: Work,
  steps: ConversationSteps,
  signal: AbortSignal,
  unwritten: readonly ConversationCommit[],
): Promise<Work> {
  let recall: Recall;
  let reply: string;
  try {
    recall = await steps.recall(recallInput(ctx, w), signal, unwritten);
    reply = await steps.think({ ...ctx, work: { ...w, recall } }, signal);
  } catch {
    return { ...w, reply: SAFETY_REPLIES.fallback, replyKind: 'fallback' };
  }
  const screened = await orElse(() => steps.moderate(reply, signal, w.message.eventId), null);
  // What was recalled is not kept: nothing after the model reads it, and while the commit is
  // awaited, hundreds of messages' recalls would outlive young-generation collections.
  return screened?.flagged
    ? { ...w, reply: SAFETY_REPLIES.replacedOutput, replyKind: 'safety' }
    : { ...w, reply, replyKind: 'model' };
}

/**
 * One message through screening, the attachments (when there are any) and what it asks for
 * (`route`), to the work the commit is built from. A catch-up (the one answer owed to a
 * throttled burst) is only answered.
 */
async function workThrough(
  ctx: ConversationContext,
  steps: ConversationSteps,
  signal: AbortSignal,
  unwritten: readonly ConversationCommit[],
): Promise<Work> {
  let w = ctx.work as Work;
  if (w.catchUp) return answer(ctx, w, steps, signal, unwritten);
  w = { ...w, moderation: await orElse(() => steps.moderate(w.message.text, signal, w.message.eventId), null) };
  if (w.message.attachments.length > 0) {
    const input = { eventId: w.message.eventId, attachments: w.message.attachments };
    w = { ...w, described: await orElse(() => steps.describeAttachments(input, signal), {}) };
  }
  switch (route(ctx, w)) {
    case 'safety':
      return {
        ...w,
        reply: w.moderation?.selfHarm ? SAFETY_REPLIES.crisis : SAFETY_REPLIES.refused,
        replyKind: 'safety',
      };
    case 'forget': {
      const recall = await orElse(() => steps.recall(recallInput(ctx, w), signal, unwritten), null);
      return recall === null
        ? { ...w, reply: SAFETY_REPLIES.fallback, replyKind: 'fallback' }
        : recall.memories.length
          ? { ...w, reply: SAFETY_REPLIES.forgotten, replyKind: 'forget' }
          : { ...w, reply: SAFETY_REPLIES.nothingToForget, replyKind: 'none' };
    }
    case 'throttled':
      return { ...w, owe: true };
    case 'silent':
      return w;
    case 'answer':
      return answer(ctx, w, steps, signal, unwritten);
  }
}

/**
 * A batch of messages (`ctx.work`, then `queued`) worked through one after the other, each
 * from the context the one before left, and committed together: one write, durable before
 * anything of it is reported. The batch ends early, leaving the rest (`Worked.rest`) for a
 * batch of its own, once its work has taken BATCH_COMMIT_MS, and after a forget (which the
 * store writes apart). Plain sequential code started by one action (`workWith`): a batch
 * costs the machine two transitions, not one per step or per message.
 */
export async function processWork(
  ctx: ConversationContext,
  steps: ConversationSteps,
  signal: AbortSignal,
  queued: readonly InboundItem[] = [],
  batchCommitMs = BATCH_COMMIT_MS,
): Promise<Worked> {
  const started = performance.now();
  if (queued.length > 0) steps.lookAhead([(ctx.work as Work).message.text, ...queued.map((q) => q.message.text)]);
  const commits: ConversationCommit[] = [];
  const kinds: ReplyKind[] = [];
  const events: string[] = [];
  let c = ctx;
  let taken = 0;
  for (;;) {
    const w = await workThrough(c, steps, signal, commits);
    // Stopped meanwhile (fenced, or the process shutting down): nothing of it is written.
    signal.throwIfAborted();
    const commit = buildCommit({ ...c, work: w });
    commits.push(commit);
    kinds.push(w.replyKind);
    events.push(w.message.eventId);
    if (commit.forget || taken === queued.length || performance.now() - started >= batchCommitMs) break;
    c = { ...commit.next, work: newWork(queued[taken++]) };
  }
  const applied = await steps.commit(commits);
  return {
    processed: commits.map((commit, i) => ({ commit, replyKind: kinds[i], applied, eventId: events[i] })),
    rest: queued.slice(taken),
  };
}

const lastCommit = (worked: Worked): ConversationCommit => worked.processed[worked.processed.length - 1].commit;

/** What the work on a batch reports back to its conversation (events of its own, never from outside). */
export type WorkEvent = { type: 'work.done'; output: Worked } | { type: 'work.failed'; error: unknown };

/** What follows the message `working` starts with in its batch (`ctx.work`): the rest of the batch. */
function queuedAfter(ctx: ConversationContext, event: { type: string }): InboundItem[] {
  if (event.type === 'inbound') return freshItems(ctx, event as Inbound).slice(1);
  if (event.type === 'work.done') return (event as Extract<WorkEvent, { type: 'work.done' }>).output.rest.slice(1);
  return [];
}

/**
 * The `work` action the host provides: `processWork` over the steps of the conversation actor
 * it works for, started on entering `working`, its outcome sent back as `work.done` or
 * `work.failed`. The work is aborted when the actor stops (fenced, or the process shutting
 * down), so nothing of it is written after. One machine serves every conversation (a machine
 * per actor would build its state nodes and transition tables again for each), so the steps
 * are looked up per actor. An action rather than an invoked promise actor: an invoked actor
 * is a child actor created, registered and stopped for every message: 11–29 µs of the
 * machine's 59–91 µs per message (bench/README.md).
 */
export const workWith =
  (stepsOf: (conversation: AnyActorRef) => ConversationSteps, batchCommitMs = BATCH_COMMIT_MS) =>
  ({ context, event, self }: { context: ConversationContext; event: { type: string }; self: AnyActorRef }) => {
    const stop = new AbortController();
    const watch = self.subscribe({ complete: () => stop.abort(), error: () => stop.abort() });
    const report = (event: WorkEvent) => {
      watch.unsubscribe();
      if (self.getSnapshot().status === 'active') self.send(event);
    };
    Promise.resolve()
      .then(() => processWork(context, stepsOf(self), stop.signal, queuedAfter(context, event), batchCommitMs))
      .then(
        (output) => report({ type: 'work.done', output }),
        (error) => report({ type: 'work.failed', error }),
      );
  };

const base = setup({
  types: {
    context: {} as ConversationContext,
    events: {} as ConversationEvent | WorkEvent,
    input: {} as ConversationInput,
    output: {} as ConversationOutput,
    tags: {} as 'busy',
  },
  actions: {
    /** Works a batch of messages through to its durable commit, then sends `work.done` or `work.failed` (`workWith(stepsOf)`). */
    work: notProvided('work'),
    /** After the commit of a batch, for each of its messages in order: hand the reply to the outbox, count the outcome. */
    committed: (_, _params: Processed[]) => {},
    /** Inbox rows redelivered after they were processed here: nothing to do, but they are no longer in flight. */
    skipped: (_, _params: number[]) => {},
  },
  guards: {
    /** Every event of the `inbound` was processed here already (delivered again by a sweep). */
    alreadyProcessed: ({ context, event }) => event.type === 'inbound' && freshItems(context, event).length === 0,
    owesReply: ({ context }) => context.owed.length > 0,
    /** The batch ended before all of its messages: the rest is worked through next. */
    leavesRest: ({ event }) => event.type === 'work.done' && event.output.rest.length > 0,
    /** The committed work leaves a throttled sender owed an answer. */
    leavesAnswerOwed: ({ event }) => event.type === 'work.done' && lastCommit(event.output).next.owed.length > 0,
  },
  delays: {
    /** How long a throttled sender must be quiet before the one answer to their burst. */
    burstQuiet: 3000,
  },
});

/** The inbox rows of an `inbound` that were processed here already. */
function skippedSeqs({ context, event }: { context: ConversationContext; event: { type: string } }): number[] {
  const seqs: number[] = [];
  if (event.type !== 'inbound') return seqs;
  const e = event as Inbound;
  if (context.processed.includes(e.seq)) seqs.push(e.seq);
  for (const item of e.more ?? []) if (context.processed.includes(item.seq)) seqs.push(item.seq);
  return seqs;
}

/** What every resting state (`idle`, `owing`, `owed`) answers: an inbound event, and passivation. */
const resting = base.createStateConfig({
  on: {
    inbound: [
      { guard: 'alreadyProcessed', actions: { type: 'skipped', params: skippedSeqs } },
      {
        target: 'working',
        actions: [
          { type: 'skipped', params: skippedSeqs },
          base.assign({ work: ({ context, event }) => newWork(freshItems(context, event as Inbound)[0]) }),
        ],
      },
    ],
    passivate: { target: 'stopped', actions: base.assign({ stop: { reason: 'passivated' } }) },
  },
});

export const conversationMachine = base.createMachine({
  id: 'conversation',
  context: ({ input }) => ({
    key: input.key,
    ...parseConversationKey(input.key),
    version: 0,
    processed: [],
    ourMessageIds: [],
    owed: [],
    work: null,
    stop: null,
  }),
  initial: 'idle',
  output: ({ context }) => context.stop ?? { reason: 'failed', message: 'stopped without a reason' },
  states: {
    idle: {
      ...resting,
      // A snapshot stored before `owing` existed rests here with an answer owed (see `owed`).
      on: { ...resting.on, resume: { guard: 'owesReply', target: 'owing' } },
    },
    /**
     * Resting while a throttled sender is owed one answer, given after `burstQuiet` of quiet. A
     * state of its own, so the timer is set only while an answer is owed, not scheduled and
     * cancelled around every message (5–15 µs of a message's CPU).
     */
    owing: {
      ...resting,
      after: {
        burstQuiet: {
          guard: 'owesReply',
          target: 'working',
          actions: assign({ work: ({ context }) => catchUpWork(context.owed[0]) }),
        },
      },
    },
    /**
     * Owing an answer with no timer set: what a stored snapshot rests in while an answer is owed
     * (`persistedResting`), since XState does not set a restored state's timers. `resume` (the
     * relay's sweep sends it to conversations owing an answer for longer than the quiet time)
     * enters `owing`, which sets it; a live conversation, in `owing` with its timer, ignores it.
     */
    owed: {
      ...resting,
      on: { ...resting.on, resume: { guard: 'owesReply', target: 'owing' } },
    },
    working: {
      tags: ['busy'],
      entry: 'work',
      on: {
        // Committed: `committed` for each message, then the last commit's context is the actor's;
        // it works through the rest of the batch, if any, else rests `owing` while a throttled
        // sender waits for an answer, or `idle`.
        'work.done': [
          {
            guard: 'leavesRest',
            target: 'working',
            reenter: true,
            actions: [
              { type: 'committed', params: ({ event }) => event.output.processed },
              assign(({ event }) => ({ ...lastCommit(event.output).next, work: newWork(event.output.rest[0]) })),
            ],
          },
          {
            guard: 'leavesAnswerOwed',
            target: 'owing',
            actions: [
              { type: 'committed', params: ({ event }) => event.output.processed },
              assign(({ event }) => lastCommit(event.output).next),
            ],
          },
          {
            target: 'idle',
            actions: [
              { type: 'committed', params: ({ event }) => event.output.processed },
              assign(({ event }) => lastCommit(event.output).next),
            ],
          },
        ],
        'work.failed': {
          target: 'stopped',
          actions: assign({
            stop: ({ event }) => {
              const error = event.error;
              return {
                reason: error instanceof Error && error.name === 'FencedError' ? 'fenced' : 'failed',
                message: String(error ?? ''),
              };
            },
          }),
        },
      },
    },
    stopped: { type: 'final' },
  },
});

export interface RecallInput {
  key: string;
  text: string;
  sender: string;
  persona: string;
  /** The message being answered, which the history must not repeat. */
  excludeMessageId: string;
}

function recallInput(context: ConversationContext, w: Work): RecallInput {
  return {
    key: context.key,
    text: w.message.text,
    sender: w.message.sender,
    persona: context.persona,
    excludeMessageId: inboundId(w.message.eventId),
  };
}

/**
 * The persisted snapshot of the machine resting with `context` (in `owed` while an answer is
 * owed, else in `idle`): what `getPersistedSnapshot(resolveState({ value, context }))` gives (a
 * unit test holds the two equal), built directly, since every commit stores one and XState's way
 * resolves the whole state and deep-copies the context to get it. A restored conversation has
 * no timer, so it rests in `owed`, not `owing`, until `resume` or its next message.
 */
export function persistedResting(context: ConversationContext) {
  return {
    status: 'active' as const,
    output: undefined,
    error: undefined,
    value: context.owed.length > 0 ? ('owed' as const) : ('idle' as const),
    historyValue: {},
    context,
    children: {},
  };
}

/**
 * Brings a stored snapshot up to the current shape: snapshots written before `owed` became a
 * list held one message or null; those written before `owed` was a state rest in `owing`, which
 * a restored actor never is (it has no timer), so they rest in `owed` and `resume` answers; a
 * direct conversation's once kept Sage's message ids too, which only a group reads.
 */
export function upgradeSnapshot<T>(snapshot: T): T {
  const s = snapshot as { value?: unknown; context?: { owed?: unknown; kind?: unknown; ourMessageIds?: unknown } };
  const context = s.context;
  if (context && !Array.isArray(context.owed)) context.owed = context.owed ? [context.owed] : [];
  if (context?.kind === 'direct' && Array.isArray(context.ourMessageIds) && context.ourMessageIds.length > 0)
    context.ourMessageIds = [];
  if (s.value === 'owing') s.value = 'owed';
  return snapshot;
}

export type ConversationActor = ActorRefFrom<typeof conversationMachine>;
