/** What the benchmark's phases share: sizes, processes, sessions and the running op account. */
import type { BenchOptions } from './options.ts';
import type { ServerProcess, Worker } from './processes.ts';
import type { OpAccount } from './protocol.ts';

export const SERVER_CORE = 0;
export const GENERATOR_CORE = 1;

export interface Context {
  o: BenchOptions;
  workers: Worker[];
  server: ServerProcess;
  relay: ServerProcess;
  sessions: string[];
  users: string[];
  dbUrl: string;
  /** Every Archety op of the run (setup, warm-up and rounds). */
  archetyTotal: OpAccount;
}

/** The load rooms, dealt round-robin to the workers. */
