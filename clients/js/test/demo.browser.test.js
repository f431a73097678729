// End to end in a real browser: `switchboard dev` serves the demo chat at
// `/`; two headless Chromium tabs load it and a Node client joins too.
// Each participant must see the others in the presence list (by the names
// in their guest tokens) and receive their messages.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client } from "../switchboard.js";
import { Browser } from "../test-support/chromium.js";
import { Server, waitFor } from "../test-support/server.js";

/** What a demo page shows: its connection state, presence list and messages. */
const VIEW = `({
  state: document.body?.dataset.state,
  presence: [...document.querySelectorAll("#presence li")].map((li) => li.textContent),
  messages: [...document.querySelectorAll("#messages li:not(.note)")].map(
    (li) => li.querySelector(".name").textContent + ": " + li.querySelector(".text").textContent),
})`;

test("two browser tabs and a Node client chat and see each other on the demo page", { timeout: 120_000 }, async (t) => {
  const server = await Server.start();
  t.after(() => server.stop());

  const page = await fetch(server.httpUrl("/"));
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<script type="module" src="\/demo\/chat.js">/);

  // The Node participant uses a guest token from the same endpoint as the page.
  const room = `e2e-${process.pid}`;
  const node = new Client(server.wsUrl, {
    getToken: async () => (await (await fetch(server.httpUrl("/demo/token?name=Node"))).json()).token,
  });
  t.after(() => node.disconnect());
  node.connect();
  const sub = node.subscribe(`demo:${room}`);
  /** @type {string[]} */
  const heard = [];
  sub.on("message", (m) => heard.push(`${/** @type {any} */ (m.data).name}: ${/** @type {any} */ (m.data).text}`));
  /** @type {Set<string>} */
  const joined = new Set();
  sub.on("join", (c) => joined.add(/** @type {any} */ (c.info)?.name));
  await sub.ready(10_000);

  const browser = await Browser.launch();
  t.after(() => browser.close());
  const ada = await browser.open(server.httpUrl(`/?room=${room}&name=Ada&say=hello+from+Ada`));
  const grace = await browser.open(server.httpUrl(`/?room=${room}&name=Grace&say=hello+from+Grace`));

  await waitFor(() => heard.length >= 2, "both browsers' messages at the Node client", 60_000);
  assert.deepEqual(heard.sort(), ["Ada: hello from Ada", "Grace: hello from Grace"]);
  assert.ok(joined.has("Ada") && joined.has("Grace"), `joins seen by Node: ${[...joined]}`);
  await node.publish(`demo:${room}`, { name: "Node", text: "hello from Node" });

  for (const [tab, me, other] of [
    [ada, "Ada", "Grace"],
    [grace, "Grace", "Ada"],
  ]) {
    /** @type {any} */
    let view;
    await waitFor(
      async () => {
        view = await tab.eval(VIEW);
        return (
          view.state === "connected" &&
          view.presence.includes(`${me} (you)`) &&
          view.presence.includes(other) &&
          view.presence.includes("Node") &&
          view.messages.includes(`${other}: hello from ${other}`) &&
          view.messages.includes("Node: hello from Node")
        );
      },
      `${me}'s page to show ${other} and Node`,
      60_000,
    ).catch((e) => {
      throw new Error(`${e.message}; page shows ${JSON.stringify(view)}`);
    });
    assert.ok(view.messages.includes(`${me}: hello from ${me}`), "own message echoed");
  }

  // The page is the same client: a network drop on one tab is recovered.
  await ada.eval("switchboard.client.reconnect()");
  await node.publish(`demo:${room}`, { name: "Node", text: "while Ada was away" });
  await waitFor(
    async () => (await ada.eval(VIEW)).messages.includes("Node: while Ada was away"),
    "Ada's page to recover the message sent while it reconnected",
    30_000,
  );
  const stats = await node.presenceStats(`demo:${room}`);
  assert.equal(stats.num_clients, 3);
});
