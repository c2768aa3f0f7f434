/**
 * The OAuth token vault: the one module that holds users' tokens for other services. It runs
 * the authorization-code flow with PKCE (connect → the provider → callback), keeps the tokens
 * encrypted at rest (`TokenCipher`), hands Sage's tools an access token that is good for at
 * least a minute (`getAccessToken`, refreshing on demand when the job has not), refreshes
 * claimed rows for the job (`refreshClaimed`), and forgets and revokes on disconnect.
 *
 * At most one refresh per token is in flight at a time, across processes: a refresh is made
 * only under a claim (`src/store/oauthRepository.ts`), and its outcome is written only while
 * that claim holds. `invalid_grant` marks the integration `revoked` and queues one message to
 * the user's direct chat in the same transaction.
 */
import { createHash, randomUUID } from 'node:crypto';
import { directKey } from '../../actors/conversationKey.ts';
import type { SendFrame } from '../../actors/conversationTypes.ts';
import { AppError } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { IntegrationSummary, OAuthRepository, Sealed, TokenRow } from '../store/oauthRepository.ts';
import { OAuthProvider, ProviderFailure } from './OAuthProvider.ts';
import { type TokenCipher, VaultDecryptError } from './vaultKeys.ts';

/** An access token handed out is good for at least this long (s). */
export const MIN_VALID_S = 60;
/** A pending authorization (`state`) is good for this long (s). */
export const STATE_TTL_S = 600;
/** The persona that tells a user their integration was revoked. */
const PERSONA = 'sage';
/** How often `getAccessToken` looks again while another process holds the refresh claim (ms). */
const WAIT_STEP_MS = 100;

/** What a refresh of a claimed row came to. */
export type RefreshOutcome = 'refreshed' | 'failed' | 'refresh_failed' | 'revoked' | 'lost';

/** Why `getAccessToken` has no token to give: the caller (a tool) tells the user to reconnect, or tries later. */
export class IntegrationUnavailable extends Error {
  override name = 'IntegrationUnavailable';
  constructor(
    readonly reason: 'not_connected' | 'revoked' | 'refresh_failed' | 'provider_unavailable' | 'unknown_provider',
    message: string,
  ) {
    super(message);
  }
}

export interface VaultOptions {
  /** OAUTH_REFRESH_MAX_ATTEMPTS */
  maxAttempts: number;
  /** OAUTH_REFRESH_BACKOFF_S, in ms */
  backoffMs: number;
  /** OAUTH_TIMEOUT_MS × OAUTH_ATTEMPTS bounds one refresh; the claim's lease is longer. */
  timeoutMs: number;
  attempts: number;
}

export interface VaultDeps {
  repo: OAuthRepository;
  cipher: TokenCipher;
  providers: ReadonlyMap<string, OAuthProvider>;
  options: VaultOptions;
  metrics: Metrics;
  log: Logger;
  /** The public base URL of this server (PUBLIC_URL, or where it listens). */
  publicUrl: () => string;
  /** A notice was queued in the outbox: deliver it (the relay's dispatcher). */
  notify?: (frame: SendFrame) => void;
}

/** What a vault ciphertext is: it decrypts only in its own place. */
export function vaultContext(
  user: string,
  provider: string,
  kind: 'access' | 'refresh' | `verifier:${string}`,
): string {
  return `${user}\n${provider}\n${kind}`;
}

/** The stored form of a `state`: its SHA-256, so a database dump holds no usable state. */
export function hashState(state: string): string {
  return createHash('sha256').update(state).digest('base64url');
}

/** The message a revoked integration's user gets in their direct chat. */
function revokedNotice(provider: string): string {
  return `Heads up: your ${provider} connection stopped working (it was revoked or expired at ${provider}), so I can't use it anymore. To reconnect, just ask me to "connect my ${provider}" and open the link I send you.`;
}

