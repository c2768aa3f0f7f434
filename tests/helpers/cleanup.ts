/**
 * What a test file created — databases, servers, processes, browsers, folders — is undone
 * when the file's tests are done. vitest 4 drops an `afterAll` registered inside `beforeAll` or
 * inside a test, so helpers never register hooks themselves: they call `onCleanup`, and the
 * one `afterAll` below (registered when the file imports this module) runs everything, last
 * created first, even when an earlier cleanup fails.
 */
import { afterAll } from 'vitest';

const cleanups: (() => unknown)[] = [];

afterAll(async () => {
  const failures: unknown[] = [];
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      await cleanup();
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) throw new AggregateError(failures, `${failures.length} cleanups failed`);
});

/** Runs `cleanup` when the current test file's tests are done (after those registered later). */
export function onCleanup(cleanup: () => unknown): void {
  cleanups.push(cleanup);
}
