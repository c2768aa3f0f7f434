/**
 * What `archety start` says when it cannot use its database (one line naming the host,
 * database or role and the fix, never the password), and the "next steps" it prints for a
 * person after a first embedded start. The real errors come from a real PostgreSQL in
 * tests/integration/cliFirstRun.test.ts; here, the ones the test server cannot produce (it
 * trusts every local connection: no password is ever refused).
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { nextSteps } from '../../src/cli/nextSteps.ts';
import { AppError } from '../../src/errors.ts';
import { explainDatabaseError } from '../../src/store/explainDatabaseError.ts';

function serverError(code: string, routine: string, message: string): pg.DatabaseError {
  const err = new pg.DatabaseError(message, 0, 'error');
  err.code = code;
  err.routine = routine;
  return err;
}

const URL_WITH_PASSWORD = 'postgres://archety:hunter2-secret@db.example.com:6432/trips';

describe('the line explaining a database the server cannot use', () => {
  it('names the role of a refused password, and never the password', () => {
    const line = explainDatabaseError(
      serverError('28P01', 'auth_failed', 'password authentication failed for user "archety"'),
      URL_WITH_PASSWORD,
    );
    expect(line).toBe(
      'PostgreSQL on db.example.com:6432 refused the password of role "archety": fix the password in DATABASE_URL',
    );
  });

  it('tells a missing role (createuser) from one pg_hba.conf refuses, by the routine that refused it', () => {
    expect(
      explainDatabaseError(
        serverError('28000', 'InitializeSessionUserId', 'role "archety" does not exist'),
        URL_WITH_PASSWORD,
      ),
    ).toBe(
      'role "archety" does not exist on db.example.com:6432: create it (createuser -h db.example.com -p 6432 archety) or fix the user in DATABASE_URL',
    );
    expect(
      explainDatabaseError(
        serverError('28000', 'ClientAuthentication', 'no pg_hba.conf entry for host "10.0.0.1"'),
        URL_WITH_PASSWORD,
      ),
    ).toContain('does not let role "archety" connect to database "trips" from here (pg_hba.conf)');
  });

  it('suggests plain `createdb <name>` for the local default server', () => {
    expect(
      explainDatabaseError(
        serverError('3D000', 'InitPostgres', 'database "trips" does not exist'),
        'postgres://me@localhost/trips',
      ),
    ).toBe('database "trips" does not exist on localhost:5432: create it (createdb trips) or fix DATABASE_URL');
  });

  it('hides the password even where the driver quotes it in a connection failure', () => {
    const cause = new Error('could not use hunter2-secret');
    const line = explainDatabaseError(
      new AppError('db_unavailable', 'the database is unavailable; try again shortly', { cause }),
      URL_WITH_PASSWORD,
    );
    expect(line).toBe(
      'cannot connect to PostgreSQL on db.example.com:6432 (could not use ***): is PostgreSQL running on db.example.com:6432 and reachable from here? Check DATABASE_URL',
    );
    expect(line).not.toContain('hunter2');
  });

  it('leaves a bug (not a database error) to its stack', () => {
    expect(explainDatabaseError(new TypeError('x is not a function'), URL_WITH_PASSWORD)).toBeUndefined();
    expect(explainDatabaseError('a string', URL_WITH_PASSWORD)).toBeUndefined();
  });

  it('names any other SQLSTATE with the server’s own message', () => {
    expect(
      explainDatabaseError(serverError('53300', 'InitProcess', 'sorry, too many clients already'), URL_WITH_PASSWORD),
    ).toBe(
      'PostgreSQL on db.example.com:6432 refused to start the server: sorry, too many clients already (SQLSTATE 53300)',
    );
  });
});

describe('the next steps after a first start', () => {
  it('mints through npm when started by `npm start`, then creates a trip and opens it', () => {
    const text = nextSteps({
      url: 'http://127.0.0.1:8080',
      jwtSecretSet: false,
      dataDirEnv: undefined,
      viaNpm: true,
    });
    expect(text.split('\n')).toEqual([
      'next steps: mint a token, create a trip, open it in two windows',
      '  TOKEN=$(npm run --silent token -- --sub +15551234567)',
      `  curl -s -X POST http://127.0.0.1:8080/v1/miniapps -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"app":"trip-planner","title":"Lisbon"}'`,
      '  open http://127.0.0.1:8080/miniapp/<the id above>#token=$TOKEN',
      '',
    ]);
  });

  it('carries DATA_DIR (quoted for the shell) and reminds of JWT_SECRET when the server was given them', () => {
    const text = nextSteps({
      url: 'http://127.0.0.1:9000',
      jwtSecretSet: true,
      dataDirEnv: "/srv/my data/it's",
      viaNpm: false,
    });
    expect(text).toContain(
      `TOKEN=$(DATA_DIR='/srv/my data/it'\\''s' JWT_SECRET=<the server’s> npx archety token --sub +15551234567)`,
    );
  });
});
