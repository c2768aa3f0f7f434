/**
 * Conversations as a kind of actor for the host: rehydration from the stored snapshot, and
 * the machine's services bound to the brain, the memory store, media, the group commit and
 * the outbox.
 */
import { type AnyActorRef, createActor, type Snapshot } from 'xstate';
import {
  type ConversationSteps,
  conversationMachine,
  persistedResting,
  type RecallInput,
  upgradeSnapshot,
  workWith,
} from '../../actors/conversation.machine.ts';
import { isGroupKey } from '../../actors/conversationKey.ts';
import { FORGOTTEN_REPLY, PHOTO_PENDING, PHOTO_UNSEEN } from '../../actors/conversationRules.ts';
import type {
  ConversationCommit,
  ConversationContext,
  ConversationEvent,
  ConversationOutput,
  InboundAttachment,
  MessageRow,
  Moderation,
  Recall,
} from '../../actors/conversationTypes.ts';
import type { Brain } from '../brain/Brain.ts';
import type { Resilient } from '../brain/resilience.ts';
import { type ActorKind, actorKey } from '../host/ActorKind.ts';
import type { ActorHost } from '../host/createActorHost.ts';
import { containerTagOf } from '../memory/containerTag.ts';
import type { MemoryStore } from '../memory/MemoryStore.ts';
import type { Logger } from '../observability/logger.ts';
import { maskId } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import {
  type ConversationRepository,
  type ConversationWrite,
  encodeWrite,
  type Turn,
} from '../store/conversationRepository.ts';
import type { GroupCommitter } from '../store/GroupCommitter.ts';
import { LatePhotos } from './latePhotos.ts';

export const CONVERSATION = 'conversation';

/** Photos the vision model is shown; other files are stored and named, never opened. */
export const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp']);
const HISTORY_TURNS = 20;
/** Memories the model is shown with a message (`MemoryStore.recall`'s limit). */
const MEMORIES_IN_VIEW = 8;
/** Memory reads kept ahead of a conversation's batches, and commits since one, at most (`lookAhead`). */
const AHEAD_MAX = 64;
const PHOTOS_IN_VIEW = 3;
const STAGE_REFRESH = 25;

export interface ConversationKindDeps {
  repo: ConversationRepository;
  memory: MemoryStore;
  brain: Brain;
  committer: GroupCommitter;
  /** Fetches an attachment URL (already checked against RELAY_MEDIA_HOSTS). */
  fetchMedia: (url: string, signal: AbortSignal) => Promise<Buffer>;
  media: Resilient;
  /** PHOTO_WAIT_MS: the longest a message's attachments are looked at, all of them together. */
  photoWaitMs: number;
  /** PHOTO_LATE_MS: the longest a photo not seen within photoWaitMs is still looked at, to be remembered. */
  photoLateMs: number;
  /**
   * After a commit: the reply goes to the relay; the inbox row is done. `applied` is false when
   * the database found the inbox row already processed (a redelivery): nothing was written and
   * nothing is to be sent.
   */
  onCommitted: (commit: ConversationCommit, applied: boolean) => void;
  /** An inbox row delivered again after this conversation had processed it (a sweep's stale read). */
  onSkipped: (seq: number) => void;
  /**
   * The actor stopped without passivating: its undelivered work must be delivered again later.
   * `blame`: the event it was working on counts a failed attempt; not when the actor was only
   * fenced (another process took it, or its lease was lost), which is no fault of the event.
   */
  onFailed: (key: string, blame: boolean) => void;
  burstQuietMs: number;
  /** RELAY_BATCH_COMMIT_MS: a batch of messages is committed once its work has taken this long. */
  batchCommitMs: number;
  metrics: Metrics;
  log: Logger;
}

/**
 * What the model is shown, from the latest messages (newest first) of the conversation: the
 * last HISTORY_TURNS of them but `excludeMessageId` (blanked messages and replies replaced by
 * "forget that" left out: nothing of them is shown), and the last PHOTOS_IN_VIEW photos
 * described, both oldest first. Plain loops: it runs for every message answered, and the
 * chain of filters and maps it replaced allocated two arrays per message of the page.
 */
