// The demo chat at `/` of `switchboard dev`, written with the same client
// module the SDK ships (served from the binary at /client/switchboard.js).
//
// Query parameters: `room` (default "lobby"), `name` (default: remembered
// or random), `say` (a message to send once subscribed; used by tests).

import { Client } from "/client/switchboard.js";

const params = new URLSearchParams(location.search);
const room = params.get("room") || "lobby";
const channel = `demo:${room}`;
const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const nameInput = /** @type {HTMLInputElement} */ ($("name"));
const textInput = /** @type {HTMLInputElement} */ ($("text"));

let name = params.get("name") || localStorage.getItem("switchboard-demo-name") || `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
nameInput.value = name;
$("room").textContent = channel;

/** Guest tokens carry the name to everyone's presence list; without them we are anonymous. */
async function guestToken() {
  const res = await fetch(`/demo/token?name=${encodeURIComponent(name)}`);
  if (!res.ok) throw new Error(`token endpoint answered ${res.status}`);
  return (await res.json()).token;
}
const tokens = await guestToken().then(
  () => true,
  () => false,
);

const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const client = new Client(url, tokens ? { getToken: guestToken } : {});
const sub = client.subscribe(channel);
/** @type {Map<string, import("/client/switchboard.js").ClientInfo>} */
const present = new Map();
let said = false;

// ---- rendering ----

/** @param {import("/client/switchboard.js").ClientInfo} c */
function displayName(c) {
  const info = /** @type {any} */ (c.info);
  return (info && typeof info.name === "string" && info.name) || c.user_id || "anonymous";
}

function renderPresence() {
  const list = $("presence");
  list.replaceChildren(
    ...[...present.values()]
      .sort((a, b) => displayName(a).localeCompare(displayName(b)))
      .map((c) => {
        const li = document.createElement("li");
        li.textContent = displayName(c) + (c.client_id === client.clientId ? " (you)" : "");
        li.dataset.clientId = c.client_id;
        return li;
      }),
  );
  $("count").textContent = String(present.size);
}

/** @param {import("/client/switchboard.js").Publication} m */
function messageItem(m) {
  const data = /** @type {any} */ (m.data) ?? {};
  const li = document.createElement("li");
  li.dataset.offset = String(m.offset);
  const who = document.createElement("span");
  who.className = "name";
  who.textContent = typeof data.name === "string" ? data.name : m.from || "anonymous";
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = typeof data.text === "string" ? data.text : JSON.stringify(data);
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = new Date(m.timestamp).toLocaleTimeString();
  li.append(who, text, time);
  return li;
}

/** @param {import("/client/switchboard.js").Publication} m */
function renderMessage(m) {
  append(messageItem(m));
}

/** @param {string} text */
function note(text) {
  const li = document.createElement("li");
  li.className = "note";
  li.textContent = text;
  append(li);
}

/** @param {HTMLLIElement} li */
function append(li) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

/** @param {string} state @param {string} [detail] */
function showState(state, detail) {
  const el = $("state");
  el.dataset.state = state;
  el.textContent = detail ? `${state} (${detail})` : state;
  document.body.dataset.state = state;
}

// ---- client events ----

client.on("connecting", ({ code, reason, delay }) => {
  showState("connecting", code ? `${reason || code}; retry in ${(delay / 1000).toFixed(1)} s` : "");
});
client.on("connected", () => showState("connected"));
client.on("disconnected", ({ reason }) => showState("disconnected", reason));
client.on("error", ({ error }) => console.warn("switchboard:", error.code, error.message));

sub.on("subscribed", async ({ wasRecovering, recovered, publications, offset, epoch }) => {
  if (wasRecovering && recovered) {
    if (publications > 0) note(`reconnected: ${publications} missed message(s) follow`);
  } else {
    // First visit, or continuity lost (e.g. the server restarted): start
    // over from the history the server still has.
    const list = $("messages");
    list.replaceChildren();
    if (wasRecovering) note("reconnected, but messages may have been missed: history reloaded");
    const history = await sub.history({ limit: 50, reverse: true }).catch(() => null);
    // Whatever arrived meanwhile (retained or live publications) is shown
    // already and is newer: put the older history above it.
    const shown = new Set([...list.children].map((li) => /** @type {HTMLElement} */ (li).dataset.offset));
    const older = (history?.publications ?? [])
      .filter((m) => m.epoch === epoch && m.offset <= offset && !shown.has(String(m.offset)))
      .reverse()
      .map(messageItem);
    list.prepend(...older);
    list.scrollTop = list.scrollHeight;
  }
  const reply = await sub.presence().catch(() => null);
  if (reply) {
    present.clear();
    for (const c of reply.clients) present.set(c.client_id, c);
    renderPresence();
  }
  const say = params.get("say");
  if (say && !said) {
    said = true;
    await sub.publish({ name, text: say });
  }
});
sub.on("message", renderMessage);
sub.on("join", (c) => {
  present.set(c.client_id, c);
  renderPresence();
});
sub.on("leave", (c) => {
  present.delete(c.client_id);
  renderPresence();
});

// ---- user actions ----

$("send").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = textInput.value.trim();
  if (!text) return;
  textInput.value = "";
  sub.publish({ name, text }).catch((e) => note(`not sent: ${e.message}`));
});

$("me").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const next = nameInput.value.trim();
  if (!next || next === name) return;
  name = next;
  localStorage.setItem("switchboard-demo-name", name);
  // Presence shows the name from the token: reconnect with a new one.
  if (tokens) client.reconnect();
});

client.connect();
Object.assign(globalThis, { switchboard: { client, sub } });
