import { readFileSync } from "node:fs";
import type * as http2 from "node:http2";

import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient as createConnectClient,
  type Client,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager, type Http2SessionOptions } from "@connectrpc/connect-node";

import {
  LedgerService,
  type CompleteRequestSchema,
  type CompleteResponse,
  type FailRequestSchema,
  type FailResponse,
  type HeartbeatRequestSchema,
  type HeartbeatResponse,
  type LookupRequestSchema,
  type LookupResponse,
  type ReleaseRequestSchema,
  type ReleaseResponse,
  type ReserveRequestSchema,
  type ReserveResponse,
} from "./gen/ledger/v1/ledger_pb.js";
import { runDo, type DoOptions, type DoResult, type Lease } from "./do.js";
import { defaultRetryPolicy, scope, withRetries, type RetryListener, type RetryPolicy } from "./retry.js";

/** The fields of a ReserveRequest (namespace, key, owner, leaseTtl, fingerprint, metadata, waitTimeout). */
export type ReserveRequestInit = MessageInitShape<typeof ReserveRequestSchema>;
/** The fields of a HeartbeatRequest (namespace, key, fencingToken, leaseTtl, checkpoint). */
export type HeartbeatRequestInit = MessageInitShape<typeof HeartbeatRequestSchema>;
/** The fields of a CompleteRequest (namespace, key, fencingToken, result). */
export type CompleteRequestInit = MessageInitShape<typeof CompleteRequestSchema>;
/** The fields of a FailRequest (namespace, key, fencingToken, error, retryable). */
export type FailRequestInit = MessageInitShape<typeof FailRequestSchema>;
/** The fields of a ReleaseRequest (namespace, key, fencingToken). */
export type ReleaseRequestInit = MessageInitShape<typeof ReleaseRequestSchema>;
/** The fields of a LookupRequest (namespace, key). */
export type LookupRequestInit = MessageInitShape<typeof LookupRequestSchema>;

/** Options of {@link createClient}. */
export interface ClientOptions {
  /**
   * Where ledgerd listens: `"host:port"` (TLS, or plaintext with
   * `insecure: true`), or a URL `"https://host:port"` / `"http://host:port"`
   * (plaintext, which also needs `insecure: true`).
   */
  address: string;
  /**
   * Connect without transport security: plaintext HTTP/2, no server
   * authentication. Meant for development and tests against a local ledgerd,
   * like the Go client's WithInsecure. Without it the client uses TLS.
   */
  insecure?: boolean;
  /**
   * TLS options for the connection (a private CA, a client certificate, a
   * server name), passed to Node's `http2.connect`. Ignored with `insecure`.
   */
  tls?: http2.SecureClientSessionOptions;
  /** Keep-alive and idle settings of the HTTP/2 connection (Connect's Http2SessionOptions). */
  http2?: Http2SessionOptions;
  /**
   * The largest response message the client accepts, in bytes (default 64
   * MiB, {@link clientDefaults}.readMaxBytes). Replays and lookups carry
   * whole results, which ledgerd stores up to its --max-result-bytes-ceiling
   * (16 MiB by default); a larger response fails with a
   * {@link ResourceExhaustedError}. Not with a `transport` of your own (set
   * its readMaxBytes).
   */
  readMaxBytes?: number;
  /**
   * An API token (`"ldg_…"`, from `ledgerctl tokens create`), sent with every
   * call as `authorization: Bearer <token>` by an interceptor of the client's
   * own, for a ledgerd that authenticates. It travels over TLS, or over
   * plaintext only when `insecure: true` says so (development). Not with a
   * `transport` of your own (add the header in its interceptors).
   */
  token?: string;
  /** A file holding the API token instead of `token` (read once, by createClient; surrounding whitespace is ignored). */
  tokenFile?: string;
  /** Headers sent with every call, e.g. `{ "x-request-source": "nightly" }`. */
  headers?: Record<string, string>;
  /** Connect interceptors applied to every call, after the client's own. */
  interceptors?: Interceptor[];
  /**
   * A Connect transport to use instead of the one the client makes from
   * address, insecure, tls and http2 (which are then ignored). `close()`
   * does not close it.
   */
  transport?: Transport;
  /**
   * How long one attempt of a call may take, in ms, before it is abandoned
   * (DEADLINE_EXCEEDED) and retried (default 15000; 0 for no limit). A
   * Reserve that asks the server to wait gets its wait on top.
   */
  attemptTimeoutMs?: number;
  /**
   * The longest wait `do()` asks of the server in one Reserve while another
   * owner holds the key (ReserveRequest.waitTimeout), in ms (default 30000).
   * The server shortens it to its --max-wait (60s unless configured); `do()`
   * asks again, for as long as its signal and timeout allow. 0 makes `do()`
   * poll instead, with the server's retry-after hint (at most 1s apart).
   */
  maxWaitMs?: number;
  /** The backoff between two attempts of a failed call; see {@link defaultRetryPolicy}. */
  retry?: Partial<RetryPolicy>;
  /** Called before every retry, for logs and metrics. */
  onRetry?: RetryListener;
}

