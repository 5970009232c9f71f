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
import { createGrpcTransport, type Http2SessionManager, type Http2SessionOptions } from "@connectrpc/connect-node";

import { BalancedTransport, defaultHealthCheckIntervalMs, splitAddresses } from "./balancer.js";
import { runDoBatch, type BatchResult, type BatchWork, type DoBatchOptions } from "./batch.js";
import type { BreakerListener, BreakerOptions, BreakerState, RetryBudgetOptions } from "./breaker.js";
import {
  LedgerService,
  type CompleteBatchRequestSchema,
  type CompleteBatchResponse,
  type LookupBatchRequestSchema,
  type LookupBatchResponse,
  type ReserveBatchRequestSchema,
  type ReserveBatchResponse,
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
import {
  Policies,
  type Fallback,
  type FailOpenListener,
  type FailOpenRecordedListener,
  type Stats,
} from "./policy.js";
import { Recorder } from "./recorder.js";
import { defaultRetryPolicy, scope, withRetries, type RetryListener, type RetryPolicy } from "./retry.js";
import { GuardedSessionManager } from "./session.js";
import { VERSION } from "./version.js";

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
/** The fields of a ReserveBatchRequest (namespace, owner, leaseTtl, items). */
export type ReserveBatchRequestInit = MessageInitShape<typeof ReserveBatchRequestSchema>;
/** The fields of a CompleteBatchRequest (namespace, items of key, fencingToken, result). */
export type CompleteBatchRequestInit = MessageInitShape<typeof CompleteBatchRequestSchema>;
/** The fields of a LookupBatchRequest (namespace, keys). */
export type LookupBatchRequestInit = MessageInitShape<typeof LookupBatchRequestSchema>;

/** Options of {@link createClient}. */
export interface ClientOptions {
  /**
   * Where ledgerd listens: `"host:port"` (TLS, or plaintext with
   * `insecure: true`), or a URL `"https://host:port"` / `"http://host:port"`
   * (plaintext, which also needs `insecure: true`). Several replicas: a
   * comma-separated list (`"a:7400,b:7400"`), or `"dns:///name:7400"`, a
   * name that resolves to several addresses (see `addresses`).
   */
  address?: string;
  /**
   * Several ledgerd replicas, `["a:7400", "b:7400"]`, or one
   * `"dns:///ledgerd.internal:7400"` whose name resolves to several
   * (looked up at the first call and every 30s). The client keeps one
   * connection per replica and sends each call to the next healthy one,
   * round robin; a replica that cannot be reached, or whose gRPC health
   * says NOT_SERVING (a draining ledgerd), is skipped until its health
   * check (every `healthCheckIntervalMs`) says it serves again. Instead of
   * `address`.
   */
  addresses?: string[];
  /** How often the health of each of several replicas is checked, in ms (default 1000). */
  healthCheckIntervalMs?: number;
  /**
   * The circuit breaker (on by default; `false` turns it off): after
   * `failureThreshold` (5) consecutive attempts found ledgerd unavailable
   * (UNAVAILABLE or DEADLINE_EXCEEDED), or a `failureRatio` (0.5) of at
   * least `minCalls` (20) attempts over `windowMs` (10s), it opens: calls
   * that start work or read (reserve, lookup and their batches, and do())
   * reject at once with a {@link CircuitOpenError} for `openForMs` (5s);
   * then one probe call is let through, whose success closes it. Heartbeat,
   * complete, fail and release are never refused (they protect work
   * already granted), though their outcomes count.
   */
  breaker?: BreakerOptions | false;
  /** Called on every transition of the breaker, with the last unavailability error. */
  onBreakerChange?: BreakerListener;
  /**
   * The retry budget (on by default; `false` turns it off), gRPC's retry
   * throttling: a bucket of `maxTokens` (100) tokens; every call adds
   * `ratio` (0.1), every retry spends one and is made only if a whole token
   * is there. So retries never exceed maxTokens + ratio × calls; a call
   * refused a retry rejects with its last error, whose message says
   * "retry budget exhausted". Heartbeats are outside it.
   */
  retryBudget?: RetryBudgetOptions | false;
  /**
   * The most attempts of one call (default: no limit but the call's signal
   * or timeout, the breaker and the retry budget). Heartbeats are bounded by
   * their lease instead.
   */
  maxAttempts?: number;
  /**
   * What `do()` does when the ledger cannot answer, unless the call says
   * otherwise (default `"fail_closed"`); see {@link DoOptions.fallback}.
   */
  fallback?: Fallback;
  /**
   * The most fail-open results waiting to be recorded (default 10000).
   * When it is reached, `"fail_open"` behaves as `"fail_closed"` for new
   * calls: nothing is dropped silently.
   */
  failOpenQueue?: number;
  /** Called before every fail-open run of the work, with the error that made the ledger unreachable. */
  onFailOpen?: FailOpenListener;
  /** Called when the recording of a fail-open result ends: `"recorded"`, `"discarded_completed"` or `"discarded_failed"`. */
  onFailOpenRecorded?: FailOpenRecordedListener;
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

/**
 * Call options of the package's own calls: the deadline the attempts'
 * grpc-timeout must respect, a bound of each attempt below
 * attemptTimeoutMs, and retry: false for a single attempt.
 */
export type InternalCallOptions = CallOptions & { deadline?: number; maxAttemptMs?: number; retry?: boolean };

/** The defaults of {@link ClientOptions}. */
export const clientDefaults = Object.freeze({
  attemptTimeoutMs: 15_000,
  maxWaitMs: 30_000,
  readMaxBytes: 64 << 20,
  healthCheckIntervalMs: defaultHealthCheckIntervalMs,
  closeTimeoutMs: 10_000,
});

/** The user agent every call carries: `ledgerd-typescript/<version>`. */
export const USER_AGENT = `ledgerd-typescript/${VERSION}`;

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
  readonly #balancer: BalancedTransport | undefined;
  /** The breaker, retry budget, attempt limit, counters and fail-open queue (internal to the package). */
  readonly policies: Policies;
  readonly #recorder: Recorder;
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
      if (options.address !== undefined && options.addresses !== undefined) {
        throw new TypeError("ledgerd client: pass either address or addresses, not both");
      }
      const addresses = splitAddresses(options.addresses ?? options.address);
      if (addresses.length === 0) {
        throw new TypeError('ledgerd client: address is required, e.g. "ledgerd.internal:7400"');
      }
      const readMaxBytes = options.readMaxBytes ?? clientDefaults.readMaxBytes;
      if (!Number.isInteger(readMaxBytes) || readMaxBytes <= 0) {
        throw new TypeError(`ledgerd client: readMaxBytes must be a positive integer, got ${readMaxBytes}`);
      }
      const interceptors = [...(token === undefined ? [] : [bearer(token)]), ...(options.interceptors ?? [])];
      const make = (address: string, servername: string | undefined) => {
        // baseUrlOf refuses plaintext unless insecure is set: the token never
        // travels in plaintext without that explicit opt-in.
        const baseUrl = baseUrlOf(address, options.insecure === true);
        const nodeOptions = options.insecure ? {} : { ...(servername ? { servername } : {}), ...options.tls };
        const sessionManager = new GuardedSessionManager(baseUrl, options.http2, nodeOptions);
        return {
          transport: createGrpcTransport({
            baseUrl,
            sessionManager,
            readMaxBytes,
            interceptors: [connectionLoss(sessionManager), ...interceptors],
          }),
          close: () => sessionManager.abort(),
          sessionManager,
        };
      };
      if (addresses.length === 1 && !addresses[0]!.startsWith("dns:")) {
        const single = make(addresses[0]!, undefined);
        this.#sessionManager = single.sessionManager;
        transport = single.transport;
      } else {
        const interval = options.healthCheckIntervalMs ?? clientDefaults.healthCheckIntervalMs;
        if (!(interval > 0)) {
          throw new RangeError(`ledgerd client: healthCheckIntervalMs must be positive, got ${interval}`);
        }
        // Check every address now, so that a bad one fails createClient.
        addresses.filter((a) => !a.startsWith("dns:")).forEach((a) => baseUrlOf(a, options.insecure === true));
        this.#balancer = new BalancedTransport(addresses, make, interval);
        transport = this.#balancer;
      }
    }
    this.policies = new Policies(options);
    this.#recorder = new Recorder(this);
    this.#rpc = createConnectClient(LedgerService, transport);
    this.#policy = { ...defaultRetryPolicy, ...options.retry };
    this.#onRetry = options.onRetry;
    this.#attemptTimeoutMs = options.attemptTimeoutMs ?? clientDefaults.attemptTimeoutMs;
    this.maxWaitMs = options.maxWaitMs ?? clientDefaults.maxWaitMs;
    this.#headers = { "user-agent": USER_AGENT, ...options.headers };
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
   * Reserves many keys of one namespace in one call: one result per item,
   * in order, each a Reserve's answer or an ItemError (turn it into the
   * error the single call would have rejected with by {@link itemError}).
   * Rejects as a whole only for what all items share (namespace, owner,
   * lease TTL, the number of items: 1000 unless the server says otherwise).
   */
  reserveBatch(request: ReserveBatchRequestInit, options?: CallOptions): Promise<ReserveBatchResponse> {
    return this.#call("reserveBatch", (o) => this.#rpc.reserveBatch(request, o), options);
  }

  /** Completes many keys of one namespace in one call: one result per item, in order, each a Complete's answer or an ItemError. */
  completeBatch(request: CompleteBatchRequestInit, options?: CallOptions): Promise<CompleteBatchResponse> {
    return this.#call("completeBatch", (o) => this.#rpc.completeBatch(request, o), options);
  }

  /** Returns the entries of many keys of one namespace in one call: one result per key, in order, an Entry or an ItemError (NOT_FOUND for an unknown key). */
  lookupBatch(request: LookupBatchRequestInit, options?: CallOptions): Promise<LookupBatchResponse> {
    return this.#call("lookupBatch", (o) => this.#rpc.lookupBatch(request, o), options);
  }

  /**
   * do() for many keys of one namespace at once, with one work call for all
   * the keys this worker acquires, as the Go client's DoBatch: reserves the
   * keys with ReserveBatch (1000 a call), runs `work(keys, signal)` once with
   * the acquired keys (in the order given) while heartbeating each lease,
   * records the results work resolves (one per key, same order) with
   * CompleteBatch, and resolves one {@link BatchResult} per key, in order:
   *
   * - a completed key is replayed (`result.replayed`) and not given to work;
   * - a key another worker holds gets an {@link InProgressError} at once:
   *   doBatch does not wait (call it again for those keys, or use do());
   * - a key that failed permanently gets a {@link FailedError};
   * - a key the ledger refused gets that {@link LedgerError}.
   *
   * When work rejects, every acquired key records a failure (retryable
   * unless the error is marked with {@link permanent}) and gets the work's
   * error. If a lease cannot be kept (lost, or no heartbeat acknowledged in
   * time), the work's signal aborts with that error; results work still
   * resolves are offered to CompleteBatch, which records those of the keys
   * nobody took over. If the caller's signal aborts while work runs, the
   * leases still held are released. A result the ledger refuses as invalid
   * (too large) is recorded as a retryable failure that says why.
   *
   * The options are do()'s (owner, leaseTtlMs, heartbeatIntervalMs, and the
   * fingerprint and metadata, which apply to every key). It rejects as a
   * whole only for what all keys share (a bad namespace or option), or with
   * the error of a ReserveBatch (the ledger unavailable, say) or the abort
   * reason before any work ran.
   */
  doBatch(namespace: string, keys: string[], work: BatchWork, options?: DoBatchOptions): Promise<BatchResult[]> {
    return runDoBatch(this, namespace, keys, work, options ?? {});
  }

  /**
   * A snapshot of the client's counters: calls and retries, the breaker's
   * state and openings, and the fail-open runs and their recording.
   */
  stats(): Stats {
    return this.policies.stats();
  }

  /** The breaker's state now: `"closed"`, `"open"` or `"half_open"` (`"closed"` without a breaker). */
  get breakerState(): BreakerState {
    return this.policies.breaker?.state ?? "closed";
  }

  /**
   * The replicas of a client made with several addresses, and whether each
   * is healthy now; empty for a client of one address.
   */
  replicas(): { address: string; healthy: boolean }[] {
    return this.#balancer?.replicas() ?? [];
  }

  /**
   * Waits until every fail-open result is recorded in the ledger (or
   * discarded), for at most timeoutMs (default: as long as it takes), and
   * resolves with how many are still waiting (0: all done).
   */
  flush(timeoutMs?: number): Promise<number> {
    if (timeoutMs !== undefined && !(timeoutMs >= 0)) {
      throw new RangeError(`ledgerd client: flush timeoutMs must be ≥ 0, got ${timeoutMs}`);
    }
    return this.policies.waitDrained(timeoutMs);
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
   * Closes the client. With fail-open results still waiting to be recorded,
   * it first waits for them (see {@link flush}) for at most timeoutMs
   * (default 10s); those still waiting then are lost, and a warning on the
   * console names them. Then it closes the connections the client made
   * (none for a client made with a `transport`); calls in flight fail.
   * Resolves with how many fail-open results it could not record. Without
   * any waiting it closes at once, before it returns. Idle connections do
   * not keep the process alive, so closing is not required for it to exit
   * (but fail-open results are recorded only while it runs).
   */
  close(timeoutMs: number = clientDefaults.closeTimeoutMs): Promise<number> {
    const shut = () => {
      const lost = this.#recorder.stop();
      this.#sessionManager?.abort();
      this.#balancer?.close();
      if (lost.length > 0) {
        console.warn(
          `ledgerd: closed with ${lost.length} fail-open result(s) not recorded in the ledger: ` +
            lost.slice(0, 20).map((r) => `${r.namespace}/${r.key}`).join(", "),
        );
      }
      return lost.length;
    };
    if (this.policies.pending === 0) {
      return Promise.resolve(shut());
    }
    return this.flush(timeoutMs).then(shut);
  }

  /** Wakes the recorder of fail-open results (do() calls it when it queues one). */
  wakeRecorder(): void {
    this.#recorder.wake();
  }

  async #call<T>(
    method: string,
    rpc: (options: { signal: AbortSignal; timeoutMs?: number; headers: Record<string, string> }) => Promise<T>,
    options: CallOptions | undefined,
    extraAttemptMs = 0,
  ): Promise<T> {
    const retry = (options as InternalCallOptions | undefined)?.retry !== false;
    const s = scope(options?.signal, options?.timeoutMs, `ledgerd ${method}`);
    // do() passes its own deadline, which bounds the attempts without
    // aborting them itself (its signal does), and for heartbeats a shorter
    // bound of each attempt.
    const internal = options as InternalCallOptions | undefined;
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
        this.policies,
        retry,
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

/**
 * An interceptor that tells a call whose connection went away from a call
 * the server reset. Node closes the streams of an HTTP/2 connection that
 * closed (a proxy or a replica went down) with the code CANCEL, which
 * Connect reports as CANCELED, as it reports a server's RST_STREAM CANCEL.
 * When the stream closed without the caller's abort and the connection is
 * gone too, the server did not answer: UNAVAILABLE (retried, and counted by
 * the breaker), as gRPC's own clients report a lost connection.
 */
function connectionLoss(sessionManager: Http2SessionManager): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (e) {
      if (e instanceof ConnectError && e.code === Code.Canceled && !req.signal.aborted) {
        // Let the connection's own close events run first.
        await new Promise((resolve) => setImmediate(resolve));
        const state = sessionManager.state();
        if (state === "closed" || state === "error") {
          throw new ConnectError(`${e.rawMessage} (the connection closed before an answer)`, Code.Unavailable, e.metadata, undefined, e);
        }
      }
      throw e;
    }
  };
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
