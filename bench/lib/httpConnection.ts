/** The benchmarks' own HTTP/1.1 client connection (`Connection`). */
import net from 'node:net';

/**
 * A keep-alive HTTP/1.1 connection with one request in flight, written by hand: node:http's
 * client costs ~190 µs of the generator's core per request here, which saturated the load
 * core (shared with PostgreSQL) before the server, and put the generator's own delays into the
 * latencies it reported (undici's `fetch` adds as much). This one writes a request as one string
 * and reads the answer by its Content-Length (the server always sends one). Used by `bench:relay`'s
 * generators and its history queries.
 */
export class Connection {
  private readonly socket: net.Socket;
  private buffer: Buffer = Buffer.alloc(0);
  private waiting: { resolve: (r: { status: number; text: string }) => void; reject: (e: Error) => void } | null = null;
  closed: Error | null = null;

  constructor(url: URL) {
    this.socket = net.connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port) });
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk) => this.onData(chunk));
    const fail = (err: Error) => {
      this.closed = err;
      this.waiting?.reject(err);
      this.waiting = null;
    };
    this.socket.on('error', fail);
    this.socket.on('close', () => fail(new Error('connection closed')));
  }

  request(head: string, body: string): Promise<{ status: number; text: string }> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.socket.write(`${head}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buffer.toString('latin1', 0, end);
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!length) {
      this.socket.destroy(new Error(`an answer without content-length: ${head.slice(0, 200)}`));
      return;
    }
    const total = end + 4 + Number(length[1]);
    if (this.buffer.length < total) return;
    const text = this.buffer.toString('utf8', end + 4, total);
    this.buffer = this.buffer.subarray(total);
    const waiting = this.waiting;
    this.waiting = null;
    waiting?.resolve({ status: Number(head.slice(9, 12)), text });
  }

  close(): void {
    this.socket.end();
  }
}
