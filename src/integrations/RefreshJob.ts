/**
 * The background refresh of OAuth tokens: every OAUTH_REFRESH_INTERVAL_S, each process claims
 * due tokens (expiring within OAUTH_REFRESH_AHEAD_S) in batches of OAUTH_REFRESH_BATCH with
 * `FOR UPDATE SKIP LOCKED`, refreshes them at their providers (behind each provider's timeout,
 * retry and breaker policy), and records each outcome under its claim. Any number of
 * processes may run it against one database: a token is claimed by one of them at a time.
 */
import type { Logger } from '../observability/logger.ts';
import type { OAuthRepository } from '../store/oauthRepository.ts';
import type { RefreshOutcome, TokenVault } from './TokenVault.ts';

export interface RefreshJobOptions {
  intervalMs: number;
  aheadS: number;
  batch: number;
}

export type RefreshTally = Record<RefreshOutcome, number> & { claimed: number };

export class RefreshJob {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<RefreshTally> | undefined;
  private stopped = false;

  constructor(
    private readonly vault: TokenVault,
    private readonly repo: OAuthRepository,
    private readonly options: RefreshJobOptions,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.runOnce().catch((err) =>
        this.log.warn({ err }, 'the OAuth refresh job failed; it runs again next interval'),
      );
    }, this.options.intervalMs);
    this.timer.unref();
  }

  /**
   * Stops the timer and waits for a run in progress, at most `waitMs`: a refresh still waiting
   * for its provider is abandoned (its claim lapses after its lease; another process or the
   * next start refreshes the token).
   */
  async stop(waitMs = 1000): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    if (!this.running) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.running.catch(() => undefined),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, waitMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** One run: claims and refreshes batches until fewer than a batch are due; returns the tally. */
  runOnce(): Promise<RefreshTally> {
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async drain(): Promise<RefreshTally> {
    const tally: RefreshTally = { claimed: 0, refreshed: 0, failed: 0, refresh_failed: 0, revoked: 0, lost: 0 };
    const { aheadS, batch } = this.options;
    while (!this.stopped) {
      const rows = await this.repo.claimDue(aheadS, batch, this.vault.leaseMs);
      tally.claimed += rows.length;
      const outcomes = await Promise.all(
        rows.map((row) =>
          this.vault.refreshClaimed(row).then(
            (r) => r.outcome,
            (err) => {
              this.log.warn({ err, provider: row.provider }, 'refreshing a token failed unexpectedly');
              return 'lost' as const;
            },
          ),
        ),
      );
      for (const o of outcomes) tally[o]++;
      if (rows.length < batch) break;
    }
    const pruned = await this.repo.pruneStates();
    if (tally.claimed || pruned) this.log.info({ ...tally, statesPruned: pruned }, 'OAuth refresh job ran');
    return tally;
  }
}
