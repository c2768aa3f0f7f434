/**
 * The trip document the Socket.IO and Colyseus servers keep in memory (and only in memory):
 * the budget part of Archety's trip-planner state, with the same checks an edit of it gets
 * there — an item id of ≤ 64 characters, unique; a label of 1–200 characters; an amount ≥ 0 —
 * so every server does the same work per edit except Archety's durability.
 * (Hocuspocus keeps the same document as a Yjs `Y.Map`, see `hocuspocus/client.ts`.)
 */

export interface BudgetItem {
  id: string;
  label: string;
  amount: number;
}

export interface Trip {
  title: string;
  budget: { currency: string; items: BudgetItem[] };
  /** Edits applied so far (the room's version). */
  version: number;
  /** Items by id (the array above stays the document's shape). */
  byId: Map<string, BudgetItem>;
}

/** What a client sends: edit 0 inserts its item, the others set its label. */
export interface EditMessage {
  /** `<client prefix><seq>`: unique for the run. */
  opId: string;
  item: string;
  label: string;
  /** Only in an insert. */
  amount?: number;
}

/** What the server broadcasts to everyone in the room, sender included. */
export interface AppliedMessage extends EditMessage {
  by: string;
  version: number;
}

/** What the sender alone gets when its edit is refused. */
export interface RefusedMessage {
  opId: string;
  code: string;
}

export function newTrip(title: string): Trip {
  return { title, budget: { currency: 'EUR', items: [] }, version: 0, byId: new Map() };
}

function validLabel(label: unknown): label is string {
  return typeof label === 'string' && label.length >= 1 && label.length <= 200;
}

/**
 * Applies an insert (when `amount` is present) or a label edit to `trip`; returns the broadcast
 * or, when the edit is invalid, the code of the refusal.
 */
export function applyEdit(trip: Trip, by: string, m: EditMessage): AppliedMessage | { code: string } {
  if (typeof m?.opId !== 'string' || typeof m.item !== 'string' || m.item.length > 64 || !validLabel(m.label)) {
    return { code: 'invalid_op' };
  }
  if (m.amount !== undefined) {
    // Inserting an item the room already has: the client reconnected; it keeps its item.
    const existing = trip.byId.get(m.item);
    if (existing) existing.label = m.label;
    else {
      if (typeof m.amount !== 'number' || !(m.amount >= 0)) return { code: 'invalid_op' };
      const item = { id: m.item, label: m.label, amount: m.amount };
      trip.budget.items.push(item);
      trip.byId.set(item.id, item);
    }
  } else {
    const item = trip.byId.get(m.item);
    if (!item) return { code: 'not_found' };
    item.label = m.label;
  }
  trip.version++;
  const applied: AppliedMessage = { opId: m.opId, by, version: trip.version, item: m.item, label: m.label };
  if (m.amount !== undefined) applied.amount = m.amount;
  return applied;
}
