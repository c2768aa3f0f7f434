/**
 * One OAuth 2.0 provider as the server's client sees it: every protocol step (discovery, PKCE,
 * the authorization URL, the code exchange, refresh, revocation) is oauth4webapi's, and every
 * call to the provider runs behind the same cockatiel policy as the model (`createResilience`:
 * a timeout per attempt, retries with backoff for 5xx, network errors and timeouts, and a
 * circuit breaker per provider). Whatever goes wrong comes out as one `ProviderFailure` kind.
 *
 * Plain `http:` is refused by oauth4webapi; it is allowed (`allowInsecureRequests`) only for a
 * provider whose URLs are all on this machine (127.0.0.1, ::1, localhost: a test or
 * development provider), which `src/config.ts` has checked.
 */
import { BrokenCircuitError, TaskCancelledError } from 'cockatiel';
import * as oauth from 'oauth4webapi';
import { createResilience, type Resilient } from '../brain/resilience.ts';
import type { OAuthProviderConfig } from '../config.ts';
import type { Logger } from '../observability/logger.ts';

/**
 * What went wrong with a provider: `invalid_grant` (the grant is revoked or expired: reconnect),
 * `denied` (the user declined at the provider), `rejected` (another OAuth error answer),
 * `bad_response` (not a token response, or one without `expires_in`), `unavailable` (5xx,
 * network error, breaker open), `timeout`.
 */
export type ProviderFailureKind = 'invalid_grant' | 'denied' | 'rejected' | 'bad_response' | 'unavailable' | 'timeout';

export class ProviderFailure extends Error {
  override name = 'ProviderFailure';
  /**
   * A refresh token the provider issued in the unusable answer (tokens without `expires_in`):
   * it may already have replaced the one we sent, so it is kept, lest the grant be lost.
   * A private field: a logged error never shows it.
   */
  readonly #issuedRefreshToken: string | undefined;

