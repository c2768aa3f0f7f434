/**
 * `archety integrations`: what is connected, per user: provider, status, scopes, when the
 * access token expires, refresh attempts and the last error. Never a token (they are not
 * decrypted: this command needs no vault key).
 */
import { loadConfig } from '../config.ts';
import { createLogger } from '../observability/logger.ts';
import { OAuthRepository } from '../store/oauthRepository.ts';
import { openDatabase } from '../store/openDatabase.ts';
import { options } from './args.ts';

const HELP = `Usage: archety integrations [--user <id>] [--json]

Lists the OAuth integrations stored in the database (DATABASE_URL, or the embedded one in
DATA_DIR): user, provider, status (connected | refresh_failed | revoked), scopes, when the
access token expires, failed refresh attempts and the last error. Never prints a token.

  --user <id>   only this user's integrations
  --json        one JSON array instead of a table
`;

export async function runIntegrations(args: string[]): Promise<number> {
  const opts = options(args, { user: { type: 'string' }, json: { type: 'boolean' } });
  if (opts.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel === 'info' ? 'warn' : config.logLevel, format: config.logFormat });
  const db = await openDatabase(config, log, 'migrate');
  try {
    const all = await new OAuthRepository(db.pool).listAll();
    const rows = typeof opts.user === 'string' ? all.filter((r) => r.user === opts.user) : all;
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return 0;
    }
    if (rows.length === 0) {
      process.stdout.write('no integrations\n');
      return 0;
    }
    const table = [
      ['user', 'provider', 'status', 'scopes', 'expires at', 'attempts', 'last error'],
      ...rows.map((r) => [
        r.user,
        r.provider,
        r.status,
        r.scopes.join(' ') || '-',
        r.expiresAt,
        String(r.attempts),
        r.lastError ?? '-',
      ]),
    ];
    const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
    for (const row of table)
      process.stdout.write(
        `${row
          .map((c, i) => c.padEnd(widths[i]))
          .join('  ')
          .trimEnd()}\n`,
      );
    return 0;
  } finally {
    await db.close();
  }
}
