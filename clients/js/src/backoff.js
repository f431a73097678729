// Reconnect delays: exponential growth, capped, with full jitter (a
// uniformly random delay between 0 and the current ceiling). Jitter is what
// keeps thousands of clients cut off by the same event from reconnecting in
// step and knocking the server over again.

/**
 * @typedef {object} BackoffOptions
 * @property {number} [initialDelay=500] Ceiling of the first retry, in ms.
 * @property {number} [maxDelay=20000] Largest ceiling, in ms.
 * @property {number} [factor=2] Growth of the ceiling per failed attempt.
 * @property {() => number} [random=Math.random] Source of jitter in [0, 1).
 */

export class Backoff {
  /** Failed attempts since the last stable connection. */
  attempt = 0;

  /** @param {BackoffOptions} [options] */
  constructor(options = {}) {
    this.initialDelay = options.initialDelay ?? 500;
    this.maxDelay = options.maxDelay ?? 20000;
    this.factor = options.factor ?? 2;
    this.random = options.random ?? Math.random;
  }

  /** The ceiling of the next delay, before jitter. */
  ceiling() {
    // Capping the exponent first keeps the power finite after many attempts.
    const exp = Math.min(this.attempt, 64);
    return Math.min(this.maxDelay, this.initialDelay * this.factor ** exp);
  }

  /** The delay before the next attempt, in ms; counts the attempt. */
  next() {
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempt += 1;
    return delay;
  }

  /** Called once a connection proved stable. */
  reset() {
    this.attempt = 0;
  }
}