  constructor(
    readonly kind: ProviderFailureKind,
    message: string,
    options?: { cause?: unknown; issuedRefreshToken?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.#issuedRefreshToken = options?.issuedRefreshToken;
  }

  get issuedRefreshToken(): string | undefined {
    return this.#issuedRefreshToken;
  }

  /** Worth another attempt in a moment (and counted by the breaker). */
  get transient(): boolean {
    return this.kind === 'unavailable' || this.kind === 'timeout';
  }
}

/** Tokens as a token endpoint answered them (never logged). */
export interface TokenSet {
  accessToken: string;
  refreshToken?: string;
  /** Seconds, as the provider said. */
  expiresIn: number;
  scopes: string[];
}

export interface ProviderTuning {
  timeoutMs: number;
  attempts: number;
  breakerFailures: number;
  breakerHalfOpenMs: number;
}

/** `https:`, or `http:` to this machine (the only plain http: a loopback provider may use). */
function isHttpsOrLoopback(url: string): boolean {
  const u = URL.canParse(url) ? new URL(url) : undefined;
  if (!u) return false;
  return (
    u.protocol === 'https:' || (u.protocol === 'http:' && ['127.0.0.1', '[::1]', 'localhost'].includes(u.hostname))
  );
}

/** The provider's error answer, reduced to what may be logged (its OAuth error code, the HTTP status). */
function describe(err: unknown): string {
  if (err instanceof oauth.ResponseBodyError) return `${err.status} ${err.error}`;
  if (err instanceof oauth.OperationProcessingError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/** Translates what oauth4webapi or fetch threw inside one attempt. */
function translate(err: unknown): ProviderFailure {
  if (err instanceof ProviderFailure) return err;
  if (err instanceof oauth.ResponseBodyError) {
    if (err.status >= 500) return new ProviderFailure('unavailable', `the provider answered ${describe(err)}`);
    if (err.error === 'invalid_grant')
      return new ProviderFailure('invalid_grant', 'the provider answered invalid_grant');
    return new ProviderFailure('rejected', `the provider refused: ${describe(err)}`);
  }
  if (err instanceof oauth.AuthorizationResponseError) {
    return new ProviderFailure('denied', `the provider sent back error ${err.error}`);
  }
  if (err instanceof oauth.OperationProcessingError) {
    const status = err.cause instanceof Response ? err.cause.status : undefined;
    if (status !== undefined && status >= 500) {
      return new ProviderFailure('unavailable', `the provider answered HTTP ${status}`);
    }
    return new ProviderFailure('bad_response', `the provider's answer is not usable (${describe(err)})`);
  }
  if (err instanceof oauth.UnsupportedOperationError) {
    return new ProviderFailure('bad_response', `the provider's answer is not supported (${describe(err)})`);
  }
  // fetch's own failures (connection refused, reset, aborted): the network, not the provider's answer.
  return new ProviderFailure('unavailable', `the provider could not be reached (${describe(err)})`);
}

/** What every request to a provider carries: the attempt's signal, and plain http: only for a loopback provider. */
interface RequestOptions {
  signal: AbortSignal;
  [oauth.allowInsecureRequests]: boolean;
}

export class OAuthProvider {
  readonly name: string;
  readonly scopes: readonly string[];
  private readonly client: oauth.Client;
  private readonly auth: oauth.ClientAuth;
  private readonly resilience: Resilient;
  private server: Promise<oauth.AuthorizationServer> | undefined;

  constructor(
    private readonly config: OAuthProviderConfig,
    tuning: ProviderTuning,
    log: Logger,
  ) {
    this.name = config.name;
    this.scopes = config.scopes;
    this.client = { client_id: config.clientId };
    this.auth = config.clientSecret ? oauth.ClientSecretBasic(config.clientSecret) : oauth.None();
    this.resilience = createResilience({
      name: `oauth:${config.name}`,
      timeoutMs: tuning.timeoutMs,
      attempts: tuning.attempts,
      breakerFailures: tuning.breakerFailures,
      halfOpenAfterMs: tuning.breakerHalfOpenMs,
      log,
      isPermanent: (err) => err instanceof ProviderFailure && !err.transient,
    });
  }

  /** The circuit breaker's state (0 closed, 1 open, 2 half-open). */
  breakerState(): number {
    return this.resilience.state();
  }

  /** Runs one provider call under the policy; every failure is a ProviderFailure. */
  private async call<T>(fn: (options: RequestOptions) => Promise<T>): Promise<T> {
    try {
      return await this.resilience.run(async (signal) => {
        try {
          return await fn({ signal, [oauth.allowInsecureRequests]: this.config.loopbackHttp });
        } catch (err) {
          throw translate(err);
        }
      });
    } catch (err) {
      if (err instanceof TaskCancelledError) {
        throw new ProviderFailure('timeout', 'the provider did not answer in time', { cause: err });
      }
      if (err instanceof BrokenCircuitError) {
        throw new ProviderFailure('unavailable', 'the provider failed too often lately (circuit breaker open)');
      }
      throw translate(err);
    }
  }

  /** The provider's metadata: discovered once (retried after a failure), or from its configured URLs. */
  private authorizationServer(): Promise<oauth.AuthorizationServer> {
    const c = this.config;
    if (!c.issuer) {
      return Promise.resolve({
        issuer: new URL(c.tokenUrl as string).origin,
        authorization_endpoint: c.authorizationUrl,
        token_endpoint: c.tokenUrl,
        revocation_endpoint: c.revocationUrl,
      });
    }
    const issuer = new URL(c.issuer);
    this.server ??= this.call(async (options) =>
      oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, options)),
    ).then(
      (discovered) => {
        const as = c.revocationUrl ? { ...discovered, revocation_endpoint: c.revocationUrl } : discovered;
        // Plain http: was allowed for a loopback issuer: its document may not send us elsewhere in clear.
        for (const url of [as.authorization_endpoint, as.token_endpoint, as.revocation_endpoint]) {
          if (url !== undefined && !isHttpsOrLoopback(url)) {
            throw new ProviderFailure('bad_response', 'the discovery document names an endpoint that is not https:');
          }
        }
        return as;
      },
      (err) => {
        this.server = undefined;
        throw err;
      },
    );
    return this.server;
  }

  /** A new PKCE code verifier and a random `state` (both oauth4webapi's). */
  static newAuthorization(): { state: string; codeVerifier: string } {
    return { state: oauth.generateRandomState(), codeVerifier: oauth.generateRandomCodeVerifier() };
  }

  /** The authorization URL the user opens: code flow, PKCE S256, our state and scopes. */
  async authorizationUrl(state: string, codeVerifier: string, redirectUri: string): Promise<string> {
    const as = await this.authorizationServer();
    if (!as.authorization_endpoint)
      throw new ProviderFailure('bad_response', 'the provider has no authorization endpoint');
    const url = new URL(as.authorization_endpoint);
    url.searchParams.set('response_type', 'code');
    url.searchParams.set('client_id', this.config.clientId);
    url.searchParams.set('redirect_uri', redirectUri);
    if (this.scopes.length) url.searchParams.set('scope', this.scopes.join(' '));
    url.searchParams.set('state', state);
    url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(codeVerifier));
    url.searchParams.set('code_challenge_method', 'S256');
    return url.href;
  }