/**
 * Options of one call of a thin method. Without a signal or a timeout the
 * call is retried while the server is unavailable for as long as it takes.
 */
export interface CallOptions {
  /** Aborts the call, and its retries; the call then rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Bounds the call, retries included, in ms; it then rejects with a
   * `TimeoutError` DOMException.
   */
  timeoutMs?: number;
  /** Headers for this call, on top of the client's. */
  headers?: Record<string, string>;
}

/** The defaults of {@link ClientOptions}. */
export const clientDefaults = Object.freeze({ attemptTimeoutMs: 15_000, maxWaitMs: 30_000, readMaxBytes: 64 << 20 });

/**
 * A client of ledgerd. Its high-level helper is {@link LedgerClient.do};
 * the other methods are thin typed wrappers of the LedgerService RPCs that
 * add retries and typed errors ({@link LedgerError} subclasses). A client is
 * safe for concurrent use: make one per process and share it, and close it
 * when done. Make one with {@link createClient}.
 */
export class LedgerClient {
  readonly #rpc: Client<typeof LedgerService>;
  readonly #sessionManager: Http2SessionManager | undefined;
  readonly #policy: RetryPolicy;
  readonly #onRetry: RetryListener | undefined;
  readonly #attemptTimeoutMs: number;
  readonly #headers: Record<string, string>;
  /** The longest wait `do()` asks of the server in one Reserve, in ms (see {@link ClientOptions.maxWaitMs}). */
  readonly maxWaitMs: number;

  /** Use {@link createClient}. */
  constructor(options: ClientOptions) {
    if (!options || typeof options !== "object") {
      throw new TypeError("ledgerd client: options with an address are required");
    }
    const token = tokenOf(options);
    if (token !== undefined && options.transport) {
      throw new TypeError(
        "ledgerd client: token cannot be added to a transport of your own: set the authorization header in its interceptors",
      );
    }
    if (token !== undefined && Object.keys(options.headers ?? {}).some((name) => name.toLowerCase() === "authorization")) {
      throw new TypeError("ledgerd client: pass the token either as token or as an authorization header, not both");
    }
    let transport = options.transport;
    if (!transport) {
      // baseUrlOf refuses plaintext unless insecure is set: the token never
      // travels in plaintext without that explicit opt-in.
      const baseUrl = baseUrlOf(options.address, options.insecure === true);
      const readMaxBytes = options.readMaxBytes ?? clientDefaults.readMaxBytes;
      if (!Number.isInteger(readMaxBytes) || readMaxBytes <= 0) {
        throw new TypeError(`ledgerd client: readMaxBytes must be a positive integer, got ${readMaxBytes}`);
      }
      const nodeOptions = options.insecure ? {} : { ...options.tls };
      this.#sessionManager = new Http2SessionManager(baseUrl, options.http2, nodeOptions);
      transport = createGrpcTransport({
        baseUrl,
        sessionManager: this.#sessionManager,
        readMaxBytes,
        interceptors: [...(token === undefined ? [] : [bearer(token)]), ...(options.interceptors ?? [])],
      });
    }
    this.#rpc = createConnectClient(LedgerService, transport);
    this.#policy = { ...defaultRetryPolicy, ...options.retry };
    this.#onRetry = options.onRetry;
    this.#attemptTimeoutMs = options.attemptTimeoutMs ?? clientDefaults.attemptTimeoutMs;
    this.maxWaitMs = options.maxWaitMs ?? clientDefaults.maxWaitMs;
    this.#headers = { ...options.headers };
  }

