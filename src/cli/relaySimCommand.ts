/**
 * `archety relay-sim`: a terminal relay for trying Sage without iMessage. It connects to
 * `/v1/relay` as a relay, sends what the person types as relay events and prints Sage's
 * replies. With stdin piped it runs the lines as a script and exits once every message that
 * should get a reply got one.
 */
import readline from 'node:readline';
import { MissingJwtSecretError, resolveJwtKey } from '../auth/jwtKey.ts';
import { mintToken } from '../auth/mintToken.ts';
import { loadConfig } from '../config.ts';
import { options } from './args.ts';
import { COMMANDS_HELP, isPhone } from './relaySim/parseLine.ts';
import { RelayConnection } from './relaySim/RelayConnection.ts';
import { RelaySimSession } from './relaySim/RelaySimSession.ts';
import { ReplyTracker } from './relaySim/ReplyTracker.ts';
import { palette, Transcript, visibleLength } from './relaySim/Transcript.ts';

const DEFAULT_AS = '+15550000001';
const PERSONA = /^[a-z][a-z0-9_-]{0,63}$/;
/** Lifetime of a token the simulator mints for itself; it mints another before this ends. */
const MINTED_TTL_S = 12 * 3600;

const defaultUrl = () => `http://127.0.0.1:${process.env.PORT && process.env.PORT !== '0' ? process.env.PORT : 8080}`;

const HELP = `Usage: archety relay-sim [--url <server>] [--as <+E164>] [--token <jwt>] [--persona sage] [--wait 10]

A terminal relay for trying Sage without iMessage: it connects to the server's /v1/relay
socket as a relay, sends each line you type as a message from a phone number, and prints
Sage's replies as they arrive.
  --url      the server (default http://127.0.0.1:$PORT, or :8080)
  --as       the phone number you type as, E.164 (default ${DEFAULT_AS})
  --token    a relay token (role relay); default: one minted with the configured secret,
             like \`archety token --role relay\` (run it where the server runs, same env)
  --persona  who you talk to (default sage)
  --wait     with stdin piped: seconds to wait for a missing reply once stdin has ended,
             counted from the last answer or reply (default 10)

At the prompt:
${COMMANDS_HELP}

With stdin piped (not a terminal) the lines are sent in order, each once the previous one
was stored (/reply first waits for the replies due in its chat), replies are printed as
"[chat] Sage: …", and the command exits 0 when stdin has ended and every message that
should get a reply got one; 1 otherwise (a refused message or a bad line counts too).

The server sends replies to the most recently connected relay, and this one acknowledges
them: do not point it at a server that serves a real relay.
`;

export async function runRelaySim(args: string[]): Promise<number> {
  let o: ReturnType<typeof options>;
  try {
    o = options(args, {
      url: { type: 'string' },
      as: { type: 'string', default: DEFAULT_AS },
      token: { type: 'string' },
      persona: { type: 'string', default: 'sage' },
      wait: { type: 'string', default: '10' },
    });
  } catch (err) {
    return usage((err as Error).message);
  }
  if (o.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const as = o.as as string;
  const persona = o.persona as string;
  const url = typeof o.url === 'string' ? o.url : defaultUrl();
  const waitS = Number(o.wait);
  if (!isPhone(as)) return usage(`--as must be a phone number in E.164 form, such as +15551234567 (got "${as}")`);
  if (!PERSONA.test(persona)) {
    return usage(`--persona must be a lower-case persona name such as sage (got "${persona}")`);
  }
  if (!isServerUrl(url)) return usage(`--url must be an http(s):// or ws(s):// URL of the server (got "${url}")`);
  if (!Number.isFinite(waitS) || waitS < 0) return usage(`--wait must be a number of seconds (got "${o.wait}")`);

  const auth = await relayToken(o.token);
  if ('error' in auth) {
    process.stderr.write(`archety relay-sim: ${auth.error}\n`);
    return 1;
  }

  const interactive = Boolean(process.stdin.isTTY);
  const live = interactive && Boolean(process.stdout.isTTY);
  const transcript = new Transcript(
    process.stdout,
    process.stderr,
    palette(Boolean(process.stdout.isTTY) && !process.env.NO_COLOR),
    live,
  );
  const p = transcript.p;
  const tracker = new ReplyTracker();
  let failed = false;
  let outage: string | null = null;
  const connection = new RelayConnection({
    baseUrl: url,
    token: auth.token,
    renewable: auth.renewable,
    onSend: (frame) => session.onSend(frame),
    onStatus(status) {
      if (status.state === 'connected') {
        if (interactive || outage !== null) transcript.print(p.dim(`  connected to ${status.url}`), true);
        outage = null;
      } else if (status.state === 'reconnecting') {
        // Once per outage (and when its cause changes), not on every attempt.
        if (outage !== status.reason) transcript.print(p.warn(`  ${status.reason}; reconnecting…`), true);
        outage = status.reason;
      } else {
        failed = true;
        transcript.print(
          p.error(`archety relay-sim: ${status.message}${refusalHint(status.status, auth.minted)}`),
          true,
        );
        close();
        session.onProgress?.();
      }
    },
    onServerError: (code, message) => transcript.print(p.error(`  ✗ ${code}: ${message}`), true),
  });
  const session = new RelaySimSession({
    as,
    persona,
    interactive,
    submit: (event) => connection.submit(event),
    connected: () => connection.connected,
    transcript,
    tracker,
    replyWaitMs: waitS * 1000,
    help: `Commands:\n${COMMANDS_HELP}`,
  });

  const rl = interactive
    ? readline.createInterface({ input: process.stdin, output: process.stdout, terminal: live, historySize: 200 })
    : readline.createInterface({ input: process.stdin, terminal: false, crlfDelay: Number.POSITIVE_INFINITY });
  const ended = new Promise<void>((resolve) => rl.once('close', resolve));
  let closed = false;
  function close() {
    if (closed) return;
    closed = true;
    transcript.attach(null);
    rl.close();
    // Leave the terminal without a prompt that no longer takes input.
    if (live) {
      readline.clearLine(process.stdout, 0);
      readline.cursorTo(process.stdout, 0);
    }
  }
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    if (live) transcript.lineEntered(visibleLength(session.prompt()) + visibleLength(line));
    if (interactive && !closed) rl.prompt();
    chain = chain.then(async () => {
      if (session.quit || failed) return;
      await session.handle(line);
      if (session.quit) close();
      else if (interactive && !closed) {
        rl.setPrompt(session.prompt());
        rl.prompt(true);
      }
    });
  });
  rl.on('SIGINT', close);
  rl.once('close', close);

  if (interactive) {
    transcript.attach(rl);
    rl.setPrompt(session.prompt());
    transcript.print(
      `${p.sage('archety relay-sim')} — a terminal relay; type a message and press enter.\n${p.dim(`  ${session.describe()}`)}\n${p.dim(COMMANDS_HELP)}`,
    );
  }
  connection.start();
  await ended;
  const code = interactive
    ? Number(failed)
    : await finishScript(
        session,
        tracker,
        () => chain,
        () => failed,
        waitS,
      );
  await connection.close();
  return code;
}

