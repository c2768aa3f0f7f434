/**
 * Where the pages keep what they know between visits, and how they call the HTTP API.
 *
 * Tokens live only in this tab's sessionStorage, never in a URL query (a query reaches the
 * server's logs and the history): a trip's own token (from its link's `#token=`) under its id,
 * and the token pasted or linked on the landing page for every trip. The list of trips opened
 * in this browser (ids and titles, no tokens) is kept in localStorage per user, as the server
 * has no route that lists a user's trips.
 */

const TOKEN = 'archety.token';
const tripToken = (sessionId: string) => `archety.token.${sessionId}`;

/** The landing page's token (pasted, or from `/#token=`). */
export function landingToken(): string | null {
  return sessionStorage.getItem(TOKEN);
}

export function keepLandingToken(token: string | null): void {
  if (token) sessionStorage.setItem(TOKEN, token);
  else sessionStorage.removeItem(TOKEN);
}

/**
 * The token in the address bar's fragment, if any, which it then removes (so the token does not
 * stay in the visible URL or the history).
 */
export function tokenFromFragment(): string | null {
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  if (token) history.replaceState(null, '', location.pathname + location.search);
  return token?.trim() || null;
}

/** The token for a trip: its link's, else this tab's earlier one for it, else the landing page's. */
export function takeTripToken(sessionId: string): string | null {
  const fromLink = tokenFromFragment();
  if (fromLink) sessionStorage.setItem(tripToken(sessionId), fromLink);
  return fromLink ?? sessionStorage.getItem(tripToken(sessionId)) ?? landingToken();
}

export interface KnownTrip {
  id: string;
  title: string;
}

const tripsKey = (user: string) => `archety.trips.${user}`;

export function knownTrips(user: string): KnownTrip[] {
  try {
    const list = JSON.parse(localStorage.getItem(tripsKey(user)) ?? '[]');
    return Array.isArray(list) ? list.filter((t) => typeof t?.id === 'string' && typeof t?.title === 'string') : [];
  } catch {
    return [];
  }
}

/** Remembers (or moves to the top) a trip this user opened. At most 50 are kept. */
export function rememberTrip(user: string, trip: KnownTrip): void {
  const list = [trip, ...knownTrips(user).filter((t) => t.id !== trip.id)].slice(0, 50);
  localStorage.setItem(tripsKey(user), JSON.stringify(list));
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Calls the HTTP API with the token as a bearer header; the answer's JSON, or an `ApiError`. */
export async function callApi<T>(method: string, path: string, token: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'offline', 'the server could not be reached; check your connection and try again');
  }
  const answer = await res.json().catch(() => null);
  if (res.ok) return answer as T;
  const error = (answer as { error?: { code?: string; message?: string } } | null)?.error;
  throw new ApiError(res.status, error?.code ?? 'unknown', error?.message ?? `the server answered ${res.status}`);
}
