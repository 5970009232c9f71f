// Shared test setup: the live ledgerd the tests run against, and small tools.

import { randomUUID } from "node:crypto";
import * as net from "node:net";
import { fileURLToPath } from "node:url";

import { createClient, type ClientOptions, type LedgerClient } from "../src/index.js";

/** The address of the live ledgerd (env LEDGERD_ADDR); the tests refuse to run without it. */
export const addr: string = (() => {
  const value = process.env["LEDGERD_ADDR"];
  if (!value) {
    throw new Error(
      "LEDGERD_ADDR is not set: these tests need a live ledgerd (started with --min-lease-ttl 50ms), " +
        "e.g. LEDGERD_ADDR=127.0.0.1:7442 npm test",
    );
  }
  return value;
})();

/** A plaintext client of the live ledgerd; the caller closes it. */
export function newClient(options: Partial<ClientOptions> = {}): LedgerClient {
  return createClient({ address: addr, insecure: true, ...options });
}

/** A namespace no other test uses. */
export function uniqueNamespace(): string {
  return `ts-${randomUUID()}`;
}

/** A key no other test uses. */
export function uniqueKey(prefix = "k"): string {
  return `${prefix}-${randomUUID()}`;
}

/** Resolves after ms. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resolves when signal aborts, or rejects after ms: work that waits for its
 * lease to be taken away, bounded.
 */
export function aborted(signal: AbortSignal, ms: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      resolve(signal.reason);
      return;
    }
    const timer = setTimeout(() => reject(new Error(`the signal did not abort within ${ms}ms`)), ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve(signal.reason);
      },
      { once: true },
    );
  });
}

/** The UTF-8 text of bytes. */
export function text(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/** The path of a compiled file under dist/, relative to this file's directory (dist/test). */
export function distPath(relative: string): string {
  return fileURLToPath(new URL(relative, import.meta.url));
}

/**
 * A TCP proxy on 127.0.0.1 that forwards to the live ledgerd, so that a test
 * can make it unreachable: cut() destroys the open connections and refuses
 * new ones (they are accepted and destroyed at once) until restore();
 * close() also closes the listening socket, so that new connections are
 * refused by the kernel.
 */
export class TcpProxy {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  #cut = false;
  #closed: Promise<void> | undefined;

  private constructor(server: net.Server) {
    this.#server = server;
  }

  /** Starts a proxy to target ("host:port"), by default the live ledgerd. */
  static async start(target: string = addr): Promise<TcpProxy> {
    const colon = target.lastIndexOf(":");
    const host = target.slice(0, colon).replace(/^\[|\]$/g, "") || "127.0.0.1";
    const port = Number(target.slice(colon + 1));
    let proxy: TcpProxy | undefined;
    const server = net.createServer((downstream) => proxy!.#accept(downstream, host, port));
    proxy = new TcpProxy(server);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    return proxy;
  }

  /** The address clients connect to, "127.0.0.1:<port>". */
  get addr(): string {
    return `127.0.0.1:${(this.#server.address() as net.AddressInfo).port}`;
  }

  /** The connections that are open (both sides). */
  get openSockets(): number {
    return this.#sockets.size;
  }

  #accept(downstream: net.Socket, host: string, port: number): void {
    if (this.#cut) {
      downstream.resetAndDestroy();
      return;
    }
    const upstream = net.connect(port, host);
    for (const socket of [downstream, upstream]) {
      this.#sockets.add(socket);
      socket.on("close", () => this.#sockets.delete(socket));
      socket.on("error", () => undefined); // a reset is what the test is after
    }
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    const destroyBoth = () => {
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on("close", destroyBoth);
    upstream.on("close", destroyBoth);
  }

  /** Destroys the open connections, with a reset, and refuses new ones until restore(). */
  cut(): void {
    this.#cut = true;
    for (const socket of this.#sockets) {
      socket.resetAndDestroy();
    }
  }

  /** Forwards new connections again. */
  restore(): void {
    this.#cut = false;
  }

  /** Stops listening and destroys the open connections; resolves once the listener is closed. */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.cut();
    });
    return this.#closed;
  }
}
