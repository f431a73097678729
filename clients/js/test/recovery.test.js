// Reconnects in the middle of a stream: a dropped socket (recovered, no
// loss, no repeats), a crashed server (kill -9) and a drained one (SIGTERM),
// both restarted without their state (continuity lost, said so, and the
// stream continues), and a half-open connection found by pings.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, ClientCloseCode, ClientErrorCode } from "../switchboard.js";
import { Proxy } from "../test-support/proxy.js";
import { nextEvent, Server, waitFor } from "../test-support/server.js";

/**
 * @param {string} url
 * @param {import("../switchboard.js").ClientOptions} [options]
 */
function connect(url, options) {
  const c = new Client(url, { backoff: { initialDelay: 100, maxDelay: 300 }, ...options });
  c.connect();
  return c;
}

/**
 * Publishes 1, 2, 3, … to `channel` until `stop()` says so. Publishes that
 * die with a connection are not retried (they may or may not have been
 * applied), so the publisher never sends a number twice.
 * @param {Client} publisher
 * @param {string} channel
 * @param {() => boolean} stop
 */
async function publishUntil(publisher, channel, stop) {
  let n = 0;
  const failed = [];
  while (!stop()) {
    n += 1;
    try {
      await publisher.publish(channel, n);
    } catch (e) {
      failed.push(n);
    }
    // Keeps well inside the server's rate limit (burst 100, 50/s).
    await new Promise((r) => setTimeout(r, 5));
  }
  return { last: n, failed };
}

test("a dropped connection resumes without losing or repeating a publication", async (t) => {
  const server = await Server.start();
  // A fixed, full-length delay so that each drop really misses publications.
  const reader = connect(server.wsUrl, { backoff: { initialDelay: 150, maxDelay: 150, random: () => 0.999 } });
  const writer = connect(server.wsUrl);
  t.after(async () => {
    reader.disconnect();
    writer.disconnect();
    await server.stop();
  });

  const sub = reader.subscribe("chat:stream");
  /** @type {number[]} */
  const got = [];
  const subscribed = [];
  sub.on("subscribed", (ctx) => subscribed.push(ctx));
  sub.on("message", (m) => {
    got.push(/** @type {number} */ (m.data));
    // Drop the socket mid-stream, as a flaky network would.
    if (got.length === 20 || got.length === 50) reader.reconnect();
  });
  await sub.ready(5000);

  const total = 90;
  const done = await publishUntil(writer, "chat:stream", () => got.length >= 60 && subscribed.length >= 3);
  // Let the publisher's last numbers arrive too, then compare.
  await waitFor(() => got.length === done.last, `all ${done.last} publications`).catch((e) => {
    const missing = Array.from({ length: done.last }, (_, i) => i + 1).filter((n) => !got.includes(n));
    throw new Error(`${e.message}: missing ${missing}; subscribed ${JSON.stringify(subscribed)}; got ${got}`);
  });
  assert.deepEqual(done.failed, []);
  assert.ok(done.last <= total, `stayed inside the rate limit: ${done.last}`);
  assert.deepEqual(got, Array.from({ length: done.last }, (_, i) => i + 1), "each once, in order");
  assert.equal(subscribed.length, 3);
  assert.equal(subscribed[0].wasRecovering, false);
  for (const ctx of subscribed.slice(1)) {
    assert.equal(ctx.wasRecovering, true);
    assert.equal(ctx.recovered, true);
  }
  const recovered = subscribed.slice(1).reduce((sum, ctx) => sum + ctx.publications, 0);
  assert.ok(recovered > 0, "some publications came from recovery, not the live stream");
});

test("kill -9 mid-stream: the restarted server has a new epoch; the client says so and continues", async (t) => {
  let server = await Server.start();
  const reader = connect(server.wsUrl);
  const writer = connect(server.wsUrl);
  t.after(async () => {
    reader.disconnect();
    writer.disconnect();
    await server.stop();
  });
  const sub = reader.subscribe("chat:crash");
  /** @type {{ n: number, offset: number, epoch: string }[]} */
  const got = [];
  sub.on("message", (m) => got.push({ n: /** @type {number} */ (m.data), offset: m.offset, epoch: m.epoch }));
  await sub.ready(5000);

  let killed = false;
  const resubscribed = nextEvent(sub, "subscribed", (ctx) => ctx.wasRecovering);
  const lost = nextEvent(reader, "connecting", (ctx) => ctx.code !== 0);
  const publishing = publishUntil(writer, "chat:crash", () => killed && got.some((g) => g.epoch !== got[0].epoch) && got.length >= 20);
  await waitFor(() => got.length >= 10, "ten publications before the crash");
  await server.kill();
  killed = true;
  const why = await lost;
  assert.equal(why.code, 1006, "a crash sends no disconnect frame");
  server = await server.restart();

  const ctx = await resubscribed;
  assert.equal(ctx.recovered, false, "state was lost with the process");
  assert.notEqual(ctx.epoch, got[0].epoch);
  const { failed } = await publishing;
  assert.ok(failed.length <= 2, `only publishes in flight at the crash fail: ${failed}`);
  const before = got.filter((g) => g.epoch === got[0].epoch);
  const after = got.filter((g) => g.epoch === ctx.epoch);
  assert.equal(before.length + after.length, got.length, "two epochs only");
  assert.ok(after.length >= 1, "the stream continues after the restart");
  for (const run of [before, after]) {
    const offsets = run.map((g) => g.offset);
    assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b), "ordered within an epoch");
    assert.equal(new Set(offsets).size, offsets.length, "no repeats within an epoch");
  }
  const ns = got.map((g) => g.n);
  assert.deepEqual(ns, [...ns].sort((a, b) => a - b), "publisher order kept across the restart");
});

