import type { Schema } from '../schema.ts';

/** A miniapp: a named schema for its state and how a new session's state starts. */
export interface MiniappApp<TState = unknown> {
  name: string;
  schema: Schema;
  initialState(options: { title?: string }): TState;
}
