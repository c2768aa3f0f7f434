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
 * What every benchmark run has around it: cleanups (run last-registered first, on the way out
 * however it ends), a deadline that aborts a stuck run, SIGINT/SIGTERM, and a line every few
 * seconds while a phase prints nothing.
 */
export function startRun(deadlineMs: number): {
  cleanups: (() => Promise<unknown>)[];
  cleanup: () => Promise<void>;
  /** Stops the heartbeat (the deadline and signal handlers end with the process). */
  stopHeartbeat: () => void;
} {
  const cleanups: (() => Promise<unknown>)[] = [];
  const cleanup = async () => {
    for (const fn of cleanups.splice(0).reverse()) await fn().catch((err) => progress(`cleanup: ${String(err)}`));
  };
  const deadline = setTimeout(() => {
    progress(`deadline of ${deadlineMs / 1000} s reached during "${currentPhaseName()}": aborting`);
    void cleanup().finally(() => process.exit(1));
  }, deadlineMs);
  deadline.unref();
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      progress(`${signal}: stopping`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  const heartbeat = setInterval(() => {
    if (sinceLastLine() > 4000) progress(`  … ${currentPhaseName()}`);
  }, 1000);
  heartbeat.unref();
  return { cleanups, cleanup, stopHeartbeat: () => clearInterval(heartbeat) };
}
