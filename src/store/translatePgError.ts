/**
 * The one place where driver errors become catalog errors. SQLSTATE classes decide; an
 * error without a SQLSTATE from the driver or the pool (refused, reset, terminated, connect
 * timeout) is a connection failure.
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

function sqlState(err: unknown): string | undefined {
  return err instanceof pg.DatabaseError ? err.code : undefined;
}

/** True when the failure is the connection's, not the statement's: retrying elsewhere may work. */
export function isConnectionError(err: unknown): boolean {
  if (isAppError(err)) return err.code === 'db_unavailable';
  const state = sqlState(err);
  if (state === undefined) return err instanceof Error;
  return state.startsWith('08') || transientStates.has(state);
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
