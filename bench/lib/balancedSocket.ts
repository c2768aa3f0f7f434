/**
 * A load balancer in front of a cluster, for SDK clients (`MiniappClient`): each client has a
 * home process and is sent there while it is up, else to the next one up; its WebSocket class
 * connects wherever the balancer says, whatever URL the SDK asks for. Used by the cluster
 * benchmark and the cluster tests, which watch what each socket sends and receives.
 */
import WebSocket from 'ws';
import type { WebSocketLike } from '../../src/client/MiniappClient.ts';

export interface BalancedNode {
  url: string;
}

/** Where each client connects: its home process while it is up, else the next one up. */
export class Balancer<N extends BalancedNode> {
  private readonly down = new Set<N>();

  /** `up`: whether a process may take connections besides not being marked down (default: yes). */
  constructor(
    private readonly nodes: N[],
    private readonly up: (node: N) => boolean = () => true,
  ) {}

  markDown(node: N): void {
    this.down.add(node);
  }

  markUp(node: N): void {
    this.down.delete(node);
  }

  pick(home: number): N {
    for (let i = 0; i < this.nodes.length; i++) {
      const node = this.nodes[(home + i) % this.nodes.length];
      if (!this.down.has(node) && this.up(node)) return node;
    }
    throw new Error('every process of the cluster is down');
  }
}

/** What a balanced socket tells its owner. */
export interface SocketWatch<N> {
  opened?(node: N): void;
  /** A frame received, as text. */
  received?(text: string, node: N): void;
  /** A frame about to be sent, as text (not called while the socket is not open). */
  sending?(data: string): void;
  closed?(code: number, reason: string): void;
}

/** A WebSocket class for the SDK that connects to the process `balancer` picks for `home`. */
export function balancedSocketClass<N extends BalancedNode>(
  balancer: Balancer<N>,
  home: number,
  watch: () => SocketWatch<N>,
) {
  return class BalancedSocket implements WebSocketLike {
    onopen: ((ev: unknown) => void) | null = null;
    onmessage: ((ev: { data: unknown }) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    onerror: ((ev: unknown) => void) | null = null;
    private readonly ws: WebSocket;
    private readonly hooks: SocketWatch<N>;

    constructor(url: string, protocols?: string | string[]) {
      const node = balancer.pick(home);
      this.hooks = watch();
      this.ws = new WebSocket(`${node.url.replace(/^http/, 'ws')}${new URL(url).pathname}`, protocols);
      this.hooks.opened?.(node);
      this.ws.on('open', () => this.onopen?.({}));
      this.ws.on('message', (data) => {
        const text = data.toString();
        this.hooks.received?.(text, node);
        this.onmessage?.({ data: text });
      });
      this.ws.on('close', (code, reason) => {
        this.hooks.closed?.(code, reason.toString());
        this.onclose?.({ code, reason: reason.toString() });
      });
      this.ws.on('error', (err) => this.onerror?.(err));
    }

    get readyState(): number {
      return this.ws.readyState;
    }

    get protocol(): string {
      return this.ws.protocol;
    }

    send(data: string): void {
      if (this.ws.readyState !== WebSocket.OPEN) return;
      this.hooks.sending?.(data);
      this.ws.send(data);
    }

    close(code?: number, reason?: string): void {
      this.ws.close(code, reason);
    }
  };
}
