/**
 * Delivers Sage's replies to the relay: `send` frames in outbox order (so in order per chat)
 * to the most recently connected relay socket, until each is acknowledged. On (re)connect
 * every unacknowledged send is delivered again from the database, in order; sends not
 * acknowledged within RELAY_REDELIVER_MS are delivered again.
 */
import type { SendFrame } from '../../actors/conversation.machine.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { GroupCommitter } from '../store/GroupCommitter.ts';
import type { RelayRepository } from '../store/relayRepository.ts';

export const OUTBOX_ACK = 'outboxAck';

/** A relay socket as the dispatcher sees it. */
export interface RelayLink {
  readonly id: string;
  send(frame: SendFrame): void;
}

interface InFlight {
  frame: SendFrame;
  sentAt: number;
}

export class OutboxDispatcher {
  /** Open relay sockets, oldest first; the last one receives the sends. */
  private links: RelayLink[] = [];
  /** Sent (or to send) and not acknowledged, in delivery order. */
  private readonly inFlight = new Map<string, InFlight>();
  /** While a newly connected relay is being caught up from the database, new sends wait. */
  private catchingUp = false;
  /** Bumped by every catch-up, so only the latest one finishes it. */
  private generation = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly repo: RelayRepository,
    private readonly committer: GroupCommitter,
    private readonly redeliverMs: number,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    committer.register<string>(OUTBOX_ACK, repo.writeAcks);
    this.timer = setInterval(() => this.redeliverStale(), Math.max(100, Math.min(5000, redeliverMs / 2)));
    this.timer.unref();
  }

  private get current(): RelayLink | undefined {
    return this.links[this.links.length - 1];
  }

  /** A relay connected: it becomes the receiver and gets every unacknowledged send, in order. */
  attach(link: RelayLink): void {
    this.links.push(link);
    void this.catchUp(link);
  }

  detach(link: RelayLink): void {
    this.links = this.links.filter((l) => l !== link);
    // The next most recent relay (if any) may have missed sends that went to this one.
    const next = this.current;
    if (next) void this.catchUp(next);
  }

  private async catchUp(link: RelayLink): Promise<void> {
    const generation = ++this.generation;
    this.catchingUp = true;
    let after = 0;
    try {
      for (;;) {
        const rows = await this.repo.pendingOutbox(after, 500);
        if (generation !== this.generation) return;
        for (const { seq, frame } of rows) {
          after = seq;
          this.inFlight.delete(frame.id);
          this.inFlight.set(frame.id, { frame, sentAt: Date.now() });
          link.send(frame);
        }
        if (rows.length < 500) break;
      }
    } catch (err) {
      this.log.warn({ err }, 'could not read the outbox; unacknowledged sends wait for the next redelivery');
    }
    if (generation !== this.generation) return;
    // In the same turn as the flag drops: sends committed while we read, which the database
    // did not return yet, follow in order.
    this.catchingUp = false;
    for (const entry of this.inFlight.values()) if (entry.sentAt === 0) this.push(link, entry);
  }

  private push(link: RelayLink, entry: InFlight): void {
    entry.sentAt = Date.now();
    link.send(entry.frame);
  }

  /** A reply was committed: deliver it now (or once the current relay is caught up). */
  enqueue(frame: SendFrame): void {
    const entry: InFlight = { frame, sentAt: 0 };
    this.inFlight.set(frame.id, entry);
    const link = this.current;
    if (link && !this.catchingUp) this.push(link, entry);
  }

  /** The relay acknowledged a send. Unknown or repeated ids are ignored. */
  ack(id: string): void {
    if (!this.inFlight.delete(id)) return;
    this.metrics.sendsDelivered.inc();
    this.committer.submit(OUTBOX_ACK, null, 0, id).catch((err) => {
      // Still pending in the database: it will be delivered again and acknowledged again.
      this.log.warn({ err, send: id }, 'could not record an acknowledgement');
    });
  }

  private redeliverStale(): void {
    const link = this.current;
    if (!link || this.catchingUp) return;
    const now = Date.now();
    for (const entry of this.inFlight.values()) {
      if (entry.sentAt === 0 || now - entry.sentAt >= this.redeliverMs) this.push(link, entry);
    }
  }

  /** Unacknowledged sends held in memory. */
  pending(): number {
    return this.inFlight.size;
  }

  close(): void {
    clearInterval(this.timer);
  }
}
