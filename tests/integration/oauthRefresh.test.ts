/**
 * The OAuth vault's refresh (docs/protocol.md "Integrations", docs/architecture.md "The OAuth
 * vault"): before expiry by the job, on demand by `getAccessToken`, with refresh-token
 * rotation, at most one refresh per token at a time (within a process, across vault instances
 * and across three processes running the job on 200 due tokens), backoff then `refresh_failed`
 * for a provider that answers 500 or hangs, `invalid_grant` → `revoked` with exactly one
 * message to the user's direct chat; `archety vault rotate` with two keys and `archety
 * integrations`; no token in clear in a dump of the database or in the logs; and the due-token
 * query on the `expires_at` index at 100k rows.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { directKey } from '../../actors/conversationKey.ts';
import { IntegrationUnavailable } from '../../src/integrations/TokenVault.ts';
import { oauthQueries } from '../../src/store/oauthRepository.ts';
import { onCleanup } from '../helpers/cleanup.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/db.ts';
import { type FakeOAuthProvider, startFakeOAuthProvider } from '../helpers/fakeOAuthProvider.ts';
import { baseEnv, killProcess, repoRoot } from '../helpers/server.ts';
import { connectThroughVault, createTestVault, seedIntegration, type TestVault } from '../helpers/vault.ts';

const run = promisify(execFile);
const KEY1 = `k1:${Buffer.alloc(32, 1).toString('base64url')}`;
const KEY2 = `k2:${Buffer.alloc(32, 2).toString('base64url')}`;
const ALICE = '+15557200001';
const BOB = '+15557200002';
const MAX_ATTEMPTS = 3;

let db: TestDatabase;
let fake: FakeOAuthProvider;
/** Every vault of the file, for the log check at the end. */
const vaults: TestVault[] = [];

/** A vault (and job) of its own: its own breakers, its own pool. */
async function newVault(env: Record<string, string> = {}): Promise<TestVault> {
  const t = await createTestVault(db.url, {
    VAULT_KEYS: KEY1,
    OAUTH_REFRESH_AHEAD_S: '300',
    OAUTH_REFRESH_BACKOFF_S: '0.05',
    OAUTH_REFRESH_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
    OAUTH_TIMEOUT_MS: '200',
    OAUTH_ATTEMPTS: '1',
    ...fake.env('calendar'),
    ...env,
  });
  vaults.push(t);
  return t;
}

const rowOf = async (user: string) =>
  (
    await db.pool.query(
      `SELECT status, attempts, last_error, kid, enc_access, enc_refresh, next_attempt_at > now() AS "backingOff",
              extract(epoch FROM expires_at - now())::float8 AS "expiresInS"
         FROM oauth_tokens WHERE user_id = $1 AND provider = 'calendar'`,
      [user],
    )
  ).rows[0];
const expireIn = (user: string, seconds: number) =>
  db.pool.query(
    "UPDATE oauth_tokens SET expires_at = now() + make_interval(secs => $2) WHERE user_id = $1 AND provider = 'calendar'",
    [user, seconds],
  );
const metricsOf = (t: TestVault) => t.metrics.registry.metrics();

beforeAll(async () => {
  db = await createTestDatabase();
  fake = await startFakeOAuthProvider();
});

beforeEach(async () => {
  Object.assign(fake.behaviour, {
    tokenFailure: null,
    tokenFailureCount: undefined,
    expiresIn: 3600,
    rotate: true,
    refreshDelayMs: 0,
  });
  await db.pool.query('DELETE FROM oauth_tokens; DELETE FROM oauth_states; DELETE FROM relay_outbox');
});

