/**
 * The Hocuspocus peer's client: `@hocuspocus/provider` + `yjs`, one provider (and socket) per
 * client, the token in `token` (checked by the server's `onAuthenticate`). The trip is the
 * document; its budget items are the `Y.Map` `items` (item id → `Y.Map {id, label, amount}`),
 * and each client edits the `label` field of its own item.
 *
 * The own echo, defined as on the other servers: the server's broadcast of the update that
 * carries this client's edit, received back by this client. Hocuspocus sends every update to
 * every connection of the document, the sender included (merged with the other updates of the
 * same event-loop turn); the client recognises its edit when an incoming update's metadata
 * (`Y.parseUpdateMeta`) covers its own clock after that edit. (Hocuspocus also acknowledges
 * each update to its sender with a `SyncStatus` message, but it sends that before the
 * broadcast, so it measures less than the other servers' echo.)
 *
 * Awareness (presence) is off (`awareness: null`): the other servers send nothing but the
 * edits, and awareness would add a broadcast per client every 15 s; the reconnect watchdog it
 * feeds is raised so an idle client is not dropped for it.
 */
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider';
import * as decoding from 'lib0/decoding';
import WebSocket from 'ws';
import * as Y from 'yjs';
import {
  type ClientAdapter,
  type ClientHooks,
  type ConnectOutcome,
  type ConnectSpec,
  itemId,
  labelFor,
  withTimeout,
} from '../adapter.ts';

/** y-protocols message types (Hocuspocus prefixes each message with the document name). */
const MESSAGE_SYNC = 0;
const SYNC_UPDATE = 2;

export const hocuspocusClient: ClientAdapter = {
  connect(spec: ConnectSpec, hooks: ClientHooks): Promise<ConnectOutcome> {
    const item = itemId(spec.index);
    const doc = new Y.Doc();
    const items = doc.getMap<Y.Map<unknown>>('items');
    /** Own edits not yet echoed, oldest first: the clock this client reaches with each. */
    const pending: { seq: number; clock: number }[] = [];
    let closing = false;
    // One socket per client, as one browser tab would have (Node needs `ws` as the WebSocket).
    const socket = new HocuspocusProviderWebsocket({
      url: spec.baseUrl.replace(/^http/, 'ws'),
      WebSocketPolyfill: WebSocket,
      messageReconnectTimeout: 15 * 60_000,
    });
    const provider = new HocuspocusProvider({
      websocketProvider: socket,
      name: spec.room,
      document: doc,
      token: spec.token,
      awareness: null,
    });
    provider.attach();
    const track = (seq: number) => pending.push({ seq, clock: Y.getState(doc.store, doc.clientID) });
    const conn = {
      hasItem: false,
      insert() {
        doc.transact(() => {
          const m = new Y.Map<unknown>();
          m.set('id', item);
          m.set('label', labelFor(0));
          m.set('amount', spec.index);
          items.set(item, m);
        });
        track(0);
      },
      edit(seq: number) {
        items.get(item)?.set('label', labelFor(seq));
        track(seq);
      },
      async close() {
        closing = true;
        provider.destroy();
        socket.destroy();
      },
    };
    provider.on('message', ({ event }: { event: MessageEvent }) => {
      const d = decoding.createDecoder(new Uint8Array(event.data as ArrayBuffer));
      decoding.readVarString(d);
      if (decoding.readVarUint(d) !== MESSAGE_SYNC || decoding.readVarUint(d) !== SYNC_UPDATE) return;
      const meta = Y.parseUpdateMeta(decoding.readVarUint8Array(d));
      let edits = 0;
      for (const [client, to] of meta.to) edits += to - (meta.from.get(client) ?? to);
      hooks.frame(edits);
      const mine = meta.to.get(doc.clientID);
      while (mine !== undefined && pending.length && pending[0].clock <= mine) hooks.echo(pending.shift()!.seq);
    });
    const synced = new Promise<ConnectOutcome>((resolve) => {
      provider.on('synced', () => {
        conn.hasItem = items.has(item);
        resolve({ ok: true, conn });
      });
      provider.on('authenticationFailed', ({ reason }: { reason: string }) => {
        resolve({ ok: false, reason: `auth: ${reason}`.slice(0, 40) });
        provider.destroy();
        socket.destroy();
      });
      provider.on('disconnect', () => {
        resolve({ ok: false, reason: 'disconnected' });
        if (!closing) hooks.dropped();
      });
    });
    return withTimeout(synced, 30_000);
  },
};
