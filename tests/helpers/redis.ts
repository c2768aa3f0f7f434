/**
 * Redis for the tests that need it (cluster mode): TEST_REDIS_URL, else 127.0.0.1:6379.
 * Without a reachable Redis such tests skip, saying so loudly; under CI (`CI=true`) nothing may
 * skip, so there they fail instead. Each test file gets key prefixes of its own
 * (`testPrefix()`), and every key under them is deleted after the file's tests.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { onCleanup } from './cleanup.ts';

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Sends one inline command over a fresh connection; resolves with Redis's raw answer. */
function rawCommand(command: string, timeoutMs = 1500): Promise<string> {
  const { hostname, port } = new URL(REDIS_URL);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname.replace(/^\[|\]$/g, ''), port: Number(port || 6379) });
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from Redis at ${REDIS_URL} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('connect', () => socket.write(`${command}\r\n`));
    socket.on('data', (chunk) => {
      answer += chunk.toString();
      if (answer.endsWith('\r\n')) {
        clearTimeout(timer);
        socket.end();
        resolve(answer);
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

let reachable: Promise<boolean> | undefined;

/**
 * True when Redis answers PING. False (with a loud warning) when it does not, except under CI,
 * where a missing Redis is a failure: call it at the top of a test file and skip on false.
 */
export function redisReachable(): Promise<boolean> {
  reachable ??= rawCommand('PING')
    .then(
      (answer) => answer.startsWith('+PONG'),
      () => false,
    )
    .then((ok) => {
      if (ok) return true;
      if (process.env.CI === 'true') throw new Error(`Redis is required under CI and not reachable at ${REDIS_URL}`);
      console.warn(
        `\n*** Redis is not reachable at ${REDIS_URL}: the cluster-mode tests of this file are SKIPPED. ` +
          'Start Redis (or set TEST_REDIS_URL) to run them. ***\n',
      );
      return false;
    });
  return reachable;
}

/** A REDIS_PREFIX of this test file's own; its keys are deleted after the file's tests. */
export function testPrefix(): string {
  const prefix = `archety_t_${randomBytes(5).toString('hex')}:`;
  onCleanup(() => deleteKeys(prefix));
  return prefix;
}

/** Deletes every key starting with `prefix` (a Lua script: SCAN and DEL in one call). */
export async function deleteKeys(prefix: string): Promise<void> {
  const script =
    "local c='0' repeat local r=redis.call('SCAN',c,'MATCH',ARGV[1],'COUNT',1000) c=r[1] for _,k in ipairs(r[2]) do redis.call('DEL',k) end until c=='0' return 0";
  await rawCommand(`EVAL "${script}" 0 ${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`, 5000);
}
