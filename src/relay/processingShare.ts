/**
 * How many conversations may process relay events at once, adjusted every `SHARE_EVERY_MS` so
 * that acknowledging new events keeps its pace while processing runs behind.
 *
 * Ingest and processing share the event loop, the group commit and PostgreSQL. While events
 * wait, every conversation processing adds reads and a six-table commit ahead of the next
 * acknowledgement: the acknowledgement rate falls to the processing rate, and a relay's own
 * queue grows instead of ours (which is durable and bounded). So while events wait and requests
 * keep arriving, and either storing an event takes longer than `SLOW_MS` on average or the event
 * loop was busier than `BUSY` of the period, the window halves, down to `max / 32`: processing
 * goes on, at a smaller share. Both signals are needed: storing slows when processing's commits
 * hold up PostgreSQL, the loop fills when processing takes the core (with the inbox on a commit
 * lane of its own, storing stays quick while the acknowledgements themselves wait for the core).
 * Once storing is quick again (under `QUICK_MS`) and the loop has room (under `CALM`), it
 * doubles back, up to `max`; when no request came in the last period it is `max` at once. With
 * no backlog nothing is limited: the window is `max`.
 */

/** The mean time to store an event (ms) above which processing gives way to ingest. */
export const SLOW_MS = 20;
/** The mean time to store an event (ms) below which processing takes its full window again. */
export const QUICK_MS = 8;
/** The share of a period the event loop was busy (0–1) above which processing gives way to ingest. */
export const BUSY = 0.9;
/** The share below which processing takes its full window again. */
export const CALM = 0.75;
/** How often the window is adjusted (ms). */
export const SHARE_EVERY_MS = 250;

export interface ShareInput {
  /** The window now. */
  limit: number;
  /** RELAY_PROCESSING_WINDOW: the most it may be. */
  max: number;
  /** Mean time (ms) from an ingest request's storing to its commit over the last period. */
  storeMs: number;
  /** The share of the last period the event loop was busy (its utilization, 0–1). */
  busy: number;
  /** Ingest requests that stored events in the last period. */
  requests: number;
  /** Events waiting for their turn. */
  waiting: number;
}

/**
 * The events a conversation is handed at once (RELAY_BATCH_EVENTS, `most`) shrink with the
 * window: a batch of sixteen processes sixteen events, so a window shrunk to give ingest the
 * core, still handing out whole batches, would take back most of what it gave (each batch is
 * cheaper per event, but far more work per conversation slot). Whole batches again once the
 * window is whole: when requests stop, the backlog is worked off in batches.
 */
export function batchFor(most: number, limit: number, max: number): number {
  return Math.max(1, Math.floor((most * limit) / max));
}

/** The window for the next period. */
export function nextWindow({ limit, max, storeMs, busy, requests, waiting }: ShareInput): number {
  const min = Math.max(1, Math.ceil(max / 32));
  // Nothing to give way to: the whole window at once (doubling back from a 32nd took five
  // periods, with the core partly idle while a small window waited on its commits).
  if (waiting === 0 || requests === 0) return max;
  if (storeMs > SLOW_MS || busy > BUSY) return Math.max(min, Math.floor(limit / 2));
  if (storeMs < QUICK_MS && busy < CALM) return Math.min(max, limit * 2);
  return limit;
}
