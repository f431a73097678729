// HS256 tokens for tests, signed with the embedded dev config's secret,
// so that tests need not shell out to `switchboard token`.

import { createHmac } from "node:crypto";

export const DEV_SECRET = "switchboard-dev-secret";

/**
 * @param {object} claims e.g. `{ sub: "alice", exp: ... }`
 * @param {string} [secret]
 */
export function sign(claims, secret = DEV_SECRET) {
  const enc = (/** @type {object} */ o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${enc({ alg: "HS256", typ: "JWT" })}.${enc(claims)}`;
  const sig = createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${sig}`;
}

/**
 * A token for `user` valid for `ttlSeconds`.
 * @param {string} user
 * @param {number} ttlSeconds
 * @param {object} [extra] More claims (`info`, `channels`).
 */
export function token(user, ttlSeconds, extra = {}) {
  return sign({ sub: user, exp: Math.floor(Date.now() / 1000) + ttlSeconds, ...extra });
}
