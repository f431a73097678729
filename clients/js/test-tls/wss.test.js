// The client over `wss://`, against a `switchboard dev` whose client port
// speaks TLS with a certificate from a CA the test made. Run by
// tests/js_client.rs, which makes the certificate and gives Node the CA in
// NODE_EXTRA_CA_CERTS (how a Node backend trusts a private CA).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client } from "../switchboard.js";
import { nextEvent, Server, waitFor } from "../test-support/server.js";

const cert = process.env.SWITCHBOARD_TEST_TLS_CERT;
const key = process.env.SWITCHBOARD_TEST_TLS_KEY;

/** @type {Server} */
let server;
/** @type {Client[]} */
const clients = [];

before(async () => {
  assert.ok(cert && key && process.env.NODE_EXTRA_CA_CERTS, "run by tests/js_client.rs (certificate, key and CA)");
  server = await Server.start({ args: ["--client-tls-cert", cert, "--client-tls-key", key] });
});

after(async () => {
  for (const c of clients) c.disconnect();
  await server?.stop();
});

test("subscribe, publish and receive over wss://", async () => {
  assert.match(server.wsUrl, /^wss:\/\//);
  const a = new Client(server.wsUrl);
  const b = new Client(server.wsUrl);
  clients.push(a, b);
  a.connect();
  b.connect();
  await nextEvent(b, "connected");
  const sub = a.subscribe("chat:wss");
  /** @type {unknown[]} */
  const got = [];
  sub.on("message", (m) => got.push(m.data));
  await sub.ready(5000);
  await b.publish("chat:wss", { over: "tls" });
  await waitFor(() => got.length === 1, "the message over wss://");
  assert.deepEqual(got, [{ over: "tls" }]);

  // The same port answers HTTPS (health, metrics) with the same certificate.
  const res = await fetch(server.httpUrl("/healthz"));
  assert.equal(res.status, 200);
});

test("ws:// to the TLS port does not connect", async () => {
  const plain = new Client(server.wsUrl.replace("wss://", "ws://"));
  clients.push(plain);
  const retrying = nextEvent(plain, "connecting", (e) => e.code !== 0);
  plain.connect();
  // The attempt fails and the client schedules another: never connected.
  await retrying;
  assert.notEqual(plain.state, "connected");
});