describe('refreshing tokens', () => {
  it('refreshes a token due within OAUTH_REFRESH_AHEAD_S before it expires, and rotates its refresh token', async () => {
    const t = await newVault();
    fake.behaviour.expiresIn = 120; // inside the 300 s ahead: due at once
    await connectThroughVault(t, ALICE, 'calendar');
    fake.behaviour.expiresIn = 3600;
    const firstRefresh = fake.issued.filter((x) => x.startsWith('rt_')).at(-1) as string;

    expect(await t.job.runOnce()).toMatchObject({ claimed: 1, refreshed: 1 });
    expect(fake.refreshesByToken.get(firstRefresh)).toBe(1);
    expect((await rowOf(ALICE)).expiresInS).toBeGreaterThan(3500);
    // Not due any more: the next run claims nothing.
    expect(await t.job.runOnce()).toMatchObject({ claimed: 0 });

    // The rotated refresh token replaced the old one (which the provider no longer takes).
    const secondRefresh = fake.issued.filter((x) => x.startsWith('rt_')).at(-1) as string;
    await expireIn(ALICE, 10);
    expect(await t.job.runOnce()).toMatchObject({ refreshed: 1 });
    expect(fake.refreshesByToken.get(secondRefresh)).toBe(1);
    expect(fake.refreshesByToken.get(firstRefresh)).toBe(1);
    expect(await t.vault.getAccessToken(ALICE, 'calendar')).toBe(fake.issued.filter((x) => x.startsWith('at_')).at(-1));
    expect(await metricsOf(t)).toMatch(/archety_oauth_refreshes_total\{provider="calendar"\} 2/);
  });

  it('hands out the stored token while it is good for a minute more, and refreshes on demand when not', async () => {
    const t = await newVault();
    await connectThroughVault(t, ALICE, 'calendar');
    const requests = fake.refreshRequests;
    const stored = fake.issued.filter((x) => x.startsWith('at_')).at(-1);
    expect(await t.vault.getAccessToken(ALICE, 'calendar')).toBe(stored);
    expect(fake.refreshRequests).toBe(requests);

    await expireIn(ALICE, 30);
    const fresh = await t.vault.getAccessToken(ALICE, 'calendar');
    expect(fresh).not.toBe(stored);
    expect(fake.refreshRequests).toBe(requests + 1);
    expect((await rowOf(ALICE)).expiresInS).toBeGreaterThan(3500);
  });

  it('claims a row for an on-demand refresh only while its access token is stale', async () => {
    // A caller that read the row stale while another refreshed it claims it after that claim
    // is released: it must find nothing to claim, and read the fresh token instead.
    const t = await newVault();
    await connectThroughVault(t, ALICE, 'calendar');
    const claim = (marginS: number) =>
      db.pool.query(oauthQueries.claimOne, [ALICE, 'calendar', 5000, marginS]).then((r) => r.rowCount);
    expect(await claim(60)).toBe(0);
    await expireIn(ALICE, 30);
    expect(await claim(60)).toBe(1);
  });

  it('makes one refresh for many concurrent getAccessToken calls, across two vault instances', async () => {
    // The provider takes 150 ms: with the file's 200 ms timeout a busy machine timed the one
    // refresh out after the provider had rotated its token (then invalid_grant: revoked). Not
    // what this test is about; timeouts have their own tests below.
    const a = await newVault({ OAUTH_TIMEOUT_MS: '2000' });
    const b = await newVault({ OAUTH_TIMEOUT_MS: '2000' });
    await connectThroughVault(a, ALICE, 'calendar');
    await expireIn(ALICE, 5);
    fake.behaviour.refreshDelayMs = 150;
    const requests = fake.refreshRequests;
    const tokens = await Promise.all([
      ...Array.from({ length: 4 }, () => a.vault.getAccessToken(ALICE, 'calendar')),
      ...Array.from({ length: 4 }, () => b.vault.getAccessToken(ALICE, 'calendar')),
      a.job.runOnce().then(() => a.vault.getAccessToken(ALICE, 'calendar')),
    ]);
    expect(new Set(tokens).size).toBe(1);
    expect(fake.refreshRequests).toBe(requests + 1);
    expect(fake.maxConcurrentPerToken).toBe(1);
  });

  it.each([
    ['answers 500', 'error500', 'unavailable', /HTTP 500/],
    ['hangs', 'hang', 'timeout', /in time/],
    ['answers garbage', 'garbage', 'bad_response', /not usable/],
    ['gives no expires_in', 'noExpiresIn', 'bad_response', /without a positive expires_in/],
  ] as const)(
    'backs off when the provider %s, then marks the integration refresh_failed after OAUTH_REFRESH_MAX_ATTEMPTS',
    async (_what, failure, reason, lastError) => {
      const t = await newVault({ OAUTH_BREAKER_FAILURES: '100' });
      await connectThroughVault(t, BOB, 'calendar');
      await expireIn(BOB, 30);
      fake.behaviour.tokenFailure = failure;

      expect(await t.job.runOnce()).toMatchObject({ claimed: 1, failed: 1 });
      let row = await rowOf(BOB);
      expect(row).toMatchObject({ status: 'connected', attempts: 1, backingOff: true });
      expect(row.last_error).toMatch(lastError);
      // Backing off: an immediate run does not touch it.
      expect(await t.job.runOnce()).toMatchObject({ claimed: 0 });

      await vi.waitFor(
        async () => {
          await t.job.runOnce();
          expect((await rowOf(BOB)).status).toBe('refresh_failed');
        },
        { timeout: 5000, interval: 50 },
      );
      row = await rowOf(BOB);
      expect(row.attempts).toBe(MAX_ATTEMPTS);
      await expect(t.vault.getAccessToken(BOB, 'calendar')).rejects.toMatchObject({ reason: 'refresh_failed' });
      // refresh_failed is not retried by the job: the user reconnects.
      expect(await t.job.runOnce()).toMatchObject({ claimed: 0 });
      const metrics = await metricsOf(t);
      expect(metrics).toMatch(
        new RegExp(`archety_oauth_refresh_failures_total\\{provider="calendar",reason="${reason}"\\} ${MAX_ATTEMPTS}`),
      );
      expect(metrics).toMatch(/archety_oauth_refresh_failed_total\{provider="calendar"\} 1/);
    },
  );

  it('marks the integration revoked on invalid_grant and tells the user once, in their direct chat', async () => {
    const a = await newVault();
    const b = await newVault();
    await db.pool.query(
      `INSERT INTO conversations (key, kind, persona, chat_guid) VALUES ($1, 'direct', 'sage', 'iMessage;-;alice-direct')
       ON CONFLICT (key) DO NOTHING`,
      [directKey(ALICE, 'sage')],
    );
    await connectThroughVault(a, ALICE, 'calendar');
    await expireIn(ALICE, 30);
    fake.behaviour.tokenFailure = 'invalidGrant';

    const runs = await Promise.all([
      a.job.runOnce(),
      b.job.runOnce(),
      a.vault.getAccessToken(ALICE, 'calendar').catch((e) => e),
    ]);
    const last = runs[2];
    expect(last).toBeInstanceOf(IntegrationUnavailable);
    expect(last.reason).toBe('revoked');
    expect(await a.job.runOnce()).toMatchObject({ claimed: 0 });

    const row = await rowOf(ALICE);
    expect(row).toMatchObject({ status: 'revoked', enc_access: null, enc_refresh: null });
    const { rows: sends } = await db.pool.query('SELECT chat, conversation_key, payload FROM relay_outbox');
    expect(sends).toHaveLength(1);
    expect(sends[0].chat).toBe('iMessage;-;alice-direct');
    expect(sends[0].conversation_key).toBe(directKey(ALICE, 'sage'));
    expect(sends[0].payload).toMatchObject({
      type: 'send',
      chat: { guid: 'iMessage;-;alice-direct', group: false },
      to: ALICE,
      replyTo: 'integration:calendar',
    });
    expect(sends[0].payload.text).toContain('connect my calendar');
    expect([...a.notified, ...b.notified].map((f) => f.id)).toEqual([sends[0].payload.id]);
    const revocations = (await metricsOf(a)) + (await metricsOf(b));
    expect(revocations.match(/archety_oauth_revocations_total\{provider="calendar"\} 1/g)).toHaveLength(1);
    await expect(a.vault.getAccessToken(ALICE, 'calendar')).rejects.toMatchObject({ reason: 'revoked' });
    const list = await a.vault.list(ALICE);
    expect(list).toMatchObject([{ provider: 'calendar', status: 'revoked' }]);
  });
});

