/**
 * Editing one field of the trip: a field shows the state until the person starts typing, then
 * keeps their text (whatever arrives meanwhile) until they commit it (change, blur or Enter:
 * one op) or press Escape.
 *
 * The edit's base version is the version at the first keystroke, when the field still showed
 * the state the person was changing, not the version when they commit: so if someone else
 * commits the same field while they type, the server answers `conflict` instead of letting
 * the later Enter silently overwrite it.
 */

export type Field = HTMLInputElement | HTMLTextAreaElement;

/** Receives the committed text and the version the person's edit began from. */
export type Commit = (value: string, baseVersion: number) => void;

export interface FieldEditing {
  /** Puts the state's `value` in the field, unless the person is typing something else in it. */
  show(field: Field, value: string): void;
  /** Wires the field's editing: base version at the first keystroke, commit on change, blur or Enter. */
  bind<F extends Field>(field: F, commit: Commit): F;
}

/** `version` gives the client's current (confirmed) version. */
export function fieldEditing(version: () => number): FieldEditing {
  /** What each field last showed from the state or committed; a focused field holding anything else is unsaved typing. */
  const shown = new WeakMap<Field, string>();
  /** The version each field's unsaved typing began from. */
  const began = new WeakMap<Field, number>();

  const typing = (field: Field) => document.activeElement === field && field.value !== shown.get(field);

  return {
    show(field, value) {
      if (typing(field)) return;
      if (field.value !== value) field.value = value;
      shown.set(field, value);
      // The person now sees this version: their next keystroke begins from it.
      began.delete(field);
    },
    bind(field, commit) {
      const save = () => {
        const base = began.get(field) ?? version();
        began.delete(field);
        if (field.value === shown.get(field)) return;
        shown.set(field, field.value);
        commit(field.value, base);
      };
      field.addEventListener('input', () => {
        if (!began.has(field)) began.set(field, version());
      });
      field.addEventListener('change', save);
      field.addEventListener('keydown', (e) => {
        const key = (e as KeyboardEvent).key;
        if (key === 'Enter' && field instanceof HTMLInputElement) save();
        if (key === 'Escape') {
          field.value = shown.get(field) ?? '';
          began.delete(field);
        }
      });
      return field;
    },
  };
}
