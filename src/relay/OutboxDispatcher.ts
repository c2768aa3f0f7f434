/**
 * Delivers Sage's replies to the relay: `send` frames in outbox order (so in order per chat)
 * to the most recently connected relay socket, until each is acknowledged.
 *
 * Delivery is windowed, so a relay returning to a large backlog is fed at the pace it takes
 * them instead of being dropped as a slow consumer: at most `window` sends are in flight
 * (sent, not acknowledged), and none is written while the socket holds more than
 * `highWaterBytes` unwritten (its `drain` resumes delivery). Memory holds only those in-flight
 * sends and a bounded queue of fresh replies; everything else waits in `relay_outbox` and is
 * read page by page in outbox order ("backlog" mode). On every change of receiving relay the
 * in-memory state is dropped and every unacknowledged send is read again from the database;
 * sends not acknowledged within RELAY_REDELIVER_MS are delivered again.
 *
 * In a cluster (`RelayReceiver.shared`) one process delivers, the receiver, and replies are
 * committed on every process: the receiver delivers only from the database, passing over the
 * unacknowledged sends in outbox order whenever a process rings it (a reply was committed) and
 * at every redelivery tick (a lost doorbell only delays). Each pass starts from the oldest
 * unacknowledged send: a reply committed on another process may become visible after a later
 * one, and a pass that went on from where the previous one stopped would skip it; a chat's
 * replies, committed one after another by its one owner, still go out in order. The other
 * processes deliver nothing; their dispatchers only ring.
 */
import type { SendFrame } from '../../actors/conversationTypes.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { GroupCommitter } from '../store/GroupCommitter.ts';
import type { RelayRepository } from '../store/relayRepository.ts';
import { localRelayReceiver, type RelayReceiver } from './RelayReceiver.ts';

export const OUTBOX_ACK = 'outboxAck';

/** A relay socket as the dispatcher sees it. */
export interface RelayLink {
  readonly id: string;
  send(frame: SendFrame): void;
  /** Bytes written to the socket and not yet sent on the wire. */
  buffered(): number;
}

export interface OutboxOptions {
  /** RELAY_REDELIVER_MS: an unacknowledged send is delivered again after this (ms). */
  redeliverMs: number;
  /** RELAY_SEND_WINDOW: sends in flight (sent, not acknowledged) at most. */
  window: number;
  /** Bytes buffered on the socket above which nothing more is written until it drains. */
  highWaterBytes: number;
}

interface InFlight {
  frame: SendFrame;
  sentAt: number;
  /** Its outbox row, when it was read from the database (0: a fresh reply). */
  seq: number;
}

/** Where a connection id (`<process id>.<n in base 36>`) falls in its process's order of upgrades. */
function arrival(conn: string): number {
  return Number.parseInt(conn.slice(conn.lastIndexOf('.') + 1), 36);
}

/** Rows read from the outbox at most per query. */
const PAGE = 500;

