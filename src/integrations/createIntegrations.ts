/**
 * Integrations of one process: the vault's keys (VAULT_KEYS, or the embedded default's file
 * under DATA_DIR), the configured providers, the vault and its refresh job. Without keys
 * (DATABASE_URL set and no VAULT_KEYS) integrations are off: `vault` is undefined, the routes
 * answer 501 `integrations_disabled`, and the start line says so.
 */
import type { SendFrame } from '../../actors/conversationTypes.ts';
import type { Config } from '../config.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import { OAuthRepository } from '../store/oauthRepository.ts';
import type { Pool } from '../store/pool.ts';
import { OAuthProvider } from './OAuthProvider.ts';
import { RefreshJob } from './RefreshJob.ts';
import { TokenVault } from './TokenVault.ts';
import { resolveVaultKeys, TokenCipher, type VaultKeySource } from './vaultKeys.ts';

export interface Integrations {
  /** Undefined when integrations are off. */
  vault: TokenVault | undefined;
  job: RefreshJob | undefined;
  keySource: VaultKeySource;
  /** For the start line: `off (…)` or the providers. */
  summary: string;
  /** Circuit breaker states by dependency (`oauth:<name>`). */
  breakers(): Record<string, number>;
  start(): void;
  stop(): Promise<void>;
}

export interface IntegrationDeps {
  config: Readonly<Config>;
  pool: Pool;
  metrics: Metrics;
  log: Logger;
  publicUrl: () => string;
  notify?: (frame: SendFrame) => void;
}

/** The providers of `config`, each with its own breaker. */
export function createProviders(config: Readonly<Config>, log: Logger): Map<string, OAuthProvider> {
  const v = config.vault;
  const tuning = {
    timeoutMs: v.timeoutMs,
    attempts: v.attempts,
    breakerFailures: v.breakerFailures,
    breakerHalfOpenMs: v.breakerHalfOpenMs,
  };
  return new Map(config.oauthProviders.map((p) => [p.name, new OAuthProvider(p, tuning, log)]));
}

export async function createIntegrations(deps: IntegrationDeps): Promise<Integrations> {
  const { config, pool, metrics, log } = deps;
  const { keys, source } = await resolveVaultKeys(config);
  if (keys.length === 0) {
    return {
      vault: undefined,
      job: undefined,
      keySource: source,
      summary: 'off (DATABASE_URL is set and VAULT_KEYS is not)',
      breakers: () => ({}),
      start() {},
      async stop() {},
    };
  }
  const providers = createProviders(config, log);
  const repo = new OAuthRepository(pool);
  const v = config.vault;
  const vault = new TokenVault({
    repo,
    cipher: new TokenCipher(keys),
    providers,
    options: { maxAttempts: v.maxAttempts, backoffMs: v.backoffMs, timeoutMs: v.timeoutMs, attempts: v.attempts },
    metrics,
    log,
    publicUrl: deps.publicUrl,
    notify: deps.notify,
  });
  const job = new RefreshJob(
    vault,
    repo,
    { intervalMs: v.refreshIntervalMs, aheadS: v.refreshAheadS, batch: v.batch },
    log,
  );
  const names = [...providers.keys()];
  return {
    vault,
    job,
    keySource: source,
    summary: `on (keys from ${source}; providers: ${names.length ? names.join(', ') : 'none configured'})`,
    breakers: () => Object.fromEntries([...providers].map(([name, p]) => [`oauth:${name}`, p.breakerState()])),
    start: () => job.start(),
    stop: () => job.stop(),
  };
}
