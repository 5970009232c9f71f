// Several ledgerd replicas behind one client. connect-node has no load
// balancing of its own, so the client keeps one transport per address and
// picks among the healthy ones, round robin. A replica is healthy until a
// call to it fails because it could not be reached, or its gRPC health
// (grpc.health.v1, service "") says NOT_SERVING, as a draining ledgerd does;
// a Check every healthCheckIntervalMs brings it back once it serves again.
// When no replica is healthy, calls go round robin over all of them (and
// fail, or succeed, on their own): the breaker and the retries decide.

import { lookup } from "node:dns/promises";
import { isIP } from "node:net";

import type { DescMessage, DescMethodStreaming, DescMethodUnary, MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient as createConnectClient,
  type ContextValues,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";

import { toLedgerError } from "./errors.js";
import { HealthService, ServingStatus } from "./health.js";

/** One replica: its transport, and whether calls may go to it. */
interface Endpoint {
  readonly address: string;
  readonly transport: Transport;
  readonly close: () => void;
  healthy: boolean;
}

/** Makes the transport of one address ("host:port"); servername is the TLS name when address is an IP resolved from it. */
export type TransportFactory = (address: string, servername: string | undefined) => { transport: Transport; close: () => void };

/** The default interval of the health checks of several replicas, in ms. */
export const defaultHealthCheckIntervalMs = 1000;
// How often the addresses of a dns:/// target are looked up again.
const dnsRefreshMs = 30_000;

/**
 * Splits the client's addresses: a list, or a comma-separated string.
 * Returns undefined for one plain address (the client then needs no
 * balancer).
 */
export function splitAddresses(address: string | string[] | undefined): string[] {
  const list = Array.isArray(address) ? address : typeof address === "string" ? address.split(",") : [];
  return list.map((a) => (typeof a === "string" ? a.trim() : a)).filter((a) => a !== "");
}

/**
 * A Transport over several replicas (see the top of this file): a list of
 * "host:port" addresses, or one "dns:///host:port" whose name resolves to
 * several (looked up with all: true at the first call, and every 30s).
 */
export class BalancedTransport implements Transport {
  readonly #factory: TransportFactory;
  readonly #intervalMs: number;
  readonly #dns: { host: string; port: string } | undefined;
  #endpoints: Endpoint[] = [];
  #next = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #resolved: Promise<void> | undefined;
  #resolvedAt = 0;
  #closed = false;

  /** Makes the transport of addresses (see the class); no connection is made before the first call. */
  constructor(addresses: string[], factory: TransportFactory, healthCheckIntervalMs = defaultHealthCheckIntervalMs) {
    this.#factory = factory;
    this.#intervalMs = healthCheckIntervalMs;
    if (addresses.length === 1 && addresses[0]!.startsWith("dns:")) {
      const target = addresses[0]!.replace(/^dns:(\/\/[^/]*)?\/?/, "");
      const colon = target.lastIndexOf(":");
      if (colon <= 0) {
        throw new TypeError(`ledgerd client: address ${addresses[0]} needs a port, e.g. dns:///ledgerd.internal:7400`);
      }
      this.#dns = { host: target.slice(0, colon).replace(/^\[|\]$/g, ""), port: target.slice(colon + 1) };
    } else {
      for (const address of addresses) {
        if (address.startsWith("dns:")) {
          throw new TypeError(`ledgerd client: a dns:/// address (${address}) must be the only one`);
        }
      }
      this.#endpoints = addresses.map((address) => this.#endpoint(address, undefined));
      this.#resolved = Promise.resolve();
    }
  }

  /** The addresses of the replicas and whether each is healthy now (for logs and tests). */
  replicas(): { address: string; healthy: boolean }[] {
    return this.#endpoints.map((e) => ({ address: e.address, healthy: e.healthy }));
  }

  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: Parameters<Transport["unary"]>[3],
    input: MessageInitShape<I>,
    contextValues?: ContextValues,
  ): Promise<UnaryResponse<I, O>> {
    return this.#through((t) => t.unary(method, signal, timeoutMs, header, input, contextValues));
  }

  stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: Parameters<Transport["unary"]>[3],
    input: AsyncIterable<MessageInitShape<I>>,
    contextValues?: ContextValues,
  ): Promise<StreamResponse<I, O>> {
    return this.#through((t) => t.stream(method, signal, timeoutMs, header, input, contextValues));
  }

  /** Stops the health checks and closes every replica's connection. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const e of this.#endpoints) {
      e.close();
    }
  }

  async #through<R>(call: (t: Transport) => Promise<R>): Promise<R> {
    const endpoint = await this.#pick();
    try {
      return await call(endpoint.transport);
    } catch (e) {
      // A replica that cannot be reached (or answers UNAVAILABLE, as one
      // that drains may) is skipped until its health check says it serves.
      if (e instanceof ConnectError && toLedgerErrorCode(e) === Code.Unavailable) {
        endpoint.healthy = false;
      }
      throw e;
    }
  }

  async #pick(): Promise<Endpoint> {
    if (this.#closed) {
      throw new ConnectError("the ledgerd client is closed", Code.Canceled);
    }
    if (!this.#resolved || (this.#dns && Date.now() - this.#resolvedAt > dnsRefreshMs)) {
      this.#resolved = this.#resolve();
    }
    await this.#resolved;
    this.#startHealthChecks();
    const n = this.#endpoints.length;
    if (n === 0) {
      throw new ConnectError(`${this.#dns?.host} resolved to no address`, Code.Unavailable);
    }
    for (let i = 0; i < n; i++) {
      const e = this.#endpoints[(this.#next + i) % n]!;
      if (e.healthy) {
        this.#next = (this.#next + i + 1) % n;
        return e;
      }
    }
    const e = this.#endpoints[this.#next % n]!;
    this.#next = (this.#next + 1) % n;
    return e;
  }

  /** Looks the dns:/// name up, keeping the endpoints of addresses it still resolves to. */
  async #resolve(): Promise<void> {
    const dns = this.#dns;
    if (!dns) {
      return;
    }
    let found: string[];
    try {
      found = (await lookup(dns.host, { all: true })).map((a) => (a.family === 6 ? `[${a.address}]:${dns.port}` : `${a.address}:${dns.port}`));
    } catch (e) {
      if (this.#endpoints.length > 0) {
        return; // keep the addresses we had
      }
      throw new ConnectError(`could not resolve ${dns.host}: ${e instanceof Error ? e.message : String(e)}`, Code.Unavailable, undefined, undefined, e);
    } finally {
      this.#resolvedAt = Date.now();
    }
    const servername = isIP(dns.host) ? undefined : dns.host;
    const kept = new Map(this.#endpoints.map((e) => [e.address, e]));
    this.#endpoints = [...new Set(found)].map((address) => kept.get(address) ?? this.#endpoint(address, servername));
    for (const [address, e] of kept) {
      if (!found.includes(address)) {
        e.close();
      }
    }
  }

  #endpoint(address: string, servername: string | undefined): Endpoint {
    const { transport, close } = this.#factory(address, servername);
    return { address, transport, close, healthy: true };
  }

  #startHealthChecks(): void {
    if (this.#timer !== undefined || this.#closed) {
      return;
    }
    const tick = async () => {
      await Promise.all(this.#endpoints.map((e) => this.#check(e)));
      if (!this.#closed) {
        this.#timer = setTimeout(() => void tick(), this.#intervalMs);
        this.#timer.unref();
      }
    };
    this.#timer = setTimeout(() => void tick(), this.#intervalMs);
    this.#timer.unref();
  }

  /** Asks a replica's gRPC health; a server without the health service counts as serving. */
  async #check(e: Endpoint): Promise<void> {
    const health = createConnectClient(HealthService, e.transport);
    try {
      const response = await health.check({ service: "" }, { timeoutMs: Math.max(this.#intervalMs, 1000) });
      e.healthy = response.status === ServingStatus.SERVING;
    } catch (err) {
      e.healthy = err instanceof ConnectError && err.code === Code.Unimplemented;
    }
  }
}

/** The code of a failed call as the client reports it (a broken connection is UNAVAILABLE). */
function toLedgerErrorCode(e: ConnectError): Code {
  const err = toLedgerError(e);
  return err instanceof Error && "code" in err ? (err.code as Code) : e.code;
}

