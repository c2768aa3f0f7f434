import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type AnyActorRef, createActor, toPromise } from 'xstate';
import {
  buildCommit,
  conversationMachine,
  type Processed,
  persistedResting,
  upgradeSnapshot,
  workWith,
} from '../../actors/conversation.machine.ts';
import { PHOTO_PENDING, PHOTO_UNSEEN, SAFETY_REPLIES } from '../../actors/conversationRules.ts';
import type {
  ConversationCommit,
  ConversationContext,
  InboundAttachment,
  InboundMessage,
  Moderation,
  Recall,
  ReplyKind,
} from '../../actors/conversationTypes.ts';

const ALICE = '+15551234567';
const BOB = '+15557654321';
const DIRECT_KEY = `user_${ALICE}_persona_sage`;
const GUID = 'iMessage;+;chat4242';
const GROUP_KEY = `group_${GUID}`;
/** Every step is a resolved promise: poll often, give up soon. */
const POLL = { interval: 1, timeout: 2_000 };
const PHOTO_DATA = Buffer.from('not really a jpeg').toString('base64');

const clean: Moderation = { flagged: false, selfHarm: false, categories: [] };
const noRecall: Recall = { history: [], memories: [], photos: [], stage: 'new' };

/** A promise to resolve from the test, for an I/O step the test holds open. */
function deferred<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** What `recall` is asked (the machine's own input type is not exported). */
interface RecallInput {
  key: string;
  text: string;
  sender: string;
  persona: string;
  excludeMessageId: string;
}

interface Fakes {
  moderate?: (text: string) => Moderation;
  describeAttachments?: (input: {
    eventId: string;
    attachments: InboundAttachment[];
  }) => Promise<Record<string, string>>;
  /** `unwritten`: the batch's commits before this message; `written`: every commit so far. */
  recall?: (
    input: RecallInput,
    unwritten: readonly ConversationCommit[],
    written: readonly ConversationCommit[],
  ) => Recall | Promise<Recall>;
  think?: (context: ConversationContext) => string | Promise<string>;
  /** Called with each commit after it was recorded; throw to fail it. */
  commit?: (commit: ConversationCommit) => void;
  /** RELAY_BATCH_COMMIT_MS (the machine's default otherwise). */
  batchCommitMs?: number;
  /** BURST_QUIET_MS: 20 unless given. */
  burstQuietMs?: number;
}

/** The conversation machine with every side effect faked, and a record of what reached them. */
function harness(key: string, fakes: Fakes = {}) {
  const commits: ConversationCommit[] = [];
  const committed: Processed[] = [];
  const skipped: number[] = [];
  /** Messages per commit call. */
  const batches: number[] = [];
  const calls = {
    moderate: [] as string[],
    describe: 0,
    recall: [] as RecallInput[],
    /** Per recall, the inbox rows of the batch's commits before it. */
    unwritten: [] as (number | null)[][],
    lookAhead: [] as string[][],
    think: [] as ConversationContext[],
  };
  const machine = conversationMachine.provide({
    actions: {
      work: workWith(
        () => ({
          async moderate(text) {
            calls.moderate.push(text);
            return fakes.moderate?.(text) ?? clean;
          },
          async describeAttachments(input) {
            calls.describe++;
            return fakes.describeAttachments ? fakes.describeAttachments(input) : {};
          },
          async recall(input, _signal, unwritten) {
            calls.recall.push(input);
            calls.unwritten.push(unwritten.map((c) => c.inboxSeq));
            return fakes.recall ? fakes.recall(input, unwritten, commits) : noRecall;
          },
          lookAhead(texts) {
            calls.lookAhead.push(texts);
          },
          async think(context) {
            calls.think.push(context);
            return fakes.think ? fakes.think(context) : `model reply to "${context.work?.message.text}"`;
          },
          async commit(batch) {
            batches.push(batch.length);
            for (const commit of batch) {
              commits.push(commit);
              fakes.commit?.(commit);
            }
            return true;
          },
        }),
        fakes.batchCommitMs,
      ),
      committed: (_, params) => {
        committed.push(...params);
      },
      skipped: (_, seqs) => {
        skipped.push(...seqs);
      },
    },
    delays: { burstQuiet: fakes.burstQuietMs ?? 20 },
  });
  return {
    machine,
    commits,
    batches,
    committed,
    skipped,
    calls,
    start: () => createActor(machine, { input: { key } }).start(),
  };
}

let seq = 0;
function inbound(over: Partial<InboundMessage> & { seq?: number; throttled?: boolean } = {}) {
  const { seq: s = ++seq, throttled = false, ...message } = over;
  return {
    type: 'inbound' as const,
    seq: s,
    throttled,
    message: {
      eventId: `evt_${s}`,
      sender: ALICE,
      chatGuid: over.chatGuid ?? 'iMessage;-;+15551234567',
      text: 'hello there',
      attachments: [],
      receivedAt: 1_700_000_000_000 + s * 1000,
      ...message,
    },
  };
}

/** Waits until the actor has committed `n` messages in all and rests again (`idle`, or `owing` an answer). */
async function settled(actor: AnyActorRef, commits: ConversationCommit[], n: number) {
  await vi.waitFor(() => {
    expect(commits).toHaveLength(n);
    expect(['idle', 'owing']).toContain(actor.getSnapshot().value);
  }, POLL);
}

/** Delayed events XState holds for `actor` (its system's scheduler). */
function scheduled(actor: AnyActorRef): number {
  const system = actor.system as unknown as { getSnapshot(): { _scheduledEvents: Record<string, unknown> } };
  return Object.keys(system.getSnapshot()._scheduledEvents).length;
}

/** Every key anywhere in `value`. */
function keysOf(value: unknown, out = new Set<string>()): Set<string> {
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      out.add(k);
      keysOf(v, out);
    }
  }
  return out;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('the conversation machine, direct chat', () => {
  it('answers a direct message and commits the reply, the memories and the inbox row together', async () => {
    const h = harness(DIRECT_KEY);
    const actor = h.start();
    const e = inbound({ seq: 7, eventId: 'evt_a', text: "I'm vegan. What should I cook tonight?" });
    actor.send(e);
    await settled(actor, h.commits, 1);

    const [c] = h.commits;
    expect(c.key).toBe(DIRECT_KEY);
    expect(c.kind).toBe('direct');
    expect(c.send).toEqual({
      type: 'send',
      id: 'out_evt_a',
      replyTo: 'evt_a',
      chat: { guid: e.message.chatGuid, group: false },
      to: ALICE,
      text: `model reply to "${e.message.text}"`,
    });
    expect(c.inbound).toMatchObject({ id: 'in_evt_a', sender: ALICE, direction: 'in', text: e.message.text });
    expect(c.outbound).toMatchObject({ id: 'out_evt_a', sender: 'sage', direction: 'out', text: c.send?.text });
    expect(c.memories).toEqual([{ content: `${ALICE} is vegan`, sourceMessageId: 'in_evt_a' }]);
    expect(c.inboxSeq).toBe(7);
    expect(c.next.processed).toContain(7);
    // A direct conversation answers every message: it keeps no ids of Sage's (a group does).
    expect(c.next.ourMessageIds).toEqual([]);
    expect(c.relationship).toEqual({ userId: ALICE, persona: 'sage', delta: { messages: 1, replies: 1, photos: 0 } });
    expect(c.forget).toBe(false);
    expect(h.committed).toEqual([{ commit: c, replyKind: 'model', applied: true, eventId: 'evt_a' }]);
  });

  it('screens the message and the reply, and gives the model what was recalled', async () => {
    const recall: Recall = {
      history: [{ role: 'user', text: 'earlier' }],
      memories: [`${ALICE} is vegan`],
      photos: [],
      stage: 'friend',
    };
    const h = harness(DIRECT_KEY, { recall: () => recall, think: () => 'try a lentil curry' });
    const actor = h.start();
    actor.send(inbound({ eventId: 'evt_r', text: 'dinner ideas?' }));
    await settled(actor, h.commits, 1);
    expect(h.calls.moderate).toEqual(['dinner ideas?', 'try a lentil curry']);
    expect(h.calls.think).toHaveLength(1);
    expect(h.calls.think[0].work?.recall).toEqual(recall);
    expect(h.calls.recall).toEqual([
      { key: DIRECT_KEY, text: 'dinner ideas?', sender: ALICE, persona: 'sage', excludeMessageId: 'in_evt_r' },
    ]);
  });

  it('skips an inbox row it has already processed', async () => {
    const h = harness(DIRECT_KEY);
    const actor = h.start();
    actor.send(inbound({ seq: 1 }));
    await settled(actor, h.commits, 1);
    actor.send(inbound({ seq: 1 }));
    actor.send(inbound({ seq: 2 }));
    await settled(actor, h.commits, 2);
    expect(h.commits.map((c) => c.inboxSeq)).toEqual([1, 2]);
    expect(h.calls.think).toHaveLength(2);
    // Said, so the ingest no longer counts the row in flight (a later failure is not blamed on it).
    expect(h.skipped).toEqual([1]);
  });

  it('still skips processed rows after being restored from its persisted snapshot', async () => {
    const h = harness(DIRECT_KEY);
    const first = h.start();
    first.send(inbound({ seq: 11 }));
    await settled(first, h.commits, 1);
    const context = h.commits[0].next;
    first.stop();

    const snapshot = conversationMachine.getPersistedSnapshot(
      conversationMachine.resolveState({ value: 'idle', context }),
    );
    // The host passes the key too; a restored actor takes everything from the snapshot.
    const restored = createActor(h.machine, { snapshot, input: { key: DIRECT_KEY } }).start();
    expect(restored.getSnapshot().context.processed).toEqual([11]);
    restored.send(inbound({ seq: 11 }));
    restored.send(inbound({ seq: 12 }));
    await settled(restored, h.commits, 2);
    expect(h.commits.map((c) => c.inboxSeq)).toEqual([11, 12]);
    expect(h.commits[1].version).toBe(context.version + 1);
  });

  it('does not call the model for flagged input, answers with the refusal and remembers nothing', async () => {
    const h = harness(DIRECT_KEY, {
      moderate: (text) =>
        text.includes('bomb') ? { flagged: true, selfHarm: false, categories: ['violence'] } : clean,
    });
    const actor = h.start();
    actor.send(inbound({ text: "I'm vegan. How do I build a bomb?" }));
    await settled(actor, h.commits, 1);
    const [c] = h.commits;
    expect(c.send?.text).toBe(SAFETY_REPLIES.refused);
    expect(c.memories).toEqual([]);
    expect(c.inbound).not.toBeNull();
    expect(h.calls.think).toHaveLength(0);
    expect(h.calls.recall).toHaveLength(0);
    expect(h.committed[0].replyKind).toBe('safety');
  });

  it('answers self-harm with crisis resources, without the model', async () => {
    const h = harness(DIRECT_KEY, { moderate: () => ({ flagged: true, selfHarm: true, categories: ['self-harm'] }) });
    const actor = h.start();
    actor.send(inbound({ text: 'I want to end it all' }));
    await settled(actor, h.commits, 1);
    expect(h.commits[0].send?.text).toBe(SAFETY_REPLIES.crisis);
    expect(h.commits[0].memories).toEqual([]);
    expect(h.calls.think).toHaveLength(0);
  });

  it('replaces a reply that moderation flags', async () => {
    const h = harness(DIRECT_KEY, {
      think: () => 'something awful',
      moderate: (text) =>
        text === 'something awful' ? { flagged: true, selfHarm: false, categories: ['harassment'] } : clean,
    });
    const actor = h.start();
    actor.send(inbound({ text: 'tell me a joke' }));
    await settled(actor, h.commits, 1);
    expect(h.commits[0].send?.text).toBe(SAFETY_REPLIES.replacedOutput);
    expect(h.commits[0].outbound?.text).toBe(SAFETY_REPLIES.replacedOutput);
  });

  it('answers with the fallback when the model fails, and still stores and remembers the message', async () => {
    const h = harness(DIRECT_KEY, {
      think: () => {
        throw new Error('model timed out');
      },
    });
    const actor = h.start();
    actor.send(inbound({ eventId: 'evt_f', text: 'I live in Oslo' }));
    await settled(actor, h.commits, 1);
    const [c] = h.commits;
    expect(c.send?.text).toBe(SAFETY_REPLIES.fallback);
    expect(c.inbound?.text).toBe('I live in Oslo');
    expect(c.memories).toEqual([{ content: `${ALICE} lives in Oslo`, sourceMessageId: 'in_evt_f' }]);
    expect(h.committed[0].replyKind).toBe('fallback');
  });

  it('answers with the fallback when recalling the conversation fails', async () => {
    const h = harness(DIRECT_KEY, {
      recall: () => {
        throw new Error('db down');
      },
    });
    const actor = h.start();
    actor.send(inbound({}));
    await settled(actor, h.commits, 1);
    expect(h.commits[0].send?.text).toBe(SAFETY_REPLIES.fallback);
    expect(h.calls.think).toHaveLength(0);
  });

  it('answers the message normally when input moderation itself fails', async () => {
    const h = harness(DIRECT_KEY, {
      moderate: () => {
        throw new Error('moderation unavailable');
      },
    });
    const actor = h.start();
    actor.send(inbound({ text: 'hi' }));
    await settled(actor, h.commits, 1);
    expect(h.commits[0].send?.text).toBe('model reply to "hi"');
  });

  it('forgets on "forget that" and says so', async () => {
    const h = harness(DIRECT_KEY, { recall: () => ({ ...noRecall, memories: [`${ALICE} is vegan`] }) });
    const actor = h.start();
    actor.send(inbound({ text: 'Sage, forget that' }));
    await settled(actor, h.commits, 1);
    const [c] = h.commits;
    expect(c.forget).toBe(true);
    expect(c.send?.text).toBe(SAFETY_REPLIES.forgotten);
    expect(c.memories).toEqual([]);
    expect(h.calls.think).toHaveLength(0);
    expect(h.committed[0].replyKind).toBe('forget');
  });

  it('says there is nothing to forget when the conversation has no memories', async () => {
    const h = harness(DIRECT_KEY, { recall: () => noRecall });
    const actor = h.start();
    actor.send(inbound({ text: 'forget that' }));
    await settled(actor, h.commits, 1);
    expect(h.commits[0].forget).toBe(false);
    expect(h.commits[0].send?.text).toBe(SAFETY_REPLIES.nothingToForget);
  });

  it('looks at a photo while tagged busy, then answers with its description in the row and in memory', async () => {
    const described = deferred<Record<string, string>>();
    const h = harness(DIRECT_KEY, { describeAttachments: () => described.promise });
    const actor = h.start();
    actor.send(
      inbound({ eventId: 'evt_p', text: '', attachments: [{ id: 'att_1', mime: 'image/jpeg', data: PHOTO_DATA }] }),
    );
    await vi.waitFor(() => expect(h.calls.describe).toBe(1), POLL);
    expect(actor.getSnapshot().hasTag('busy')).toBe(true);
    expect(h.commits).toHaveLength(0);

    described.resolve({ att_1: 'a golden retriever on a beach' });
    await settled(actor, h.commits, 1);
    expect(actor.getSnapshot().hasTag('busy')).toBe(false);
    const [c] = h.commits;
    expect(c.inbound?.attachments).toEqual([
      { id: 'att_1', mime: 'image/jpeg', description: 'a golden retriever on a beach' },
    ]);
    expect(c.memories).toEqual([
      { content: `${ALICE} shared a photo: a golden retriever on a beach`, sourceMessageId: 'in_evt_p' },
    ]);
    expect(c.relationship.delta.photos).toBe(1);
    expect(h.calls.think[0].work?.described).toEqual({ att_1: 'a golden retriever on a beach' });
    expect(keysOf(c.next).has('data')).toBe(false);
    expect(JSON.stringify(c.next)).not.toContain(PHOTO_DATA);
  });

  it('remembers only photos it saw: one not seen, or still being looked at, is stored with its placeholder and no memory', async () => {
    const h = harness(DIRECT_KEY, {
      describeAttachments: async () => ({ a: 'a lighthouse', b: PHOTO_UNSEEN, c: PHOTO_PENDING }),
    });
    const actor = h.start();
    const attachments = ['a', 'b', 'c'].map((id) => ({ id, mime: 'image/jpeg', data: PHOTO_DATA }));
    actor.send(inbound({ eventId: 'evt_abc', text: '', attachments }));
    await settled(actor, h.commits, 1);
    const [c] = h.commits;
    expect(c.inbound?.attachments.map((a) => a.description)).toEqual(['a lighthouse', PHOTO_UNSEEN, PHOTO_PENDING]);
    expect(c.memories).toEqual([{ content: `${ALICE} shared a photo: a lighthouse`, sourceMessageId: 'in_evt_abc' }]);
  });

  it('stores a photo without a description when describing it fails', async () => {
    const h = harness(DIRECT_KEY, {
      describeAttachments: async () => {
        throw new Error('vision model down');
      },
    });
    const actor = h.start();
    actor.send(inbound({ text: 'look', attachments: [{ id: 'att_1', mime: 'image/png', data: PHOTO_DATA }] }));
    await settled(actor, h.commits, 1);
    expect(h.commits[0].inbound?.attachments).toEqual([{ id: 'att_1', mime: 'image/png' }]);
    expect(h.commits[0].send).not.toBeNull();
  });

  it('is busy for the whole of a message, from screening to the commit', async () => {
    const thinking = deferred<string>();
    const h = harness(DIRECT_KEY, { think: () => thinking.promise });
    const actor = h.start();
    expect(actor.getSnapshot().hasTag('busy')).toBe(false);
    actor.send(inbound({}));
    expect(actor.getSnapshot().hasTag('busy')).toBe(true);
    await vi.waitFor(() => expect(h.calls.think).toHaveLength(1), POLL);
    expect(actor.getSnapshot().hasTag('busy')).toBe(true);
    thinking.resolve('ok');
    await settled(actor, h.commits, 1);
  });
});

