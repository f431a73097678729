// What a closed connection means for reconnecting: the server's
// `disconnect` advice, or the close code when the socket ended without one.

/** Close codes the client uses for ends it decided on (3000-3999 is for libraries). */
export const ClientCloseCode = Object.freeze({
  /** `disconnect()` was called. */
  DISCONNECT_CALLED: 3000,
  /** No reply to a ping: the connection is half-open (a phone that slept, a dead NAT). */
  NO_PONG: 3001,
  /** The socket ended without a close frame from the server. */
  TRANSPORT_CLOSED: 3002,
  /** `reconnect()` was called. */
  RECONNECT_CALLED: 3003,
  /** The token callback failed. */
  TOKEN_UNAVAILABLE: 3004,
  /** The connection did not open and authenticate within the timeout. */
  CONNECT_TIMEOUT: 3005,
  /** A subscribe request went unanswered; the connection is not trusted. */
  SUBSCRIBE_TIMEOUT: 3006,
});

/** Server close codes after which reconnecting unchanged cannot help. */
const FINAL = new Set([1003, 1007, 1008, 1009, 4001, 4002]);

/**
 * @typedef {object} Advice
 * @property {number} code
 * @property {string} reason
 * @property {boolean} reconnect Whether to connect again at all.
 * @property {boolean} immediate Whether to skip the backoff delay once.
 */

/**
 * @param {{code: number, reason: string, reconnect: boolean} | null} disconnect
 *   The server's `disconnect` frame, if one came.
 * @param {number} closeCode The WebSocket close code (1006 if none).
 * @param {string} closeReason
 * @returns {Advice}
 */
export function advise(disconnect, closeCode, closeReason) {
  const code = disconnect?.code ?? closeCode;
  const reason = disconnect?.reason ?? closeReason;
  const reconnect = disconnect ? disconnect.reconnect : !FINAL.has(code);
  // A drain (1001) means "this server is going away, another will take you":
  // waiting would only lengthen the outage. An expired token (4003) is
  // cured by fetching a new one, not by waiting.
  const immediate = reconnect && (code === 1001 || code === 4003);
  return { code, reason, reconnect, immediate };
}
