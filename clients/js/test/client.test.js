// The client against a real `switchboard dev`: requests, replies, errors,
// tokens, and the server's advice not to come back.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Client, ClientErrorCode, State, SwitchboardError } from "../switchboard.js";
import { nextEvent, Server, waitFor } from "../test-support/server.js";
import { token } from "../test-support/token.js";

/** @type {Server} */
let server;
/** @type {Client[]} */
const clients = [];

/** @param {import("../switchboard.js").ClientOptions} [options] */
function client(options) {
  const c = new Client(server.wsUrl, options);
  clients.push(c);
  return c;
}

before(async () => {
  server = await Server.start();
});

after(async () => {
  for (const c of clients) c.disconnect();
  await server.stop();
});

describe("requests", () => {
  test("subscribe, publish with and without ack, and receive in order", async () => {
    const a = client();
    const b = client();
    a.connect();
    b.connect();
    const sub = a.subscribe("chat:basics");
    const got = [];
    sub.on("message", (m) => got.push(m.data));
    const subscribed = await sub.ready(5000);
    assert.equal(subscribed?.wasRecovering, false);
    assert.equal(subscribed?.recoverable, true);

    const pos = await b.publish("chat:basics", { n: 1 });
    assert.equal(typeof pos.offset, "number");
    assert.equal(typeof pos.epoch, "string");
    assert.equal(await b.publish("chat:basics", { n: 2 }, { ack: false }), undefined);
    await b.publish("chat:basics", null);
    await waitFor(() => got.length === 3, "three messages");
    assert.deepEqual(got, [{ n: 1 }, { n: 2 }, null]);
    assert.deepEqual(sub.position, { offset: pos.offset + 2, epoch: pos.epoch });
  });

  test("presence, presence stats, history and ping", async () => {
    const a = client({ token: token("alice", 600, { info: { name: "Alice" } }) });
    a.connect();
    const connected = await nextEvent(a, "connected");
    assert.equal(connected.userId, "alice");
    assert.match(connected.clientId, /^[0-9a-f]{16}$/);
    const sub = a.subscribe("chat:presence");
    await sub.ready(5000);
    const presence = await sub.presence();
    assert.deepEqual(presence.clients, [{ client_id: a.clientId, user_id: "alice", info: { name: "Alice" } }]);
    assert.deepEqual(await a.presenceStats("chat:presence"), { channel: "chat:presence", num_clients: 1, num_users: 1 });

    for (const n of [1, 2, 3]) await a.publish("chat:presence", n);
    const newest = await a.history("chat:presence", { limit: 2, reverse: true });
    assert.deepEqual(newest.publications.map((p) => p.data), [3, 2]);
    const since = await a.history("chat:presence", { since: { offset: newest.offset - 1, epoch: newest.epoch } });
    assert.deepEqual(since.publications.map((p) => p.data), [3]);
    assert.equal(since.complete, true);
    assert.ok((await a.ping()) >= 0);
  });

  test("presence follows the server's pages to the last", async () => {
    const members = ["p1", "p2", "p3"].map((user) => client({ token: token(user, 600) }));
    for (const m of members) {
      m.connect();
      await m.subscribe("chat:paged").ready(5000);
    }
    const all = await members[0].presence("chat:paged", { pageSize: 1 });
    assert.equal(all.channel, "chat:paged");
    assert.deepEqual(all.clients.map((c) => c.user_id).sort(), ["p1", "p2", "p3"]);
    assert.equal(new Set(all.clients.map((c) => c.client_id)).size, 3);
  });

  test("join and leave events reach subscribers", async () => {
    const a = client();
    a.connect();
    const sub = a.subscribe("chat:joins");
    await sub.ready(5000);
    const b = client({ token: token("bob", 600) });
    b.connect();
    const joined = nextEvent(sub, "join", (i) => i.user_id === "bob");
    b.subscribe("chat:joins");
    const info = await joined;
    const left = nextEvent(sub, "leave", (i) => i.client_id === info.client_id);
    b.getSubscription("chat:joins")?.unsubscribe();
    await left;
  });

  test("server errors reject with their code; the connection stays", async () => {
    const a = client();
    a.connect();
    await assert.rejects(a.publish("bad channel", 1), (e) => e instanceof SwitchboardError && e.code === 113);
    await assert.rejects(a.history("#someone"), (e) => e instanceof SwitchboardError && e.code === 103);
    const bad = a.subscribe("no spaces allowed");
    const unsubscribed = await nextEvent(bad, "unsubscribed");
    assert.equal(unsubscribed.code, 113);
    assert.equal(bad.state, "unsubscribed");
    assert.equal(a.getSubscription("no spaces allowed"), null);
    assert.equal(a.state, State.CONNECTED);
  });

  test("publish errors without ack arrive as error events", async () => {
    const a = client();
    a.connect();
    await nextEvent(a, "connected");
    const error = nextEvent(a, "error");
    await a.publish("#nobody", 1, { ack: false });
    assert.equal((await error).error.code, 103);
  });

  test("requests made while connecting wait for the connection", async () => {
    const a = client();
    a.connect();
    assert.equal(a.state, State.CONNECTING);
    const pending = a.publish("chat:early", "x");
    assert.equal(typeof (await pending).offset, "number");
  });

  test("requests on a disconnected client fail at once", async () => {
    const a = client();
    await assert.rejects(a.ping(), (e) => e.code === ClientErrorCode.CLIENT_CLOSED);
  });

  test("the personal channel arrives as client message events", async () => {
    const alice = client({ token: token("alice", 600) });
    const bob = client({ token: token("bob", 600) });
    alice.connect();
    bob.connect();
    await nextEvent(alice, "connected");
    const got = nextEvent(alice, "message");
    await bob.publish("#alice", { dm: "hi" });
    const m = await got;
    assert.equal(m.channel, "#alice");
    assert.equal(m.from, "bob");
  });
});