describe('the conversation machine, rate-limited senders', () => {
  it('stores a throttled burst without answering, then answers its last message once the sender is quiet', async () => {
    vi.useFakeTimers();
    const h = harness(DIRECT_KEY);
    const actor = h.start();
    for (const n of [1, 2, 3]) {
      actor.send(
        inbound({
          seq: 100 + n,
          eventId: `evt_t${n}`,
          text: n === 1 ? 'I live in Oslo' : `message ${n}`,
          throttled: true,
        }),
      );
      await vi.advanceTimersByTimeAsync(5);
    }
    expect(h.commits).toHaveLength(3);
    expect(h.commits.map((c) => c.send)).toEqual([null, null, null]);
    expect(h.commits.map((c) => c.inboxSeq)).toEqual([101, 102, 103]);
    expect(h.commits[0].memories).toEqual([{ content: `${ALICE} lives in Oslo`, sourceMessageId: 'in_evt_t1' }]);
    expect(h.calls.think).toHaveLength(0);
    // Resting with an answer owed: the one timer is set.
    expect(actor.getSnapshot().value).toBe('owing');
    expect(scheduled(actor)).toBe(1);

    await vi.advanceTimersByTimeAsync(14);
    expect(h.commits).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.commits).toHaveLength(4);
    const catchUp = h.commits[3];
    expect(catchUp.send).toMatchObject({ id: 'out_evt_t3_burst', replyTo: 'evt_t3', to: ALICE });
    expect(catchUp.inbound).toBeNull();
    expect(catchUp.inboxSeq).toBeNull();
    expect(catchUp.memories).toEqual([]);
    expect(catchUp.relationship.delta).toEqual({ messages: 0, replies: 1, photos: 0 });
    expect(catchUp.next.owed).toEqual([]);

    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.commits).toHaveLength(4);
    expect(actor.getSnapshot().value).toBe('idle');
    expect(scheduled(actor)).toBe(0);
  });

  it('sets no timer while nothing is owed: an ordinary message leaves none behind', async () => {
    const h = harness(DIRECT_KEY);
    const actor = h.start();
    actor.send(inbound({ seq: 7 }));
    await settled(actor, h.commits, 1);
    expect(h.commits[0].send).not.toBeNull();
    expect(actor.getSnapshot().value).toBe('idle');
    expect(scheduled(actor)).toBe(0);
  });

  it('pays the owed answer with the next ordinary reply to that sender instead of a catch-up', async () => {
    vi.useFakeTimers();
    const h = harness(DIRECT_KEY);
    const actor = h.start();
    actor.send(inbound({ throttled: true }));
    await vi.advanceTimersByTimeAsync(5);
    actor.send(inbound({ eventId: 'evt_ok' }));
    await vi.advanceTimersByTimeAsync(5);
    expect(h.commits.map((c) => c.send?.id ?? null)).toEqual([null, 'out_evt_ok']);
    expect(h.commits[1].next.owed).toEqual([]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.commits).toHaveLength(2);
    expect(actor.getSnapshot().value).toBe('idle');
    expect(scheduled(actor)).toBe(0);
  });
});