/** A provider failure as the catalog error answered to the person connecting. */
function providerAppError(err: ProviderFailure): AppError {
  switch (err.kind) {
    case 'denied':
      return new AppError('authorization_denied', 'the provider did not grant access; nothing was stored');
    case 'timeout':
      return new AppError('provider_timeout', 'the provider did not answer in time; nothing was stored', {
        cause: err,
      });
    case 'invalid_grant':
      return new AppError('provider_error', 'the provider refused the authorization code; nothing was stored', {
        cause: err,
      });
    default:
      return new AppError('provider_error', `${err.message}; nothing was stored`, { cause: err });
  }
}

export class TokenVault {
  /** How long a refresh claim lasts: longer than the slowest refresh the policy allows (ms). */
  readonly leaseMs: number;

  constructor(private readonly deps: VaultDeps) {
    const o = deps.options;
    this.leaseMs = o.attempts * (o.timeoutMs + 1000) + 5000;
  }

  /** The configured provider `name`; 404 `unknown_provider` otherwise. */
  provider(name: string): OAuthProvider {
    const p = this.deps.providers.get(name);
    if (!p) throw new AppError('unknown_provider', 'no provider of that name is configured on this server');
    return p;
  }

  providerNames(): string[] {
    return [...this.deps.providers.keys()];
  }

  callbackUrl(provider: string): string {
    return `${this.deps.publicUrl()}/v1/integrations/${provider}/callback`;
  }

  /** Starts a connection: a single-use state bound to `user`, a PKCE verifier kept encrypted; the URL to open. */
  async connect(user: string, providerName: string): Promise<string> {
    const p = this.provider(providerName);
    const { state, codeVerifier } = OAuthProvider.newAuthorization();
    let url: string;
    try {
      url = await p.authorizationUrl(state, codeVerifier, this.callbackUrl(p.name));
    } catch (err) {
      throw err instanceof ProviderFailure ? providerAppError(err) : err;
    }
    const stateHash = hashState(state);
    const { cipher, repo } = this.deps;
    await repo.insertState({
      stateHash,
      user,
      provider: p.name,
      encVerifier: await cipher.encrypt(codeVerifier, vaultContext(user, p.name, `verifier:${stateHash}`)),
      kid: cipher.currentKid,
      ttlS: STATE_TTL_S,
    });
    this.deps.metrics.oauthConnects.inc({ provider: p.name, outcome: 'started' });
    return url;
  }

  /**
   * The provider sent the user back: the state is taken (once), the code exchanged, the tokens
   * stored. Any failure stores nothing (the state stays used: the user connects again).
   * `reqId`: the request's correlation id, for the lines this writes.
   */
  async callback(
    providerName: string,
    params: URLSearchParams,
    reqId?: string,
  ): Promise<{ user: string; provider: string }> {
    const p = this.provider(providerName);
    const state = params.get('state');
    if (!state || state.length > 1024) {
      throw new AppError('validation_failed', 'state: the callback needs the state the provider was given', {
        path: ['state'],
      });
    }
    if (!params.get('code') && !params.get('error')) {
      throw new AppError('validation_failed', 'code: the callback needs a code (or an error) from the provider', {
        path: ['code'],
      });
    }
    const { repo, cipher, metrics } = this.deps;
    const stateHash = hashState(state);
    const taken = await repo.takeState(stateHash, p.name);
    if (!taken || taken.expired) {
      metrics.oauthConnects.inc({ provider: p.name, outcome: 'invalid_state' });
      throw new AppError(
        'invalid_state',
        taken
          ? 'this authorization link expired (after 10 minutes); connect again'
          : 'this authorization is unknown or was already used; connect again',
      );
    }
    const verifier = await cipher.decrypt(taken.encVerifier, vaultContext(taken.user, p.name, `verifier:${stateHash}`));
    try {
      const tokens = await p.exchangeCode(params, state, verifier, this.callbackUrl(p.name));
      const sealed = await this.seal(taken.user, p.name, tokens.accessToken, tokens.refreshToken ?? null);
      await repo.connect(taken.user, p.name, sealed, tokens.expiresIn, tokens.scopes);
    } catch (err) {
      if (!(err instanceof ProviderFailure)) throw err;
      metrics.oauthConnects.inc({ provider: p.name, outcome: err.kind });
      this.deps.log.warn(
        { reqId, provider: p.name, reason: err.kind, error: err.message },
        'connecting an integration failed',
      );
      throw providerAppError(err);
    }
    metrics.oauthConnects.inc({ provider: p.name, outcome: 'connected' });
    this.deps.log.info({ reqId, provider: p.name }, 'integration connected');
    return { user: taken.user, provider: p.name };
  }