/** Starts `node --import tsx tests/helpers/refreshWorker.ts`; resolves once it is ready. */
async function startWorker(env: Record<string, string>): Promise<{ child: ChildProcess; result: Promise<string> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'tests/helpers/refreshWorker.ts')], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      TMPDIR: process.env.TMPDIR ?? '/tmp',
      ...env,
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  onCleanup(() => killProcess(child));
  let out = '';
  let err = '';
  child.stderr?.on('data', (c) => {
    err += c;
  });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (c) => {
      out += c;
      if (out.includes('ready\n')) resolve();
    });
    child.on('exit', () => reject(new Error(`worker exited before it was ready: ${err}`)));
  });
  const result = new Promise<string>((resolve, reject) =>
    child.on('exit', (code) =>
      code === 0 ? resolve(out.split('\n').filter(Boolean).at(-1) ?? '') : reject(new Error(err)),
    ),
  );
  await ready;
  return { child, result };
}

describe('the refresh job in three processes', () => {
  it('refreshes each of 200 tokens due at once exactly once', async () => {
    const minted: string[] = [];
    for (let i = 0; i < 200; i++) {
      const refresh = fake.mintRefreshToken();
      minted.push(refresh);
      await seedIntegration(db.pool, KEY1, {
        user: `+1555730${String(i).padStart(4, '0')}`,
        provider: 'calendar',
        access: `at_seed_${i}`,
        refresh,
        expiresInS: 60,
      });
    }
    fake.behaviour.refreshDelayMs = 5;
    const requests = fake.refreshRequests;
    const env = baseEnv(db.url, {
      VAULT_KEYS: KEY1,
      OAUTH_REFRESH_BATCH: '20',
      PG_POOL_MAX: '4',
      ...fake.env('calendar'),
    });
    const workers = await Promise.all([startWorker(env), startWorker(env), startWorker(env)]);
    for (const w of workers) w.child.stdin?.end('go\n');
    const tallies = (await Promise.all(workers.map((w) => w.result))).map((line) => JSON.parse(line));

    expect(tallies.reduce((n, t) => n + t.refreshed, 0)).toBe(200);
    expect(tallies.reduce((n, t) => n + t.claimed, 0)).toBe(200);
    expect(tallies.filter((t) => t.refreshed > 0).length).toBeGreaterThanOrEqual(2);
    // The provider's own count: one refresh per token, never two at once.
    expect(fake.refreshRequests - requests).toBe(200);
    for (const token of minted) expect(fake.refreshesByToken.get(token)).toBe(1);
    expect(fake.maxConcurrentPerToken).toBe(1);
    const { rows } = await db.pool.query(
      "SELECT count(*)::int AS n FROM oauth_tokens WHERE status = 'connected' AND expires_at > now() + interval '3000 seconds' AND attempts = 0",
    );
    expect(rows[0].n).toBe(200);
  });
});

