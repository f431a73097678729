// Real `switchboard dev` processes for the Node tests: started on a free
// port, stopped with SIGTERM (drain) or SIGKILL (crash), restarted on the
// same address so that clients can come back.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "../../..");

/** How long any single wait in a test may take. */
export const WAIT = 10_000;

/** The server binary: $SWITCHBOARD_BIN (set by `cargo test`), else the debug build. */
export function serverBinary() {
  const bin = process.env.SWITCHBOARD_BIN ?? resolve(REPO, "target/debug/switchboard");
  if (!existsSync(bin)) {
    throw new Error(`no switchboard binary at ${bin}: run \`cargo build\` or set SWITCHBOARD_BIN`);
  }
  return bin;
}

export class Server {
  /** @type {import("node:child_process").ChildProcess} */
  #child;
  /** @type {string[]} */
  #log = [];
  #exited;
  /** @type {string[]} */
  #args;

  /**
   * @param {import("node:child_process").ChildProcess} child
   * @param {string} addr
   * @param {string[]} log
   * @param {Promise<number | null>} exited
   * @param {string[]} args
   * @param {boolean} tls Whether the server announced `wss://`.
   */
  constructor(child, addr, log, exited, args, tls = false) {
    this.#child = child;
    this.addr = addr;
    this.tls = tls;
    this.#log = log;
    this.#exited = exited;
    this.#args = args;
  }

  /**
   * Starts `switchboard dev`; `listen` defaults to a free port.
   * @param {{ listen?: string, args?: string[], env?: Record<string, string> }} [options]
   */
  static async start(options = {}) {
    const args = ["dev", "--listen", options.listen ?? "127.0.0.1:0", ...(options.args ?? [])];
    const child = spawn(serverBinary(), args, {
      env: { ...process.env, SWITCHBOARD_LOG: "info", ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    // A test that dies half-way must not leave servers behind.
    const reap = () => child.kill("SIGKILL");
    process.once("exit", reap);
    /** @type {string[]} */
    const log = [];
    const exited = new Promise((res) =>
      child.once("exit", (code) => {
        process.off("exit", reap);
        res(code);
      }),
    );
    const { scheme, addr } = await new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`no listening address within ${WAIT} ms; log:\n${log.join("\n")}`)), WAIT);
      const onLine = (/** @type {string} */ line) => {
        log.push(line);
        const m = /(wss?):\/\/([^/\s]+)\/ws/.exec(line);
        if (m) {
          clearTimeout(timer);
          res({ scheme: m[1], addr: m[2] });
        }
      };
      for (const stream of [child.stdout, child.stderr]) {
        let buf = "";
        stream?.setEncoding("utf8");
        stream?.on("data", (chunk) => {
          buf += chunk;
          let i;
          while ((i = buf.indexOf("\n")) >= 0) {
            onLine(buf.slice(0, i));
            buf = buf.slice(i + 1);
          }
        });
      }
      exited.then((code) => {
        clearTimeout(timer);
        rej(new Error(`switchboard exited (${code}) before listening; log:\n${log.join("\n")}`));
      });
    });
    return new Server(child, addr, log, exited, options.args ?? [], scheme === "wss");
  }

  get wsUrl() {
    return `${this.tls ? "wss" : "ws"}://${this.addr}/ws`;
  }

  /** @param {string} path */
  httpUrl(path) {
    return `${this.tls ? "https" : "http"}://${this.addr}${path}`;
  }

  log() {
    return this.#log.join("\n");
  }

  /** SIGTERM: the server drains (clients get `disconnect` 1001) and exits. */
  async stop() {
    return this.#signal("SIGTERM");
  }

  /** SIGKILL: a crash; clients see the TCP connection end. */
  async kill() {
    return this.#signal("SIGKILL");
  }

  /** @param {NodeJS.Signals} signal */
  async #signal(signal) {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill(signal);
    return withDeadline(this.#exited, `exit after ${signal}`);
  }

  /**
   * A new process on the same address (after stop or kill). It has none of
   * the old one's state: every channel starts a new epoch.
   */
  async restart() {
    const deadline = Date.now() + WAIT;
    for (;;) {
      try {
        return await Server.start({ listen: this.addr, args: this.#args });
      } catch (e) {
        // The port may linger for a moment after the old process died.
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}

/**
 * Polls `check` until it returns a truthy value or `WAIT` passes.
 * @template T
 * @param {() => T | Promise<T>} check
 * @param {string} what Described in the failure.
 * @param {number} [timeout]
 * @returns {Promise<T>}
 */
export async function waitFor(check, what, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Resolves with the next `event` of `emitter` (a client or subscription).
 * @param {{ once: (event: any, fn: (arg: any) => void) => () => void }} emitter
 * @param {string} event
 * @param {(arg: any) => boolean} [pred]
 * @returns {Promise<any>}
 */
export function nextEvent(emitter, event, pred = () => true, timeout = WAIT) {
  return new Promise((res, rej) => {
    /** @type {() => void} */
    let off = () => {};
    const timer = setTimeout(() => {
      off();
      rej(new Error(`no ${event} event within ${timeout} ms`));
    }, timeout);
    const listen = () => {
      off = emitter.once(event, (arg) => {
        if (pred(arg)) {
          clearTimeout(timer);
          res(arg);
        } else listen();
      });
    };
    listen();
  });
}

/**
 * @template T
 * @param {Promise<T>} promise
 * @param {string} what
 * @returns {Promise<T>}
 */
export function withDeadline(promise, what, timeout = WAIT) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), timeout);
    }),
  ]).finally(() => clearTimeout(timer));
}