  list(user: string): Promise<IntegrationSummary[]> {
    return this.deps.repo.list(user);
  }

  /** Forgets the user's tokens for `providerName` and revokes them at the provider when it can (`reqId`: as `callback`'s). */
  async disconnect(user: string, providerName: string, reqId?: string): Promise<void> {
    const p = this.provider(providerName);
    const removed = await this.deps.repo.remove(user, p.name);
    if (!removed) return;
    const enc = removed.encRefresh ?? removed.encAccess;
    if (!enc) return;
    const hint = removed.encRefresh ? 'refresh_token' : 'access_token';
    try {
      const token = await this.deps.cipher.decrypt(
        enc,
        vaultContext(user, p.name, hint === 'refresh_token' ? 'refresh' : 'access'),
      );
      const revoked = await p.revoke(token, hint);
      this.deps.log.info({ reqId, provider: p.name, revokedAtProvider: revoked }, 'integration disconnected');
    } catch (err) {
      // The tokens are forgotten here either way; the provider lets them expire.
      this.deps.log.warn(
        { reqId, provider: p.name, error: err instanceof Error ? err.message : String(err) },
        'integration disconnected; revoking at the provider failed',
      );
    }
  }

  /**
   * An access token of `user` at `provider` that is good for at least MIN_VALID_S: the stored
   * one, or a fresh one (refreshed now unless another process is refreshing it, which is waited
   * for). Throws IntegrationUnavailable when there is none to give.
   */
  async getAccessToken(user: string, provider: string): Promise<string> {
    if (!this.deps.providers.has(provider)) {
      throw new IntegrationUnavailable('unknown_provider', 'no provider of that name is configured');
    }
    const { repo, cipher } = this.deps;
    const deadline = Date.now() + this.leaseMs + 1000;
    for (;;) {
      const row = await repo.get(user, provider, MIN_VALID_S);
      if (!row) throw new IntegrationUnavailable('not_connected', `${provider} is not connected`);
      if (row.status !== 'connected') {
        throw new IntegrationUnavailable(row.status, `${provider} is ${row.status.replace('_', ' ')}: reconnect it`);
      }
      if (row.fresh && row.encAccess) return cipher.decrypt(row.encAccess, vaultContext(user, provider, 'access'));
      const claimed = await repo.claimOne(user, provider, this.leaseMs, MIN_VALID_S);
      if (claimed) {
        const { outcome, accessToken } = await this.refreshClaimed(claimed);
        if (accessToken) return accessToken;
        if (outcome !== 'lost') {
          throw new IntegrationUnavailable(
            outcome === 'revoked'
              ? 'revoked'
              : outcome === 'refresh_failed'
                ? 'refresh_failed'
                : 'provider_unavailable',
            `${provider} could not be refreshed (${outcome})`,
          );
        }
      }
      // Another process holds the claim: its refresh lands within its lease.
      if (Date.now() > deadline) {
        throw new IntegrationUnavailable('provider_unavailable', `${provider} is being refreshed elsewhere; try again`);
      }
      await new Promise((r) => setTimeout(r, WAIT_STEP_MS));
    }
  }

