/**
 * The client SDK's typed event emitter. Not Node's `EventEmitter`: the SDK also runs in the
 * browser bundle, and a map of event names to payload types lets `on` check its listener.
 * Listeners run synchronously, in the order they were added, so a listener sees the client's
 * state exactly as it was when the event was emitted.
 */

export type Listener<E> = (event: E) => void;

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Adds a listener for `type`; returns the function that removes it. */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    const set = this.listeners.get(type) ?? new Set<Listener<never>>();
    this.listeners.set(type, set);
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
  }

  emit<K extends keyof Events>(type: K, event: Events[K]): void {
    for (const listener of this.listeners.get(type) ?? []) (listener as Listener<Events[K]>)(event);
  }
}
