import { type ParseArgsConfig, parseArgs } from 'node:util';

/** Parses `--flag value` options (plus `--help`), failing with a clear message on unknown ones. */
export function options(args: string[], spec: NonNullable<ParseArgsConfig['options']>) {
  return parseArgs({
    args,
    options: { ...spec, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: false,
  }).values as Record<string, string | boolean | undefined>;
}