  /**
   * Refreshes a row this process claimed, and records the outcome while the claim holds:
   * new tokens (a rotated refresh token replaces the old one in the same write), a failed
   * attempt (backoff; `refresh_failed` after OAUTH_REFRESH_MAX_ATTEMPTS), or `revoked` with one
   * notice to the user. `lost`: the claim no longer held, nothing was written.
   */
  async refreshClaimed(row: TokenRow): Promise<{ outcome: RefreshOutcome; accessToken?: string }> {
    const { repo, cipher, metrics, log, options } = this.deps;
    const claimId = row.claimId as string;
    const provider = this.deps.providers.get(row.provider);
    const fail = async (reason: string, message: string, maxAttempts = options.maxAttempts, keep?: Sealed) => {
      metrics.oauthRefreshFailures.inc({ provider: row.provider, reason });
      const r = await repo.refreshFailed(row, claimId, maxAttempts, options.backoffMs, message, keep);
      if (!r) return { outcome: 'lost' as const };
      if (r.status === 'refresh_failed') {
        metrics.oauthRefreshGaveUp.inc({ provider: row.provider });
        log.warn({ provider: row.provider, attempts: r.attempts, reason }, 'integration refresh failed for good');
        return { outcome: 'refresh_failed' as const };
      }
      log.info({ provider: row.provider, attempts: r.attempts, reason }, 'integration refresh failed; backing off');
      return { outcome: 'failed' as const };
    };
    if (!provider) return fail('unknown_provider', 'the provider is no longer configured');
    if (!row.encRefresh) return fail('no_refresh_token', 'the provider gave no refresh token', 1);
    let refreshToken: string;
    try {
      refreshToken = await cipher.decrypt(row.encRefresh, vaultContext(row.user, row.provider, 'refresh'));
    } catch (err) {
      if (!(err instanceof VaultDecryptError)) throw err;
      return fail('decrypt', err.message);
    }
    let tokens: Awaited<ReturnType<OAuthProvider['refresh']>>;
    try {
      tokens = await provider.refresh(refreshToken);
    } catch (err) {
      if (!(err instanceof ProviderFailure)) {
        await repo.release(row.user, row.provider, claimId).catch(() => undefined);
        throw err;
      }
      if (err.kind === 'invalid_grant') return this.revoked(row, claimId, err.message);
      if (err.issuedRefreshToken && row.encAccess) {
        // The provider may have rotated the refresh token already: keep the new one (and the
        // access token we had, re-sealed with it under the current key), count the attempt.
        const access = await cipher.decrypt(row.encAccess, vaultContext(row.user, row.provider, 'access'));
        const keep = await this.seal(row.user, row.provider, access, err.issuedRefreshToken);
        return fail(err.kind, err.message, options.maxAttempts, keep);
      }
      return fail(err.kind, err.message);
    }
    const sealed = await this.seal(row.user, row.provider, tokens.accessToken, tokens.refreshToken ?? refreshToken);
    if (!(await repo.refreshed(row, claimId, sealed, tokens.expiresIn, tokens.scopes))) {
      log.warn({ provider: row.provider }, 'a refresh finished after its claim was lost; its tokens were dropped');
      return { outcome: 'lost' };
    }
    metrics.oauthRefreshes.inc({ provider: row.provider });
    return { outcome: 'refreshed', accessToken: tokens.accessToken };
  }

  private async revoked(row: TokenRow, claimId: string, error: string): Promise<{ outcome: RefreshOutcome }> {
    const frame = (guid: string): SendFrame => ({
      type: 'send',
      id: `out_${randomUUID()}`,
      replyTo: `integration:${row.provider}`,
      chat: { guid, group: false },
      to: row.user,
      text: revokedNotice(row.provider),
    });
    let sent: SendFrame | undefined;
    const done = await this.deps.repo.revoke(row, claimId, error, {
      conversationKey: directKey(row.user, PERSONA),
      fallbackGuid: `iMessage;-;${row.user}`,
      frame: (guid) => {
        sent = frame(guid);
        return sent;
      },
    });
    if (!done) return { outcome: 'lost' };
    this.deps.metrics.oauthRevocations.inc({ provider: row.provider });
    this.deps.log.warn(
      { provider: row.provider },
      'integration revoked by the provider (invalid_grant); the user was told',
    );
    if (sent) this.deps.notify?.(sent);
    return { outcome: 'revoked' };
  }

  private async seal(user: string, provider: string, access: string, refresh: string | null): Promise<Sealed> {
    const { cipher } = this.deps;
    return {
      encAccess: await cipher.encrypt(access, vaultContext(user, provider, 'access')),
      encRefresh: refresh === null ? null : await cipher.encrypt(refresh, vaultContext(user, provider, 'refresh')),
      kid: cipher.currentKid,
    };
  }
}
