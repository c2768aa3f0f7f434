/**
 * Which errors are the connection's (retried, the connection thrown away) and which are not:
 * only PostgreSQL's connection and transient SQLSTATEs, network errors and the driver's own
 * reports of a lost connection; never a bug in our code (issue 7).
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { AppError, Codes } from '../../src/errors.ts';
import { isConnectionError, isDataError, translatePgError } from '../../src/store/translatePgError.ts';

function dbError(code: string): pg.DatabaseError {
  const err = new pg.DatabaseError('refused', 0, 'error');
  err.code = code;
  return err;
}

const errno = (code: string) => Object.assign(new Error(`connect ${code}`), { code, syscall: 'connect' });

describe('connection errors', () => {
  it('are PostgreSQL connection and transient states, network errors and the driver’s lost connections', () => {
    for (const err of [
      dbError('08006'),
      dbError('57P01'),
      dbError('40001'),
      errno('ECONNREFUSED'),
      errno('ECONNRESET'),
      errno('ETIMEDOUT'),
      new Error('Connection terminated unexpectedly'),
      new Error('timeout exceeded when trying to connect'),
      new AppError(Codes.db_unavailable, 'down'),
    ]) {
      expect(isConnectionError(err), `${err.message} ${(err as { code?: string }).code}`).toBe(true);
    }
  });

  it('are never errors of our own code, data errors or other errors with a code', () => {
    for (const err of [
      new TypeError('Cannot read properties of undefined'),
      new RangeError('Invalid array length'),
      new SyntaxError('Unexpected token'),
      dbError('22P05'),
      dbError('23505'),
      dbError('42P01'),
      Object.assign(new Error('not a socket error'), { code: 'ERR_INVALID_ARG_TYPE' }),
      new AppError(Codes.validation_failed, 'bad'),
      'a string',
    ]) {
      expect(isConnectionError(err), String(err)).toBe(false);
    }
  });

  it('translate to db_unavailable, while a TypeError stays itself', () => {
    expect(translatePgError(errno('ECONNRESET'))).toMatchObject({ code: Codes.db_unavailable });
    const bug = new TypeError('bug');
    expect(translatePgError(bug)).toBe(bug);
  });

  it('tells data and integrity errors (classes 22 and 23) from the rest', () => {
    expect([dbError('22P05'), dbError('22021'), dbError('23514')].map(isDataError)).toEqual([true, true, true]);
    expect([dbError('42P01'), dbError('08006'), new TypeError('x')].map(isDataError)).toEqual([false, false, false]);
  });
});
