/** An in-memory `Bus` for unit tests of what runs over it (the cluster channel, the routed host). */
import type { Bus, BusHandler } from '../../src/cluster/Bus.ts';

/** Processes on one in-memory bus: `send` reaches a process's handlers, `publish` a topic's. */
export function memoryBus() {
  const processes = new Map<string, { handlers: BusHandler[]; topics: Map<string, Set<BusHandler>>; up: boolean }>();
  const sent: { from: string; to: string; message: unknown }[] = [];
  const published: { from: string; topic: string; message: unknown }[] = [];
  function join(self: string, options: { subscribe?: 'ok' | 'hang' } = {}): Bus & { down(): void } {
    const me = { handlers: [] as BusHandler[], topics: new Map<string, Set<BusHandler>>(), up: true };
    processes.set(self, me);
    return {
      self,
      send(to, message, unheard) {
        sent.push({ from: self, to, message });
        const target = processes.get(to);
        if (!target?.up) return unheard?.();
        for (const h of target.handlers) h(message, self);
      },
      onMessage: (h) => me.handlers.push(h),
      publish(topic, message) {
        published.push({ from: self, topic, message });
        for (const p of processes.values()) for (const h of p.topics.get(topic) ?? []) h(message, self);
      },
      subscribe(topic, h) {
        const set = me.topics.get(topic) ?? new Set();
        set.add(h);
        me.topics.set(topic, set);
        return options.subscribe === 'hang' ? new Promise(() => {}) : Promise.resolve();
      },
      unsubscribe: (topic, h) => me.topics.get(topic)?.delete(h),
      onReconnect: () => {},
      present: async (ids) => new Set(ids.filter((id) => processes.get(id)?.up)),
      connected: () => me.up,
      close: async () => {},
      down: () => {
        me.up = false;
      },
    };
  }
  return {
    join,
    sent,
    published,
    subscribers: (self: string, topic: string) => processes.get(self)?.topics.get(topic)?.size ?? 0,
  };
}
