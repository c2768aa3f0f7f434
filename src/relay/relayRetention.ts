/**
 * Relay retention (README "Conversations and the relay"): the raw events of `relay_inbox` keep
 * people's texts and photos only as long as they are useful. Once processed, an event's
 * attachment data is removed after INBOX_ATTACHMENT_RETENTION_MINUTES and its whole payload
 * after INBOX_RETENTION_HOURS (the row and its event id stay: the idempotency key), and
 * acknowledged sends are deleted from `relay_outbox` after OUTBOX_RETENTION_HOURS. Runs every
 * RELAY_RETENTION_EVERY_MS, one run at a time. Pending and failed events keep their payload:
 * they are still to be processed.
 */
import type { Logger } from '../observability/logger.ts';
import type { RelayRepository } from '../store/relayRepository.ts';

export interface RelayRetentionOptions {
  inboxRetentionHours: number;
  attachmentRetentionMinutes: number;
  outboxRetentionHours: number;
  retentionEveryMs: number;
}

const HOUR_MS = 3_600_000;

/** Starts the retention timer; returns its stop function. */
export function startRelayRetention(repo: RelayRepository, options: RelayRetentionOptions, log: Logger): () => void {
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    const now = Date.now();
    try {
      const { stripped, pruned } = await repo.applyRetention({
        attachments: new Date(now - options.attachmentRetentionMinutes * 60_000),
        payloads: new Date(now - options.inboxRetentionHours * HOUR_MS),
        acked: new Date(now - options.outboxRetentionHours * HOUR_MS),
      });
      if (stripped || pruned) log.info({ stripped, pruned }, 'applied relay retention');
    } catch (err) {
      log.warn({ err }, 'relay retention failed; it runs again at the next interval');
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void run(), options.retentionEveryMs);
  timer.unref();
  return () => clearInterval(timer);
}
