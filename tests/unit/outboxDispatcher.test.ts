import { describe, expect, it } from 'vitest';
import type { SendFrame } from '../../actors/conversationTypes.ts';
import { createLogger } from '../../src/observability/logger.ts';
import type { Metrics } from '../../src/observability/metrics.ts';
import { OutboxDispatcher, type RelayLink } from '../../src/relay/OutboxDispatcher.ts';
import type { GroupCommitter } from '../../src/store/GroupCommitter.ts';
import type { RelayRepository } from '../../src/store/relayRepository.ts';

const frame = (n: number): SendFrame => ({
  type: 'send',
  id: `out_e${n}`,
  replyTo: `e${n}`,
  chat: { guid: `chat${n}`, group: false },
  text: `reply ${n}`,
});

/** The outbox as the dispatcher reads it, each read answered when the test says so. */
function fakeOutbox() {
  const rows: { seq: number; frame: SendFrame; acked: boolean }[] = [];
  const reads: (() => void)[] = [];
  const repo = {
    writeAcks: async () => {},
    pendingOutbox: (after: number, limit: number) =>
      new Promise<{ seq: number; frame: SendFrame }[]>((resolve) => {
        reads.push(() =>
          resolve(
            rows
              .filter((r) => !r.acked && r.seq > after)
              .slice(0, limit)
              .map(({ seq, frame: f }) => ({ seq, frame: f })),
          ),
        );
      }),
  } as unknown as RelayRepository;
  const committer = {
    register: () => {},
    submit: async (_kind: string, _key: null, _epoch: number, id: string) => {
      const row = rows.find((r) => r.frame.id === id);
      if (row) row.acked = true;
    },
  } as unknown as GroupCommitter;
  /** Answers the oldest read waiting, and lets the dispatcher act on it. */
  const answerRead = async () => {
    expect(reads.length).toBeGreaterThan(0);
    (reads.shift() as () => void)();
    for (let i = 0; i < 5; i++) await Promise.resolve();
  };
  return { rows, reads, repo, committer, answerRead };
}

describe('OutboxDispatcher', () => {
  it('sends a reply committed during a pass over the backlog once, even when the pass sent it and it was acknowledged before the pass ended', async () => {
    const outbox = fakeOutbox();
    const metrics = { sendsDelivered: { inc: () => {} } } as unknown as Metrics;
    const dispatcher = new OutboxDispatcher(
      outbox.repo,
      outbox.committer,
      { redeliverMs: 60_000, window: 2, highWaterBytes: 1 << 20 },
      metrics,
      createLogger({ level: 'silent', format: 'json' }),
    );
    const sent: SendFrame[] = [];
    const link: RelayLink = { id: 'p.1', send: (f) => sent.push(f), buffered: () => 0 };
    try {
      // A relay connects to a backlog of one reply: a pass begins with a read.
      outbox.rows.push({ seq: 1, frame: frame(1), acked: false });
      dispatcher.attach(link);
      // Meanwhile a second reply is committed; the pass is under way, so it waits in the queue.
      outbox.rows.push({ seq: 2, frame: frame(2), acked: false });
      dispatcher.enqueue(frame(2));
      // The read finds both (a full page of the window): both are sent.
      await outbox.answerRead();
      expect(sent.map((f) => f.id)).toEqual(['out_e1', 'out_e2']);
      // Both are acknowledged before the pass ends; the pass reads on, finds nothing, and ends.
      dispatcher.ack('out_e1');
      dispatcher.ack('out_e2');
      for (let i = 0; i < 5; i++) await Promise.resolve();
      await outbox.answerRead();
      expect(sent.map((f) => f.id)).toEqual(['out_e1', 'out_e2']);
      // A reply after the pass goes out at once, once.
      outbox.rows.push({ seq: 3, frame: frame(3), acked: false });
      dispatcher.enqueue(frame(3));
      expect(sent.map((f) => f.id)).toEqual(['out_e1', 'out_e2', 'out_e3']);
    } finally {
      dispatcher.close();
    }
  });
});