describe('the conversation machine, group chat', () => {
  it('stores and remembers a group message that does not name Sage, without answering', async () => {
    const h = harness(GROUP_KEY);
    const actor = h.start();
    actor.send(inbound({ eventId: 'evt_g', sender: BOB, chatGuid: GUID, text: 'I love sushi' }));
    await settled(actor, h.commits, 1);
    const [c] = h.commits;
    expect(c.kind).toBe('group');
    expect(c.send).toBeNull();
    expect(c.outbound).toBeNull();
    expect(c.inbound?.id).toBe('in_evt_g');
    expect(c.memories).toHaveLength(1);
    expect(c.memories[0].content.startsWith(BOB)).toBe(true);
    expect(c.next.processed).toContain(c.inboxSeq);
    expect(h.calls.think).toHaveLength(0);
  });

  it('answers the whole group (no `to`) when Sage is named', async () => {
    const h = harness(GROUP_KEY);
    const actor = h.start();
    actor.send(inbound({ eventId: 'evt_n', sender: BOB, chatGuid: GUID, text: 'Sage, pick a restaurant' }));
    await settled(actor, h.commits, 1);
    const send = h.commits[0].send;
    expect(send).toMatchObject({ id: 'out_evt_n', replyTo: 'evt_n', chat: { guid: GUID, group: true } });
    expect(send).not.toHaveProperty('to');
  });

  it("answers a message that replies to one of Sage's messages, and only those", async () => {
    const h = harness(GROUP_KEY);
    const actor = h.start();
    actor.send(inbound({ eventId: 'evt_1', chatGuid: GUID, text: 'sage, thoughts?' }));
    await settled(actor, h.commits, 1);
    actor.send(inbound({ eventId: 'evt_2', sender: BOB, chatGuid: GUID, text: 'why?', replyTo: 'out_evt_1' }));
    await settled(actor, h.commits, 2);
    actor.send(inbound({ eventId: 'evt_3', chatGuid: GUID, text: 'agreed', replyTo: 'evt_2' }));
    await settled(actor, h.commits, 3);
    expect(h.commits.map((c) => c.send?.id ?? null)).toEqual(['out_evt_1', 'out_evt_2', null]);
  });

  it('stays out of an unaddressed group message that moderation flags', async () => {
    const h = harness(GROUP_KEY, { moderate: () => ({ flagged: true, selfHarm: false, categories: ['violence'] }) });
    const actor = h.start();
    actor.send(inbound({ sender: BOB, chatGuid: GUID, text: "I'm going to kill him, he ate my fries" }));
    await settled(actor, h.commits, 1);
    expect(h.commits[0].send).toBeNull();
  });

  it('neither forgets nor answers when group members say "forget it" to each other', async () => {
    const h = harness(GROUP_KEY, { recall: () => ({ ...noRecall, memories: [`${ALICE} is vegan`] }) });
    const actor = h.start();
    actor.send(inbound({ sender: BOB, chatGuid: GUID, text: 'ok forget it' }));
    await settled(actor, h.commits, 1);
    expect(h.commits[0].forget).toBe(false);
    expect(h.commits[0].send).toBeNull();
  });

  it('forgets in a group when Sage is asked by name', async () => {
    const h = harness(GROUP_KEY, { recall: () => ({ ...noRecall, memories: [`${ALICE} is vegan`] }) });
    const actor = h.start();
    actor.send(inbound({ sender: BOB, chatGuid: GUID, text: 'Sage, forget that' }));
    await settled(actor, h.commits, 1);
    expect(h.commits[0].forget).toBe(true);
    expect(h.commits[0].send?.text).toBe(SAFETY_REPLIES.forgotten);
  });
});