describe("batched frames", () => {
  /**
   * Offers its protocols like the client's WebSocket, and keeps each socket
   * so that the test can read the subprotocol the server chose.
   * @param {WebSocket[]} opened
   */
  function recording(opened) {
    return class extends WebSocket {
      /** @param {string} url @param {string[]} [protocols] */
      constructor(url, protocols) {
        super(url, protocols);
        opened.push(this);
      }
    };
  }

  for (const batchFrames of [true, false]) {
    test(`a burst of publications arrives whole and in order (batchFrames: ${batchFrames})`, async () => {
      /** @type {WebSocket[]} */
      const opened = [];
      const c = client({ batchFrames, WebSocket: recording(opened) });
      c.connect();
      const channel = `burst:js${batchFrames}`;
      const sub = c.subscribe(channel);
      /** @type {unknown[]} */
      const got = [];
      sub.on("message", (m) => got.push(m.data));
      await sub.ready(5000);
      assert.equal(opened[0].protocol, batchFrames ? "switchboard.batch" : "");

      // 50 publications in one frame: the subscriber's deliveries are
      // ready together, and a batch connection gets them in few frames.
      const publisher = new WebSocket(server.wsUrl, ["switchboard.batch"]);
      await new Promise((resolve, reject) => {
        publisher.onopen = resolve;
        publisher.onerror = reject;
      });
      const frame = Array.from({ length: 50 }, (_, i) =>
        JSON.stringify({ type: "publish", channel, data: { n: i + 1 } }),
      ).join("\n");
      publisher.send(frame);
      await waitFor(() => got.length === 50, "fifty messages");
      assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => ({ n: i + 1 })));
      publisher.close();
    });
  }
});

describe("tokens", () => {
  test("getToken is called to connect and again before the token expires", async () => {
    let calls = 0;
    // 2 s tokens: refreshed at ~1.6 s; the server would close at exp + 5 s leeway.
    const a = client({
      getToken: async () => {
        calls += 1;
        return token("carol", 2);
      },
    });
    a.connect();
    const connected = await nextEvent(a, "connected");
    await nextEvent(a, "refreshed");
    await nextEvent(a, "refreshed");
    assert.ok(calls >= 3, `getToken called ${calls} times`);
    assert.equal(a.state, State.CONNECTED);
    assert.equal(a.clientId, connected.clientId, "same connection throughout");
  });

  test("a failing token callback is retried with backoff", async () => {
    let calls = 0;
    const a = client({
      backoff: { initialDelay: 50, maxDelay: 50 },
      getToken: async () => {
        calls += 1;
        if (calls < 3) throw new Error("token service down");
        return token("dave", 600);
      },
    });
    const errors = [];
    a.on("error", ({ error }) => errors.push(error.code));
    a.connect();
    const connected = await nextEvent(a, "connected");
    assert.equal(connected.userId, "dave");
    assert.deepEqual(errors, [ClientErrorCode.TOKEN_UNAVAILABLE, ClientErrorCode.TOKEN_UNAVAILABLE]);
  });

  test("a refused token ends the client: the server says not to reconnect", async () => {
    let calls = 0;
    const a = client({
      backoff: { initialDelay: 10, maxDelay: 10 },
      getToken: () => {
        calls += 1;
        return "not-a-jwt";
      },
    });
    const errors = [];
    a.on("error", ({ error }) => errors.push(error.code));
    a.connect();
    const ended = await nextEvent(a, "disconnected");
    assert.equal(ended.code, 4001);
    assert.deepEqual(errors, [101]);
    assert.equal(calls, 1, "no second attempt");
    assert.equal(a.state, State.DISCONNECTED);
  });
});

describe("disconnect advice", () => {
  test("a server close with reconnect:false is final (message too big, 1009)", async () => {
    const a = client({ backoff: { initialDelay: 10, maxDelay: 10 } });
    a.connect();
    const sub = a.subscribe("chat:big");
    await sub.ready(5000);
    const ended = nextEvent(a, "disconnected");
    const publish = a.publish("chat:big", "x".repeat(70_000));
    assert.deepEqual(await ended, { code: 1009, reason: "message too big" });
    await assert.rejects(publish, (e) => e.code === ClientErrorCode.CONNECTION_LOST);
    assert.equal(a.state, State.DISCONNECTED);
    assert.equal(sub.state, "subscribing", "kept for a later connect()");
    // No attempt may follow: `connecting` would be emitted synchronously with scheduling.
    const again = a.once("connecting", () => assert.fail("reconnected after a final close"));
    await a.ping().catch((e) => assert.equal(e.code, ClientErrorCode.CLIENT_CLOSED));
    again();
  });

  test("disconnect() stops for good; connect() starts again and resubscribes", async () => {
    const a = client();
    a.connect();
    const sub = a.subscribe("chat:again");
    await sub.ready(5000);
    // A channel with history outlives its last subscriber; an empty one
    // would be dropped and come back under a new epoch.
    await a.publish("chat:again", "kept");
    await waitFor(() => sub.position?.offset === 1, "own publication");
    a.disconnect();
    assert.equal(a.state, State.DISCONNECTED);
    assert.equal(sub.state, "subscribing");
    a.connect();
    const resubscribed = await nextEvent(sub, "subscribed");
    assert.equal(resubscribed.wasRecovering, true);
    assert.equal(resubscribed.recovered, true);
    assert.equal(resubscribed.publications, 0);
  });
});
