// A TCP proxy that can go silent without closing anything: what a client
// sees when a NAT forgets it or a phone sleeps (a half-open connection).

import net from "node:net";

export class Proxy {
  /** @type {net.Server} */
  #server;
  /** @type {Set<{ client: net.Socket, upstream: net.Socket, frozen: boolean }>} */
  #links = new Set();

  /** @param {net.Server} server */
  constructor(server) {
    this.#server = server;
  }

  /**
   * Listens on a free loopback port and forwards to `target` ("host:port").
   * @param {string} target
   */
  static async start(target) {
    const [host, port] = splitAddr(target);
    /** @type {Proxy} */
    let proxy;
    const server = net.createServer((client) => {
      const upstream = net.connect(port, host);
      const link = { client, upstream, frozen: false };
      proxy.#links.add(link);
      client.on("data", (d) => {
        if (!link.frozen) upstream.write(d);
      });
      upstream.on("data", (d) => {
        if (!link.frozen) client.write(d);
      });
      const end = () => {
        proxy.#links.delete(link);
        client.destroy();
        upstream.destroy();
      };
      client.on("close", end).on("error", end);
      upstream.on("close", end).on("error", end);
    });
    proxy = new Proxy(server);
    await new Promise((res) => server.listen(0, "127.0.0.1", () => res(undefined)));
    return proxy;
  }

  get addr() {
    const a = /** @type {net.AddressInfo} */ (this.#server.address());
    return `127.0.0.1:${a.port}`;
  }

  get wsUrl() {
    return `ws://${this.addr}/ws`;
  }

  /** Drops every byte of the connections open now, in both directions, and keeps them open. */
  freeze() {
    for (const link of this.#links) link.frozen = true;
  }

  /** Open connections, frozen or not. */
  get connections() {
    return this.#links.size;
  }

  close() {
    for (const link of this.#links) {
      link.client.destroy();
      link.upstream.destroy();
    }
    return new Promise((res) => this.#server.close(() => res(undefined)));
  }
}

/** @param {string} addr */
function splitAddr(addr) {
  const i = addr.lastIndexOf(":");
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}
