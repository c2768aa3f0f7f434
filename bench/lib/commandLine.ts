/**
 * The benchmarks' command lines: `parse` the arguments, or end the run — `--help` prints the
 * usage (exit 0), a mistake prints what is wrong and the usage (exit 2), never a stack trace.
 */
export function parsedOrExit<T>(name: string, usage: string, parse: () => T | 'help'): T {
  let parsed: T | 'help';
  try {
    parsed = parse();
  } catch (err) {
    process.stderr.write(`${name}: ${(err as Error).message}\n\n${usage.trimEnd()}\n`);
    process.exit(2);
  }
  if (parsed === 'help') {
    process.stdout.write(`${usage.trimEnd()}\n`);
    process.exit(0);
  }
  return parsed;
}

/** The value of `--name` as an integer ≥ `min`, or undefined when it was not given. */
export function integerOption(name: string, raw: string | undefined, min: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got "${raw}"`);
  return n;
}
