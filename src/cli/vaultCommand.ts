/**
 * `archety vault rotate`: re-encrypts every stored token (and pending authorization) that is not
 * under the first key of VAULT_KEYS, in batches, each in its own transaction; safe to run again
 * and while servers run (a row being refreshed keeps its lock until its write). Rotation: put
 * the new key first (`archety vault generate-key`), keep the old one after it, restart the
 * servers, run this, then remove the old key.
 */
import { loadConfig } from '../config.ts';
import { vaultContext } from '../integrations/TokenVault.ts';
import { generateVaultKey, resolveVaultKeys, TokenCipher } from '../integrations/vaultKeys.ts';
import { createLogger } from '../observability/logger.ts';
import { rotateVault } from '../store/oauthRotation.ts';
import { openDatabase } from '../store/openDatabase.ts';
import { options } from './args.ts';

const HELP = `Usage: archety vault <rotate|generate-key>

  rotate         Re-encrypt every stored OAuth token (and pending authorization) under the first
                 key of VAULT_KEYS (or the embedded default's key in DATA_DIR). Every older key
                 must still be listed after it. Prints how many rows it rewrote.
  generate-key   Print a new key for VAULT_KEYS (kid:base64url-32-bytes), e.g. to put first
                 before a rotation.

Example rotation:
  VAULT_KEYS="k2:<new>,k1:<old>"  (restart the servers with it), then
  VAULT_KEYS="k2:<new>,k1:<old>" archety vault rotate, then drop k1 from VAULT_KEYS.
`;

/** Rows re-encrypted per transaction. */
const BATCH = 500;

export async function runVault(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help' || options(rest, {}).help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (sub === 'generate-key') {
    process.stdout.write(`${generateVaultKey()}\n`);
    return 0;
  }
  if (sub !== 'rotate') {
    process.stderr.write(`archety vault: unknown subcommand "${sub}"\n\n${HELP}`);
    return 2;
  }
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel === 'info' ? 'warn' : config.logLevel, format: config.logFormat });
  const { keys, source } = await resolveVaultKeys(config, { create: false });
  if (keys.length === 0) {
    process.stderr.write(
      'archety vault rotate: no vault key: set VAULT_KEYS (the new key first, the old ones after it)\n',
    );
    return 1;
  }
  const cipher = new TokenCipher(keys);
  const db = await openDatabase(config, log, 'migrate');
  try {
    const kid = cipher.currentKid;
    const done = await rotateVault(db.pool, kid, BATCH, {
      tokens: async (row) => {
        const reseal = async (enc: string | null, kind: 'access' | 'refresh') =>
          enc === null
            ? null
            : cipher.encrypt(
                await cipher.decrypt(enc, vaultContext(row.user, row.provider, kind)),
                vaultContext(row.user, row.provider, kind),
              );
        return {
          encAccess: (await reseal(row.encAccess, 'access')) as string,
          encRefresh: await reseal(row.encRefresh, 'refresh'),
          kid,
        };
      },
      verifier: async (row) => {
        const context = vaultContext(row.user, row.provider, `verifier:${row.stateHash}`);
        return cipher.encrypt(await cipher.decrypt(row.encVerifier, context), context);
      },
    });
    process.stdout.write(
      `re-encrypted ${done.tokens} integration(s) and ${done.states} pending authorization(s) under key "${kid}" (keys from ${source})\n`,
    );
    return 0;
  } finally {
    await db.close();
  }
}
