/**
 * The OAuth vault and its refresh job in the test process, on a test database, as the server
 * assembles them (`createIntegrations`), logging into `lines`; and integrations seeded
 * through the real connect flow or straight into the table.
 */
import { Writable } from 'node:stream';
import type { SendFrame } from '../../actors/conversationTypes.ts';
import { loadConfig } from '../../src/config.ts';
import { createIntegrations } from '../../src/integrations/createIntegrations.ts';
import type { RefreshJob } from '../../src/integrations/RefreshJob.ts';
import type { TokenVault } from '../../src/integrations/TokenVault.ts';
import { vaultContext } from '../../src/integrations/TokenVault.ts';
import { parseVaultKeys, TokenCipher } from '../../src/integrations/vaultKeys.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createMetrics, type Metrics } from '../../src/observability/metrics.ts';
import { OAuthRepository } from '../../src/store/oauthRepository.ts';
import { createPool, type Pool } from '../../src/store/pool.ts';
import { onCleanup } from './cleanup.ts';
import { authorize } from './fakeOAuthProvider.ts';
import { baseEnv } from './server.ts';

export interface TestVault {
  vault: TokenVault;
  job: RefreshJob;
  repo: OAuthRepository;
  pool: Pool;
  metrics: Metrics;
  lines: string[];
  /** Notices the vault handed to the relay's dispatcher. */
  notified: SendFrame[];
}

export async function createTestVault(databaseUrl: string, env: Record<string, string>): Promise<TestVault> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  const config = loadConfig(baseEnv(databaseUrl, { ...env, PG_POOL_MAX: '4' }));
  const log = createLogger({ level: 'debug', format: 'json', destination: sink });
  const pool = createPool(databaseUrl, config.pg, log);
  const metrics = createMetrics({
    pool: () => ({ total: 0, idle: 0, waiting: 0 }),
    actors: () => ({}),
    sockets: () => ({}),
  });
  const notified: SendFrame[] = [];
  const integrations = await createIntegrations({
    config,
    pool,
    metrics,
    log,
    publicUrl: () => 'http://127.0.0.1:9',
    notify: (frame) => notified.push(frame),
  });
  if (!integrations.vault || !integrations.job) throw new Error('the test vault needs VAULT_KEYS');
  const { vault, job } = integrations;
  onCleanup(async () => {
    await job.stop();
    await pool.end();
  });
  return { vault, job, repo: new OAuthRepository(pool), pool, metrics, lines, notified };
}

/** Connects `user` to `provider` through the vault and the fake provider (the real flow, without HTTP). */
export async function connectThroughVault(t: TestVault, user: string, provider: string): Promise<void> {
  const callback = await authorize(await t.vault.connect(user, provider));
  await t.vault.callback(provider, callback.searchParams);
}

/**
 * Stores an integration straight into the table (encrypted under `vaultKeys`' first key),
 * expiring in `expiresInS` — for many rows at once.
 */
export async function seedIntegration(
  pool: Pool,
  vaultKeys: string,
  row: { user: string; provider: string; access: string; refresh: string; expiresInS: number },
): Promise<void> {
  const cipher = new TokenCipher(parseVaultKeys(vaultKeys));
  await new OAuthRepository(pool).connect(
    row.user,
    row.provider,
    {
      encAccess: await cipher.encrypt(row.access, vaultContext(row.user, row.provider, 'access')),
      encRefresh: await cipher.encrypt(row.refresh, vaultContext(row.user, row.provider, 'refresh')),
      kid: cipher.currentKid,
    },
    row.expiresInS,
    ['calendar.read'],
  );
}