  /**
   * Asks for the lease of a key. The outcomes (`response.outcome.case`:
   * "acquired", "completed", "inProgress", "failed") are answers, not
   * errors. Rejects with {@link InvalidArgumentError} or
   * {@link FingerprintMismatchError}. With `waitTimeout`, the server holds
   * the call while another owner holds the key (see ledger.proto).
   */
  reserve(request: ReserveRequestInit, options?: CallOptions): Promise<ReserveResponse> {
    const wait = request.waitTimeout;
    const waitMs = wait ? Number(wait.seconds ?? 0) * 1000 + (wait.nanos ?? 0) / 1e6 : 0;
    return this.#call("reserve", (o) => this.#rpc.reserve(request, o), options, waitMs);
  }

  /**
   * Extends the lease held with the request's fencing token, and stores its
   * checkpoint when set. Rejects with {@link InvalidArgumentError} or
   * {@link LeaseLostError}.
   */
  heartbeat(request: HeartbeatRequestInit, options?: CallOptions): Promise<HeartbeatResponse> {
    return this.#call("heartbeat", (o) => this.#rpc.heartbeat(request, o), options);
  }

  /**
   * Records the result of the work under the request's fencing token.
   * Rejects with {@link InvalidArgumentError}, {@link LeaseLostError}
   * (someone took over: the result was not recorded) or
   * {@link ResultConflictError}.
   */
  complete(request: CompleteRequestInit, options?: CallOptions): Promise<CompleteResponse> {
    return this.#call("complete", (o) => this.#rpc.complete(request, o), options);
  }

  /**
   * Records that the work failed: retryable (the key is released) or
   * permanent (the key is FAILED). Rejects with {@link InvalidArgumentError},
   * {@link LeaseLostError} or {@link ResultConflictError}.
   */
  fail(request: FailRequestInit, options?: CallOptions): Promise<FailResponse> {
    return this.#call("fail", (o) => this.#rpc.fail(request, o), options);
  }

  /**
   * Gives up the lease held with the request's fencing token, so that the
   * next Reserve acquires the key at once. Rejects with
   * {@link InvalidArgumentError} or {@link LeaseLostError}.
   */
  release(request: ReleaseRequestInit, options?: CallOptions): Promise<ReleaseResponse> {
    return this.#call("release", (o) => this.#rpc.release(request, o), options);
  }

  /**
   * Returns the whole entry of a key. Rejects with
   * {@link InvalidArgumentError} or {@link NotFoundError}.
   */
  lookup(request: LookupRequestInit, options?: CallOptions): Promise<LookupResponse> {
    return this.#call("lookup", (o) => this.#rpc.lookup(request, o), options);
  }

