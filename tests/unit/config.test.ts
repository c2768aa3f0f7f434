import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('the configuration', () => {
  it('runs one group-commit lane unless told otherwise', () => {
    expect(loadConfig({}).groupCommit.lanes).toBe(1);
    expect(loadConfig({ PG_POOL_MAX: '20', GROUP_COMMIT_LANES: '4' }).groupCommit.lanes).toBe(4);
  });

  it('refuses group-commit lanes that leave no pool connection for the inbox lane and reads, naming the variable', () => {
    expect(() => loadConfig({ PG_POOL_MAX: '4', GROUP_COMMIT_LANES: '3' })).toThrow(ConfigError);
    expect(() => loadConfig({ PG_POOL_MAX: '4', GROUP_COMMIT_LANES: '3' })).toThrow(/GROUP_COMMIT_LANES=3/);
    expect(loadConfig({ PG_POOL_MAX: '4', GROUP_COMMIT_LANES: '2' }).groupCommit.lanes).toBe(2);
    expect(() => loadConfig({ GROUP_COMMIT_LANES: '0' })).toThrow(/GROUP_COMMIT_LANES/);
    expect(() => loadConfig({ PG_POOL_MAX: '2' })).toThrow(/GROUP_COMMIT_LANES=1 must be at most PG_POOL_MAX − 2/);
    expect(loadConfig({ PG_POOL_MAX: '3' }).pg.max).toBe(3);
  });

  it('paces group commits 4 ms apart unless told otherwise (0: not at all), and refuses an interval that is not a whole number of ms up to 1,000', () => {
    expect(loadConfig({}).groupCommit.intervalMs).toBe(4);
    expect(loadConfig({ GROUP_COMMIT_INTERVAL_MS: '0' }).groupCommit.intervalMs).toBe(0);
    expect(loadConfig({ GROUP_COMMIT_INTERVAL_MS: '4' }).groupCommit.intervalMs).toBe(4);
    for (const bad of ['-1', '1001', '2.5', 'soon'])
      expect(() => loadConfig({ GROUP_COMMIT_INTERVAL_MS: bad })).toThrow(
        new RegExp(`invalid configuration: GROUP_COMMIT_INTERVAL_MS="${bad}"`),
      );
  });

  it("batches a conversation's waiting relay events by 16, committed after 20 ms of work; 1 event and 0 ms are allowed, less or other values refused", () => {
    expect(loadConfig({}).relay).toMatchObject({ batchEvents: 16, batchCommitMs: 20 });
    expect(loadConfig({ RELAY_BATCH_EVENTS: '1', RELAY_BATCH_COMMIT_MS: '0' }).relay).toMatchObject({
      batchEvents: 1,
      batchCommitMs: 0,
    });
    for (const bad of ['0', '-3', '1001', '2.5', 'many'])
      expect(() => loadConfig({ RELAY_BATCH_EVENTS: bad })).toThrow(
        new RegExp(`invalid configuration: RELAY_BATCH_EVENTS="${bad}"`),
      );
    for (const bad of ['-1', '60001', '0.5'])
      expect(() => loadConfig({ RELAY_BATCH_COMMIT_MS: bad })).toThrow(
        new RegExp(`invalid configuration: RELAY_BATCH_COMMIT_MS="${bad}"`),
      );
  });

  it('names the variable of a value that is not a number', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(/invalid configuration: PORT="eighty"/);
  });
});

describe('the configuration of the HTTP edge', () => {
  it('limits requests and bodies in flight per address by default, and 0 turns each off', () => {
    expect(loadConfig({}).limits).toMatchObject({
      httpRequestsPerIpPerSecond: 100,
      httpRequestsBurst: 1000,
      bodiesInFlightPerIp: 16,
    });
    const off = loadConfig({ HTTP_REQUESTS_PER_IP_PER_SECOND: '0', BODIES_IN_FLIGHT_PER_IP: '0' }).limits;
    expect(off).toMatchObject({ httpRequestsPerIpPerSecond: 0, bodiesInFlightPerIp: 0 });
    expect(() => loadConfig({ HTTP_REQUESTS_BURST: '0' })).toThrow(/invalid configuration: HTTP_REQUESTS_BURST="0"/);
  });
});

describe('TRUSTED_PROXIES', () => {
  it('is a list of addresses and CIDR ranges; empty by default; a bad entry fails in one line naming it', () => {
    expect(loadConfig({}).trustedProxies).toEqual([]);
    expect(loadConfig({ TRUSTED_PROXIES: ' 10.0.0.0/8 , ::1,' }).trustedProxies).toEqual(['10.0.0.0/8', '::1']);
    for (const bad of ['proxy.internal', '10.0.0.0/33', '10.0.0.1/8/1', '::1/129', '10.0.0.0/x']) {
      const load = () => loadConfig({ TRUSTED_PROXIES: `127.0.0.1,${bad}` });
      expect(load).toThrow(ConfigError);
      expect(load).toThrow(
        new RegExp(
          `^invalid configuration: TRUSTED_PROXIES=.*"${bad.replace(/[./]/g, '\\$&')}" is not an IP address[^\n]*$`,
        ),
      );
    }
  });
});

