/** HTTP calls against a test server. */
// biome-ignore lint/suspicious/noExplicitAny: response bodies are whatever a test expects them to be.
export interface ApiResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

// biome-ignore lint/suspicious/noExplicitAny: as above.
export async function api<T = any>(
  base: string,
  method: string,
  path: string,
  options: { token?: string; body?: unknown; raw?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<ApiResponse<T>> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let body: string | Blob | undefined;
  if (options.raw !== undefined)
    body = typeof options.raw === 'string' ? options.raw : new Blob([new Uint8Array(options.raw)]);
  else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await fetch(`${base}${path}`, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body: parsed as T, headers: res.headers };
}

/** Creates a trip-planner session as `token`'s user; returns its id. */
export async function createTrip(base: string, token: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await api(base, 'POST', '/v1/miniapps', {
    token,
    body: { app: 'trip-planner', title: 'Lisbon', ...extra },
  });
  if (res.status !== 201) throw new Error(`create failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.id;
}
