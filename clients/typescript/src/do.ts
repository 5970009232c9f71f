import { randomBytes } from "node:crypto";
import { hostname } from "node:os";

import { durationFromMs, timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";

import type { InternalCallOptions, LedgerClient, ReserveRequestInit } from "./client.js";
import { FailedError, InvalidArgumentError, isPermanent, LeaseLostError, LedgerError, Reason } from "./errors.js";
import type { Acquired, Completed, Failed, ReserveResponse } from "./gen/ledger/v1/ledger_pb.js";
import { checkFallback, unreachable, type Fallback } from "./policy.js";
import { scope, sleep, type Scope } from "./retry.js";

/** Options of {@link LedgerClient.do}. */
export interface DoOptions {
  /**
   * Names the worker in the ledger and its audit trail. Defaults to
   * `"<hostname>/<pid>/<random>"`, new for every do() call. Two calls with
   * the same owner for the same key share one lease (Reserve by the holder
   * returns the same fencing token), so give every concurrent worker its own.
   */
  owner?: string;
  /**
   * How long the lease lasts without a heartbeat, in ms; every heartbeat
   * extends it by as much again. A worker that stops heartbeating (it
   * crashed, or is paused) is taken over once it runs out. Defaults to the
   * namespace's default (30s unless configured); the server refuses a TTL
   * below its minimum (1s unless configured) or above the namespace's
   * maximum with an {@link InvalidArgumentError} (field "lease_ttl").
   */
  leaseTtlMs?: number;
  /**
   * The fingerprint of the request payload, e.g. its SHA-256 (a string is
   * stored as UTF-8). The first do() of a key stores it; a later do() with a
   * different one rejects with a {@link FingerprintMismatchError}. Defaults
   * to none, which matches only none.
   */
  fingerprint?: Uint8Array | string;
  /** Free-form labels stored on the entry when the lease is granted, e.g. the pipeline run. */
  metadata?: Record<string, string>;
  /**
   * How often the lease is extended while the work runs, in ms. Defaults to
   * a third of the granted lease TTL, so that two heartbeats can fail before
   * the lease runs out. It also bounds each attempt of a heartbeat.
   */
  heartbeatIntervalMs?: number;
  /** Aborts do(): waiting, and the work (through `lease.signal`); see {@link LedgerClient.do}. */
  signal?: AbortSignal;
  /** Bounds do(), the work included, in ms; it then behaves as if `signal` aborted with a TimeoutError. */
  timeoutMs?: number;
  /**
   * What do() does when the ledger cannot answer: its breaker is open, or
   * the Reserve still found it unavailable after the retries allowed
   * (maxAttempts, the retry budget). Defaults to the client's `fallback`,
   * itself `"fail_closed"` by default.
   *
   * - `"fail_closed"`: the work does not run; do() rejects with the
   *   {@link UnavailableError} (a {@link CircuitOpenError} when the breaker
   *   is open), which the caller can branch on.
   * - `"fail_open"`, for steps whose side effects are already idempotent
   *   downstream: the work runs unguarded (no lease: `lease.unguarded`,
   *   fencing token 0n), the client's `onFailOpen` hook is called first,
   *   and do() resolves with `outcome: "ran_unguarded"`. Its result is
   *   queued and recorded in the ledger once it is back (Reserve, waiting
   *   for a holder, then Complete), unless another worker completed the key
   *   meanwhile (their result stays, ours is discarded) or it failed.
   *   `onFailOpenRecorded` reports each outcome. What it gives up:
   *   exactly-once — two workers may both run the work, and results still
   *   queued when the process dies are never recorded.
   *
   * Whenever the ledger answered (a held key, a failed key, a refusal, a
   * fingerprint mismatch, a quota), both behave the same.
   */
  fallback?: Fallback;
}

/** What {@link LedgerClient.do} resolves with: the work's result, recorded now or replayed. */
export interface DoResult {
  /** The result: resolved by the work in this call, or stored by an earlier one and replayed. */
  value: Uint8Array;
  /** The token of the grant under which `value` was recorded. */
  fencingToken: bigint;
  /**
   * The number of the grant that ran the work in this call (1 for the first
   * grant of the key); 0 when replayed (the ledger does not report it then).
   */
  attempt: number;
  /** True when the key was already completed: `value` is the stored result and the work did not run. */
  replayed: boolean;
  /** When the key was completed, by the database's clock (for `"ran_unguarded"`: when the work resolved, by this machine's). */
  completedAt: Date;
  /**
   * How do() ended: `"ran"` (the work ran under a lease and its result was
   * recorded), `"replayed"` (the stored result; the work did not run) or
   * `"ran_unguarded"` (fail-open: the work ran without a lease, and its
   * result waits to be recorded).
   */
  outcome: "ran" | "replayed" | "ran_unguarded";
  /** True for a fail-open run (`outcome: "ran_unguarded"`): no lease guarded the work, and `fencingToken` is 0n. */
  unguarded: boolean;
}

/** The grant under which {@link LedgerClient.do} runs the work; the work's only argument. */
export interface Lease {
  /** The namespace of the key being worked on. */
  readonly namespace: string;
  /** The key being worked on. */
  readonly key: string;
  /** The owner that holds the lease (see {@link DoOptions.owner}). */
  readonly owner: string;
  /**
   * Identifies this grant; it strictly increases every time a lease on the
   * key is granted. Pass it to downstream systems with every write, so that
   * they can refuse writes from a worker that was taken over (an older token).
   */
  readonly fencingToken: bigint;
  /** Counts the grants of the key: 1 for the first, one more for every takeover. */
  readonly attempt: number;
  /** True when the key had been held before and this grant took it over. */
  readonly takeover: boolean;
  /** The owner before a takeover; empty otherwise. */
  readonly previousOwner: string;
  /**
   * The last checkpoint an earlier holder stored (see {@link Lease.setCheckpoint}),
   * so that the work can resume instead of starting over; empty if none.
   */
  readonly checkpoint: Uint8Array;
  /** The granted lease duration in ms; do() heartbeats well within it (0 when unguarded). */
  readonly leaseTtlMs: number;
  /**
   * True when the work runs without a lease, because the ledger could not
   * answer and do()'s fallback is `"fail_open"`: the fencing token is 0n and
   * no other worker is kept out.
   */
  readonly unguarded: boolean;
  /**
   * Aborts when the work must stop: with a {@link LeaseLostError} when
   * another worker took the key over or when no heartbeat could be
   * acknowledged before the lease ran out (ledgerd unreachable, say), with
   * the error of a heartbeat the server refused, or with the caller's abort
   * reason. Pass it to the I/O the work does.
   */
  readonly signal: AbortSignal;
  /**
   * Stages a checkpoint (a cursor, an offset, a phase name; a string is
   * stored as UTF-8) to be stored with the next heartbeat. If this worker then
   * fails, gives up or dies, the worker that takes the key over finds the last
   * stored checkpoint in its lease. do() also stores a staged checkpoint
   * before it records a retryable failure or releases the lease. An empty
   * checkpoint clears the stored one. It is copied. The server limits its size
   * (64 KiB unless configured); a heartbeat carrying a larger one is refused,
   * which ends the work.
   */
  setCheckpoint(checkpoint: Uint8Array | string): void;
}

// The longest wait between two Reserves while another worker holds the key
// and the server did not wait for it: its result is replayed soon after it
// completes even when its lease is long.
const maxPollIntervalMs = 1000;
// Tells a Reserve that the server held (at least this long, or half the wait
// asked for when that is shorter) from one it answered at once.
const minServerWaitMs = 500;
// Bounds the calls do() makes after the caller gave up: releasing the lease,
// or recording a result or a failure.
const cleanupTimeoutMs = 5000;
// A third of the ledger's default lease TTL; the ledger always reports the
// granted TTL, so this is a safety net.
export const defaultHeartbeatIntervalMs = 10_000;
// The longest margin a heartbeat keeps before the lease's end for its
// acknowledgement to arrive (a tenth of the TTL when that is shorter).
const maxHeartbeatMarginMs = 1000;
/** The message of the LeaseLostError that ends the work when no heartbeat was acknowledged in time. */
const leaseUnconfirmedMessage = "no heartbeat was acknowledged before the lease ran out (ledgerd unreachable?)";
// Bounds the work error message do() records; the server's limit is 8 KiB
// unless configured.
const maxErrorMessageBytes = 4 << 10;

const utf8 = new TextEncoder();

export type Work = (lease: Lease) => Promise<Uint8Array | string> | Uint8Array | string;

/** do(): see LedgerClient.do. */
export async function runDo(
  client: LedgerClient,
  namespace: string,
  key: string,
  work: Work,
  options: DoOptions,
): Promise<DoResult> {
  if (typeof work !== "function") {
    throw new TypeError("ledgerd do: work must be a function");
  }
  const owner = options.owner || defaultOwner();
  const fallback = options.fallback === undefined ? client.policies.fallback : checkFallback(options.fallback, "fallback");
  const s = scope(options.signal, options.timeoutMs, `ledgerd do ${namespace}/${key}`);
  try {
    const request: ReserveRequestInit = {
      namespace,
      key,
      owner,
      fingerprint: options.fingerprint === undefined ? undefined : bytesOf(options.fingerprint),
      metadata: options.metadata,
      leaseTtl: options.leaseTtlMs ? durationFromMs(options.leaseTtlMs) : undefined,
    };
    for (;;) {
      let response: ReserveResponse;
      try {
        response = await reserveWaiting(client, request, s);
      } catch (e) {
        if (fallback === "fail_open" && unreachable(e) && !s.signal.aborted) {
          return await runUnguarded(client, s, request, owner, work, e);
        }
        throw e;
      }
      const outcome = response.outcome;
      switch (outcome.case) {
        case "acquired":
          return await runLeased(client, s, new LeaseState(namespace, key, owner, outcome.value), work, options);
        case "completed":
          return replayedResult(outcome.value);
        case "failed":
          throw failedError(namespace, key, outcome.value);
        case "inProgress":
          // reserveWaiting already waited, or returned at once and left the
          // wait to us: loop and ask again.
          break;
        default:
          throw new Error("ledgerd do: reserve returned an outcome this client does not know");
      }
    }
  } finally {
    s.dispose();
  }
}

/**
 * Runs the work without a lease (fail-open), after the onFailOpen hook, and
 * queues its result for the recorder. When the queue is full, it fails
 * closed: it rejects with cause, and the work does not run.
 */
/** The result of a Reserve (or ReserveBatch item) that answered "completed": a replay. */
export function replayedResult(completed: Completed): DoResult {
  return {
    value: completed.result,
    fencingToken: completed.fencingToken,
    attempt: 0,
    replayed: true,
    completedAt: dateOf(completed.completedAt),
    outcome: "replayed",
    unguarded: false,
  };
}

/** The FailedError of a Reserve (or ReserveBatch item) that answered "failed": the key failed permanently. */
export function failedError(namespace: string, key: string, failed: Failed): FailedError {
  return new FailedError({
    namespace,
    key,
    code: failed.error?.code ?? "",
    errorMessage: failed.error?.message ?? "",
    fencingToken: failed.fencingToken,
    attempts: failed.attempts,
    failedAt: dateOf(failed.failedAt),
  });
}

async function runUnguarded(
  client: LedgerClient,
  s: Scope,
  request: ReserveRequestInit,
  owner: string,
  work: Work,
  cause: unknown,
): Promise<DoResult> {
  const policies = client.policies;
  const namespace = request.namespace ?? "";
  const key = request.key ?? "";
  if (!policies.startUnguarded(namespace, key, cause)) {
    if (cause instanceof Error) {
      cause.message += ` (fail_open fell back to fail_closed: ${policies.failOpenQueue} results already wait to be recorded, failOpenQueue)`;
    }
    throw cause;
  }
  const lease: Lease = Object.freeze({
    namespace,
    key,
    owner,
    fencingToken: 0n,
    attempt: 0,
    takeover: false,
    previousOwner: "",
    checkpoint: new Uint8Array(0),
    leaseTtlMs: 0,
    unguarded: true,
    signal: s.signal,
    setCheckpoint: () => undefined, // nowhere to store it: no lease
  });
  let value: Uint8Array;
  try {
    value = resultBytes(await work(lease));
  } catch (e) {
    policies.cancelSlot();
    throw e;
  }
  policies.put({
    namespace,
    key,
    result: value,
    owner,
    fingerprint: request.fingerprint as Uint8Array | undefined,
    metadata: request.metadata as Record<string, string> | undefined,
    token: 0n,
    tries: 0,
  });
  client.wakeRecorder();
  return { value, fencingToken: 0n, attempt: 0, replayed: false, completedAt: new Date(), outcome: "ran_unguarded", unguarded: true };
}

/**
 * Reserves, asking the server to hold the call while another owner holds the
 * key (see serverWaitMs). When the answer is IN_PROGRESS and the server did
 * not wait (it predates waiting, is shutting down, or shortened the wait to
 * almost nothing), it sleeps for the server's retry-after hint (at most 1s,
 * with jitter) before returning it; otherwise do() asks again at once.
 */
async function reserveWaiting(client: LedgerClient, request: ReserveRequestInit, s: Scope): Promise<ReserveResponse> {
  const waitMs = serverWaitMs(client.maxWaitMs, s.remainingMs());
  const asked = Date.now();
  const callOptions: InternalCallOptions = { signal: s.signal, deadline: s.deadline };
  const response = await client.reserve(
    { ...request, waitTimeout: waitMs > 0 ? durationFromMs(waitMs) : undefined },
    callOptions,
  );
  if (response.outcome.case === "inProgress") {
    const waited = waitMs > 0 && Date.now() - asked >= Math.min(minServerWaitMs, waitMs / 2);
    if (!waited) {
      const hint = response.outcome.value.retryAfter;
      const retryAfterMs = hint ? Number(hint.seconds) * 1000 + hint.nanos / 1e6 : maxPollIntervalMs;
      await sleep(pollInterval(retryAfterMs), s.signal);
    }
  }
  return response;
}

/**
 * The wait_timeout of do()'s Reserves, in whole ms: maxWaitMs, or less when
 * the caller's deadline comes sooner, leaving a tenth of the time left (at
 * most a second) for the answer to arrive. 0 asks for no wait.
 */
function serverWaitMs(maxWaitMs: number, remainingMs: number | undefined): number {
  let wait = maxWaitMs;
  if (remainingMs !== undefined) {
    wait = Math.min(wait, remainingMs - Math.min(remainingMs / 10, 1000));
  }
  return Math.max(0, Math.floor(wait));
}

/** The staged checkpoint of a lease, and what the ledger holds of it. */
export class LeaseState {
  readonly namespace: string;
  readonly key: string;
  readonly owner: string;
  readonly acquired: Acquired;
  readonly ttlMs: number;
  #checkpoint: Uint8Array = new Uint8Array(0);
  #staged = 0; // counts setCheckpoint calls
  #stored = 0; // the value of #staged whose checkpoint the ledger holds

  constructor(namespace: string, key: string, owner: string, acquired: Acquired) {
    this.namespace = namespace;
    this.key = key;
    this.owner = owner;
    this.acquired = acquired;
    const ttl = acquired.leaseTtl;
    this.ttlMs = ttl ? Number(ttl.seconds) * 1000 + ttl.nanos / 1e6 : 0;
  }

  stage(checkpoint: Uint8Array): void {
    this.#checkpoint = checkpoint.slice();
    this.#staged++;
  }

  /** The staged checkpoint the ledger does not hold yet, and its version; undefined if none. */
  pending(): [Uint8Array | undefined, number] {
    return this.#staged === this.#stored ? [undefined, 0] : [this.#checkpoint, this.#staged];
  }

  /** Records that the checkpoint of version is stored; one staged meanwhile stays pending. */
  markStored(version: number): void {
    this.#stored = Math.max(this.#stored, version);
  }

  get token(): bigint {
    return this.acquired.fencingToken;
  }
}

/**
 * The controller of the work's signal, aborted when the caller's scope is
 * (at once if it already is), or by the heartbeats when a lease cannot be
 * kept; dispose stops following the caller's scope.
 */
export function workControllerOf(s: Scope): { controller: AbortController; dispose: () => void } {
  const controller = new AbortController();
  const onCallerAbort = () => controller.abort(s.signal.reason);
  if (s.signal.aborted) {
    onCallerAbort();
  } else {
    s.signal.addEventListener("abort", onCallerAbort, { once: true });
  }
  return { controller, dispose: () => s.signal.removeEventListener("abort", onCallerAbort) };
}

/**
 * The heartbeater of a held lease: every intervalMs (when given and
 * positive; else a third of the granted TTL, or the default), and aborting
 * the work's controller when the lease cannot be kept.
 */
export function heartbeaterOf(
  client: LedgerClient,
  state: LeaseState,
  intervalOptionMs: number | undefined,
  work: AbortController,
): Heartbeater {
  let intervalMs = defaultHeartbeatIntervalMs;
  if (intervalOptionMs !== undefined && intervalOptionMs > 0) {
    intervalMs = intervalOptionMs;
  } else if (state.ttlMs > 0) {
    intervalMs = state.ttlMs / 3;
  }
  return new Heartbeater(
    (options) => heartbeat(client, state, options),
    intervalMs,
    state.ttlMs,
    (err) => work.abort(err),
    work.signal,
  );
}

/** The Lease the work sees for a held lease, with the work's signal. */
export function leaseOf(state: LeaseState, signal: AbortSignal): Lease {
  const acquired = state.acquired;
  return Object.freeze({
    namespace: state.namespace,
    key: state.key,
    owner: state.owner,
    fencingToken: acquired.fencingToken,
    attempt: acquired.attempt,
    takeover: acquired.takeover,
    previousOwner: acquired.previousOwner,
    checkpoint: acquired.checkpoint,
    leaseTtlMs: state.ttlMs,
    unguarded: false,
    signal,
    setCheckpoint: (checkpoint: Uint8Array | string) => state.stage(bytesOf(checkpoint)),
  });
}

/** Runs work under the lease, with heartbeats, and records what it returns. */
async function runLeased(client: LedgerClient, s: Scope, state: LeaseState, work: Work, options: DoOptions): Promise<DoResult> {
  // The work's signal: aborted by the caller, or when the lease cannot be kept.
  const { controller: workController, dispose: stopFollowingCaller } = workControllerOf(s);
  const heartbeats = heartbeaterOf(client, state, options.heartbeatIntervalMs, workController);
  const lease = leaseOf(state, workController.signal);

  let value: unknown;
  let workError: unknown;
  let workFailed = false;
  heartbeats.start();
  try {
    value = await work(lease);
  } catch (e) {
    workFailed = true;
    workError = e;
  }
  const heartbeatError = await heartbeats.stop();
  stopFollowingCaller();

  if (heartbeatError instanceof LeaseLostError && !(heartbeats.unconfirmed && !workFailed)) {
    // Complete would be refused: another worker holds the key now. (When no
    // heartbeat could be acknowledged in time, a result the work still
    // resolves is offered all the same: the ledger records it if nobody
    // took the key over, and answers LEASE_LOST otherwise.)
    throw heartbeatError;
  }
  if (!workFailed) {
    let result: Uint8Array | undefined;
    try {
      result = resultBytes(value);
    } catch (e) {
      workFailed = true;
      workError = e;
    }
    if (result) {
      try {
        return await complete(client, s, state, result);
      } catch (e) {
        if (e instanceof InvalidArgumentError) {
          // The ledger refused the result (too large, say): keep the reason on
          // the entry, and free the key for the next attempt.
          await fail(client, s, state, errorMessage(e), true).catch(() => undefined);
        }
        throw e;
      }
    }
  }
  if (heartbeatError !== undefined) {
    // The work most likely failed because its signal aborted with
    // heartbeatError: report the cause, not the symptom.
    await release(client, s, state).catch(() => undefined);
    throw heartbeatError;
  }
  if (s.signal.aborted) {
    await release(client, s, state).catch(() => undefined);
    throw s.signal.reason;
  }
  await fail(client, s, state, errorMessage(workError), !isPermanent(workError)).catch(() => undefined);
  throw workError;
}

/**
 * Keeps a lease alive while the work runs: one heartbeat every interval
 * (counted from the end of the previous one), until stop() or the work's
 * signal aborts. A refused heartbeat ends the heartbeats and calls onFail.
 *
 * Every heartbeat, its retries included, must be acknowledged before the
 * lease runs out: it has until validUntil (the sending time of the last
 * acknowledged heartbeat, at first of the grant, plus the TTL) less a margin
 * for the answer's trip, and each attempt at most one interval. When that
 * time passes without an answer from the ledger (it is unreachable, say),
 * another worker may take the key over: the heartbeats end with a
 * LeaseLostError, and `unconfirmed` is set.
 */
export class Heartbeater {
  readonly #beat: (options: InternalCallOptions) => Promise<void>;
  readonly #intervalMs: number;
  readonly #ttlMs: number;
  readonly #onFail: (err: unknown) => void;
  readonly #workSignal: AbortSignal;
  readonly #controller = new AbortController();
  readonly #onWorkAbort = () => this.#halt();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #inflight: Promise<void> | undefined;
  #stopped = false;
  #error: unknown;
  // When the lease runs out unless a heartbeat is acknowledged first
  // (Date.now() scale). The grant was made a moment ago; counting the TTL
  // from now is off by one round trip at most, and the margin covers it.
  #validUntil: number;
  /** True when the heartbeats ended because none was acknowledged before the lease ran out. */
  unconfirmed = false;

  constructor(
    beat: (options: InternalCallOptions) => Promise<void>,
    intervalMs: number,
    ttlMs: number,
    onFail: (err: unknown) => void,
    workSignal: AbortSignal,
  ) {
    this.#beat = beat;
    this.#intervalMs = intervalMs;
    this.#ttlMs = ttlMs;
    this.#onFail = onFail;
    this.#workSignal = workSignal;
    this.#validUntil = Date.now() + ttlMs;
  }

  start(): void {
    if (this.#workSignal.aborted) {
      this.#halt();
      return;
    }
    this.#workSignal.addEventListener("abort", this.#onWorkAbort, { once: true });
    this.#schedule();
  }

  /** Ends the heartbeats, waits for one in flight, and returns the error that ended them early, if any. */
  async stop(): Promise<unknown> {
    this.#halt();
    this.#workSignal.removeEventListener("abort", this.#onWorkAbort);
    await this.#inflight;
    return this.#error;
  }

  #schedule(): void {
    if (this.#stopped) {
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#inflight = this.#run();
    }, this.#intervalMs);
  }

  /**
   * How long the next heartbeat may take, in ms: until the lease's end less
   * a margin, but at least a short try. Even past the lease's presumed end
   * one heartbeat is still tried, briefly: the ledger extends an expired
   * lease if nobody took over (fencing beats time), and answers LEASE_LOST
   * otherwise. Undefined (no bound) when the ledger reported no TTL.
   */
  #budgetMs(): number | undefined {
    if (!(this.#ttlMs > 0)) {
      return undefined;
    }
    const margin = Math.min(this.#ttlMs / 10, maxHeartbeatMarginMs);
    return Math.max(this.#validUntil - margin - Date.now(), Math.min(this.#intervalMs, 1000));
  }

  async #run(): Promise<void> {
    const call = scope(this.#controller.signal, this.#budgetMs(), "ledgerd heartbeat");
    const sentAt = Date.now();
    try {
      // Each attempt gets at most one interval, so that a hung connection is
      // abandoned and another attempt made in time.
      await this.#beat({ signal: call.signal, deadline: call.deadline, maxAttemptMs: this.#intervalMs });
    } catch (e) {
      if (this.#stopped) {
        return; // stopped during the call: not a failure
      }
      let err = e;
      if (call.signal.aborted && !answered(e)) {
        // No answer in time: another worker may hold the key by now.
        this.unconfirmed = true;
        err = new LeaseLostError({ reason: Reason.LeaseLost, code: Code.Aborted, rawMessage: leaseUnconfirmedMessage, cause: e });
      }
      // Refused (LEASE_LOST, or a bad checkpoint), or not answered in time:
      // the lease cannot be kept, so the work must stop.
      this.#error = err;
      this.#halt();
      this.#onFail(err);
      return;
    } finally {
      call.dispose();
    }
    this.#validUntil = sentAt + this.#ttlMs;
    this.#schedule();
  }

  #halt(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#controller.abort();
  }
}

/**
 * Reports whether err is the ledger's own answer (a refusal), as opposed to
 * the ledger not answering in time: unavailable, out of time, canceled, or a
 * failure outside the RPC (the call's own timeout).
 */
function answered(err: unknown): boolean {
  return (
    err instanceof LedgerError &&
    err.code !== Code.Unavailable &&
    err.code !== Code.DeadlineExceeded &&
    err.code !== Code.Canceled
  );
}

/** Extends the lease, carrying the staged checkpoint if there is one. */
export async function heartbeat(client: LedgerClient, state: LeaseState, options: InternalCallOptions): Promise<void> {
  const [checkpoint, version] = state.pending();
  await client.heartbeat(
    {
      namespace: state.namespace,
      key: state.key,
      fencingToken: state.token,
      leaseTtl: state.ttlMs > 0 ? durationFromMs(state.ttlMs) : undefined,
      checkpoint, // undefined (unset) keeps the stored checkpoint
    },
    options,
  );
  if (checkpoint !== undefined) {
    state.markStored(version);
  }
}

/**
 * The signal for the calls do() makes once the work ended: the caller's
 * while it has not aborted, and otherwise a short timeout of their own.
 */
export function afterward(s: Scope): { options: InternalCallOptions; dispose: () => void } {
  if (!s.signal.aborted) {
    return { options: { signal: s.signal, deadline: s.deadline }, dispose: () => undefined };
  }
  const cleanup = scope(undefined, cleanupTimeoutMs, "ledgerd cleanup");
  return { options: { signal: cleanup.signal, deadline: cleanup.deadline }, dispose: () => cleanup.dispose() };
}

async function complete(client: LedgerClient, s: Scope, state: LeaseState, result: Uint8Array): Promise<DoResult> {
  const a = afterward(s);
  try {
    const response = await client.complete(
      { namespace: state.namespace, key: state.key, fencingToken: state.token, result },
      a.options,
    );
    return {
      value: result,
      fencingToken: state.token,
      attempt: state.acquired.attempt,
      replayed: false,
      completedAt: dateOf(response.completedAt),
      outcome: "ran",
      unguarded: false,
    };
  } finally {
    a.dispose();
  }
}

/** Records the work's failure, after storing a staged checkpoint for the next worker when it is retryable. */
export async function fail(client: LedgerClient, s: Scope, state: LeaseState, message: string, retryable: boolean): Promise<void> {
  const a = afterward(s);
  try {
    if (retryable) {
      await storeCheckpoint(client, state, a.options.signal!).catch(() => undefined);
    }
    await client.fail(
      { namespace: state.namespace, key: state.key, fencingToken: state.token, error: { message }, retryable },
      a.options,
    );
  } finally {
    a.dispose();
  }
}

/** Gives the lease up, after storing a staged checkpoint for the next worker. */
export async function release(client: LedgerClient, s: Scope, state: LeaseState): Promise<void> {
  const a = afterward(s);
  try {
    await storeCheckpoint(client, state, a.options.signal!).catch(() => undefined);
    await client.release({ namespace: state.namespace, key: state.key, fencingToken: state.token }, a.options);
  } finally {
    a.dispose();
  }
}

/** Sends a staged checkpoint that no heartbeat carried yet (Fail and Release carry none). */
async function storeCheckpoint(client: LedgerClient, state: LeaseState, signal: AbortSignal): Promise<void> {
  if (state.pending()[0] !== undefined) {
    await heartbeat(client, state, { signal });
  }
}

/**
 * Turns the server's retry-after hint into the wait before the next Reserve:
 * at most 1s, plus up to a quarter of jitter, so that waiting workers do not
 * ask all at once.
 */
function pollInterval(retryAfterMs: number): number {
  const wait = Math.min(Math.max(retryAfterMs, 1), maxPollIntervalMs);
  return wait + Math.random() * (wait / 4);
}

/** The bytes of a checkpoint, fingerprint or result: a string as UTF-8, a Uint8Array (or Buffer) copied. */
export function bytesOf(value: Uint8Array | string): Uint8Array {
  if (typeof value === "string") {
    return utf8.encode(value);
  }
  if (value instanceof Uint8Array) {
    return new Uint8Array(value);
  }
  throw new TypeError(`ledgerd do: expected a Uint8Array or a string, got ${describe(value)}`);
}

export function resultBytes(value: unknown): Uint8Array {
  if (typeof value === "string" || value instanceof Uint8Array) {
    return bytesOf(value);
  }
  throw new TypeError(`ledgerd do: work must resolve a Uint8Array or a string, got ${describe(value)}`);
}

function describe(value: unknown): string {
  return value === null ? "null" : typeof value === "object" ? (value.constructor?.name ?? "object") : typeof value;
}

/**
 * Makes err's text acceptable as a stored error message: not empty, without
 * NUL bytes, valid UTF-8 (lone surrogates become U+FFFD), at most 4 KiB.
 */
export function errorMessage(err: unknown): string {
  let message: string;
  if (err instanceof Error) {
    message = err.message;
  } else if (typeof err === "string") {
    message = err;
  } else {
    try {
      message = String(err);
    } catch {
      message = "";
    }
  }
  message = message.replaceAll("\0", "");
  if (message === "") {
    message = `${err instanceof Error ? err.name : describe(err)} with an empty message`;
  }
  const bytes = utf8.encode(message);
  if (bytes.length <= maxErrorMessageBytes) {
    return new TextDecoder().decode(bytes);
  }
  let cut = maxErrorMessageBytes;
  while (cut > 0 && ((bytes[cut] ?? 0) & 0xc0) === 0x80) {
    cut--;
  }
  return new TextDecoder().decode(bytes.subarray(0, cut));
}

/** Names a worker by its host and process, with a random suffix that makes every do() call its own owner. */
export function defaultOwner(): string {
  let host = "";
  try {
    host = hostname();
  } catch {
    // fall through
  }
  return `${host || "unknown-host"}/${process.pid}/${randomBytes(4).toString("hex")}`;
}

export function dateOf(timestamp: Timestamp | undefined): Date {
  return timestamp ? timestampDate(timestamp) : new Date(0);
}
