/**
 * The card shown to a person whose edit was not applied (a `conflict`): which field, who
 * changed it first and to what, their own text, and a button to re-apply it.
 *
 * It lists only the ops the client reported as clashing (same field, not sent from this
 * page): the person's own unrelated edits are never blamed. An op by this same user came from
 * another connection of theirs (another window or device), and says so.
 */
import type { AppliedOp, ConflictEvent, MiniappClient } from '../client/MiniappClient.ts';
import { button, h } from './dom.ts';
import { describeField, describeValue, type Me, personName, type Trip } from './words.ts';

const YOU_ELSEWHERE = 'you, in another window';

/** Who made `op`, in words for the person reading the card. */
export function whoMade(op: AppliedOp, me: Me | null): string {
  return op.by === me?.id ? YOU_ELSEWHERE : personName(op.by, me);
}

/** Who made `ops`, each once, as the subject of a sentence ("Ana and you, in another window,"). */
export function whoChanged(ops: AppliedOp[], me: Me | null): string {
  const people = [...new Set(ops.map((o) => whoMade(o, me)))];
  return people.map((p) => (p === YOU_ELSEWHERE ? `${p},` : p)).join(' and ');
}

export function conflictCard(
  { edit: lost, ops, unconfirmed }: ConflictEvent,
  client: MiniappClient,
  me: Me | null,
): HTMLElement {
  const trip = client.view as Trip;
  const what = describeField(lost.op, trip);
  const people = whoChanged(ops, me);
  const [headline, why] = unconfirmed
    ? [`Your change to ${what} may not have been saved.`, 'The connection dropped before it was confirmed.']
    : [`Your change to ${what} was not saved.`, `${people || 'Someone else'} changed it first.`];
  const theirs = ops.map((o) =>
    h('li', { 'data-testid': 'conflict-theirs' }, `${whoMade(o, me)}: `, h('q', {}, describeValue(o.op))),
  );
  const note = h('p', { class: 'muted' });
  const reapply = () => {
    try {
      client.apply(lost.op);
      el.remove();
    } catch (err) {
      note.textContent = `It can’t be re-applied: ${(err as Error).message}.`;
    }
  };
  const el = h(
    'div',
    { class: 'banner conflict', 'data-testid': 'conflict', role: 'alert' },
    h(
      'div',
      { class: 'grow' },
      h('p', {}, h('strong', {}, headline), ` ${why}`),
      theirs.length ? h('ul', { class: 'theirs' }, ...theirs) : '',
      h('p', {}, 'Your version: ', h('q', { 'data-testid': 'conflict-mine' }, describeValue(lost.op))),
      note,
      h(
        'div',
        { class: 'actions' },
        button('Re-apply my edit', 'reapply', reapply, { class: 'primary' }),
        button('Dismiss', 'dismiss-conflict', () => el.remove()),
      ),
    ),
  );
  return el;
}