export function recallFrom(page: Turn[], stage: string, memories: string[], excludeMessageId: string): Recall {
  const history: Recall['history'] = [];
  let turns = 0;
  for (const m of page) {
    if (turns === HISTORY_TURNS) break;
    if (m.id === excludeMessageId) continue;
    turns++;
    if (!m.text || m.text === FORGOTTEN_REPLY) continue;
    history.push(
      m.direction === 'out' ? { role: 'assistant', text: m.text } : { role: 'user', sender: m.sender, text: m.text },
    );
  }
  const photos: string[] = [];
  for (const m of page) {
    for (const a of m.attachments) {
      if (photos.length < PHOTOS_IN_VIEW && a.description && IMAGE_TYPES.has(a.mime)) photos.push(a.description);
    }
    if (photos.length === PHOTOS_IN_VIEW) break;
  }
  return { history: history.reverse(), memories, photos: photos.reverse(), stage };
}

/**
 * The photos the model is shown with a message: those in view, then the message's own (its
 * attachments described, images only). Most messages have none: `inView` itself then, no copy.
 */
export function photosInView(
  inView: string[],
  described: Record<string, string>,
  attachments: readonly { id: string; mime: string }[],
): string[] {
  let photos = inView;
  for (const id in described) {
    const mime = attachments.find((a) => a.id === id)?.mime;
    if (mime !== undefined && IMAGE_TYPES.has(mime)) photos = [...photos, described[id]];
  }
  return photos;
}

const turnOf = (m: MessageRow): Turn => ({
  id: m.id,
  sender: m.sender,
  direction: m.direction,
  text: m.text,
  attachments: m.attachments,
});

/** The turns of `commits` (in order), newest first: what they add to the front of a conversation's page. */
function newestTurns(commits: readonly ConversationCommit[]): Turn[] {
  const turns: Turn[] = [];
  for (let i = commits.length - 1; i >= 0; i--) {
    const c = commits[i];
    if (c.outbound) turns.push(turnOf(c.outbound));
    if (c.inbound) turns.push(turnOf(c.inbound));
  }
  return turns;
}

