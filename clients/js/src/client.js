// The connection: one WebSocket at a time, opened, authenticated, watched
// for silence, and replaced with backoff when it fails. Requests wait for a
// connection and carry ids and timeouts; subscriptions outlive sockets.

import { advise, ClientCloseCode } from "./advice.js";
import { Backoff } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { ClientErrorCode, SwitchboardError } from "./errors.js";
import { Subscription, SubscriptionState } from "./subscription.js";
import { refreshDelay, tokenExpiry } from "./token.js";

/** @typedef {import("../switchboard.js").ClientOptions} ClientOptions */
/** @typedef {import("../switchboard.js").ClientEvents} ClientEvents */

/** The subprotocol whose frames carry several messages, one per line. */
const BATCH_PROTOCOL = "switchboard.batch";

export const State = Object.freeze({
  /** Not connected and not trying: before `connect()`, after `disconnect()` or a final refusal. */
  DISCONNECTED: "disconnected",
  /** Opening a connection, or waiting to retry. */
  CONNECTING: "connecting",
  /** Open, authenticated, serving requests. */
  CONNECTED: "connected",
});

/** setTimeout stores delays as 32-bit signed milliseconds. */
const MAX_TIMER = 2 ** 31 - 1;

/**
 * @typedef {object} Call
 * @property {object} frame The request without its id.
 * @property {(frame: any) => void} resolve
 * @property {(error: SwitchboardError) => void} reject
 * @property {ReturnType<typeof setTimeout> | undefined} timer
 * @property {boolean} [noReply] Sent without an id; settled once written.
 */

/** @extends {Emitter<ClientEvents>} */
export class Client extends Emitter {
  #url;
  /** @type {Required<Omit<ClientOptions, "token" | "getToken" | "WebSocket" | "backoff">>} */
  #opts;
  /** @type {any} */
  #WebSocket;
  /** @type {(() => Promise<string> | string) | null} */
  #getToken;
  /** @type {string | null} */
  #token;
  #backoff;
  /** @type {import("./backoff.js").BackoffOptions} */
  #backoffOptions;

