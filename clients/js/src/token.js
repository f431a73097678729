// Reading a JWT's expiry, to refresh it before the server cuts the
// connection (close 4003). The signature is the server's business; the
// client only needs `exp`.

/**
 * Seconds since the Unix epoch at which `token` expires, or `null` if it is
 * not a JWT with a numeric `exp`.
 * @param {string} token
 * @returns {number | null}
 */
export function tokenExpiry(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

/**
 * How long to wait before refreshing a token that expires in `ttl` ms: late
 * enough not to refresh needlessly, early enough that a slow token service
 * still answers before the server's deadline.
 * @param {number} ttl Milliseconds until expiry.
 * @param {number} margin Preferred lead time in ms.
 */
export function refreshDelay(ttl, margin) {
  return Math.max(0, ttl - Math.min(margin, ttl / 5));
}
