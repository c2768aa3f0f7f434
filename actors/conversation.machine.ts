/**
 * A conversation with Sage as an XState actor: one message at a time, from screening to the
 * commit of everything it changed (messages, memories, relationship, the reply in the outbox,
 * the inbox row). While a message is being worked on the actor is tagged `busy`, so the
 * host's mailbox holds the next ones: a photo is always looked at before the message that
 * follows it is answered. All I/O is provided by the host.
 */
import { type ActorRefFrom, assign, fromPromise, setup } from 'xstate';
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
export const inboundId = (eventId: string) => `in_${eventId}`;
const outboundId = (m: InboundMessage, catchUp: boolean) => `out_${m.eventId}${catchUp ? '_burst' : ''}`;

/** The message without attachment bytes (what may be kept in a persisted snapshot). */
function withoutData(m: InboundMessage): InboundMessage {
  return { ...m, attachments: m.attachments.map((a) => ({ id: a.id, mime: a.mime })) };
}

function newWork(e: Inbound): Work {
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
  return { ...newWork({ type: 'inbound', seq: 0, message: owed, throttled: false }), seq: null, catchUp: true };
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
    processed: seq === null ? ctx.processed : [...ctx.processed, seq].slice(-KEEP_PROCESSED),
    ourMessageIds: reply === null ? ctx.ourMessageIds : [...ctx.ourMessageIds, id].slice(-KEEP_OUR_IDS),
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

const base = setup({
  types: {
    context: {} as ConversationContext,
    events: {} as ConversationEvent,
    input: {} as ConversationInput,
    output: {} as ConversationOutput,
    tags: {} as 'busy',
  },
  actors: {
    /** Content moderation of a text (the host falls back to the local classifier itself). */
    moderate: fromPromise<Moderation, { text: string }>(notProvided('moderate')),
    /** Describes the message's attachments: photos are looked at, other files only named. */
    describeAttachments: fromPromise<Record<string, string>, { eventId: string; attachments: InboundAttachment[] }>(
      notProvided('describeAttachments'),
    ),
    /** This conversation's recent turns, its memories relevant to `text`, photos in view, the stage. */
    recall: fromPromise<Recall, RecallInput>(notProvided('recall')),
    /** The model's reply. */
    think: fromPromise<string, { context: ConversationContext }>(notProvided('think')),
    /** Commits everything the message changed; resolves once durable. */
    commit: fromPromise<void, ConversationCommit>(notProvided('commit')),
  },
  actions: {
    /** After the commit: hand the reply to the outbox, count the outcome. */
    committed: (_, _params: { commit: ConversationCommit; replyKind: ReplyKind }) => {},
    /** An inbox row redelivered after it was processed here: nothing to do, but it is no longer in flight. */
    skipped: (_, _params: { seq: number }) => {},
  },
  guards: {
    alreadyProcessed: ({ context, event }) => event.type === 'inbound' && context.processed.includes(event.seq),
    hasAttachments: ({ context }) => (context.work?.message.attachments.length ?? 0) > 0,
    owesReply: ({ context }) => context.owed.length > 0,
  },
  delays: {
    /** How long a throttled sender must be quiet before the one answer to their burst. */
    burstQuiet: 3000,
  },
});

type WorkPatch = (work: Work, context: ConversationContext, event: { output?: unknown }) => Partial<Work>;

/** Updates the work in progress (the event is the done event of an invoked service when there is one). */
const patchWork = (f: WorkPatch) =>
  base.assign({
    work: ({ context, event }: { context: ConversationContext; event: unknown }) => ({
      ...(context.work as Work),
      ...f(context.work as Work, context, event as { output?: unknown }),
    }),
  });

const stopWith = (reason: ConversationOutput['reason']) =>
  base.assign({
    stop: ({ event }: { event: unknown }) => {
      const error = (event as { error?: unknown }).error;
      return {
        reason: error instanceof Error && error.name === 'FencedError' ? 'fenced' : reason,
        message: String(error ?? ''),
      };
    },
  });

const routeIs =
  (r: ReturnType<typeof route>) =>
  ({ context }: { context: ConversationContext }) =>
    route(context, context.work as Work) === r;

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
      on: {
        inbound: [
          {
            guard: 'alreadyProcessed',
            actions: { type: 'skipped', params: ({ event }) => ({ seq: (event as Inbound).seq }) },
          },
          { target: 'screening', actions: assign({ work: ({ event }) => newWork(event as Inbound) }) },
        ],
        passivate: { target: 'stopped', actions: assign({ stop: { reason: 'passivated' } }) },
      },
      after: {
        burstQuiet: {
          guard: 'owesReply',
          target: 'recalling',
          actions: assign({ work: ({ context }) => catchUpWork(context.owed[0]) }),
        },
      },
    },
    screening: {
      tags: ['busy'],
      invoke: {
        src: 'moderate',
        input: ({ context }) => ({ text: context.work?.message.text ?? '' }),
        onDone: [
          {
            guard: 'hasAttachments',
            target: 'describing',
            actions: patchWork((_, __, e) => ({ moderation: e.output as Moderation })),
          },
          { target: 'deciding', actions: patchWork((_, __, e) => ({ moderation: e.output as Moderation })) },
        ],
        onError: [{ guard: 'hasAttachments', target: 'describing' }, { target: 'deciding' }],
      },
    },
    describing: {
      tags: ['busy'],
      invoke: {
        src: 'describeAttachments',
        input: ({ context }) => ({
          eventId: (context.work as Work).message.eventId,
          attachments: (context.work as Work).message.attachments,
        }),
        onDone: {
          target: 'deciding',
          actions: patchWork((_, __, e) => ({ described: e.output as Record<string, string> })),
        },
        onError: { target: 'deciding' },
      },
    },
    deciding: {
      always: [
        {
          guard: routeIs('safety'),
          target: 'committing',
          actions: patchWork((w) => ({
            reply: w.moderation?.selfHarm ? SAFETY_REPLIES.crisis : SAFETY_REPLIES.refused,
            replyKind: 'safety',
          })),
        },
        { guard: routeIs('forget'), target: 'forgetting' },
        { guard: routeIs('throttled'), target: 'committing', actions: patchWork(() => ({ owe: true })) },
        { guard: routeIs('silent'), target: 'committing' },
        { target: 'recalling' },
      ],
    },
    forgetting: {
      tags: ['busy'],
      invoke: {
        src: 'recall',
        input: ({ context }) => recallInput(context),
        onDone: {
          target: 'committing',
          actions: patchWork((_, __, e) =>
            (e.output as Recall).memories.length
              ? { reply: SAFETY_REPLIES.forgotten, replyKind: 'forget' }
              : { reply: SAFETY_REPLIES.nothingToForget, replyKind: 'none' },
          ),
        },
        onError: {
          target: 'committing',
          actions: patchWork(() => ({ reply: SAFETY_REPLIES.fallback, replyKind: 'fallback' })),
        },
      },
    },
    recalling: {
      tags: ['busy'],
      invoke: {
        src: 'recall',
        input: ({ context }) => recallInput(context),
        onDone: { target: 'thinking', actions: patchWork((_, __, e) => ({ recall: e.output as Recall })) },
        onError: {
          target: 'committing',
          actions: patchWork(() => ({ reply: SAFETY_REPLIES.fallback, replyKind: 'fallback' })),
        },
      },
    },
    thinking: {
      tags: ['busy'],
      invoke: {
        src: 'think',
        input: ({ context }) => ({ context }),
        onDone: {
          target: 'checkingReply',
          actions: patchWork((_, __, e) => ({ reply: e.output as string, replyKind: 'model' })),
        },
        onError: {
          target: 'committing',
          actions: patchWork(() => ({ reply: SAFETY_REPLIES.fallback, replyKind: 'fallback' })),
        },
      },
    },
    checkingReply: {
      tags: ['busy'],
      invoke: {
        src: 'moderate',
        input: ({ context }) => ({ text: (context.work as Work).reply ?? '' }),
        onDone: [
          {
            guard: ({ event }) => event.output.flagged,
            target: 'committing',
            actions: patchWork(() => ({ reply: SAFETY_REPLIES.replacedOutput, replyKind: 'safety' })),
          },
          { target: 'committing' },
        ],
        onError: { target: 'committing' },
      },
    },
    committing: {
      tags: ['busy'],
      invoke: {
        src: 'commit',
        input: ({ context }) => buildCommit(context),
        onDone: {
          target: 'idle',
          actions: [
            {
              type: 'committed',
              params: ({ context }) => ({ commit: buildCommit(context), replyKind: (context.work as Work).replyKind }),
            },
            assign(({ context }) => buildCommit(context).next),
          ],
        },
        onError: { target: 'stopped', actions: stopWith('failed') },
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

function recallInput(context: ConversationContext): RecallInput {
  const w = context.work as Work;
  return {
    key: context.key,
    text: w.message.text,
    sender: w.message.sender,
    persona: context.persona,
    excludeMessageId: inboundId(w.message.eventId),
  };
}

/**
 * Brings a stored snapshot's context up to the current shape: snapshots written before
 * `owed` became a list held one message or null.
 */
export function upgradeSnapshot<T>(snapshot: T): T {
  const context = (snapshot as { context?: { owed?: unknown } }).context;
  if (context && !Array.isArray(context.owed)) context.owed = context.owed ? [context.owed] : [];
  return snapshot;
}

export type ConversationActor = ActorRefFrom<typeof conversationMachine>;
