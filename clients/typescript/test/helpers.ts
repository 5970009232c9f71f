// Shared test setup: the live ledgerd the tests run against, and small tools.
//
// The tests must hold on a machine busy with other work: they wait for
// conditions (bounded by PATIENCE_MS), never for an interval assumed to be
// long enough; their leases outlast any stall unless a test ends them
// itself; and the timeouts of calls whose duration is not the point are
// generous.

import { randomUUID } from "node:crypto";
import * as net from "node:net";
import { fileURLToPath } from "node:url";

import { createClient as createConnectClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { createClient, type ClientOptions, type LedgerClient, type ReserveRequest } from "../src/index.js";
import { LedgerAdminService } from "../src/gen/ledger/v1/admin_pb.js";

/**
 * The bound, in ms, of every wait for something that should happen (a call
 * to return, a heartbeat to land, a lease to run out): far longer than it
 * ever takes, even on a busy machine, so that it only ends a test that is
 * broken.
 */
export const PATIENCE_MS = 60_000;

/** The timeout of a call whose duration is not what the test is about. */
export const TIMEOUT_MS = 2 * PATIENCE_MS;

/** The node:test options of a test: its own bound, above every wait in it. */
export const T = { timeout: 4 * PATIENCE_MS };

/** A lease TTL, in ms, that nothing in a test outlives: it ends only when the test ends it. */
export const LONG_LEASE_MS = 300_000;

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
 * Polls condition until it resolves to something truthy, which it returns;
 * rejects, naming what, after timeoutMs.
 */
export async function waitFor<V>(condition: () => Promise<V> | V, what: string, timeoutMs = PATIENCE_MS): Promise<V> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) {
      return value;
    }
    if (Date.now() >= deadline) {
      throw new Error(`${what}: not so after ${timeoutMs}ms`);
    }
    await delay(20);
  }
}

/**
 * Ends the key's lease as an admin would, through the admin API (the test
 * ledgerd has no authentication): its holder's next call is refused with
 * LEASE_LOST.
 */
export async function forceRelease(namespace: string, key: string): Promise<void> {
  const baseUrl = `http://${addr}`;
  const sessions = new Http2SessionManager(baseUrl);
  try {
    const admin = createConnectClient(LedgerAdminService, createGrpcTransport({ baseUrl, sessionManager: sessions }));
    await admin.forceRelease({ namespace, key, reason: "typescript client test" }, { timeoutMs: TIMEOUT_MS });
  } finally {
    sessions.abort();
  }
}

/** The Reserve requests a client sends, as an interceptor sees them; see {@link watchReserves}. */
export class ReserveWatch {
  readonly requests: ReserveRequest[] = [];
  readonly #waiters: (() => void)[] = [];

  /** The interceptor to give the client. */
  readonly interceptor: Interceptor = (next) => async (req) => {
    if (req.method.name === "Reserve") {
      this.requests.push(req.message as ReserveRequest);
      this.#waiters.splice(0).forEach((wake) => wake());
    }
    return next(req);
  };

  /** Resolves once count Reserves have been sent; rejects after PATIENCE_MS. */
  async sent(count = 1): Promise<void> {
    const deadline = Date.now() + PATIENCE_MS;
    while (this.requests.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${count} Reserve(s) not sent after ${PATIENCE_MS}ms (${this.requests.length} were)`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }
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
  /** The connections the proxy forwarded so far. */
  accepted = 0;
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
    this.accepted++;
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