export function createConversationKind(deps: ConversationKindDeps): ActorKind<ConversationEvent> {
  const { repo, memory, brain, committer, metrics, log } = deps;
  // A batch of commits without a forget is one self-fencing statement (one round trip).
  committer.register<ConversationWrite>(CONVERSATION, repo.writeBatch, {
    sizeOf: (w) => w.bytes,
    oneStatement: (w) => w.forget === null,
    fencesItself: true,
  });

  const latePhotos = new LatePhotos(repo, deps.photoLateMs, log);

  /** Looks at one attachment of relay event `eventId`: its description, or null when it could not be seen. */
  async function lookAt(attachment: InboundAttachment, eventId: string, signal: AbortSignal): Promise<string | null> {
    if (!IMAGE_TYPES.has(attachment.mime)) return `a ${attachment.mime} file (stored, not opened)`;
    try {
      const data = attachment.data
        ? Buffer.from(attachment.data, 'base64')
        : await deps.media.run((s) => deps.fetchMedia(attachment.url as string, s), signal);
      return await brain.describePhoto({ mime: attachment.mime, data }, signal);
    } catch (err) {
      log.warn(
        { reqId: eventId, err: { message: (err as Error).message }, attachment: attachment.id },
        'could not look at a photo',
      );
      return null;
    }
  }

  /**
   * Looks at a message's attachments together; the step ends after PHOTO_WAIT_MS (one after
   * the other, each fetch and vision call with its own limit, ten photos held the messages
   * behind them for minutes). A photo not seen by then is PHOTO_PENDING in the answer and the
   * commit, and `latePhotos` goes on looking at it, up to PHOTO_LATE_MS, to remember it.
   */
  async function describeAttachments(
    attachments: InboundAttachment[],
    eventId: string,
    containerTag: string,
    signal: AbortSignal,
    onLateStored: () => void,
  ): Promise<Record<string, string>> {
    const looking = new Map(
      attachments.map((a) => {
        const stop = new AbortController();
        const s = AbortSignal.any([stop.signal, AbortSignal.timeout(deps.photoLateMs)]);
        return [a.id, { stop, description: lookAt(a, eventId, s) }] as const;
      }),
    );
    // The actor stopping while the step runs stops every look; after the step only PHOTO_LATE_MS does.
    const stopAll = () => {
      for (const l of looking.values()) l.stop.abort();
    };
    signal.addEventListener('abort', stopAll, { once: true });
    const seen = new Map<string, string | null>();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...looking].map(([id, l]) => l.description.then((d) => seen.set(id, d)))),
      new Promise((resolve) => {
        timer = setTimeout(resolve, deps.photoWaitMs);
      }),
    ]);
    clearTimeout(timer);
    signal.removeEventListener('abort', stopAll);
    const described: Record<string, string> = {};
    const late = new Map<string, Promise<string | null>>();
    let room = latePhotos.room;
    for (const a of attachments) {
      const l = looking.get(a.id) as { stop: AbortController; description: Promise<string | null> };
      if (seen.has(a.id)) described[a.id] = seen.get(a.id) ?? PHOTO_UNSEEN;
      else if (room-- > 0) {
        described[a.id] = PHOTO_PENDING;
        late.set(a.id, l.description);
      } else {
        described[a.id] = PHOTO_UNSEEN;
        l.stop.abort();
      }
    }
    if (late.size > 0) latePhotos.take(eventId, containerTag, late, onLateStored);
    return described;
  }

  async function moderate(text: string, signal: AbortSignal, eventId: string): Promise<Moderation> {
    if (!text.trim()) return { flagged: false, selfHarm: false, categories: [] };
    const result = await brain.moderate(text, signal);
    // The decision is logged; the text never is.
    if (result.flagged) log.info({ reqId: eventId, categories: result.categories }, 'moderation flagged a text');
    return result;
  }

  function think(context: ConversationContext, signal: AbortSignal): Promise<string> {
    const work = context.work;
    if (!work?.recall) throw new Error('nothing to answer');
    const photos = photosInView(work.recall.photos, work.described, work.message.attachments);
    return brain.reply(
      {
        persona: context.persona,
        kind: context.kind,
        sender: work.message.sender,
        text: work.message.text,
        history: work.recall.history,
        memories: work.recall.memories,
        photos,
        stage: work.recall.stage,
      },
      signal,
    );
  }

  /** Each live conversation's steps: one machine serves them all (`workWith`). */
  const stepsOf = new WeakMap<AnyActorRef, ConversationSteps>();
  const machine = conversationMachine.provide({
    actions: {
      work: workWith((conversation) => {
        const steps = stepsOf.get(conversation);
        if (!steps) throw new Error('a conversation actor without its steps');
        return steps;
      }, deps.batchCommitMs),
      committed: (_, processed) => {
        const now = Date.now();
        const debug = log.isLevelEnabled('debug');
        metrics.conversationCommitMessages.observe(processed.length);
        for (const { commit, replyKind, applied, eventId } of processed) {
          // The offline brain's replies are no model's: counted apart, so dashboards do not mistake them.
          metrics.conversationMessages.inc({
            outcome: replyKind === 'model' && brain.mode === 'offline' ? 'offline' : replyKind,
          });
          if (commit.inbound) metrics.eventLatency.observe((now - commit.inbound.at) / 1000);
          // Thousands a second: the line's fields (a masked id among them) are built only when it is written.
          if (debug) {
            log.debug(
              {
                reqId: eventId,
                conversation: commit.kind,
                sender: maskId(commit.relationship.userId),
                reply: replyKind,
                memories: commit.memories.length,
                batch: processed.length,
              },
              'message processed',
            );
          }
          deps.onCommitted(commit, applied);
        }
      },
      skipped: (_, seqs) => {
        for (const seq of seqs) deps.onSkipped(seq);
      },
    },
    delays: { burstQuiet: deps.burstQuietMs },
  });

  return {
    name: CONVERSATION,
    passivateEvent: { type: 'passivate' },
    isIdle: (snapshot) => snapshot.value === 'idle' && (snapshot.context as ConversationContext).owed.length === 0,

    async activate(key, epoch): Promise<AnyActorRef | null> {
      const stored = await repo.snapshot(key);
      const lane = actorKey(CONVERSATION, key);
      /**
       * Recent turns and stages are cached per actor: it is the only writer of its messages,
       * so after its own commits the cache is exact. A forget clears it, so the blanked message
       * and replaced replies are read again as stored, never from a cached copy. Stages, changed by
       * the person's other conversations too, are read again every STAGE_REFRESH messages.
       */
      let cachedTurns: Turn[] | null = null;
      const stages = new Map<string, { stage: string; uses: number }>();
      const tag = containerTagOf({ key });
      /**
       * Memories of the batch being worked on, read ahead by text (`lookAhead`): one read for
       * the batch instead of one per message, each waited for in turn. A batch cut short by its
       * time bound leaves its rest to the next batch, which uses the reads already made, with
       * the memories committed since each (`since`) shown as newer: reading the rest again
       * after every cut made a 16-message batch cost 136 reads when each read took longer than
       * the bound (PostgreSQL busy), so reads got slower still (bench/README, fourteenth part).
       */
      const ahead = new Map<string, { read: Promise<string[]>; since: ConversationCommit[] }>();
      const lookAhead = (texts: string[]) => {
        // Reads left over from batches that never came (the conversation failed, rows skipped) go.
        if (ahead.size > AHEAD_MAX) ahead.clear();
        const since: ConversationCommit[] = [];
        for (const text of texts) {
          if (ahead.has(text)) continue;
          const read = memory.recall(tag, text, MEMORIES_IN_VIEW);
          // Not every message of a batch is answered: a read no one waits for must not fail unheard.
          read.catch(() => {});
          ahead.set(text, { read, since });
          metrics.memoryRecalls.inc();
        }
      };
      /**
       * After a commit: its messages' reads go, the others keep what it added as newer than them
       * (`since`). A forget ends the batch and changes what any read found: they all go.
       */
      const aheadCommitted = (commits: readonly ConversationCommit[]) => {
        if (commits.some((c) => c.forget)) ahead.clear();
        for (const c of commits) if (c.inbound) ahead.delete(c.inbound.text);
        for (const since of new Set([...ahead.values()].map((a) => a.since))) since.push(...commits);
        for (const [text, a] of ahead) if (a.since.length > AHEAD_MAX) ahead.delete(text);
      };
      const recall = async (
        input: RecallInput,
        _signal: AbortSignal,
        unwritten: readonly ConversationCommit[],
      ): Promise<Recall> => {
        const known = stages.get(input.sender);
        const fresh = cachedTurns !== null && known !== undefined && known.uses++ < STAGE_REFRESH;
        const readAhead = ahead.get(input.text);
        if (!readAhead) metrics.memoryRecalls.inc();
        const [turns, memories] = await Promise.all([
          fresh
            ? { messages: cachedTurns as Turn[], stage: (known as { stage: string }).stage }
            : repo.turns(input.key, HISTORY_TURNS + 1, input.sender, input.persona),
          readAhead?.read ?? memory.recall(tag, input.text, MEMORIES_IN_VIEW),
        ]);
        if (!fresh) {
          cachedTurns = turns.messages;
          stages.set(input.sender, { stage: turns.stage, uses: 0 });
        }
        const since = readAhead?.since ?? [];
        if (unwritten.length === 0 && since.length === 0)
          return recallFrom(turns.messages, turns.stage, memories, input.excludeMessageId);
        // Earlier messages of the batch, not written yet: the newest turns and memories. Commits
        // since the read ahead: their memories (their turns are written, so read or cached).
        const noted: string[] = [];
        for (const c of since) for (const m of c.memories) noted.push(m.content);
        for (const c of unwritten) for (const m of c.memories) noted.push(m.content);
        const recent = [...new Set([...noted.reverse(), ...memories])].slice(0, MEMORIES_IN_VIEW);
        const page = [...newestTurns(unwritten), ...turns.messages];
        return recallFrom(page, turns.stage, recent, input.excludeMessageId);
      };
      /** Keeps the cache exact after a commit. */
      const remember = (commits: readonly ConversationCommit[]) => {
        if (commits.some((c) => c.forget)) cachedTurns = null;
        if (cachedTurns === null) return;
        cachedTurns = [...newestTurns(commits), ...cachedTurns].slice(0, HISTORY_TURNS + 1);
      };

      committer.forget(lane, epoch - 1);
      const steps: ConversationSteps = {
        moderate,
        think,
        recall,
        describeAttachments: (input, signal) =>
          describeAttachments(input.attachments, input.eventId, tag, signal, () => {
            cachedTurns = null;
          }),
        lookAhead,
        async commit(commits) {
          aheadCommitted(commits);
          const last = commits[commits.length - 1];
          const result = await committer.submit<ConversationWrite, boolean>(
            CONVERSATION,
            lane,
            epoch,
            encodeWrite(commits, persistedResting(last.next)),
          );
          const applied = result !== false;
          if (applied) remember(commits);
          for (const c of commits) if (c.inbound) latePhotos.committed(c.inbound.id);
          return applied;
        },
      };
      const actor = stored
        ? createActor(machine, { snapshot: upgradeSnapshot(stored) as Snapshot<unknown>, input: { key } })
        : createActor(machine, { input: { key } });
      stepsOf.set(actor, steps);
      return actor;
    },

    onStopped(key, output) {
      const { reason, message } = output as ConversationOutput;
      if (reason !== 'passivated') {
        log.warn({ conversation: isGroupKey(key) ? 'group' : 'direct', reason, message }, 'conversation stopped');
        deps.onFailed(key, reason !== 'fenced');
      }
    },
  };
}

export type { ActorHost };
