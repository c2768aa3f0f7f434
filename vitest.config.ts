import { defineConfig, type TestProjectInlineConfiguration } from 'vitest/config';

/**
 * The benchmarks' smoke runs load both cores: they run after the rest, two at a time (their
 * figures are not asserted; one at a time took 35 s longer).
 */
const BENCH_SMOKE = 'tests/integration/bench*Smoke.test.ts';

const shared: TestProjectInlineConfiguration['test'] = {
  globalSetup: ['tests/helpers/globalSetup.ts'],
  pool: 'forks',
  testTimeout: 30_000,
  hookTimeout: 60_000,
  // Servers are real processes and sockets: a failure should say so, not retry it away.
  retry: 0,
};

export default defineConfig({
  test: {
    projects: [
      { test: { ...shared, name: 'suite', include: ['tests/**/*.test.ts'], exclude: [BENCH_SMOKE], maxWorkers: 2 } },
      {
        test: {
          ...shared,
          name: 'bench-smoke',
          include: [BENCH_SMOKE],
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
