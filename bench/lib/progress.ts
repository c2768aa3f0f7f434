/** The benchmark's progress lines, the current phase (for the heartbeat and errors) and timing helpers. */
import { performance } from 'node:perf_hooks';

const t0 = performance.now();
let lastLine = 0;
let currentPhase = 'starting';

/** Prints one progress line, stamped with the seconds since the start. */
export function progress(message: string): void {
  lastLine = performance.now();
  process.stdout.write(`[bench ${((lastLine - t0) / 1000).toFixed(1).padStart(5)}s] ${message}\n`);
}

/** Starts a phase: prints it and remembers it for the heartbeat and for error messages. */
export function phase(name: string): void {
  currentPhase = name;
  progress(name);
}

export function currentPhaseName(): string {
  return currentPhase;
}

/** ms since the last progress line. */
export function sinceLastLine(): number {
  return performance.now() - lastLine;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Calls `fn` at epoch time `epochMs`. */
export function at<T>(epochMs: number, fn: () => T): Promise<T> {
  return new Promise((resolve) => setTimeout(() => resolve(fn()), Math.max(0, epochMs - Date.now())));
}

/**
 * What a run started and must undo, last-registered first, however it ends: `cleanup` runs them
 * once (a second call waits for the first), and SIGINT or SIGTERM runs it and exits 130 —
 * before whatever the interrupted run does next, since the signal's wait was registered first.
 */
export function cleanupOnSignals(
  say: (message: string) => void,
  stopping = 'stopping',
): {
  cleanups: (() => unknown)[];
  cleanup: () => Promise<void>;
} {
  const cleanups: (() => unknown)[] = [];
  let running: Promise<void> | null = null;
  const cleanup = () => {
    running ??= (async () => {
      for (const fn of cleanups.splice(0).reverse()) {
        await Promise.resolve()
          .then(fn)
          .catch((err) => say(`cleanup: ${String(err)}`));
      }
    })();
    return running;
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      say(`${signal}: ${stopping}`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  return { cleanups, cleanup };
}

/**
 * What every benchmark run has around it: cleanups (run last-registered first, on the way out
 * however it ends), a deadline that aborts a stuck run, SIGINT/SIGTERM, and a line every few
 * seconds while a phase prints nothing.
 */
export function startRun(deadlineMs: number): {
  cleanups: (() => unknown)[];
  cleanup: () => Promise<void>;
  /** Stops the heartbeat (the deadline and signal handlers end with the process). */
  stopHeartbeat: () => void;
} {
  const { cleanups, cleanup } = cleanupOnSignals(progress);
  const deadline = setTimeout(() => {
    progress(`deadline of ${deadlineMs / 1000} s reached during "${currentPhaseName()}": aborting`);
    void cleanup().finally(() => process.exit(1));
  }, deadlineMs);
  deadline.unref();
  const heartbeat = setInterval(() => {
    if (sinceLastLine() > 4000) progress(`  … ${currentPhaseName()}`);
  }, 1000);
  heartbeat.unref();
  return { cleanups, cleanup, stopHeartbeat: () => clearInterval(heartbeat) };
}

/** Runs a benchmark's `main`: exit 0 when it ends, else its error printed, `cleanup` run, exit 1. */
export function runMain(main: () => Promise<void>, cleanup: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err);
      void cleanup().finally(() => process.exit(1));
    },
  );
}