  /**
   * Makes sure that the work for the key (namespace, key) is done once across
   * all the workers that share the ledger: runs `work` unless the key is
   * finished, records its result, and resolves with it, or with the result
   * recorded earlier.
   *
   * - COMPLETED: resolves with the stored result (`replayed: true`) without
   *   running work.
   * - FAILED (permanently): rejects with a {@link FailedError} without running work.
   * - IN_PROGRESS (another owner holds the key): waits, in Reserves that ask
   *   the server to hold the call until the holder finishes or its lease
   *   expires (falling back to the server's retry-after hint, capped at 1s,
   *   when it answers at once), then asks again: the holder may complete
   *   (its result is replayed) or die (its lease runs out and this call
   *   takes over).
   * - ACQUIRED: calls `work(lease)` while a timer heartbeats the lease every
   *   third of its TTL (see {@link DoOptions.heartbeatIntervalMs}).
   *
   * When work resolves (a Uint8Array, or a string stored as UTF-8), the
   * result is recorded with Complete and do() resolves with it. If the ledger
   * refuses the result as invalid (e.g. too large), a retryable failure that
   * says why is recorded and do() rejects with the {@link InvalidArgumentError}.
   * When work rejects, a failure is recorded (retryable, unless the error is
   * marked with {@link permanent}) and do() rejects with work's error. A
   * retryable failure releases the key: the next do() runs work again, as a
   * takeover with a higher fencing token, and sees the last checkpoint.
   *
   * If the lease is lost (another worker took over after this one's lease ran
   * out), `lease.signal` aborts with a {@link LeaseLostError} as soon as a
   * heartbeat learns it, and do() rejects with it: the work was superseded and
   * its result, if any, is not recorded. A heartbeat refused for another
   * reason (e.g. a checkpoint above the server's limit) aborts `lease.signal`
   * with that error; unless work still resolves, the lease is released and
   * do() rejects with it.
   *
   * The lease is only good while heartbeats are acknowledged: each one,
   * retries included, must be acknowledged before the lease runs out (the
   * sending time of the last acknowledged heartbeat, or of the grant, plus
   * the TTL, less a margin of a tenth of the TTL, at most 1s; one brief try
   * is still made past that point, since the ledger extends an expired lease
   * that nobody took over), and each attempt may take at most one heartbeat
   * interval. If that time passes without an answer from the ledger (it is
   * unreachable, say), another worker may take the key over: `lease.signal`
   * aborts with a {@link LeaseLostError} ("no heartbeat was acknowledged
   * before the lease ran out"). If work then rejects, do() rejects with that
   * error; if it still resolves, do() tries to record the result all the
   * same (the ledger accepts it if nobody took over, and answers LEASE_LOST
   * otherwise).
   *
   * If the caller's signal aborts or its timeout runs out while work runs,
   * `lease.signal` aborts with the same reason; when work then rejects, the
   * lease is released, so that another worker can take over at once, and
   * do() rejects with the abort reason (a `TimeoutError` DOMException for
   * timeoutMs). A result that work still resolves is recorded even so. Calls
   * made after the caller gave up are bounded by 5s of their own.
   *
   * Rejects with {@link InvalidArgumentError} for a bad namespace, key or
   * option (its `field` names it), {@link FingerprintMismatchError}, or the
   * abort reason if the signal aborts before work runs. While the server is
   * unavailable every call is retried until the signal or timeout ends it, so
   * give do() a signal or timeout to bound it. All timers are cleared before
   * do() settles.
   */
  do(
    namespace: string,
    key: string,
    work: (lease: Lease) => Promise<Uint8Array | string> | Uint8Array | string,
    options?: DoOptions,
  ): Promise<DoResult> {
    return runDo(this, namespace, key, work, options ?? {});
  }

  /**
   * Closes the connection the client made; calls in flight fail. It does
   * nothing for a client made with a `transport`. Idle connections do not
   * keep the process alive, so closing is not required for it to exit.
   */
  close(): void {
    this.#sessionManager?.abort();
  }

  async #call<T>(
    method: string,
    rpc: (options: { signal: AbortSignal; timeoutMs?: number; headers: Record<string, string> }) => Promise<T>,
    options: CallOptions | undefined,
    extraAttemptMs = 0,
  ): Promise<T> {
    const s = scope(options?.signal, options?.timeoutMs, `ledgerd ${method}`);
    // do() passes its own deadline, which bounds the attempts without
    // aborting them itself (its signal does), and for heartbeats a shorter
    // bound of each attempt.
    const internal = options as { deadline?: number; maxAttemptMs?: number } | undefined;
    const deadline = Math.min(s.deadline ?? Infinity, internal?.deadline ?? Infinity);
    const maxAttemptMs = internal?.maxAttemptMs;
    const headers = { ...this.#headers, ...options?.headers };
    try {
      return await withRetries(
        method,
        () => {
          // The attempt's timeout is sent as grpc-timeout, so the server knows
          // the deadline too; the overall deadline bounds it.
          let timeoutMs: number | undefined =
            this.#attemptTimeoutMs > 0 ? this.#attemptTimeoutMs + extraAttemptMs : undefined;
          if (maxAttemptMs !== undefined && maxAttemptMs > 0) {
            timeoutMs = Math.min(timeoutMs ?? Infinity, maxAttemptMs);
          }
          if (deadline !== Infinity) {
            const remaining = deadline - Date.now();
            timeoutMs = Math.max(1, Math.min(timeoutMs ?? remaining, remaining));
          }
          if (timeoutMs !== undefined) {
            // grpc-timeout takes whole units: a fraction would be refused.
            timeoutMs = Math.ceil(timeoutMs);
          }
          const sent = Date.now();
          return rpc({ signal: s.signal, timeoutMs, headers }).catch((e: unknown) => {
            throw attemptError(e, timeoutMs, sent, s.signal);
          });
        },
        s.signal,
        this.#policy,
        this.#onRetry,
      );
    } finally {
      s.dispose();
    }
  }
}