describe('JWT_JWKS_URL', () => {
  it('refuses an http: JWKS on another host with one line naming the variable', () => {
    const load = () => loadConfig({ JWT_JWKS_URL: 'http://keys.example.com/.well-known/jwks.json' });
    expect(load).toThrow(ConfigError);
    expect(load).toThrow(/^invalid configuration: JWT_JWKS_URL="http:\/\/keys\.example\.com\/[^\n]*https:[^\n]*$/);
  });

  it('takes https: anywhere and http: on this machine only', () => {
    for (const url of [
      'https://keys.example.com/jwks.json',
      'http://127.0.0.1:9000/jwks.json',
      'http://[::1]:9000/jwks.json',
      'http://localhost/jwks.json',
    ]) {
      expect(loadConfig({ JWT_JWKS_URL: url }).jwt.jwksUrl).toBe(url);
    }
    for (const url of ['http://127.0.0.2/jwks.json', 'http://localhost.example.com/jwks.json', 'ftp://127.0.0.1/k']) {
      expect(() => loadConfig({ JWT_JWKS_URL: url }), url).toThrow(/JWT_JWKS_URL/);
    }
  });
});

describe('configuration errors', () => {
  const invalid: [string, string, RegExp][] = [
    [
      'DATABASE_URL',
      'postgres://archety:s3cret-pw@db.internal:99999/app',
      /DATABASE_URL="postgres:\/\/archety:\*\*\*@db\.internal:99999\/app"/,
    ],
    ['DATABASE_URL', 'postgres://archety:s3cret-pw@/app', /DATABASE_URL="postgres:\/\/archety:\*\*\*@\/app"/],
    [
      'DATABASE_URL',
      'postgres//archety:s3cret-pw@db.internal',
      /DATABASE_URL="postgres\/\/archety:\*\*\*@db\.internal"/,
    ],
    ['REDIS_URL', 'redis://:s3cret-pw@cache.internal:99999', /REDIS_URL="redis:\/\/:\*\*\*@cache\.internal:99999"/],
  ];
  for (const [name, value, shown] of invalid) {
    it(`names ${name} without its password when ${value.replace('s3cret-pw', '…')} is invalid`, () => {
      let message = '';
      try {
        loadConfig({ [name]: value });
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(shown);
      expect(message).not.toContain('s3cret-pw');
    });
  }

  it('prints one line without the password from the command line', () => {
    const run = spawnSync(process.execPath, ['bin/archety.js', 'start'], {
      cwd: repoRoot,
      env: {
        PATH: process.env.PATH,
        DATABASE_URL: 'postgres://archety:s3cret-pw@db.internal:99999/app',
        JWT_SECRET: 'a-secret-of-at-least-thirty-two-bytes!!',
      },
      encoding: 'utf8',
    });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/^archety: invalid configuration: DATABASE_URL="postgres:\/\/archety:\*\*\*@[^\n]*\n$/);
    expect(run.stderr).not.toContain('s3cret-pw');
  });
});

describe('the configuration of integrations', () => {
  const key = `k1:${Buffer.alloc(32, 9).toString('base64url')}`;

  it('takes VAULT_KEYS as kid:key pairs and refuses a malformed one without echoing it', () => {
    expect(loadConfig({ VAULT_KEYS: `${key}, k0:${Buffer.alloc(32).toString('base64url')}` }).vault.keys).toBeDefined();
    for (const bad of ['k1:short', 'no-colon', `${key},${key}`, `bad kid:${Buffer.alloc(32).toString('base64url')}`]) {
      let message = '';
      try {
        loadConfig({ VAULT_KEYS: bad });
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        message = (err as Error).message;
      }
      expect(message).toMatch(/^invalid configuration: VAULT_KEYS=\(hidden\): /);
      expect(message).not.toContain(bad);
    }
  });

  it('reads providers from OAUTH_<NAME>_*, by discovery or by endpoint URLs', () => {
    const { oauthProviders, vault } = loadConfig({
      OAUTH_CALENDAR_CLIENT_ID: 'id-1',
      OAUTH_CALENDAR_CLIENT_SECRET: 'secret-1',
      OAUTH_CALENDAR_ISSUER: 'https://accounts.example.com',
      OAUTH_CALENDAR_SCOPES: 'a b,c',
      OAUTH_LOCAL_NOTES_CLIENT_ID: 'id-2',
      OAUTH_LOCAL_NOTES_AUTHORIZATION_URL: 'http://127.0.0.1:9000/authorize',
      OAUTH_LOCAL_NOTES_TOKEN_URL: 'http://127.0.0.1:9000/token',
    });
    expect(oauthProviders).toEqual([
      {
        name: 'calendar',
        clientId: 'id-1',
        clientSecret: 'secret-1',
        issuer: 'https://accounts.example.com',
        authorizationUrl: undefined,
        tokenUrl: undefined,
        revocationUrl: undefined,
        scopes: ['a', 'b', 'c'],
        loopbackHttp: false,
      },
      expect.objectContaining({ name: 'local_notes', loopbackHttp: true, clientSecret: undefined }),
    ]);
    expect(vault).toMatchObject({
      refreshAheadS: 300,
      refreshIntervalMs: 60_000,
      maxAttempts: 5,
      publicUrl: undefined,
    });
  });

  it('refuses a provider without endpoints, or with plain http: to another machine, naming the variable', () => {
    expect(() => loadConfig({ OAUTH_CAL_CLIENT_ID: 'x' })).toThrow(/OAUTH_CAL_ISSUER.*set OAUTH_CAL_ISSUER, or/);
    expect(() => loadConfig({ OAUTH_CAL_CLIENT_ID: 'x', OAUTH_CAL_ISSUER: 'http://accounts.example.com' })).toThrow(
      /OAUTH_CAL_ISSUER="http:\/\/accounts.example.com": must be an https: URL/,
    );
    expect(() =>
      loadConfig({ OAUTH_CAL_CLIENT_ID: 'x', OAUTH_CAL_ISSUER: 'https://a.example', OAUTH_CAL_CLIENT_SECRET: 'zz' }),
    ).not.toThrow();
  });
});
