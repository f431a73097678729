// Errors the client reports: the server's request errors (codes 100-115,
// docs/protocol.md section 7) and the client's own, numbered below 100 so
// that one `code` field tells them apart.

/** Error codes raised by the client itself. */
export const ClientErrorCode = Object.freeze({
  /** No reply within the request timeout. */
  TIMEOUT: 1,
  /** The connection ended before the reply came. */
  CONNECTION_LOST: 2,
  /** The client is disconnected (`disconnect()` or the server's refusal). */
  CLIENT_CLOSED: 3,
  /** Too many requests wait for a connection. */
  QUEUE_FULL: 4,
  /** The token callback failed or returned no token. */
  TOKEN_UNAVAILABLE: 5,
  /** The subscription was removed. */
  UNSUBSCRIBED: 6,
});

export class SwitchboardError extends Error {
  /**
   * @param {string} message
   * @param {number} code A server code (100 and up) or a {@link ClientErrorCode}.
   * @param {{ cause?: unknown }} [options]
   */
  constructor(message, code, options) {
    super(message, options);
    this.name = "SwitchboardError";
    this.code = code;
  }

  /** Whether retrying the same request later may succeed. */
  get temporary() {
    return (
      this.code === 100 ||
      this.code === 110 ||
      this.code === 115 ||
      this.code === ClientErrorCode.TIMEOUT ||
      this.code === ClientErrorCode.CONNECTION_LOST ||
      this.code === ClientErrorCode.QUEUE_FULL ||
      this.code === ClientErrorCode.TOKEN_UNAVAILABLE
    );
  }
}