describe('the conversation machine, stopping', () => {
  it('stops with reason "fenced" when another node has taken the conversation over', async () => {
    const h = harness(DIRECT_KEY, {
      commit: () => {
        const err = new Error('epoch moved on');
        err.name = 'FencedError';
        throw err;
      },
    });
    const actor = h.start();
    actor.send(inbound({}));
    await expect(toPromise(actor)).resolves.toMatchObject({ reason: 'fenced' });
    expect(actor.getSnapshot().status).toBe('done');
    expect(h.committed).toHaveLength(0);
  });

  it('stops with reason "failed" when a commit fails otherwise', async () => {
    const h = harness(DIRECT_KEY, {
      commit: () => {
        throw new Error('connection reset');
      },
    });
    const actor = h.start();
    actor.send(inbound({}));
    const output = await toPromise(actor);
    expect(output.reason).toBe('failed');
    expect(output.message).toContain('connection reset');
  });

  it('commits nothing of a message it was working on when it is stopped', async () => {
    const thinking = deferred<string>();
    const h = harness(DIRECT_KEY, { think: () => thinking.promise });
    const actor = h.start();
    actor.send(inbound({}));
    await vi.waitFor(() => expect(h.calls.think).toHaveLength(1), POLL);
    actor.stop();
    thinking.resolve('too late');
    await new Promise((r) => setTimeout(r, 20));
    expect(h.commits).toHaveLength(0);
    expect(h.committed).toHaveLength(0);
  });

  it('passivates when idle', async () => {
    const h = harness(DIRECT_KEY);
    const actor = h.start();
    actor.send({ type: 'passivate' });
    expect(actor.getSnapshot().status).toBe('done');
    expect(actor.getSnapshot().output).toEqual({ reason: 'passivated' });
  });

  it('refuses a key that names no conversation', () => {
    const h = harness('user_nobody');
    const actor = createActor(h.machine, { input: { key: 'user_nobody' } });
    const errors: unknown[] = [];
    actor.subscribe({ error: (err) => errors.push(err) });
    actor.start();
    expect(errors).toHaveLength(1);
  });
});