  /** Checks the callback's parameters against `state` and exchanges its code (PKCE) for tokens. */
  async exchangeCode(
    callback: URLSearchParams,
    state: string,
    codeVerifier: string,
    redirectUri: string,
  ): Promise<TokenSet> {
    const as = await this.authorizationServer();
    let params: URLSearchParams;
    try {
      params = oauth.validateAuthResponse(as, this.client, callback, state);
    } catch (err) {
      throw translate(err);
    }
    const response = await this.call(async (options) =>
      oauth.processAuthorizationCodeResponse(
        as,
        this.client,
        await oauth.authorizationCodeGrantRequest(
          as,
          this.client,
          this.auth,
          params,
          redirectUri,
          codeVerifier,
          options,
        ),
      ),
    );
    return this.tokenSet(response);
  }

  /** A refresh-token grant. A rotated refresh token comes back in `refreshToken`. */
  async refresh(refreshToken: string): Promise<TokenSet> {
    const as = await this.authorizationServer();
    const response = await this.call(async (options) =>
      oauth.processRefreshTokenResponse(
        as,
        this.client,
        await oauth.refreshTokenGrantRequest(as, this.client, this.auth, refreshToken, options),
      ),
    );
    return this.tokenSet(response);
  }

  /** Revokes `token` at the provider when it has a revocation endpoint; false when it has none. */
  async revoke(token: string, hint: 'access_token' | 'refresh_token'): Promise<boolean> {
    const as = await this.authorizationServer();
    if (!as.revocation_endpoint) return false;
    await this.call(async (options) =>
      oauth.processRevocationResponse(
        await oauth.revocationRequest(as, this.client, this.auth, token, {
          ...options,
          additionalParameters: { token_type_hint: hint },
        }),
      ),
    );
    return true;
  }

  private tokenSet(response: oauth.TokenEndpointResponse): TokenSet {
    const expiresIn = response.expires_in;
    if (typeof expiresIn !== 'number' || !Number.isFinite(expiresIn) || expiresIn <= 0) {
      // Without it there is no telling when to refresh; storing the tokens would leave them to fail unannounced.
      throw new ProviderFailure('bad_response', 'the provider answered tokens without a positive expires_in', {
        issuedRefreshToken: response.refresh_token,
      });
    }
    return {
      accessToken: response.access_token,
      refreshToken: response.refresh_token,
      expiresIn,
      scopes: response.scope ? response.scope.split(' ').filter(Boolean) : [...this.scopes],
    };
  }
}