/** Runs `archety <args>` against the test database; its stdout. */
async function archety(args: string[], env: Record<string, string> = {}): Promise<string> {
  const { stdout } = await run(process.execPath, [path.join(repoRoot, 'bin/archety.js'), ...args], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      TMPDIR: process.env.TMPDIR ?? '/tmp',
      ...baseEnv(db.url, env),
    },
  });
  return stdout;
}

describe('the commands', () => {
  it('archety vault rotate re-encrypts every row under the first key; the old key is then not needed', async () => {
    const t = await newVault();
    await connectThroughVault(t, ALICE, 'calendar');
    await connectThroughVault(t, BOB, 'calendar');
    // A pending authorization too (its PKCE verifier is encrypted).
    const pending = new URL(await t.vault.connect(ALICE, 'calendar'));
    const before = await db.pool.query('SELECT user_id, enc_access FROM oauth_tokens ORDER BY user_id');
    const accessBefore = await t.vault.getAccessToken(BOB, 'calendar');
    expect(before.rows.every((r) => r.enc_access.length > 0)).toBe(true);

    const out = await archety(['vault', 'rotate'], { VAULT_KEYS: `${KEY2},${KEY1}` });
    expect(out).toContain('re-encrypted 2 integration(s) and 1 pending authorization(s) under key "k2"');
    const { rows } = await db.pool.query('SELECT user_id, kid, enc_access FROM oauth_tokens ORDER BY user_id');
    expect(rows.map((r) => r.kid)).toEqual(['k2', 'k2']);
    for (const r of rows) {
      expect(JSON.parse(Buffer.from(r.enc_access.split('.')[0], 'base64url').toString()).kid).toBe('k2');
      expect(r.enc_access).not.toBe(before.rows.find((b) => b.user_id === r.user_id).enc_access);
    }
    expect(await archety(['vault', 'rotate'], { VAULT_KEYS: `${KEY2},${KEY1}` })).toContain(
      're-encrypted 0 integration(s)',
    );

    // With the new key alone: tokens decrypt, and the pending authorization still completes.
    const k2only = await newVault({ VAULT_KEYS: KEY2 });
    expect(await k2only.vault.getAccessToken(BOB, 'calendar')).toBe(accessBefore);
    const callback = await fetch(pending.href, { redirect: 'manual' });
    await k2only.vault.callback('calendar', new URL(callback.headers.get('location') as string).searchParams);
    // The old-key-only vault can no longer read them.
    await expect(t.vault.getAccessToken(BOB, 'calendar')).rejects.toThrow(/no key in VAULT_KEYS has kid "k2"/);
  });

  it('archety integrations lists what is connected per user, never a token', async () => {
    const t = await newVault();
    await connectThroughVault(t, ALICE, 'calendar');
    await connectThroughVault(t, BOB, 'calendar');
    await db.pool.query(
      "UPDATE oauth_tokens SET status = 'revoked', enc_access = NULL, enc_refresh = NULL WHERE user_id = $1",
      [BOB],
    );
    const out = await archety(['integrations']);
    expect(out).toMatch(new RegExp(`\\${ALICE}\\s+calendar\\s+connected\\s+calendar.read calendar.events`));
    expect(out).toMatch(new RegExp(`\\${BOB}\\s+calendar\\s+revoked`));
    const json = JSON.parse(await archety(['integrations', '--json', '--user', ALICE]));
    expect(json).toMatchObject([{ user: ALICE, provider: 'calendar', status: 'connected' }]);
    for (const secret of fake.issued) expect(out).not.toContain(secret);
    expect(await archety(['integrations', '--help'])).toContain('Never prints a token');
  });
});