/** An `inbound` carrying `items[0]` with the rest of `items` behind it (as the relay's ingest hands them over). */
function batchOf(items: ReturnType<typeof inbound>[]) {
  const [first, ...rest] = items;
  return { ...first, more: rest.map(({ seq: s, message, throttled }) => ({ seq: s, message, throttled })) };
}

/**
 * The store as the machine sees it through `recall`: the turns and memories of every commit
 * written so far, then those of the batch not yet written (newest first). The fake model's reply
 * names what it was shown, so a message answered with less than it would have seen alone
 * answers differently.
 */
function storeModel(
  _input: RecallInput,
  unwritten: readonly ConversationCommit[],
  written: readonly ConversationCommit[],
): Recall {
  const all = [...written, ...unwritten];
  const history = all.flatMap((c) =>
    [c.inbound, c.outbound]
      .filter((m) => m !== null)
      .map((m) => ({ role: m.direction === 'in' ? ('user' as const) : ('assistant' as const), text: m.text })),
  );
  const memories = all.flatMap((c) => c.memories.map((m) => m.content)).reverse();
  return { history: history.slice(-20), memories, photos: [], stage: 'new' };
}

const namesWhatItSaw = (context: ConversationContext) =>
  `re "${context.work?.message.text}" after ${context.work?.recall?.history.length} turns, ${context.work?.recall?.memories.length} memories`;

