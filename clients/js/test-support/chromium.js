// Headless Chromium driven over the DevTools protocol, with only what the
// tests need: open tabs, evaluate expressions in them, close.
//
// Needs `chromium` on PATH (Debian: `apt-get install chromium`) or its path
// in $SWITCHBOARD_CHROMIUM.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { withDeadline } from "./server.js";

/** Chromium can take a while to start on a busy machine. */
const START_WAIT = 60_000;

export class Browser {
  /** @type {import("node:child_process").ChildProcess} */
  #child;
  /** @type {WebSocket} */
  #ws;
  #profile;
  #nextId = 1;
  /** @type {Map<number, { resolve: (v: any) => void, reject: (e: Error) => void }>} */
  #calls = new Map();
  #exited;

  /**
   * @param {import("node:child_process").ChildProcess} child
   * @param {WebSocket} ws
   * @param {string} profile
   * @param {Promise<unknown>} exited
   */
  constructor(child, ws, profile, exited) {
    this.#child = child;
    this.#ws = ws;
    this.#profile = profile;
    this.#exited = exited;
    ws.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data));
      const call = this.#calls.get(msg.id);
      if (!call) return;
      this.#calls.delete(msg.id);
      if (msg.error) call.reject(new Error(`${msg.error.message} (${msg.error.code})`));
      else call.resolve(msg.result);
    };
  }

  static async launch() {
    const bin = process.env.SWITCHBOARD_CHROMIUM ?? "chromium";
    const profile = mkdtempSync(join(tmpdir(), "switchboard-chromium-"));
    const child = spawn(
      bin,
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--remote-debugging-port=0",
        `--user-data-dir=${profile}`,
        "about:blank",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    // A test that dies half-way must not leave a browser behind.
    const reap = () => child.kill("SIGKILL");
    process.once("exit", reap);
    const exited = new Promise((res) =>
      child.once("exit", (code) => {
        process.off("exit", reap);
        res(code);
      }),
    );
    let stderr = "";
    const endpoint = await withDeadline(
      new Promise((res, rej) => {
        child.once("error", (e) => rej(new Error(`cannot run ${bin} (${e.message}); install Chromium or set SWITCHBOARD_CHROMIUM`)));
        child.stderr?.setEncoding("utf8");
        child.stderr?.on("data", (chunk) => {
          stderr += chunk;
          const m = /DevTools listening on (ws:\/\/\S+)/.exec(stderr);
          if (m) res(m[1]);
        });
        exited.then((code) => rej(new Error(`${bin} exited (${code}):\n${stderr}`)));
      }),
      "Chromium's DevTools endpoint",
      START_WAIT,
    ).catch((e) => {
      child.kill("SIGKILL");
      rmSync(profile, { recursive: true, force: true });
      throw e;
    });
    const ws = new WebSocket(endpoint);
    await withDeadline(
      new Promise((res, rej) => {
        ws.onopen = res;
        ws.onerror = () => rej(new Error(`cannot reach ${endpoint}`));
      }),
      "the DevTools connection",
    );
    return new Browser(child, ws, profile, exited);
  }

  /**
   * @param {string} method
   * @param {object} [params]
   * @param {string} [sessionId]
   */
  send(method, params = {}, sessionId) {
    const id = this.#nextId++;
    const result = new Promise((resolve, reject) => this.#calls.set(id, { resolve, reject }));
    this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId && { sessionId }) }));
    return withDeadline(result, method);
  }

  /**
   * Opens `url` in a new tab.
   * @param {string} url
   */
  async open(url) {
    const { targetId } = await this.send("Target.createTarget", { url });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    return new Tab(this, sessionId);
  }

  async close() {
    await this.send("Browser.close").catch(() => {});
    await withDeadline(this.#exited, "Chromium to exit").catch(() => this.#child.kill("SIGKILL"));
    rmSync(this.#profile, { recursive: true, force: true });
  }
}

export class Tab {
  #browser;
  #session;

  /** @param {Browser} browser @param {string} session */
  constructor(browser, session) {
    this.#browser = browser;
    this.#session = session;
  }

  /**
   * A DevTools command for this tab.
   * @param {string} method
   * @param {object} [params]
   */
  send(method, params) {
    return this.#browser.send(method, params, this.#session);
  }

  /**
   * Evaluates `expression` in the page and returns its value (JSON-able).
   * @param {string} expression
   */
  async eval(expression) {
    const { result, exceptionDetails } = await this.send("Runtime.evaluate", {
      expression,
      returnByValue: true,
      awaitPromise: true,
    });
    if (exceptionDetails) throw new Error(`page threw: ${JSON.stringify(exceptionDetails)}`);
    return result.value;
  }
}