describe('no token in clear', () => {
  it('leaves no token of the provider in a dump of the database, nor in any log line', async () => {
    const t = await newVault();
    await connectThroughVault(t, ALICE, 'calendar');
    const pending = await t.vault.connect(BOB, 'calendar');
    expect(pending).toContain('state=');
    const tables = await db.pool.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'");
    let dump = '';
    for (const { tablename } of tables.rows) {
      const { rows } = await db.pool.query(`SELECT t::text AS row FROM "${tablename}" t`);
      dump += rows.map((r) => r.row).join('\n');
    }
    const pgDump = await run('pg_dump', ['--data-only', db.url], { maxBuffer: 64 * 1024 * 1024 }).then(
      (r) => r.stdout,
      () => '', // a pg_dump older than the server: the SELECT dump above stands alone
    );
    dump += pgDump;
    expect(dump).toContain('oauth'); // it is a dump of something
    const state = new URL(pending).searchParams.get('state') as string;
    expect(dump).not.toContain(state);
    expect(fake.issued.length).toBeGreaterThan(200);
    for (const secret of fake.issued) expect(dump).not.toContain(secret);
    const logs = vaults.flatMap((v) => v.lines).join('\n');
    expect(logs).toContain('integration connected');
    for (const secret of fake.issued) expect(logs).not.toContain(secret);
  });
});

describe('the due-token query', () => {
  it('uses the expires_at index at 100k rows', async () => {
    const big = await createTestDatabase();
    await big.pool.query(`
      INSERT INTO oauth_tokens (user_id, provider, enc_access, enc_refresh, kid, expires_at, status)
      SELECT '+1555' || lpad(i::text, 7, '0'), 'calendar', 'x', 'y', 'k1',
             now() + make_interval(secs => (i % 30000) * 60),
             CASE WHEN i % 50 = 0 THEN 'revoked' ELSE 'connected' END
        FROM generate_series(1, 100000) AS i`);
    await big.pool.query('ANALYZE oauth_tokens');
    for (const sql of [oauthQueries.due, oauthQueries.claimDue]) {
      const client = await big.pool.connect();
      try {
        await client.query('BEGIN');
        const { rows } = await client.query(
          `EXPLAIN (FORMAT JSON) ${sql}`,
          sql === oauthQueries.due ? [300, 50] : [300, 50, 60_000],
        );
        await client.query('ROLLBACK');
        const plan = JSON.stringify(rows[0]['QUERY PLAN']);
        expect(plan).toContain('oauth_tokens_expires_idx');
        expect(plan).not.toMatch(
          /"Node Type":"Seq Scan","Parent Relationship":"[^"]*","Parallel Aware":false,"Async Capable":false,"Relation Name":"oauth_tokens"/,
        );
      } finally {
        client.release();
      }
    }
  });
});
