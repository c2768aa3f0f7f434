/**
 * Which key verifies tokens: `JWT_SECRET`, `JWT_JWKS_URL`, or, for the embedded default
 * (no `DATABASE_URL`), a secret generated once and kept in `DATA_DIR/jwt-secret`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Config, ConfigError } from '../config.ts';

export type JwtKey =
  | { secret: Uint8Array; source: 'JWT_SECRET' | 'DATA_DIR' }
  | { jwksUrl: string; source: 'JWT_JWKS_URL' };

export async function resolveJwtKey(config: Config): Promise<JwtKey> {
  if (config.jwt.secret) return { secret: new TextEncoder().encode(config.jwt.secret), source: 'JWT_SECRET' };
  if (config.jwt.jwksUrl) return { jwksUrl: config.jwt.jwksUrl, source: 'JWT_JWKS_URL' };
  if (config.databaseUrl) {
    throw new ConfigError('invalid configuration: JWT_SECRET or JWT_JWKS_URL is required when DATABASE_URL is set');
  }
  const file = path.join(config.dataDir, 'jwt-secret');
  let secret: string;
  try {
    secret = (await readFile(file, 'utf8')).trim();
  } catch {
    await mkdir(config.dataDir, { recursive: true });
    secret = randomBytes(48).toString('base64url');
    await writeFile(file, secret, { mode: 0o600, flag: 'wx' }).catch(async () => {
      secret = (await readFile(file, 'utf8')).trim();
    });
  }
  return { secret: new TextEncoder().encode(secret), source: 'DATA_DIR' };
}
