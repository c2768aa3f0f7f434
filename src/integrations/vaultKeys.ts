/**
 * The keys of the OAuth token vault and the one cipher that uses them: JWE compact
 * serialization with `dir` + `A256GCM` (jose), the key named by `kid` in the protected header.
 * `VAULT_KEYS` is `kid:base64url-32-bytes` pairs, comma-separated: the first encrypts, every
 * one decrypts, so a key is rotated by putting the new one first and running
 * `archety vault rotate` before the old one is removed.
 *
 * Each ciphertext is bound to what it is (user, provider and which token): the plaintext
 * carries that context and decryption checks it, so a ciphertext copied into another row
 * (someone with write access to the database) does not decrypt there.
 *
 * Without `VAULT_KEYS` the embedded default (no `DATABASE_URL`) generates one key, once, in
 * `DATA_DIR/vault-keys`; with `DATABASE_URL` set and no key there is no vault: integrations
 * are off.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader } from 'jose';

const KID = /^[A-Za-z0-9._-]{1,64}$/;
const B64URL = /^[A-Za-z0-9_-]+$/;

export interface VaultKey {
  kid: string;
  key: Uint8Array;
}

/** Parses `VAULT_KEYS`; throws an Error saying what is wrong (never echoing a key). */
export function parseVaultKeys(value: string): VaultKey[] {
  const entries = value
    .split(',')
    .map((e) => e.trim())
    .filter(Boolean);
  if (entries.length === 0) throw new Error('expected kid:base64url-32-bytes pairs, comma-separated');
  const seen = new Set<string>();
  return entries.map((entry, i) => {
    const colon = entry.indexOf(':');
    const kid = colon > 0 ? entry.slice(0, colon) : '';
    const encoded = entry.slice(colon + 1);
    if (!KID.test(kid)) throw new Error(`entry ${i + 1}: expected kid:key with a kid of 1–64 letters, digits, . _ -`);
    if (seen.has(kid)) throw new Error(`entry ${i + 1}: kid ${JSON.stringify(kid)} appears twice`);
    seen.add(kid);
    const key = B64URL.test(encoded) ? Buffer.from(encoded, 'base64url') : Buffer.alloc(0);
    if (key.length !== 32)
      throw new Error(`entry ${i + 1} (kid ${JSON.stringify(kid)}): the key must be 32 bytes, base64url`);
    return { kid, key: new Uint8Array(key) };
  });
}

/** A fresh `kid:key` pair for VAULT_KEYS. */
export function generateVaultKey(kid = `k${new Date().toISOString().slice(0, 10).replace(/-/g, '')}`): string {
  return `${kid}:${randomBytes(32).toString('base64url')}`;
}

/** The file holding the embedded default's vault key. */
export function vaultKeyFile(dataDir: string): string {
  return path.join(dataDir, 'vault-keys');
}

export type VaultKeySource = 'VAULT_KEYS' | 'DATA_DIR' | 'none';

/**
 * The vault's keys: VAULT_KEYS; else (no DATABASE_URL) those in DATA_DIR/vault-keys, created
 * once; else none (integrations off). `create: false` (tools) never writes the file.
 */
export async function resolveVaultKeys(
  config: { vault: { keys?: string }; databaseUrl?: string; dataDir: string },
  options: { create?: boolean } = {},
): Promise<{ keys: VaultKey[]; source: VaultKeySource }> {
  if (config.vault.keys) return { keys: parseVaultKeys(config.vault.keys), source: 'VAULT_KEYS' };
  if (config.databaseUrl) return { keys: [], source: 'none' };
  const file = vaultKeyFile(config.dataDir);
  const read = async () => (await readFile(file, 'utf8').catch(() => '')).trim();
  let value = await read();
  if (!value && options.create !== false) {
    await mkdir(config.dataDir, { recursive: true });
    // Two first starts at once: the one that created the file wins, the other reads it.
    await writeFile(file, generateVaultKey('local1'), { mode: 0o600, flag: 'wx' }).catch(() => undefined);
    value = await read();
  }
  return value ? { keys: parseVaultKeys(value), source: 'DATA_DIR' } : { keys: [], source: 'none' };
}

/** A ciphertext that no key opens, or that was made for another place. */
export class VaultDecryptError extends Error {
  override name = 'VaultDecryptError';
}

/** Encrypts and decrypts vault values; `context` names what a value is (user, provider, kind). */
export class TokenCipher {
  private readonly byKid: Map<string, Uint8Array>;

  constructor(private readonly keys: readonly VaultKey[]) {
    if (keys.length === 0) throw new Error('a token cipher needs at least one key');
    this.byKid = new Map(keys.map((k) => [k.kid, k.key]));
  }

  /** The kid new ciphertexts are made under (the first key). */
  get currentKid(): string {
    return this.keys[0].kid;
  }

  async encrypt(value: string, context: string): Promise<string> {
    const { kid, key } = this.keys[0];
    const plaintext = new TextEncoder().encode(JSON.stringify({ v: value, c: context }));
    return new CompactEncrypt(plaintext).setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid }).encrypt(key);
  }

  async decrypt(jwe: string, context: string): Promise<string> {
    let plaintext: Uint8Array;
    try {
      const { plaintext: p } = await compactDecrypt(
        jwe,
        (header) => {
          const key = header.kid === undefined ? undefined : this.byKid.get(header.kid);
          if (!key) throw new VaultDecryptError(`no key in VAULT_KEYS has kid ${JSON.stringify(header.kid)}`);
          return key;
        },
        { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] },
      );
      plaintext = p;
    } catch (err) {
      if (err instanceof VaultDecryptError) throw err;
      throw new VaultDecryptError('a vault value could not be decrypted (wrong key or altered)', { cause: err });
    }
    const parsed = JSON.parse(new TextDecoder().decode(plaintext)) as { v: string; c: string };
    if (parsed.c !== context) throw new VaultDecryptError('a vault value was made for another row');
    return parsed.v;
  }

  /** The kid a ciphertext names (without decrypting it). */
  static kidOf(jwe: string): string | undefined {
    return decodeProtectedHeader(jwe).kid;
  }
}