describe('the conversation machine, a batch of events', () => {
  it('works the events behind an inbound through in order, each seeing the ones before, and commits them in one write', async () => {
    const h = harness(DIRECT_KEY, { recall: storeModel, think: namesWhatItSaw });
    const actor = h.start();
    actor.send(
      batchOf([
        inbound({ seq: 41, text: "I'm vegan" }),
        inbound({ seq: 42, text: 'I live in Lisbon' }),
        inbound({ seq: 43, text: 'dinner ideas?' }),
      ]),
    );
    await settled(actor, h.commits, 3);
    expect(h.batches).toEqual([3]);
    expect(h.commits.map((c) => [c.inboxSeq, c.version])).toEqual([
      [41, 1],
      [42, 2],
      [43, 3],
    ]);
    expect(h.calls.unwritten).toEqual([[], [41], [41, 42]]);
    expect(h.calls.lookAhead).toEqual([["I'm vegan", 'I live in Lisbon', 'dinner ideas?']]);
    expect(h.commits.map((c) => c.send?.text)).toEqual([
      `re "I'm vegan" after 0 turns, 0 memories`,
      `re "I live in Lisbon" after 2 turns, 1 memories`,
      `re "dinner ideas?" after 4 turns, 2 memories`,
    ]);
    expect(h.committed.map((p) => p.commit)).toEqual(h.commits);
    expect(actor.getSnapshot().context).toEqual({ ...h.commits[2].next, work: null });
    expect(actor.getSnapshot().context.processed).toEqual([41, 42, 43]);
  });

  it('skips the events of a batch it has processed already and works the rest; a batch of processed events only is skipped whole', async () => {
    const h = harness(DIRECT_KEY);
    const actor = h.start();
    actor.send(inbound({ seq: 51 }));
    await settled(actor, h.commits, 1);
    actor.send(batchOf([inbound({ seq: 51 }), inbound({ seq: 52 }), inbound({ seq: 51 }), inbound({ seq: 53 })]));
    await settled(actor, h.commits, 3);
    expect(h.commits.map((c) => c.inboxSeq)).toEqual([51, 52, 53]);
    expect(h.batches).toEqual([1, 2]);
    expect(h.skipped).toEqual([51, 51]);
    actor.send(batchOf([inbound({ seq: 52 }), inbound({ seq: 53 })]));
    await vi.waitFor(() => expect(h.skipped).toEqual([51, 51, 52, 53]), POLL);
    expect(actor.getSnapshot().value).toBe('idle');
    expect(h.commits).toHaveLength(3);
  });

  it('ends a batch at a forget (written apart by the store): the rest follow in a batch of their own', async () => {
    const h = harness(DIRECT_KEY, { recall: storeModel });
    const actor = h.start();
    actor.send(
      batchOf([
        inbound({ seq: 61, text: 'I love sailing' }),
        inbound({ seq: 62, text: 'forget that' }),
        inbound({ seq: 63, text: 'hello again' }),
      ]),
    );
    await settled(actor, h.commits, 3);
    expect(h.batches).toEqual([2, 1]);
    expect(h.commits.map((c) => c.forget)).toEqual([false, true, false]);
    expect(h.commits[1].send?.text).toBe(SAFETY_REPLIES.forgotten);
    expect(h.commits.map((c) => c.version)).toEqual([1, 2, 3]);
  });

  it('commits a batch once its work has taken RELAY_BATCH_COMMIT_MS, the rest following in batches of their own', async () => {
    const slow = harness(DIRECT_KEY, {
      batchCommitMs: 15,
      think: async () => {
        await new Promise((r) => setTimeout(r, 20));
        return 'slowly';
      },
    });
    const a = slow.start();
    a.send(batchOf([inbound({ seq: 71 }), inbound({ seq: 72 }), inbound({ seq: 73 })]));
    await vi.waitFor(() => expect(slow.commits).toHaveLength(3), { interval: 5, timeout: 3000 });
    expect(slow.batches).toEqual([1, 1, 1]);
    const each = harness(DIRECT_KEY, { batchCommitMs: 0 });
    const b = each.start();
    b.send(batchOf([inbound({ seq: 74 }), inbound({ seq: 75 })]));
    await settled(b, each.commits, 2);
    expect(each.batches).toEqual([1, 1]);
    expect(each.commits.map((c) => c.inboxSeq)).toEqual([74, 75]);
  });

  it('stops without committing any of a batch whose one write fails', async () => {
    const h = harness(DIRECT_KEY, {
      commit: () => {
        throw new Error('connection reset');
      },
    });
    const actor = h.start();
    actor.send(batchOf([inbound({ seq: 81 }), inbound({ seq: 82 })]));
    await expect(toPromise(actor)).resolves.toMatchObject({ reason: 'failed' });
    expect(h.batches).toEqual([2]);
    expect(h.committed).toEqual([]);
  });

  it('commits the same, message for message, whether the events come one at a time or in one batch (property)', async () => {
    const texts = [
      'hello',
      "I'm vegan",
      'I live in Lisbon',
      'forget that',
      'sage, any ideas?',
      'kill me now',
      'ok',
      '',
    ];
    const message = fc.record({
      text: fc.constantFrom(...texts),
      sender: fc.constantFrom(ALICE, BOB),
      throttled: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(DIRECT_KEY, GROUP_KEY),
        fc.array(message, { minLength: 1, maxLength: 12 }),
        async (key, messages) => {
          const events = messages.map((m, i) =>
            inbound({
              seq: 1000 + i,
              eventId: `evt_p${i}`,
              chatGuid: key === GROUP_KEY ? GUID : 'iMessage;-;+15551234567',
              ...m,
            }),
          );
          const fakes: Fakes = {
            recall: storeModel,
            think: namesWhatItSaw,
            moderate: (text) =>
              text.includes('kill') ? { flagged: true, selfHarm: true, categories: ['self-harm'] } : clean,
            // No catch-up answer between messages sent one at a time: the two runs see the same events.
            burstQuietMs: 60_000,
          };
          const one = harness(key, fakes);
          const a = one.start();
          for (const [i, e] of events.entries()) {
            a.send(e);
            await vi.waitFor(() => {
              expect(one.commits).toHaveLength(i + 1);
              expect(a.getSnapshot().hasTag('busy')).toBe(false);
            }, POLL);
          }
          const together = harness(key, fakes);
          const b = together.start();
          b.send(batchOf(events));
          await vi.waitFor(() => {
            expect(together.commits).toHaveLength(events.length);
            expect(b.getSnapshot().hasTag('busy')).toBe(false);
          }, POLL);
          expect(together.commits).toEqual(one.commits);
          expect(b.getSnapshot().value).toBe(a.getSnapshot().value);
          a.stop();
          b.stop();
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe('buildCommit', () => {
  type Work = NonNullable<ConversationContext['work']>;

  const attachment = fc.record({
    id: fc.stringMatching(/^att_[a-z0-9]{1,6}$/),
    mime: fc.constantFrom('image/jpeg', 'image/png', 'application/pdf'),
    data: fc.uint8Array({ minLength: 1, maxLength: 24 }).map((b) => `DATA${Buffer.from(b).toString('base64')}`),
  });
  const message = fc.record({
    eventId: fc.stringMatching(/^evt_[a-z0-9]{1,8}$/),
    sender: fc.constantFrom(ALICE, BOB),
    chatGuid: fc.constant(GUID),
    text: fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.constantFrom("I'm vegan", 'I live in Oslo', 'forget that', 'Sage, hi'),
    ),
    attachments: fc.uniqueArray(attachment, { maxLength: 3, selector: (a) => a.id }),
    receivedAt: fc.nat(2_000_000_000_000),
  });
  const context = fc
    .record({
      kind: fc.constantFrom('direct' as const, 'group' as const),
      message,
      seq: fc.option(fc.nat(10_000), { nil: null }),
      catchUp: fc.boolean(),
      throttled: fc.boolean(),
      owe: fc.boolean(),
      reply: fc.option(fc.string({ maxLength: 40 }), { nil: null }),
      replyKind: fc.constantFrom<ReplyKind>('model', 'fallback', 'safety', 'forget', 'none'),
      describe: fc.boolean(),
      owedBefore: fc.option(message, { nil: null }),
      processed: fc.array(fc.nat(10_000), { maxLength: 5 }),
      version: fc.nat(1_000),
    })
    .map((r): ConversationContext => {
      const work: Work = {
        seq: r.seq,
        message: r.message,
        throttled: r.throttled,
        catchUp: r.catchUp,
        moderation: null,
        described: r.describe ? Object.fromEntries(r.message.attachments.map((a) => [a.id, `a photo of ${a.id}`])) : {},
        recall: null,
        reply: r.reply,
        replyKind: r.replyKind,
        owe: r.owe,
      };
      const direct = r.kind === 'direct';
      return {
        key: direct ? DIRECT_KEY : GROUP_KEY,
        kind: r.kind,
        persona: 'sage',
        chatGuid: direct ? null : GUID,
        version: r.version,
        processed: r.processed,
        ourMessageIds: [],
        owed: r.owedBefore
          ? [{ ...r.owedBefore, attachments: r.owedBefore.attachments.map(({ id, mime }) => ({ id, mime })) }]
          : [],
        work,
        stop: null,
      };
    });

  it('is deterministic: the same context always gives the same commit, and the context is left unchanged', () => {
    fc.assert(
      fc.property(context, (ctx) => {
        const before = structuredClone(ctx);
        expect(buildCommit(ctx)).toEqual(buildCommit(structuredClone(ctx)));
        expect(ctx).toEqual(before);
      }),
    );
  });

  it('never carries attachment data into the next context (what is persisted)', () => {
    fc.assert(
      fc.property(context, (ctx) => {
        const { next } = buildCommit(ctx);
        expect(keysOf(next).has('data')).toBe(false);
        expect(JSON.stringify(next)).not.toMatch(/DATA/);
        expect(next.work).toBeNull();
      }),
    );
  });

  it('records the inbox row and bumps the version by one', () => {
    fc.assert(
      fc.property(context, (ctx) => {
        const c = buildCommit(ctx);
        expect(c.version).toBe(ctx.version + 1);
        expect(c.next.version).toBe(c.version);
        expect(c.inboxSeq).toBe(ctx.work?.seq);
        if (ctx.work?.seq != null) expect(c.next.processed.at(-1)).toBe(ctx.work.seq);
      }),
    );
  });

  it('addresses direct replies to the sender and group replies to the chat', () => {
    fc.assert(
      fc.property(context, (ctx) => {
        const { send } = buildCommit(ctx);
        if (send === null) return;
        expect(send.chat.group).toBe(ctx.kind === 'group');
        if (ctx.kind === 'direct') expect(send.to).toBe(ctx.work?.message.sender);
        else expect(send).not.toHaveProperty('to');
      }),
    );
  });

  it('keeps only the most recent 200 processed rows and, in a group, 50 of its own message ids', () => {
    const ctx: ConversationContext = {
      key: GROUP_KEY,
      kind: 'group',
      persona: 'sage',
      chatGuid: null,
      version: 0,
      processed: Array.from({ length: 200 }, (_, i) => i),
      ourMessageIds: Array.from({ length: 50 }, (_, i) => `out_${i}`),
      owed: [],
      work: {
        seq: 500,
        message: inbound({ eventId: 'evt_last' }).message,
        throttled: false,
        catchUp: false,
        moderation: null,
        described: {},
        recall: null,
        reply: 'hi',
        replyKind: 'model',
        owe: false,
      },
      stop: null,
    };
    const { next } = buildCommit(ctx);
    expect(next.processed).toHaveLength(200);
    expect(next.processed[0]).toBe(1);
    expect(next.processed.at(-1)).toBe(500);
    expect(next.ourMessageIds).toHaveLength(50);
    expect(next.ourMessageIds[0]).toBe('out_1');
    expect(next.ourMessageIds.at(-1)).toBe('out_evt_last');
    // Below the bound nothing is dropped.
    const short = buildCommit({ ...ctx, processed: [7], ourMessageIds: ['out_a'] }).next;
    expect(short.processed).toEqual([7, 500]);
    expect(short.ourMessageIds).toEqual(['out_a', 'out_evt_last']);
  });

  it('keeps none of its own message ids in a direct conversation, which answers every message', () => {
    fc.assert(
      fc.property(context, (ctx) => {
        const direct = { ...ctx, key: DIRECT_KEY, kind: 'direct' as const, ourMessageIds: [] };
        expect(buildCommit(direct).next.ourMessageIds).toEqual([]);
      }),
    );
  });
});

/**
 * A conversation that took one throttled message (`eventId`), stopped owing its answer, and was
 * restored from what it stored — as `value` says it rested when that is given (older versions).
 * Needs fake timers.
 */
async function restoredOwing(h: ReturnType<typeof harness>, seq: number, eventId: string, value?: string) {
  const first = h.start();
  first.send(inbound({ seq, eventId, throttled: true }));
  await vi.advanceTimersByTimeAsync(5);
  expect(h.commits).toHaveLength(1);
  first.stop();
  const stored = { ...persistedResting(h.commits[0].next), ...(value ? { value } : {}) };
  return createActor(h.machine, { snapshot: upgradeSnapshot(stored), input: { key: DIRECT_KEY } }).start();
}

describe('persistedResting', () => {
  it("is XState's own persisted snapshot of the idle state, and restores to it", async () => {
    const h = harness(DIRECT_KEY);
    const first = h.start();
    first.send(inbound({ seq: 21, text: "I'm vegan" }));
    await settled(first, h.commits, 1);
    const context = h.commits[0].next;
    const xstate = conversationMachine.getPersistedSnapshot(
      conversationMachine.resolveState({ value: 'idle', context }),
    );
    expect(persistedResting(context)).toStrictEqual(xstate);
    expect(JSON.parse(JSON.stringify(persistedResting(context)))).toEqual(JSON.parse(JSON.stringify(xstate)));
    const restored = createActor(h.machine, {
      snapshot: persistedResting(context),
      input: { key: DIRECT_KEY },
    }).start();
    expect(restored.getSnapshot().value).toBe('idle');
    expect(restored.getSnapshot().context).toEqual(context);
  });

  it("is XState's own persisted snapshot of the owed state while an answer is owed", async () => {
    const h = harness(DIRECT_KEY);
    const first = h.start();
    first.send(inbound({ seq: 22, throttled: true }));
    await settled(first, h.commits, 1);
    first.stop();
    const context = h.commits[0].next;
    expect(context.owed).toHaveLength(1);
    const xstate = conversationMachine.getPersistedSnapshot(
      conversationMachine.resolveState({ value: 'owed', context }),
    );
    expect(persistedResting(context)).toStrictEqual(xstate);
    const restored = createActor(h.machine, {
      snapshot: persistedResting(context),
      input: { key: DIRECT_KEY },
    }).start();
    expect(restored.getSnapshot().value).toBe('owed');
    // Its next message is answered, which pays what was owed.
    restored.send(inbound({ seq: 23, eventId: 'evt_after_restore' }));
    await settled(restored, h.commits, 2);
    expect(h.commits[1].send?.id).toBe('out_evt_after_restore');
    expect(h.commits[1].next.owed).toEqual([]);
    expect(restored.getSnapshot().value).toBe('idle');
  });

  it('restored owing an answer, rests in `owed` with no timer until `resume`, then pays it after the quiet time', async () => {
    vi.useFakeTimers();
    const h = harness(DIRECT_KEY);
    const restored = await restoredOwing(h, 24, 'evt_owed');
    // XState does not set a restored state's timers: without `resume` the answer would wait forever.
    expect(restored.getSnapshot().value).toBe('owed');
    expect(scheduled(restored)).toBe(0);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.commits).toHaveLength(1);
    restored.send({ type: 'resume' });
    expect(restored.getSnapshot().value).toBe('owing');
    expect(scheduled(restored)).toBe(1);
    await vi.advanceTimersByTimeAsync(10);
    // Resumed again while its timer runs (a sweep coming sooner than the quiet time): it runs on.
    restored.send({ type: 'resume' });
    expect(scheduled(restored)).toBe(1);
    await vi.advanceTimersByTimeAsync(9);
    expect(h.commits).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(5);
    expect(h.commits).toHaveLength(2);
    expect(h.commits[1].send).toMatchObject({ id: 'out_evt_owed_burst', replyTo: 'evt_owed' });
    expect(h.commits[1].next.owed).toEqual([]);
    expect(restored.getSnapshot().value).toBe('idle');
    // Nothing owed any more: a `resume` changes nothing.
    restored.send({ type: 'resume' });
    expect(restored.getSnapshot().value).toBe('idle');
    expect(scheduled(restored)).toBe(0);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.commits).toHaveLength(2);
  });

  it('resumes an answer owed in a snapshot stored before `owing` existed (resting in `idle`)', async () => {
    vi.useFakeTimers();
    const h = harness(DIRECT_KEY);
    const restored = await restoredOwing(h, 25, 'evt_old_owed', 'idle');
    expect(restored.getSnapshot().value).toBe('idle');
    restored.send({ type: 'resume' });
    expect(restored.getSnapshot().value).toBe('owing');
    await vi.advanceTimersByTimeAsync(25);
    expect(h.commits[1].send).toMatchObject({ id: 'out_evt_old_owed_burst' });
    expect(restored.getSnapshot().value).toBe('idle');
  });
});

describe('upgradeSnapshot', () => {
  it('turns the single owed message of older snapshots into a list', async () => {
    expect(upgradeSnapshot({ context: { owed: null } })).toEqual({ context: { owed: [] } });
    expect(upgradeSnapshot({ context: { owed: { eventId: 'e' } } })).toEqual({ context: { owed: [{ eventId: 'e' }] } });
    expect(upgradeSnapshot({ context: { owed: [] } })).toEqual({ context: { owed: [] } });
    // A direct conversation's stored message ids go (only a group reads them); a group keeps its.
    expect(upgradeSnapshot({ context: { owed: [], kind: 'direct', ourMessageIds: ['out_a'] } })).toEqual({
      context: { owed: [], kind: 'direct', ourMessageIds: [] },
    });
    expect(upgradeSnapshot({ context: { owed: [], kind: 'group', ourMessageIds: ['out_a'] } })).toEqual({
      context: { owed: [], kind: 'group', ourMessageIds: ['out_a'] },
    });
  });

  it('restores a snapshot stored resting in `owing` (no timer after a restore) in `owed`, where `resume` answers', async () => {
    vi.useFakeTimers();
    const h = harness(DIRECT_KEY);
    const restored = await restoredOwing(h, 26, 'evt_stored_owing', 'owing');
    expect(restored.getSnapshot().value).toBe('owed');
    restored.send({ type: 'resume' });
    await vi.advanceTimersByTimeAsync(25);
    expect(h.commits[1].send).toMatchObject({ id: 'out_evt_stored_owing_burst' });
  });
});

describe('one machine for every conversation', () => {
  it('runs each conversation with the steps of its own actor', async () => {
    const commitsOf = new Map<AnyActorRef, ConversationCommit[]>();
    const machine = conversationMachine.provide({
      actions: {
        work: workWith((conversation) => {
          const commits = commitsOf.get(conversation);
          if (!commits) throw new Error('no steps for this actor');
          return {
            moderate: async () => clean,
            describeAttachments: async () => ({}),
            recall: async () => noRecall,
            lookAhead: () => {},
            think: async (context) => `reply in ${context.key}`,
            async commit(batch) {
              commits.push(...batch);
              return true;
            },
          };
        }),
      },
    });
    const keys = [DIRECT_KEY, `user_${BOB}_persona_sage`, GROUP_KEY];
    const actors = keys.map((key) => {
      const actor = createActor(machine, { input: { key } });
      commitsOf.set(actor, []);
      return actor.start();
    });
    actors.forEach((actor, i) => {
      actor.send(inbound({ sender: i === 1 ? BOB : ALICE, chatGuid: i === 2 ? GUID : undefined, text: 'hi Sage' }));
    });
    for (const actor of actors) await settled(actor, commitsOf.get(actor) as ConversationCommit[], 1);
    actors.forEach((actor, i) => {
      const [commit] = commitsOf.get(actor) as ConversationCommit[];
      expect(commit.key).toBe(keys[i]);
      expect(commit.send?.text).toBe(`reply in ${keys[i]}`);
    });
  });
});
