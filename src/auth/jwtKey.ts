/**
 * Which key verifies tokens: `JWT_SECRET`, `JWT_JWKS_URL`, or, for the embedded default
 * (no `DATABASE_URL`), a secret generated once by the server and kept in `DATA_DIR/jwt-secret`.
 * Only the server creates that secret: a tool that mints tokens (`archety token`) reads it,
 * as a secret it invented would sign tokens no server accepts.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Config, ConfigError } from '../config.ts';

export type JwtKey =
  | { secret: Uint8Array; source: 'JWT_SECRET' | 'DATA_DIR' }
  | { jwksUrl: string; source: 'JWT_JWKS_URL' };

/** The file holding the embedded default's secret. */
export function secretFile(config: Pick<Config, 'dataDir'>): string {
  return path.join(config.dataDir, 'jwt-secret');
}

/** No `JWT_SECRET` and no secret file a server created: there is nothing to sign with. */
export class MissingJwtSecretError extends Error {
  readonly file: string;

  constructor(file: string, empty = false) {
    super(`no JWT secret: JWT_SECRET is unset and ${file} ${empty ? 'is empty' : 'does not exist'}`);
    this.name = 'MissingJwtSecretError';
    this.file = file;
  }
}

/** The secret in `file`; '' when the file is empty, undefined when there is none. */
async function readSecret(file: string): Promise<string | undefined> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * The verification key. `create: false` (for tools) never writes: with neither variable set
 * and no secret file it throws `MissingJwtSecretError`.
 */
export async function resolveJwtKey(config: Config, options: { create?: boolean } = {}): Promise<JwtKey> {
  if (config.jwt.secret) return { secret: new TextEncoder().encode(config.jwt.secret), source: 'JWT_SECRET' };
  if (config.jwt.jwksUrl) return { jwksUrl: config.jwt.jwksUrl, source: 'JWT_JWKS_URL' };
  if (config.databaseUrl) {
    throw new ConfigError('invalid configuration: JWT_SECRET or JWT_JWKS_URL is required when DATABASE_URL is set');
  }
  const file = secretFile(config);
  let secret = await readSecret(file);
  if (secret === undefined) {
    if (options.create === false) throw new MissingJwtSecretError(file);
    await mkdir(config.dataDir, { recursive: true });
    const fresh = randomBytes(48).toString('base64url');
    // Two first starts at once: the one that created the file wins, the other reads it.
    try {
      await writeFile(file, fresh, { mode: 0o600, flag: 'wx' });
      secret = fresh;
    } catch {
      secret = await readSecret(file);
    }
  }
  if (!secret) throw new MissingJwtSecretError(file, secret === '');
  return { secret: new TextEncoder().encode(secret), source: 'DATA_DIR' };
}