/**
 * The error of an attempt whose grpc-timeout ran out at the server first: a
 * gRPC server resets such a stream with RST_STREAM CANCEL (as the gRPC
 * protocol asks), which Connect reports as CANCELED. It is the attempt's
 * deadline, so it becomes DEADLINE_EXCEEDED (retried while time is left;
 * once the call's own timeout has run out, its TimeoutError is what the
 * caller sees), as gRPC's own clients report it. A busy machine makes this
 * likely: the client's timers fire late, the server's on time. Every other
 * error is returned as it is. Exported for the tests only (index.ts does
 * not).
 */
export function attemptError(e: unknown, timeoutMs: number | undefined, sent: number, signal: AbortSignal): unknown {
  if (
    timeoutMs !== undefined &&
    !signal.aborted &&
    e instanceof ConnectError &&
    e.code === Code.Canceled &&
    Date.now() - sent >= timeoutMs - 1 // Date.now() counts whole ms
  ) {
    return new ConnectError(`${e.rawMessage} (the attempt's deadline of ${timeoutMs}ms ran out)`, Code.DeadlineExceeded, e.metadata, undefined, e);
  }
  return e;
}

/**
 * Returns a client of the ledgerd at `options.address`. It connects lazily:
 * the first call makes the connection, and createClient does not fail because
 * the server is down. TLS is the default; plaintext needs `insecure: true`.
 *
 * @example
 * const client = createClient({ address: "127.0.0.1:7070", insecure: true });
 * const result = await client.do("billing", "invoice-42", async (lease) => {
 *   await sink.write(invoice, lease.fencingToken);
 *   return "sent";
 * }, { timeoutMs: 60_000 });
 */
export function createClient(options: ClientOptions): LedgerClient {
  return new LedgerClient(options);
}

/**
 * The API token of options.token or options.tokenFile, checked; undefined for
 * none. Errors never show the token.
 */
function tokenOf(options: ClientOptions): string | undefined {
  let { token } = options;
  let source = "token";
  if (token !== undefined && options.tokenFile !== undefined) {
    throw new TypeError("ledgerd client: pass either token or tokenFile, not both");
  }
  if (options.tokenFile !== undefined) {
    source = `tokenFile ${options.tokenFile}`;
    token = readFileSync(options.tokenFile, "utf8");
    if (token.trim() === "") {
      throw new TypeError(`ledgerd client: ${source} is empty`);
    }
  }
  if (token === undefined) {
    return undefined;
  }
  if (typeof token !== "string") {
    throw new TypeError(`ledgerd client: token must be a string, got ${typeof token}`);
  }
  token = token.trim();
  if (!token.startsWith("ldg_") || /[\x00-\x20\x7f]/.test(token)) {
    throw new TypeError(`ledgerd client: ${source} is not a ledgerd API token (one word that starts with ldg_)`);
  }
  return token;
}

/** An interceptor that authenticates every call with token. */
function bearer(token: string): Interceptor {
  const value = `Bearer ${token}`;
  return (next) => (req) => {
    req.header.set("authorization", value);
    return next(req);
  };
}

/** Turns an address into the transport's base URL, refusing plaintext unless insecure. */
function baseUrlOf(address: string, insecure: boolean): string {
  if (typeof address !== "string" || address.trim() === "") {
    throw new TypeError("ledgerd client: address is required, e.g. \"ledgerd.internal:7400\"");
  }
  if (!address.includes("://")) {
    return `${insecure ? "http" : "https"}://${address}`;
  }
  const url = new URL(address);
  switch (url.protocol) {
    case "https:":
      if (insecure) {
        throw new TypeError(`ledgerd client: address ${address} asks for TLS, but insecure is set`);
      }
      return url.origin;
    case "http:":
      if (!insecure) {
        throw new TypeError(
          `ledgerd client: address ${address} is plaintext; pass insecure: true to allow it (development only)`,
        );
      }
      return url.origin;
    default:
      throw new TypeError(`ledgerd client: address ${address} has an unsupported scheme (use host:port, http:// or https://)`);
  }
}
