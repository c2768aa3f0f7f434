/**
 * Every WebSocket close code either end of a socket uses (RFC 6455 and docs/protocol.md, "Close
 * codes"), in one place: the server closes with them (`src/errors.ts` re-exports this object),
 * and the client SDK, the browser page and the relay simulator close with them or read them.
 * It lives beside the frames (`miniappFrames.ts`) because the browser bundle imports it too, so
 * it must not import anything from Node.
 *
 * 1007 (invalid payload) is deliberately absent: the protocol allows it for invalid UTF-8, but
 * this server never sends it (a binary frame that is not UTF-8 JSON is a bad frame answered
 * `invalid_json`; a text frame that is not valid UTF-8 is cut by the transport, seen as 1006).
 */
export const CloseCodes = {
  /** A deliberate close by whoever is done with the socket (the SDK's `close()`, the relay simulator). */
  normal: 1000,
  /** The server is shutting down; reconnect and resume. */
  goingAway: 1001,
  /**
   * Never sent: what a client reports when the socket ended without a close frame (network, idle,
   * far too slow, a refused upgrade as a browser sees it).
   */
  abnormal: 1006,
  /** Token expired, or too many bad frames. */
  policyViolation: 1008,
  /** A frame far over `MAX_FRAME_BYTES`. */
  tooBig: 1009,
  /** The miniapp session stopped or could not be opened; reconnect and resume. */
  internalError: 1011,
  /**
   * Sent by the client SDK when its copy of the state cannot go on (an `applied` version gap, or
   * an op its state refuses): it closes, reconnects and starts again from a fresh snapshot.
   */
  resync: 4000,
} as const;
