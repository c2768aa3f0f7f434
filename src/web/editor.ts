/**
 * How the page's sections turn what a person did into ops: every edit goes through here, so
 * an edit the client refuses locally (invalid for the trip) is explained the same way
 * everywhere and the fields are put back to the state.
 */
import type { MiniappClient, Op } from '../client/MiniappClient.ts';
import { type Commit, type FieldEditing, fieldEditing } from './fieldEditing.ts';
import type { Trip } from './words.ts';

export type Path = Op['path'];

export interface Editor {
  trip(): Trip;
  fields: FieldEditing;
  /** Applies `op`, begun from `baseVersion` (default: now); false (and a message) when refused. */
  edit(op: Op, baseVersion?: number): boolean;
  set(path: Path, value: unknown, baseVersion?: number): boolean;
  /** A commit that sets `path` to the trimmed text, refusing an empty one ("`what` can’t be empty"). */
  text(path: Path, what: string): Commit;
  /** Explains why an edit was not made and puts the fields back to the state. */
  refuse(message: string): void;
}

export function createEditor(client: MiniappClient, onRefused: (message: string) => void): Editor {
  const editor: Editor = {
    trip: () => client.view as Trip,
    fields: fieldEditing(() => client.version),
    edit(op, baseVersion) {
      try {
        client.apply(op, { baseVersion });
        return true;
      } catch (err) {
        editor.refuse(`That change was not saved: ${(err as Error).message}.`);
        return false;
      }
    },
    set: (path, value, baseVersion) => editor.edit({ kind: 'set', path, value }, baseVersion),
    text: (path, what) => (v, base) => {
      if (v.trim()) editor.set(path, v.trim(), base);
      else editor.refuse(`${what} can’t be empty.`);
    },
    refuse: onRefused,
  };
  return editor;
}
