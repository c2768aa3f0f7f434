/**
 * A request body, received only once the request is allowed to send one. uWebSockets.js
 * drops body bytes that arrive while no data handler is attached, so the handler is attached
 * at once and the socket paused: what came with the headers is held (at most `limit` bytes,
 * beyond that only counted), nothing more is read until `read()`, and a request refused from
 * its headers is answered without its body ever being received. A body announced by its
 * `Content-Length` as at most UNPAUSED_BODY_MAX bytes is received meanwhile instead: it mostly
 * came with the headers, and pausing and resuming the socket cost three `epoll_ctl` a request.
 */
import type { HttpResponse } from 'uWebSockets.js';
import { AppError } from '../errors.ts';

/** The client went away while its body was being read; nothing is answered. */
export class RequestAborted extends Error {
  constructor() {
    super('the request was aborted');
    this.name = 'RequestAborted';
  }
}

/** The largest announced body received without pausing the socket (bytes). */
export const UNPAUSED_BODY_MAX = 16 * 1024;

export class BodyReader {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private last = false;
  private failure: Error | undefined;
  private waiting: { resolve: (body: Buffer) => void; reject: (err: Error) => void } | undefined;
  private paused: boolean;

  /**
   * Attach synchronously, inside the route handler. `limit` in bytes; `contentLength`: the
   * request's header, absent for a chunked body.
   */
  constructor(
    private readonly res: HttpResponse,
    private readonly limit: number,
    contentLength?: string,
  ) {
    // uWebSockets.js frames the body by its Content-Length: no more than announced arrives.
    const announced = contentLength === undefined ? Number.NaN : Number(contentLength);
    this.paused = !(announced <= UNPAUSED_BODY_MAX);
    if (this.paused) res.pause();
    res.onData((chunk, isLast) => this.push(chunk, isLast));
  }

  /** True once the whole body has been received (so answering early leaves nothing unread). */
  get complete(): boolean {
    return this.last;
  }

  /** Receives the rest of the body; rejects with `payload_too_large` past the limit. */
  read(): Promise<Buffer> {
    this.resume();
    if (this.failure) return Promise.reject(this.failure);
    if (this.last) return Promise.resolve(Buffer.concat(this.chunks, this.size));
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  /**
   * Lets the socket read again. Call before answering: a paused socket has no idle timeout and
   * would not read the next request of a kept-alive connection.
   */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.res.resume();
  }

  /** The response was aborted: a pending read fails without an answer. */
  abort(): void {
    this.fail(new RequestAborted());
  }

  private push(chunk: ArrayBuffer, isLast: boolean): void {
    if (this.failure) return;
    this.size += chunk.byteLength;
    if (this.size > this.limit) {
      this.fail(new AppError('payload_too_large', `the body is larger than ${this.limit} bytes`));
      return;
    }
    // The chunk is neutered once this callback returns: copy it.
    this.chunks.push(Buffer.from(new Uint8Array(chunk)));
    if (!isLast) return;
    this.last = true;
    this.waiting?.resolve(Buffer.concat(this.chunks, this.size));
    this.waiting = undefined;
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.chunks.length = 0;
    this.waiting?.reject(err);
    this.waiting = undefined;
  }
}