  /** @type {"disconnected" | "connecting" | "connected"} */
  #state = State.DISCONNECTED;
  /** @type {WebSocket | null} */
  #ws = null;
  /** The server's `disconnect` frame on the current socket. */
  #advice = null;
  /** Bumped by every attempt and by `disconnect()`, so late async steps of an abandoned attempt stop. */
  #generation = 0;
  #nextId = 1;
  /** @type {Map<number, Call>} */
  #pending = new Map();
  /** @type {Call[]} Requests made while not connected. */
  #queued = [];
  /** @type {Map<string, Subscription>} */
  #subs = new Map();
  #lastReceived = 0;
  #pinging = false;
  /** @type {string | null} */
  #clientId = null;
  /** @type {string | null} */
  #userId = null;
  #timers = {
    /** @type {ReturnType<typeof setTimeout> | undefined} */ reconnect: undefined,
    /** @type {ReturnType<typeof setTimeout> | undefined} */ connect: undefined,
    /** @type {ReturnType<typeof setTimeout> | undefined} */ stable: undefined,
    /** @type {ReturnType<typeof setInterval> | undefined} */ liveness: undefined,
    /** @type {ReturnType<typeof setTimeout> | undefined} */ refresh: undefined,
  };
  /** @type {(() => void) | null} */
  #unhookEnvironment = null;

  /**
   * @param {string} url `ws://host:port/ws` or `wss://…`.
   * @param {ClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    this.#url = url;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError(
        "no WebSocket implementation: on Node 20 run with --experimental-websocket, or pass options.WebSocket",
      );
    }
    this.#getToken = options.getToken ?? null;
    this.#token = options.token ?? null;
    this.#backoffOptions = options.backoff ?? {};
    this.#backoff = new Backoff(this.#backoffOptions);
    this.#opts = {
      requestTimeout: options.requestTimeout ?? 10000,
      connectTimeout: options.connectTimeout ?? 10000,
      pingInterval: options.pingInterval ?? 20000,
      pongTimeout: options.pongTimeout ?? 10000,
      stableAfter: options.stableAfter ?? 10000,
      refreshMargin: options.refreshMargin ?? 30000,
      maxQueued: options.maxQueued ?? 1000,
      batchFrames: options.batchFrames ?? true,
    };
  }

  /** @returns {"disconnected" | "connecting" | "connected"} */
  get state() {
    return this.#state;
  }

  /** This connection's id on the server, once authenticated with a token. */
  get clientId() {
    return this.#clientId;
  }

  /** The user id of the token (`""` when anonymous), once connected. */
  get userId() {
    return this.#userId;
  }

  /** Starts connecting; reconnects on its own from then on. */
  connect() {
    if (this.#state !== State.DISCONNECTED) return;
    this.#backoff.reset();
    this.#hookEnvironment();
    this.#setState(State.CONNECTING);
    this.emit("connecting", { code: 0, reason: "connect called", attempt: 0, delay: 0 });
    this.#attempt();
  }

  /** Closes the connection and stops reconnecting. Subscriptions are kept for a later `connect()`. */
  disconnect() {
    if (this.#state === State.DISCONNECTED) return;
    const ws = this.#ws;
    if (ws) this.#detach(ws, 1000);
    this.#ws = null;
    this.#end(ClientCloseCode.DISCONNECT_CALLED, "disconnect called");
  }

  /**
   * Drops the current connection as a network failure would, then
   * reconnects (with backoff) and resubscribes with recovery. Useful after
   * a network change, and to test recovery.
   */
  reconnect() {
    if (this.#state === State.DISCONNECTED) return this.connect();
    const ws = this.#ws;
    if (ws) {
      this.#abandon(ws, ClientCloseCode.RECONNECT_CALLED, "reconnect called");
    } else if (this.#timers.reconnect !== undefined) {
      clearTimeout(this.#timers.reconnect);
      this.#timers.reconnect = undefined;
      this.#attempt();
    }
  }

  /**
   * Subscribes to `channel`, now or as soon as connected, and after every
   * reconnect from the last position it delivered.
   * @param {string} channel
   * @param {{ since?: import("../switchboard.js").Position }} [options]
   *   Resume after a position the application stored earlier.
   */
  subscribe(channel, options) {
    if (this.#subs.has(channel)) {
      throw new Error(`already subscribed to ${channel}; use getSubscription()`);
    }
    const sub = new Subscription(this, channel, options);
    this.#subs.set(channel, sub);
    if (this.#state === State.CONNECTED) this.#sendSubscribe(sub);
    return sub;
  }

  /** @param {string} channel */
  getSubscription(channel) {
    return this.#subs.get(channel) ?? null;
  }

  /** @returns {Subscription[]} */
  subscriptions() {
    return [...this.#subs.values()];
  }

  /** @param {Subscription} sub */
  removeSubscription(sub) {
    if (this.#subs.get(sub.channel) !== sub) return;
    this.#subs.delete(sub.channel);
    const live = sub.state === SubscriptionState.SUBSCRIBED || sub._pendingOn === this.#ws;
    if (this.#state === State.CONNECTED && this.#ws && live) {
      // Failures do not matter: the server forgets the subscription with
      // the connection anyway.
      this.#call({ type: "unsubscribe", channel: sub.channel }, this.#opts.requestTimeout).catch(() => {});
    }
    sub._removed(ClientErrorCode.UNSUBSCRIBED, "unsubscribe called");
  }

  /**
   * Publishes `data` (any JSON value) to `channel`. With `ack` (the
   * default) resolves with the publication's position once the server
   * accepted it; without, resolves once it is written to the socket.
   * @param {string} channel
   * @param {unknown} data
   * @param {import("../switchboard.js").PublishOptions} [options]
   */
  async publish(channel, data, options = {}) {
    if (data === undefined) throw new TypeError("publish needs data (null is allowed)");
    const frame = { type: "publish", channel, data };
    const timeout = options.timeout ?? this.#opts.requestTimeout;
    if (options.ack === false) {
      await this.#call(frame, timeout, true);
      return undefined;
    }
    return (await this.#call(frame, timeout)).data;
  }

  /**
   * Every client in the channel's presence: the server answers in pages
   * (at most 1000 clients each, docs/protocol.md), followed here until the
   * last.
   * @param {string} channel
   * @param {{pageSize?: number}} [options]
   */
  async presence(channel, options = {}) {
    const clients = [];
    let cursor;
    for (;;) {
      const frame = { type: "presence", channel };
      if (options.pageSize !== undefined) frame.limit = options.pageSize;
      if (cursor !== undefined) frame.cursor = cursor;
      const page = (await this.#call(frame, this.#opts.requestTimeout)).data;
      clients.push(...page.clients);
      if (!page.next_cursor) return { channel: page.channel, clients };
      cursor = page.next_cursor;
    }
  }

  /** @param {string} channel */
  async presenceStats(channel) {
    return (await this.#call({ type: "presence_stats", channel }, this.#opts.requestTimeout)).data;
  }

  /**
   * @param {string} channel
   * @param {import("../switchboard.js").HistoryOptions} [options]
   */
  async history(channel, options = {}) {
    const frame = { type: "history", channel };
    if (options.limit !== undefined) frame.limit = options.limit;
    if (options.reverse !== undefined) frame.reverse = options.reverse;
    if (options.since) frame.since = { offset: options.since.offset, epoch: options.since.epoch };
    return (await this.#call(frame, options.timeout ?? this.#opts.requestTimeout)).data;
  }

  /** Round trip to the server, in milliseconds. */
  async ping() {
    const start = Date.now();
    await this.#call({ type: "ping" }, this.#opts.requestTimeout);
    return Date.now() - start;
  }

  /**
   * Sends any request frame (without `id`) and resolves with the reply frame.
   * @param {object} frame
   * @param {number} [timeout]
   */
  request(frame, timeout) {
    return this.#call(frame, timeout ?? this.#opts.requestTimeout);
  }

  // ---- connection lifecycle ----

  async #attempt() {
    const gen = ++this.#generation;
    this.#advice = null;
    let token = this.#token;
    if (this.#getToken) {
      try {
        token = await withTimeout(Promise.resolve(this.#getToken()), this.#opts.connectTimeout);
        if (typeof token !== "string" || token === "") throw new Error("the token callback returned no token");
      } catch (e) {
        if (gen !== this.#generation) return;
        const error = new SwitchboardError(
          `token unavailable: ${e instanceof Error ? e.message : String(e)}`,
          ClientErrorCode.TOKEN_UNAVAILABLE,
          { cause: e },
        );
        this.emit("error", { error });
        this.#retry({ code: ClientCloseCode.TOKEN_UNAVAILABLE, reason: error.message, reconnect: true, immediate: false });
        return;
      }
      if (gen !== this.#generation) return;
      this.#token = token;
    }

    /** @type {WebSocket} */
    let ws;
    try {
      // A server that does not know `switchboard.batch` selects `switchboard`.
      ws = this.#opts.batchFrames
        ? new this.#WebSocket(this.#url, [BATCH_PROTOCOL, "switchboard"])
        : new this.#WebSocket(this.#url);
    } catch (e) {
      // A malformed URL will not get better by waiting.
      this.emit("error", { error: new SwitchboardError(`cannot open ${this.#url}: ${e}`, ClientErrorCode.CLIENT_CLOSED) });
      this.#end(ClientCloseCode.TRANSPORT_CLOSED, "invalid URL");
      return;
    }
    this.#ws = ws;
    this.#timers.connect = setTimeout(
      () => this.#abandon(ws, ClientCloseCode.CONNECT_TIMEOUT, "connect timeout"),
      this.#opts.connectTimeout,
    );
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      this.#lastReceived = Date.now();
      if (!token) {
        // Anonymous: the server decides on our first frame; there is no reply to wait for.
        this.#onConnected(ws, null);
        return;
      }
      const id = this.#nextId++;
      this.#pending.set(id, {
        frame: {},
        resolve: (f) => this.#onConnected(ws, f),
        // The server follows a refusal with `disconnect` and a close,
        // which decide what happens next.
        reject: (error) => {
          if (error.code >= 100) this.emit("error", { error });
        },
        timer: undefined,
      });
      this.#write(ws, { type: "auth", id, token });
    };
    ws.onmessage = (ev) => {
      if (ws.protocol !== BATCH_PROTOCOL) {
        this.#onFrame(ws, ev.data);
        return;
      }
      // One message per line (docs/protocol.md, "Batched frames").
      for (const line of String(ev.data).split("\n")) {
        if (line.trim() !== "") this.#onFrame(ws, line);
      }
    };
    ws.onclose = (ev) => {
      if (ws !== this.#ws) return;
      this.#lost(advise(this.#advice, ev.code, ev.reason));
    };
    // Browsers follow an error with a close event (code 1006), but Node
    // 20's WebSocket fires only the error when a connection is refused:
    // take the error as the end, and ignore the close that may follow.
    ws.onerror = () => {
      if (ws !== this.#ws) return;
      this.#detach(ws, 1000);
      this.#lost(advise(this.#advice, 1006, "connection failed"));
    };
  }

  /**
   * @param {WebSocket} ws
   * @param {any} authenticated The `authenticated` frame, or null when anonymous.
   */
  #onConnected(ws, authenticated) {
    if (ws !== this.#ws) return;
    clearTimeout(this.#timers.connect);
    this.#clientId = authenticated?.client_id ?? null;
    this.#userId = authenticated?.user_id ?? "";
    this.#setState(State.CONNECTED);
    this.#timers.stable = setTimeout(() => this.#backoff.reset(), this.#opts.stableAfter);
    // Checking at half the interval bounds detection at 1.5 intervals of silence plus the pong timeout.
    this.#timers.liveness = setInterval(() => this.#checkLiveness(false), Math.max(1, this.#opts.pingInterval / 2));
    this.#scheduleRefresh();
    for (const sub of this.#subs.values()) this.#sendSubscribe(sub);
    const queued = this.#queued;
    this.#queued = [];
    for (const call of queued) this.#dispatch(ws, call);
    this.emit("connected", { clientId: this.#clientId, userId: this.#userId });
  }

  /**
   * @param {WebSocket} ws
   * @param {unknown} data
   */
  #onFrame(ws, data) {
    if (ws !== this.#ws) return;
    this.#lastReceived = Date.now();
    /** @type {any} */
    let f;
    try {
      f = JSON.parse(String(data));
    } catch {
      this.emit("error", { error: new SwitchboardError("server sent invalid JSON", 100) });
      return;
    }
    switch (f.type) {
      case "message": {
        const sub = this.#subs.get(f.channel);
        if (sub) sub._message(f);
        else this.emit("message", f); // the personal channel, subscribed by the server
        return;
      }
      case "join":
      case "leave":
        this.#subs.get(f.channel)?._presenceEvent(f);
        return;
      case "disconnect":
        this.#advice = { code: f.code, reason: f.reason, reconnect: f.reconnect === true };
        return;
    }
    const call = f.id !== undefined ? this.#pending.get(f.id) : undefined;
    if (call) {
      this.#pending.delete(f.id);
      clearTimeout(call.timer);
      if (f.type === "error") call.reject(new SwitchboardError(f.error, f.code));
      else call.resolve(f);
    } else if (f.type === "error") {
      // Errors of requests without an id, i.e. publishes without ack.
      this.emit("error", { error: new SwitchboardError(f.error, f.code) });
    }
  }

  /**
   * The socket is gone; decide between reconnecting and stopping.
   * @param {import("./advice.js").Advice} advice
   */
  #lost(advice) {
    this.#ws = null;
    this.#clearConnectionTimers();
    this.#failPending(new SwitchboardError(`connection lost: ${advice.reason || advice.code}`, ClientErrorCode.CONNECTION_LOST));
    for (const sub of this.#subs.values()) sub._subscribing(advice.code, advice.reason);
    // Reconnecting with an expired token that nobody can renew only earns a refusal.
    const renewable = this.#getToken !== null || advice.code !== 4003;
    if (advice.reconnect && renewable) this.#retry(advice);
    else this.#end(advice.code, advice.reason);
  }

  /** @param {import("./advice.js").Advice} advice */
  #retry(advice) {
    const delay = advice.immediate ? 0 : this.#backoff.next();
    this.#setState(State.CONNECTING);
    this.emit("connecting", { code: advice.code, reason: advice.reason, attempt: this.#backoff.attempt, delay });
    this.#timers.reconnect = setTimeout(() => {
      this.#timers.reconnect = undefined;
      this.#attempt();
    }, delay);
  }

  /** Stops for good: `disconnect()` or a refusal the server says not to retry. */
  #end(code, reason) {
    this.#generation++;
    this.#ws = null;
    this.#clearConnectionTimers();
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = undefined;
    this.#unhookEnvironment?.();
    this.#unhookEnvironment = null;
    const closed = new SwitchboardError(`disconnected: ${reason}`, ClientErrorCode.CLIENT_CLOSED);
    this.#failPending(closed);
    for (const call of this.#queued.splice(0)) {
      clearTimeout(call.timer);
      call.reject(closed);
    }
    for (const sub of this.#subs.values()) sub._subscribing(code, reason);
    this.#setState(State.DISCONNECTED);
    this.emit("disconnected", { code, reason });
  }

  /**
   * Gives up on a socket the server did not close (a timeout, a missing
   * pong, `reconnect()`), and carries on as if the network had dropped it.
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} reason
   */
  #abandon(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#detach(ws, 1000);
    this.#lost({ code, reason, reconnect: true, immediate: false });
  }

  /** @param {WebSocket} ws @param {number} closeCode */
  #detach(ws, closeCode) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(closeCode);
    } catch {
      // Already closing or closed.
    }
  }

  #clearConnectionTimers() {
    clearTimeout(this.#timers.connect);
    clearTimeout(this.#timers.stable);
    clearInterval(this.#timers.liveness);
    clearTimeout(this.#timers.refresh);
    this.#timers.connect = this.#timers.stable = this.#timers.liveness = this.#timers.refresh = undefined;
    this.#pinging = false;
  }

  /** @param {SwitchboardError} error */
  #failPending(error) {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const call of pending) {
      clearTimeout(call.timer);
      call.reject(error);
    }
  }

  /** @param {"disconnected" | "connecting" | "connected"} state */
  #setState(state) {
    if (this.#state === state) return;
    const previous = this.#state;
    this.#state = state;
    this.emit("state", { state, previous });
  }

  // ---- liveness ----

  /**
   * Pings after a silence; no pong in time means the connection is
   * half-open (the peer or a NAT forgot it, a phone slept) even though
   * the socket still looks open.
   * @param {boolean} now Ping even if frames arrived recently.
   */
  #checkLiveness(now) {
    const ws = this.#ws;
    if (!ws || this.#state !== State.CONNECTED || this.#pinging) return;
    if (!now && Date.now() - this.#lastReceived < this.#opts.pingInterval) return;
    this.#pinging = true;
    this.#call({ type: "ping" }, this.#opts.pongTimeout).then(
      () => {
        if (ws === this.#ws) this.#pinging = false;
      },
      (e) => {
        if (ws !== this.#ws) return;
        this.#pinging = false;
        if (e.code === ClientErrorCode.TIMEOUT) this.#abandon(ws, ClientCloseCode.NO_PONG, "no pong");
      },
    );
  }

  /** Browsers say when the network returns or the page wakes; act on it rather than wait for timers. */
  #hookEnvironment() {
    const g = /** @type {any} */ (globalThis);
    if (this.#unhookEnvironment || typeof g.addEventListener !== "function") return;
    const onOnline = () => {
      if (this.#state === State.CONNECTED) this.#checkLiveness(true);
      else if (this.#timers.reconnect !== undefined) this.reconnect();
    };
    const onVisible = () => {
      if (g.document?.visibilityState === "visible") onOnline();
    };
    g.addEventListener("online", onOnline);
    g.document?.addEventListener?.("visibilitychange", onVisible);
    this.#unhookEnvironment = () => {
      g.removeEventListener("online", onOnline);
      g.document?.removeEventListener?.("visibilitychange", onVisible);
    };
  }

  // ---- tokens ----

  #scheduleRefresh() {
    if (!this.#getToken || !this.#token) return;
    const exp = tokenExpiry(this.#token);
    if (exp === null) return;
    const delay = refreshDelay(exp * 1000 - Date.now(), this.#opts.refreshMargin);
    this.#timers.refresh = setTimeout(() => this.#refresh(), Math.min(delay, MAX_TIMER));
  }

  async #refresh() {
    const ws = this.#ws;
    const getToken = this.#getToken;
    if (!ws || !getToken) return;
    try {
      const token = await withTimeout(Promise.resolve(getToken()), this.#opts.requestTimeout);
      if (typeof token !== "string" || token === "") throw new Error("the token callback returned no token");
      if (ws !== this.#ws) return;
      await this.#call({ type: "refresh", token }, this.#opts.requestTimeout);
      if (ws !== this.#ws) return;
      this.#token = token;
      this.emit("refreshed", { expiresAt: tokenExpiry(token) });
      this.#scheduleRefresh();
    } catch (e) {
      if (ws !== this.#ws) return;
      const error =
        e instanceof SwitchboardError
          ? e
          : new SwitchboardError(`token refresh failed: ${e instanceof Error ? e.message : e}`, ClientErrorCode.TOKEN_UNAVAILABLE, { cause: e });
      this.emit("error", { error });
      // Keep trying while the old token lasts; if it runs out the server
      // closes with 4003 and the reconnect fetches a new token anyway.
      this.#timers.refresh = setTimeout(() => this.#refresh(), Math.min(5000, this.#opts.refreshMargin));
    }
  }

  // ---- requests ----

  /** @param {Subscription} sub */
  #sendSubscribe(sub) {
    const ws = this.#ws;
    if (!ws || sub._pendingOn === ws) return;
    const since = sub.position;
    /** @type {any} */
    const frame = { type: "subscribe", channel: sub.channel };
    if (since) frame.since = { offset: since.offset, epoch: since.epoch };
    sub._pendingOn = ws;
    this.#start(
      frame,
      this.#opts.requestTimeout,
      (reply) => {
        if (ws !== this.#ws || this.#subs.get(sub.channel) !== sub) return;
        sub._pendingOn = null;
        sub._subscribed(reply.data, since !== null);
      },
      (error) => {
        if (ws !== this.#ws) return;
        sub._pendingOn = null;
        if (this.#subs.get(sub.channel) !== sub) return;
        if (error.code === ClientErrorCode.TIMEOUT) {
          // The server may yet subscribe us; only a new connection makes the state certain again.
          this.#abandon(ws, ClientCloseCode.SUBSCRIBE_TIMEOUT, "subscribe timeout");
        } else if (error.temporary) {
          sub._retry ??= new Backoff(this.#backoffOptions);
          setTimeout(() => {
            if (ws === this.#ws && this.#subs.get(sub.channel) === sub) this.#sendSubscribe(sub);
          }, sub._retry.next());
        } else {
          this.#subs.delete(sub.channel);
          sub._failed(error);
        }
      },
    );
  }

  /**
   * Sends a request now if connected, else when connected; settles with the
   * reply frame, or fails after `timeout` ms in total.
   * @param {object} frame
   * @param {number} timeout
   * @param {boolean} [noReply] Send without an id; settle once written.
   * @returns {Promise<any>}
   */
  #call(frame, timeout, noReply = false) {
    return new Promise((resolve, reject) => this.#start(frame, timeout, resolve, reject, noReply));
  }

  /**
   * Like {@link #call} with callbacks, which run synchronously when the
   * reply frame is handled. The client's own requests need that: Node's
   * WebSocket may dispatch several frames in one task, so a promise
   * callback could run after the frames that follow the reply.
   * @param {object} frame
   * @param {number} timeout
   * @param {(frame: any) => void} resolve
   * @param {(error: SwitchboardError) => void} reject
   * @param {boolean} [noReply]
   */
  #start(frame, timeout, resolve, reject, noReply = false) {
    if (this.#state === State.DISCONNECTED) {
      reject(new SwitchboardError("client is disconnected", ClientErrorCode.CLIENT_CLOSED));
      return;
    }
    /** @type {Call} */
    const call = { frame, resolve, reject, timer: undefined, noReply };
    call.timer = setTimeout(() => {
      const i = this.#queued.indexOf(call);
      if (i >= 0) this.#queued.splice(i, 1);
      for (const [id, c] of this.#pending) {
        if (c === call) this.#pending.delete(id);
      }
      reject(new SwitchboardError(`no reply to ${/** @type {any} */ (frame).type} within ${timeout} ms`, ClientErrorCode.TIMEOUT));
    }, timeout);
    if (this.#state === State.CONNECTED && this.#ws) {
      this.#dispatch(this.#ws, call);
    } else if (this.#queued.length >= this.#opts.maxQueued) {
      clearTimeout(call.timer);
      reject(new SwitchboardError("too many requests wait for a connection", ClientErrorCode.QUEUE_FULL));
    } else {
      this.#queued.push(call);
    }
  }

  /** @param {WebSocket} ws @param {Call} call */
  #dispatch(ws, call) {
    if (call.noReply) {
      const sent = this.#write(ws, call.frame);
      clearTimeout(call.timer);
      if (sent) call.resolve(undefined);
      else call.reject(new SwitchboardError("connection lost", ClientErrorCode.CONNECTION_LOST));
      return;
    }
    const id = this.#nextId++;
    this.#pending.set(id, call);
    this.#write(ws, { ...call.frame, id });
  }

  /** @param {WebSocket} ws @param {object} frame */
  #write(ws, frame) {
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      // The socket is closing; its close event settles what was pending.
      return false;
    }
  }
}

/**
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @returns {Promise<T>}
 */
function withTimeout(promise, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
