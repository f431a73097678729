// A minimal typed event emitter: browsers and Node share no emitter with
// the same API, and the client must have no dependencies.

/**
 * @template {Record<string, any>} Events
 */
export class Emitter {
  /** @type {Map<keyof Events, Set<(arg: any) => void>>} */
  #listeners = new Map();

  /**
   * Adds a listener; returns a function that removes it.
   * @template {keyof Events} K
   * @param {K} event
   * @param {(arg: Events[K]) => void} listener
   * @returns {() => void}
   */
  on(event, listener) {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {(arg: Events[K]) => void} listener
   */
  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  /**
   * Calls `listener` for the next `event` only.
   * @template {keyof Events} K
   * @param {K} event
   * @param {(arg: Events[K]) => void} listener
   * @returns {() => void}
   */
  once(event, listener) {
    const off = this.on(event, (arg) => {
      off();
      listener(arg);
    });
    return off;
  }

  /**
   * @template {keyof Events} K
   * @param {K} event
   * @param {Events[K]} arg
   */
  emit(event, arg) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(arg);
      } catch (e) {
        // A failing listener must not corrupt the client's state machine;
        // rethrow outside it so the failure is still reported.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