test("a drain (SIGTERM, disconnect 1001) reconnects at once, then backs off until the server is back", async (t) => {
  let server = await Server.start();
  const reader = connect(server.wsUrl, { stableAfter: 200 });
  t.after(async () => {
    reader.disconnect();
    await server.stop();
  });
  const sub = reader.subscribe("chat:drain");
  await sub.ready(5000);

  /** @type {import("../switchboard.js").ConnectingEvent[]} */
  const attempts = [];
  const off = reader.on("connecting", (ctx) => attempts.push(ctx));
  await server.stop();
  await waitFor(() => attempts.length >= 3, "retries while the server is down");
  assert.deepEqual(
    { code: attempts[0].code, reason: attempts[0].reason, delay: attempts[0].delay },
    { code: 1001, reason: "server shutting down", delay: 0 },
    "the drain advice is followed at once",
  );
  assert.equal(attempts[1].code, 1006, "then refused connections");
  assert.ok(attempts[1].attempt < attempts[2].attempt, "backoff grows");

  server = await server.restart();
  const connected = nextEvent(reader, "connected").then(() => Date.now());
  const ctx = await nextEvent(sub, "subscribed");
  assert.equal(ctx.wasRecovering, true);
  assert.equal(ctx.recovered, false);
  const writer = connect(server.wsUrl);
  t.after(() => writer.disconnect());
  const got = nextEvent(sub, "message");
  await writer.publish("chat:drain", "after the restart");
  assert.equal((await got).data, "after the restart");

  // Once up for `stableAfter` (200 ms), backoff starts again from the first attempt.
  const since = await connected;
  await waitFor(() => Date.now() - since > 250, "a stable connection");
  attempts.length = 0;
  reader.reconnect();
  off();
  assert.equal(attempts[0].code, ClientCloseCode.RECONNECT_CALLED);
  assert.equal(attempts[0].attempt, 1);
});

test("a half-open connection is found by pings and replaced; publications sent meanwhile are recovered", async (t) => {
  const server = await Server.start();
  const proxy = await Proxy.start(server.addr);
  const reader = connect(proxy.wsUrl, { pingInterval: 300, pongTimeout: 300 });
  const writer = connect(server.wsUrl);
  t.after(async () => {
    reader.disconnect();
    writer.disconnect();
    await proxy.close();
    await server.stop();
  });
  const sub = reader.subscribe("chat:halfopen");
  /** @type {unknown[]} */
  const got = [];
  sub.on("message", (m) => got.push(m.data));
  await sub.ready(5000);
  await writer.publish("chat:halfopen", 1);
  await waitFor(() => got.length === 1, "first publication");

  const lost = nextEvent(reader, "connecting");
  proxy.freeze();
  await writer.publish("chat:halfopen", 2);
  await writer.publish("chat:halfopen", 3);
  const why = await lost;
  assert.equal(why.code, ClientCloseCode.NO_PONG);
  const ctx = await nextEvent(sub, "subscribed");
  assert.equal(ctx.recovered, true);
  await waitFor(() => got.length === 3, "publications sent while half-open");
  assert.deepEqual(got, [1, 2, 3]);
});

test("a request without a reply times out", async (t) => {
  const server = await Server.start();
  const proxy = await Proxy.start(server.addr);
  // Pings far apart so that only the request's own timeout is at work.
  const c = connect(proxy.wsUrl, { pingInterval: 60_000, requestTimeout: 200 });
  t.after(async () => {
    c.disconnect();
    await proxy.close();
    await server.stop();
  });
  await nextEvent(c, "connected");
  proxy.freeze();
  const started = Date.now();
  await assert.rejects(c.ping(), (e) => e.code === ClientErrorCode.TIMEOUT);
  assert.ok(Date.now() - started < 2000);
});
