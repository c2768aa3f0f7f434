/**
 * One process running the OAuth refresh job against DATABASE_URL, as a server would
 * (`createIntegrations`), for the multi-process test: it prints `ready`, waits for `go` on
 * stdin (so that every process starts at once), runs the job until a run claims nothing, and
 * prints its tally as one JSON line.
 */
import { createInterface } from 'node:readline';
import { loadConfig } from '../../src/config.ts';
import { createIntegrations } from '../../src/integrations/createIntegrations.ts';
import type { RefreshTally } from '../../src/integrations/RefreshJob.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createMetrics } from '../../src/observability/metrics.ts';
import { createPool } from '../../src/store/pool.ts';

const config = loadConfig();
const log = createLogger({ level: 'warn', format: 'json' });
const pool = createPool(config.databaseUrl as string, config.pg, log);
const metrics = createMetrics({
  pool: () => ({ total: 0, idle: 0, waiting: 0 }),
  actors: () => ({}),
  sockets: () => ({}),
});
const { job } = await createIntegrations({ config, pool, metrics, log, publicUrl: () => 'http://127.0.0.1:9' });
if (!job) throw new Error('VAULT_KEYS is required');
await pool.query('SELECT 1');
process.stdout.write('ready\n');
await new Promise<void>((resolve) => {
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line.trim() === 'go') {
      rl.close();
      resolve();
    }
  });
});
const total: RefreshTally = { claimed: 0, refreshed: 0, failed: 0, refresh_failed: 0, revoked: 0, lost: 0 };
for (;;) {
  const tally = await job.runOnce();
  for (const k of Object.keys(total) as (keyof RefreshTally)[]) total[k] += tally[k];
  if (tally.claimed === 0) break;
}
await pool.end();
process.stdout.write(`${JSON.stringify(total)}\n`, () => process.exit(0));
