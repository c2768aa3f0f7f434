/**
 * The one place where driver errors become catalog errors. SQLSTATE classes decide; of the
 * errors without one, only the network's (a socket errno such as ECONNRESET) and the
 * driver's own reports of a lost or unobtainable connection are connection failures. A
 * `TypeError`, `RangeError` or any other error of our own code is a bug, not a reason to
 * retry or to throw a healthy connection away.
 */
import pg from 'pg';
import { AppError, isAppError } from '../errors.ts';

/** SQLSTATEs after which the same statement may succeed on another connection or a bit later. */
const transientStates = new Set([
  '57P01', // admin_shutdown (pg_terminate_backend)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
  '40001', // serialization_failure
  '40P01', // deadlock_detected
]);

/** Socket errors (Node's `err.code`) that mean the network or the server went away. */
const networkCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  // The socket under the connection was already closed when the driver wrote to it.
  'ERR_STREAM_DESTROYED',
  'ERR_STREAM_WRITE_AFTER_END',
  'ERR_SOCKET_CLOSED',
]);

/** The error's SQLSTATE when PostgreSQL raised it. */
export function sqlState(err: unknown): string | undefined {
  return err instanceof pg.DatabaseError ? err.code : undefined;
}

/** SQLSTATE classes 22 (data exception) and 23 (integrity violation): the statement's data was refused. */
export function isDataError(err: unknown): boolean {
  const state = sqlState(err);
  return state !== undefined && (state.startsWith('22') || state.startsWith('23'));
}

/** True when the failure is the connection's, not the statement's: retrying elsewhere may work. */
export function isConnectionError(err: unknown): boolean {
  if (isAppError(err)) return err.code === 'db_unavailable';
  const state = sqlState(err);
  if (state !== undefined) return state.startsWith('08') || transientStates.has(state);
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === 'string') return networkCodes.has(code);
  // pg and pg-pool report a lost connection, a connect timeout or a client that is no longer
  // queryable as a plain `Error` without a code; errors of our own code are TypeErrors,
  // RangeErrors and other subclasses (or carry a code), so the exact class tells them apart
  // without reading messages.
  return Object.getPrototypeOf(err) === Error.prototype;
}

export function translatePgError(err: unknown): Error {
  if (isAppError(err)) return err;
  const state = sqlState(err);
  if (state === '57014') {
    return new AppError('db_unavailable', 'the database did not answer in time', { cause: err });
  }
  if (isConnectionError(err)) {
    return new AppError('db_unavailable', 'the database is unavailable; try again shortly', { cause: err });
  }
  return err instanceof Error ? err : new Error(String(err));
}
