// The pure parts of the client: backoff with full jitter, the reading of
// disconnect advice, and token expiry.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { advise } from "../src/advice.js";
import { Backoff, SwitchboardError } from "../switchboard.js";
import { refreshDelay, tokenExpiry } from "../src/token.js";
import { sign } from "../test-support/token.js";

describe("backoff", () => {
  test("the ceiling grows exponentially to the cap", () => {
    const b = new Backoff({ initialDelay: 100, maxDelay: 1000, random: () => 0.999999 });
    const delays = Array.from({ length: 8 }, () => b.next());
    assert.deepEqual(delays, [99, 199, 399, 799, 999, 999, 999, 999]);
    b.reset();
    assert.equal(b.next(), 99);
  });

  test("full jitter: any delay from zero up to the ceiling", () => {
    assert.equal(new Backoff({ random: () => 0 }).next(), 0);
    const b = new Backoff({ initialDelay: 100, maxDelay: 100 });
    for (let i = 0; i < 1000; i++) {
      const d = b.next();
      assert.ok(d >= 0 && d < 100, `${d}`);
    }
  });

  test("a thousand clients cut off together do not come back together", () => {
    // Each client's third retry: ceiling 2 s. Without jitter all 1000 would
    // land in the same millisecond; with it no 100 ms slot holds more than
    // a small share.
    const slots = new Array(20).fill(0);
    for (let i = 0; i < 1000; i++) {
      const b = new Backoff({ initialDelay: 500, maxDelay: 20000 });
      b.next();
      b.next();
      slots[Math.floor(b.next() / 100)] += 1;
    }
    assert.ok(Math.max(...slots) < 120, `busiest 100 ms slot: ${Math.max(...slots)} of 1000`);
    assert.ok(Math.min(...slots) > 0, "every slot used");
  });

  test("the exponent cannot overflow after very many attempts", () => {
    const b = new Backoff({ initialDelay: 500, maxDelay: 20000, random: () => 0.5 });
    b.attempt = 10_000;
    assert.equal(b.next(), 10000);
  });
});

describe("disconnect advice", () => {
  test("the server's disconnect frame decides", () => {
    assert.deepEqual(advise({ code: 1001, reason: "server shutting down", reconnect: true }, 1001, ""), {
      code: 1001,
      reason: "server shutting down",
      reconnect: true,
      immediate: true,
    });
    assert.equal(advise({ code: 4001, reason: "unauthorized", reconnect: false }, 4001, "").reconnect, false);
    assert.deepEqual(advise({ code: 4005, reason: "slow consumer", reconnect: true }, 4005, ""), {
      code: 4005,
      reason: "slow consumer",
      reconnect: true,
      immediate: false,
    });
    assert.equal(advise({ code: 4003, reason: "token expired", reconnect: true }, 4003, "").immediate, true);
  });

  test("without one, the close code decides", () => {
    assert.equal(advise(null, 1006, "").reconnect, true);
    assert.equal(advise(null, 1006, "").immediate, false);
    for (const code of [1003, 1007, 1009, 4001, 4002]) assert.equal(advise(null, code, "").reconnect, false, `${code}`);
  });
});

describe("tokens", () => {
  test("expiry is read from a JWT", () => {
    assert.equal(tokenExpiry(sign({ sub: "a", exp: 1893456000 })), 1893456000);
    assert.equal(tokenExpiry(sign({ sub: "a" })), null);
    assert.equal(tokenExpiry("opaque-token"), null);
    assert.equal(tokenExpiry("a.%%%.c"), null);
  });

  test("refresh comes before expiry, sooner for short tokens", () => {
    assert.equal(refreshDelay(3_600_000, 30_000), 3_570_000);
    assert.equal(refreshDelay(2000, 30_000), 1600);
    assert.equal(refreshDelay(-5, 30_000), 0);
  });
});

describe("errors", () => {
  test("internal, rate limited and over capacity are temporary; refusals are not", () => {
    for (const code of [100, 110, 115]) assert.equal(new SwitchboardError("", code).temporary, true, `${code}`);
    for (const code of [101, 103, 107, 111, 113, 114]) {
      assert.equal(new SwitchboardError("", code).temporary, false, `${code}`);
    }
  });
});
