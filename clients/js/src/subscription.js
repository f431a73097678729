// One channel subscription as the application sees it: it survives
// reconnects, remembers the last (epoch, offset) it delivered, resumes from
// there, and drops any publication it already delivered.

import { Emitter } from "./emitter.js";
import { ClientErrorCode, SwitchboardError } from "./errors.js";

/** @typedef {import("../switchboard.js").Publication} Publication */
/** @typedef {import("../switchboard.js").Position} Position */
/** @typedef {import("../switchboard.js").SubscriptionEvents} SubscriptionEvents */

export const SubscriptionState = Object.freeze({
  /** Removed, or refused by the server; it will not subscribe again. */
  UNSUBSCRIBED: "unsubscribed",
  /** Waiting for a connection or for the server's reply. */
  SUBSCRIBING: "subscribing",
  /** Live: publications arrive. */
  SUBSCRIBED: "subscribed",
});

/** @extends {Emitter<SubscriptionEvents>} */
export class Subscription extends Emitter {
  /** @type {string} */
  channel;
  /** @type {"unsubscribed" | "subscribing" | "subscribed"} */
  state = SubscriptionState.SUBSCRIBING;
  /**
   * The position of the last publication delivered (or of the channel when
   * the subscription took effect): where a resubscription resumes.
   * @type {Position | null}
   */
  position = null;
  /** Whether the channel keeps history, so that recovery can work. */
  recoverable = false;
  /** @internal The socket a subscribe request is in flight on. */
  _pendingOn = null;
  /** @internal Backoff for retrying temporary subscribe errors. */
  _retry = null;

  /** @type {import("./client.js").Client} */
  #client;

  /**
   * @param {import("./client.js").Client} client
   * @param {string} channel
   * @param {{ since?: Position }} [options]
   */
  constructor(client, channel, options = {}) {
    super();
    this.#client = client;
    this.channel = channel;
    if (options.since) this.position = { offset: options.since.offset, epoch: options.since.epoch };
  }

  /**
   * Resolves once the subscription is live (at once if it is), with the
   * `subscribed` event; rejects if it is removed or refused first.
   * @param {number} [timeout] Milliseconds; no limit if omitted.
   * @returns {Promise<import("../switchboard.js").SubscribedEvent | null>}
   */
  ready(timeout) {
    if (this.state === SubscriptionState.SUBSCRIBED) return Promise.resolve(null);
    if (this.state === SubscriptionState.UNSUBSCRIBED) {
      return Promise.reject(new SwitchboardError("unsubscribed", ClientErrorCode.UNSUBSCRIBED));
    }
    return new Promise((resolve, reject) => {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const done = () => {
        offOk();
        offGone();
        clearTimeout(timer);
      };
      const offOk = this.once("subscribed", (ctx) => {
        done();
        resolve(ctx);
      });
      const offGone = this.once("unsubscribed", (ctx) => {
        done();
        reject(new SwitchboardError(`unsubscribed: ${ctx.reason}`, ctx.code));
      });
      if (timeout !== undefined) {
        timer = setTimeout(() => {
          done();
          reject(new SwitchboardError("not subscribed in time", ClientErrorCode.TIMEOUT));
        }, timeout);
      }
    });
  }

  /** Stops the subscription for good. */
  unsubscribe() {
    this.#client.removeSubscription(this);
  }

  /**
   * @param {unknown} data
   * @param {import("../switchboard.js").PublishOptions} [options]
   */
  publish(data, options) {
    return this.#client.publish(this.channel, data, options);
  }

  presence() {
    return this.#client.presence(this.channel);
  }

  presenceStats() {
    return this.#client.presenceStats(this.channel);
  }

  /** @param {import("../switchboard.js").HistoryOptions} [options] */
  history(options) {
    return this.#client.history(this.channel, options);
  }

  // ---- called by the client ----

  /** @param {"unsubscribed" | "subscribing" | "subscribed"} state */
  _setState(state) {
    if (this.state === state) return false;
    const previous = this.state;
    this.state = state;
    this.emit("state", { state, previous });
    return true;
  }

  /** The connection is gone or not there yet; the subscription waits. */
  _subscribing(code, reason) {
    if (this.state === SubscriptionState.UNSUBSCRIBED) return;
    if (this._setState(SubscriptionState.SUBSCRIBING)) this.emit("subscribing", { code, reason });
  }

  /**
   * The server's subscribe reply.
   * @param {any} data
   * @param {boolean} wasRecovering Whether `since` was sent.
   */
  _subscribed(data, wasRecovering) {
    const publications = Array.isArray(data.publications) ? data.publications : [];
    const recovered = wasRecovering && data.recovered === true;
    this.recoverable = data.recoverable === true;
    this._setState(SubscriptionState.SUBSCRIBED);
    // Told first, so that an application that lost continuity can reset its
    // state before the retained publications are applied on top.
    this.emit("subscribed", {
      channel: this.channel,
      offset: data.offset,
      epoch: data.epoch,
      recoverable: this.recoverable,
      wasRecovering,
      recovered,
      publications: publications.length,
    });
    for (const p of publications) this._message(p);
    this.position = { offset: data.offset, epoch: data.epoch };
  }

  /** @param {Publication} p */
  _message(p) {
    if (this.state !== SubscriptionState.SUBSCRIBED) return;
    const last = this.position;
    // The server already promises no repeats on one subscription; this
    // also covers the seam between recovered and live publications.
    if (last && last.epoch === p.epoch && p.offset <= last.offset) return;
    this.position = { offset: p.offset, epoch: p.epoch };
    this.emit("message", p);
  }

  /** @param {{ type: "join" | "leave", info: import("../switchboard.js").ClientInfo }} f */
  _presenceEvent(f) {
    if (this.state !== SubscriptionState.SUBSCRIBED) return;
    this.emit(f.type, f.info);
  }

  /** @param {SwitchboardError} error */
  _failed(error) {
    this._setState(SubscriptionState.UNSUBSCRIBED);
    this.emit("error", { error });
    this.emit("unsubscribed", { code: error.code, reason: error.message });
  }

  /** @param {number} code @param {string} reason */
  _removed(code, reason) {
    if (this._setState(SubscriptionState.UNSUBSCRIBED)) this.emit("unsubscribed", { code, reason });
  }
}