export class OutboxDispatcher {
  /** Open relay sockets, oldest first; the last one receives the sends. */
  private links: RelayLink[] = [];
  /** Sent to the current relay and not acknowledged, in delivery order (≤ window). */
  private readonly inFlight = new Map<string, InFlight>();
  /** Fresh replies not sent yet because the window or the socket is full (≤ window). */
  private queue: SendFrame[] = [];
  /** Some unacknowledged sends are only in the database: deliver from there, page by page. */
  private backlog = true;
  /** Outbox seq up to which the current pass over the database has delivered. */
  private cursor = 0;
  /** Fresh replies were dropped during a pass (the queue was full): pass over the database again. */
  private overflow = false;
  private reading = false;
  /** Bumped whenever the receiving relay changes, so a read for an earlier one is discarded. */
  private generation = 0;
  /**
   * Acknowledged sends by when their acknowledgement was committed (`performance.now()`,
   * Infinity until then), kept while a read begun before that may still find them pending.
   */
  private readonly acking = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly repo: RelayRepository,
    private readonly committer: GroupCommitter,
    private readonly options: OutboxOptions,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly receiver: RelayReceiver = localRelayReceiver,
  ) {
    // In the shared lane: with conversation commits, one transaction (and one commit) for both;
    // alone, one statement.
    committer.register<string>(OUTBOX_ACK, repo.writeAcks, {
      oneStatement: true,
      sizeOf: (id) => Buffer.byteLength(id) + 2,
    });
    receiver.listen({ changed: () => this.restart(), rung: () => this.rung() });
    const every = Math.max(100, Math.min(5000, options.redeliverMs / 2));
    this.timer = setInterval(() => this.redeliverStale(), every);
    this.timer.unref();
  }

  /** The relay socket that receives: this process's newest, while this process is the receiver. */
  private get current(): RelayLink | undefined {
    return this.receiver.receiving() ? this.links[this.links.length - 1] : undefined;
  }

  /**
   * A relay connected: it becomes the receiver and gets every unacknowledged send, in order.
   * "Most recently connected" is by when its upgrade arrived (connection ids count up): the
   * order in which uWebSockets.js opens sockets upgraded asynchronously need not be the same.
   */
  attach(link: RelayLink): void {
    const after = this.links.findIndex((l) => arrival(l.id) > arrival(link.id));
    if (after < 0) this.links.push(link);
    else this.links.splice(after, 0, link);
    this.receiver.connected(this.links.length);
    this.restart();
  }

  detach(link: RelayLink): void {
    const wasCurrent = link === this.current;
    this.links = this.links.filter((l) => l !== link);
    this.receiver.disconnected(this.links.length);
    // The next most recent relay (if any) may have missed sends that went to this one.
    if (wasCurrent) this.restart();
  }

  /** The socket wrote out what it had buffered: deliver more. */
  drained(link: RelayLink): void {
    if (link === this.current) this.pump();
  }

  /** A reply was committed: deliver it now, or once there is room. */
  enqueue(frame: SendFrame): void {
    if (this.receiver.shared) {
      // The receiver, here or elsewhere, reads it from the database.
      this.receiver.ring();
      return;
    }
    if (!this.current) {
      // It is in the database: the next relay to connect reads it from there.
      this.enterBacklog();
      return;
    }
    if (this.backlog) {
      // The pass in progress may have read past it already; keep it for the pass's end.
      if (this.overflow) return;
      if (this.queue.length < this.options.window) this.queue.push(frame);
      else {
        this.overflow = true;
        this.queue = [];
      }
      return;
    }
    this.queue.push(frame);
    if (this.queue.length > this.options.window) this.enterBacklog();
    this.pump();
  }

  /** The relay acknowledged a send. Unknown or repeated ids are ignored. */
  ack(id: string): void {
    if (!this.inFlight.delete(id)) return;
    this.metrics.sendsDelivered.inc();
    this.acking.set(id, Number.POSITIVE_INFINITY);
    this.committer.submit(OUTBOX_ACK, null, 0, id).then(
      () => {
        if (this.reading) this.acking.set(id, performance.now());
        else this.acking.delete(id);
      },
      (err) => {
        // Still pending in the database: it will be delivered again and acknowledged again.
        this.acking.delete(id);
        this.log.warn({ err, send: id }, 'could not record an acknowledgement');
      },
    );
    this.pump();
  }

  /** Sends held in memory (in flight or queued): at most twice RELAY_SEND_WINDOW. */
  pending(): number {
    return this.inFlight.size + this.queue.length;
  }

  close(): void {
    clearInterval(this.timer);
    this.receiver.close();
  }

  /** Drops what memory holds (all of it is in the database) and delivers from the database. */
  private restart(): void {
    this.generation++;
    this.inFlight.clear();
    this.reading = false;
    this.enterBacklog();
    this.pump();
  }

  private enterBacklog(): void {
    this.backlog = true;
    this.overflow = false;
    this.queue = [];
    this.cursor = 0;
  }

  private room(link: RelayLink): boolean {
    return this.inFlight.size < this.options.window && link.buffered() < this.options.highWaterBytes;
  }

  /** Replies may wait in the database that no pass has read (cluster mode): pass over it again. */
  private rung(): void {
    if (!this.current) return;
    // A pass not yet begun will read them; one under way may have read past them.
    if (this.backlog) this.overflow ||= this.reading || this.cursor > 0;
    else this.enterBacklog();
    this.pump();
  }

  private sendNow(link: RelayLink, frame: SendFrame, seq = 0): void {
    this.inFlight.delete(frame.id);
    this.inFlight.set(frame.id, { frame, sentAt: Date.now(), seq });
    link.send(frame);
  }

  /** Sends what there is room for: queued replies, or the next page of the database. */
  private pump(): void {
    const link = this.current;
    if (!link) return;
    while (!this.backlog && this.queue.length && this.room(link)) this.sendNow(link, this.queue.shift() as SendFrame);
    if (this.backlog && !this.reading && this.room(link)) void this.readPage(link);
  }

  private async readPage(link: RelayLink): Promise<void> {
    const generation = this.generation;
    this.reading = true;
    // Rows in flight past the cursor come back too (skipped): read room for them as well.
    const want = Math.min(PAGE, this.options.window - this.inFlight.size + this.inFlightAfter(this.cursor));
    const startedAt = performance.now();
    let rows: { seq: number; frame: SendFrame }[];
    try {
      rows = await this.repo.pendingOutbox(this.cursor, want);
    } catch (err) {
      this.forgetAcked(startedAt);
      if (generation === this.generation) this.reading = false;
      this.log.warn({ err }, 'could not read the outbox; unacknowledged sends wait for the next redelivery');
      return;
    }
    this.forgetAcked(startedAt);
    if (generation !== this.generation) return;
    this.reading = false;
    let read = 0;
    for (const { seq, frame } of rows) {
      if (!this.inFlight.has(frame.id) && !this.acking.has(frame.id)) {
        // No room left: the rest of the page is read again later, from the cursor.
        if (!this.room(link)) break;
        this.sendNow(link, frame, seq);
        // A reply committed during the pass waits in the queue for its end; this pass sent it,
        // and once acknowledged it is no longer in flight, so the end would send it again.
        if (this.queue.length) this.queue = this.queue.filter((f) => f.id !== frame.id);
      }
      this.cursor = seq;
      read++;
    }
    if (read === rows.length && rows.length < want) this.endPass();
    this.pump();
  }

  private inFlightAfter(seq: number): number {
    let n = 0;
    for (const entry of this.inFlight.values()) if (entry.seq > seq) n++;
    return n;
  }

  /** Acknowledgements committed before `readStartedAt`: reads from then on never find them pending. */
  private forgetAcked(readStartedAt: number): void {
    for (const [id, at] of this.acking) if (at < readStartedAt) this.acking.delete(id);
  }

  /** A pass over the database reached its end. */
  private endPass(): void {
    if (this.overflow) {
      // Fresh replies were dropped meanwhile: another pass finds them.
      this.overflow = false;
      this.cursor = 0;
      return;
    }
    // Replies committed during the pass that it did not read follow, in commit order.
    this.backlog = false;
    this.cursor = 0;
    this.queue = this.queue.filter((f) => !this.inFlight.has(f.id));
  }

  private redeliverStale(): void {
    const link = this.current;
    if (!link) return;
    const now = Date.now();
    for (const entry of this.inFlight.values()) {
      if (link.buffered() >= this.options.highWaterBytes) break;
      if (now - entry.sentAt < this.options.redeliverMs) continue;
      entry.sentAt = now;
      link.send(entry.frame);
    }
    // In a cluster this is also the periodic pass that finds replies whose doorbell was lost.
    if (this.receiver.shared) this.rung();
    else this.pump();
  }
}