/**
 * After stdin ended: waits until every line was sent and every message that should get a
 * reply got one. Gives up when `waitS` seconds pass without an answer or a reply.
 */
async function finishScript(
  session: RelaySimSession,
  tracker: ReplyTracker,
  chain: () => Promise<void>,
  failed: () => boolean,
  waitS: number,
): Promise<number> {
  let sending = true;
  const outcome = await new Promise<'done' | 'timeout' | 'failed'>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const finish = (r: 'done' | 'timeout' | 'failed') => {
      clearTimeout(timer);
      session.onProgress = null;
      resolve(r);
    };
    const check = () => {
      if (failed()) finish('failed');
      else if (!sending && tracker.missing.length === 0) finish('done');
    };
    session.onProgress = () => {
      clearTimeout(timer);
      timer = setTimeout(() => finish('timeout'), waitS * 1000);
      check();
    };
    void chain().then(() => {
      sending = false;
      check();
    });
    session.onProgress();
  });
  if (outcome === 'timeout') {
    const missing = tracker.missing;
    const what = sending
      ? `the server did not answer within ${waitS} s`
      : `no reply within ${waitS} s to ${missing.length} message${missing.length === 1 ? '' : 's'}: ${missing.map((m) => JSON.stringify(m.text)).join(', ')}`;
    process.stderr.write(`archety relay-sim: ${what}\n`);
  }
  return outcome === 'done' && session.failures === 0 ? 0 : 1;
}

type TokenSource = { token: () => Promise<string>; renewable: boolean; minted: string | null } | { error: string };

/** `--token`, or a relay token minted like `archety token` does (a fresh one before it expires). */
async function relayToken(given: string | boolean | undefined): Promise<TokenSource> {
  if (typeof given === 'string') return { token: async () => given, renewable: false, minted: null };
  const config = loadConfig();
  let key: Awaited<ReturnType<typeof resolveJwtKey>>;
  try {
    // Never a new secret: one that no server uses would mint tokens every server refuses.
    key = await resolveJwtKey(config, { create: false });
  } catch (err) {
    if (err instanceof MissingJwtSecretError) return { error: `${err.message}; or pass a relay token with --token` };
    throw err;
  }
  if (!('secret' in key)) {
    return {
      error:
        'tokens are verified with JWT_JWKS_URL, so relay-sim cannot mint one: pass a relay token (role relay) with --token',
    };
  }
  let cached: { token: string; expiresAt: number } | null = null;
  const token = async () => {
    if (!cached || Date.now() > cached.expiresAt - 60_000) {
      const t = await mintToken({
        secret: key.secret,
        issuer: config.jwt.issuer,
        audience: config.jwt.audience,
        sub: 'relay-sim',
        role: 'relay',
        ttlS: MINTED_TTL_S,
      });
      cached = { token: t, expiresAt: Date.now() + MINTED_TTL_S * 1000 };
    }
    return cached.token;
  };
  const minted = key.source === 'JWT_SECRET' ? 'JWT_SECRET' : `the secret in ${config.dataDir}`;
  return { token, renewable: true, minted };
}

function refusalHint(status: number | undefined, minted: string | null): string {
  if (status === 401 && minted) {
    return `\n  (the token was signed with ${minted}; the server must use the same key: run relay-sim with the server's environment and directory, or pass --token)`;
  }
  if (status === 403) return '\n  (the token must have role relay: archety token --role relay --sub relay-sim)';
  if (status === 404) return '\n  (no /v1/relay there: is --url an Archety server?)';
  return '';
}

function isServerUrl(url: string): boolean {
  try {
    return ['http:', 'https:', 'ws:', 'wss:'].includes(new URL(url).protocol);
  } catch {
    return false;
  }
}

function usage(message: string): number {
  process.stderr.write(`archety relay-sim: ${message}\n\n${HELP}`);
  return 2;
}
