/**
 * Why the server could not use `DATABASE_URL` at start, in one line a person can act on:
 * which host, database or role, and the fix (`createdb x`, `createuser y`, "is PostgreSQL
 * running on host:port?"). Decided from SQLSTATEs, the server's `routine` and socket error
 * codes, never from message text; the password is never part of the line.
 */
import pg from 'pg';
import { isAppError } from '../errors.ts';
import { sqlState } from './translatePgError.ts';

/** Where the URL points, as the driver resolves it (PG* variables and defaults included). */
interface Target {
  host: string;
  port: number;
  user: string;
  database: string;
  password: string | undefined;
}

function targetOf(databaseUrl: string): Target {
  const client = new pg.Client({ connectionString: databaseUrl });
  const password = typeof client.password === 'string' ? client.password : undefined;
  const user = client.user ?? '';
  return { host: client.host, port: client.port, user, database: client.database ?? user, password };
}

/** The first error in the `cause` chain (AppError wraps the driver's) that is the driver's. */
function rootCause(err: unknown): unknown {
  let e = err;
  for (let i = 0; i < 5 && isAppError(e) && e.cause; i++) e = e.cause;
  return e;
}

const LOCAL_HOSTS = new Set(['localhost', '127.0.0.1', '::1']);

/** The command that creates a database or role, with -h/-p when the server is not the local default. */
function command(tool: 'createdb' | 'createuser', name: string, t: Target): string {
  const local = (LOCAL_HOSTS.has(t.host) || t.host.startsWith('/')) && t.port === 5432;
  return local ? `${tool} ${name}` : `${tool} -h ${t.host} -p ${t.port} ${name}`;
}

/**
 * One line (no trailing newline) explaining `err`, thrown while connecting to or migrating
 * `databaseUrl`; undefined when it is not a database error (a bug keeps its stack).
 */
export function explainDatabaseError(err: unknown, databaseUrl: string): string | undefined {
  const t = targetOf(databaseUrl);
  const at = `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
  const cause = rootCause(err);
  const state = sqlState(cause);
  const routine = cause instanceof pg.DatabaseError ? cause.routine : undefined;
  // The driver's message is quoted in the generic cases; it should never hold the password, but make sure.
  const said = (e: Error) => (t.password ? e.message.split(t.password).join('***') : e.message);
  if (state === '3D000') {
    return `database "${t.database}" does not exist on ${at}: create it (${command('createdb', t.database, t)}) or fix DATABASE_URL`;
  }
  if (state === '28000' && routine === 'InitializeSessionUserId') {
    return `role "${t.user}" does not exist on ${at}: create it (${command('createuser', t.user, t)}) or fix the user in DATABASE_URL`;
  }
  if (state === '28P01') {
    return `PostgreSQL on ${at} refused the password of role "${t.user}": fix the password in DATABASE_URL`;
  }
  if (state === '28000') {
    return `PostgreSQL on ${at} does not let role "${t.user}" connect to database "${t.database}" from here (pg_hba.conf): allow it there or fix DATABASE_URL`;
  }
  if (state === '42501') {
    return `role "${t.user}" may not create the server's tables in database "${t.database}" on ${at}: make it the database's owner (ALTER DATABASE ${t.database} OWNER TO ${t.user}) or use one that is`;
  }
  if (state !== undefined) {
    return `PostgreSQL on ${at} refused to start the server: ${said(cause as Error)} (SQLSTATE ${state})`;
  }
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'ECONNREFUSED') {
      return `cannot connect to PostgreSQL on ${at} (connection refused): is PostgreSQL running on ${at}? Check DATABASE_URL`;
    }
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
      return `cannot resolve the host "${t.host}" of DATABASE_URL: check DATABASE_URL`;
    }
    if (isAppError(err) && err.code === 'db_unavailable') {
      // The driver's own connection failures (timeouts, TLS refused, the server hanging up).
      return `cannot connect to PostgreSQL on ${at} (${said(cause)}): is PostgreSQL running on ${at} and reachable from here? Check DATABASE_URL`;
    }
  }
  return undefined;
}
