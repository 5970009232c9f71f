// The policies of a client that involve no I/O: the breaker and the retry
// budget around each call, the attempt limit, the counters behind stats(),
// and the bookkeeping of the fail-open queue. The client (retries), do()
// (the fallback) and the recorder (fail-open results) drive them.

import { Code } from "@connectrpc/connect";

import {
  CircuitBreaker,
  RetryBudget,
  type AttemptOutcome,
  type BreakerListener,
  type BreakerOptions,
  type BreakerState,
  type Clock,
  type RetryBudgetOptions,
  type Ticket,
} from "./breaker.js";
import { CircuitOpenError, DeadlineExceededError, LedgerError, UnavailableError } from "./errors.js";

/**
 * What `do()` does when the ledger cannot answer (its breaker is open, or a
 * call still found it unavailable after the retries allowed):
 * `"fail_closed"` (the default) does not run the work and rejects with the
 * {@link UnavailableError} ({@link CircuitOpenError} when the breaker is
 * open); `"fail_open"` runs the work unguarded and records its result once
 * the ledger is back (see {@link DoOptions.fallback}).
 */
export type Fallback = "fail_closed" | "fail_open";

/** How a fail-open result's recording ended: recorded, or discarded because the key was completed by another worker, or failed. */
export type FailOpenOutcome = "recorded" | "discarded_completed" | "discarded_failed";

/** Called before a fail-open run of the work, with the error that made the ledger unreachable. */
export type FailOpenListener = (namespace: string, key: string, cause: unknown) => void;

/** Called when a fail-open result's recording ends. */
export type FailOpenRecordedListener = (namespace: string, key: string, outcome: FailOpenOutcome) => void;

/** A snapshot of a client's counters ({@link LedgerClient.stats}). */
export interface Stats {
  /** Calls made (first attempts), of every RPC. */
  calls: number;
  /** Retries made. */
  retries: number;
  /** Retries the retry budget refused (the call failed with its last error). */
  retriesRefused: number;
  /** The breaker's state (`"closed"` without a breaker). */
  breakerState: BreakerState;
  /** How many times the breaker opened. */
  breakerOpens: number;
  /** Fail-open runs of the work (unguarded). */
  failOpenRuns: number;
  /** Fail-open results recorded in the ledger afterwards. */
  failOpenRecorded: number;
  /** Fail-open results discarded (the key was completed by another worker, or failed). */
  failOpenDiscarded: number;
  /** Fail-open results waiting to be recorded. */
  failOpenPending: number;
}

/** The RPCs a breaker does not guard: they protect work already granted, and failing them fast would throw a held result away. */
const unguarded = new Set(["heartbeat", "complete", "completeBatch", "fail", "release"]);

/** The default bound of the fail-open queue. */
export const defaultFailOpenQueue = 10_000;

/** A fail-open result waiting to be recorded. */
export interface FailOpenRecord {
  readonly namespace: string;
  readonly key: string;
  readonly result: Uint8Array;
  readonly owner: string;
  readonly fingerprint: Uint8Array | undefined;
  readonly metadata: Record<string, string> | undefined;
  /** The token of the lease the recorder got for it, 0n before; tells our own Complete (whose answer was lost) from another's. */
  token: bigint;
  /** How many tries the recorder made. */
  tries: number;
}

/** What the policies are made of (the client's options of the same names). */
export interface PolicyOptions {
  breaker?: BreakerOptions | false;
  retryBudget?: RetryBudgetOptions | false;
  maxAttempts?: number;
  fallback?: Fallback;
  failOpenQueue?: number;
  onBreakerChange?: BreakerListener;
  onFailOpen?: FailOpenListener;
  onFailOpenRecorded?: FailOpenRecordedListener;
  clock?: Clock;
}

/**
 * Reports whether err says the ledger could not answer (the cases the
 * fallback policy is for): the breaker is open, or a call ended with
 * UNAVAILABLE or DEADLINE_EXCEEDED after the retries it was allowed. An
 * answer of the ledger (a held key, a refusal) is not.
 */
export function unreachable(err: unknown): boolean {
  return (
    err instanceof CircuitOpenError ||
    ((err instanceof UnavailableError || err instanceof DeadlineExceededError) &&
      (err.code === Code.Unavailable || err.code === Code.DeadlineExceeded))
  );
}

/** What an attempt that ended with err (undefined: OK) tells the breaker. */
export function attemptOutcome(err: unknown, callerAborted: boolean): AttemptOutcome {
  if (err === undefined) {
    return "success";
  }
  if (callerAborted || (err instanceof LedgerError && err.code === Code.Canceled)) {
    return "ignored";
  }
  if (err instanceof LedgerError) {
    return err.code === Code.Unavailable || err.code === Code.DeadlineExceeded ? "failure" : "success";
  }
  return "ignored"; // not an answer of the server (a TypeError of the client, say)
}

/** The breaker, budget, attempt limit, counters and fail-open bookkeeping of one client. */
export class Policies {
  readonly breaker: CircuitBreaker | undefined;
  readonly budget: RetryBudget | undefined;
  readonly maxAttempts: number | undefined;
  readonly fallback: Fallback;
  readonly failOpenQueue: number;
  readonly onFailOpen: FailOpenListener | undefined;
  readonly onFailOpenRecorded: FailOpenRecordedListener | undefined;
  calls = 0;
  retries = 0;
  retriesRefused = 0;
  failOpenRuns = 0;
  failOpenRecorded = 0;
  failOpenDiscarded = 0;
  /** Slots claimed by fail-open runs in progress, whose result is not queued yet. */
  #claimed = 0;
  /** The queued results, oldest first. */
  readonly queue: FailOpenRecord[] = [];
  /** Resolved whenever the queue may have become empty (flush waits on it). */
  #drained: (() => void)[] = [];

  /** Checks the options and makes the policies; throws a TypeError or RangeError naming a bad option. */
  constructor(options: PolicyOptions) {
    this.breaker =
      options.breaker === false ? undefined : new CircuitBreaker(options.breaker ?? {}, options.onBreakerChange, options.clock);
    this.budget = options.retryBudget === false ? undefined : new RetryBudget(options.retryBudget ?? {});
    if (options.maxAttempts !== undefined && !(Number.isInteger(options.maxAttempts) && options.maxAttempts >= 1)) {
      throw new RangeError(`ledgerd client: maxAttempts must be an integer ≥ 1 (or undefined: until the timeout), got ${options.maxAttempts}`);
    }
    this.maxAttempts = options.maxAttempts;
    this.fallback = checkFallback(options.fallback ?? "fail_closed", "fallback");
    this.failOpenQueue = options.failOpenQueue ?? defaultFailOpenQueue;
    if (!(Number.isInteger(this.failOpenQueue) && this.failOpenQueue >= 1)) {
      throw new RangeError(`ledgerd client: failOpenQueue must be an integer ≥ 1, got ${this.failOpenQueue}`);
    }
    this.onFailOpen = options.onFailOpen;
    this.onFailOpenRecorded = options.onFailOpenRecorded;
  }

  /** Counts a call's first attempt (and, but for heartbeats, feeds the budget). */
  beginCall(method: string): void {
    this.calls++;
    if (method !== "heartbeat") {
      this.budget?.onCall();
    }
  }

  /** The breaker's permission for an attempt (undefined without a breaker); throws a CircuitOpenError for a guarded call it refuses. */
  admit(method: string): Ticket | undefined {
    return this.breaker?.allow(!unguarded.has(method));
  }

  /** Tells the breaker how an attempt ended. */
  settle(ticket: Ticket | undefined, err: unknown, callerAborted: boolean): void {
    if (ticket && this.breaker) {
      this.breaker.record(ticket, attemptOutcome(err, callerAborted), err);
    }
  }

  /**
   * Whether a retryable failure may be retried: undefined (retry; the token
   * is spent and the retry counted), or the error to reject with instead
   * (the attempt limit was reached, the breaker opened and would refuse the
   * retry, or the budget is empty). Heartbeats are outside the budget and
   * the attempt limit: their own deadline bounds them.
   */
  refuseRetry(method: string, err: LedgerError, attempts: number): unknown {
    if (this.maxAttempts !== undefined && attempts >= this.maxAttempts && method !== "heartbeat") {
      return withNote(err, `gave up after ${attempts} attempt${attempts === 1 ? "" : "s"} (maxAttempts)`);
    }
    if (this.breaker && !unguarded.has(method)) {
      const refused = this.breaker.refusal();
      if (refused) {
        return refused;
      }
    }
    if (this.budget && method !== "heartbeat" && !this.budget.tryRetry()) {
      this.retriesRefused++;
      return withNote(err, `retry budget exhausted after ${attempts} attempt${attempts === 1 ? "" : "s"}`);
    }
    this.retries++;
    return undefined;
  }

  /** Claims a slot for a fail-open run and reports it; false when the queue is full (do() then fails closed). */
  startUnguarded(namespace: string, key: string, cause: unknown): boolean {
    if (this.queue.length + this.#claimed >= this.failOpenQueue) {
      return false;
    }
    this.#claimed++;
    this.failOpenRuns++;
    callHook("onFailOpen", () => this.onFailOpen?.(namespace, key, cause));
    return true;
  }

  /** Frees a slot whose run ended without a result (the work threw). */
  cancelSlot(): void {
    this.#claimed--;
    this.#notifyIfDrained();
  }

  /** Queues the result of a fail-open run, in the slot it claimed. */
  put(record: FailOpenRecord): void {
    this.#claimed--;
    this.queue.push(record);
  }

  /** Ends a queued record with its outcome, and reports it. */
  finish(record: FailOpenRecord, outcome: FailOpenOutcome): void {
    const i = this.queue.indexOf(record);
    if (i >= 0) {
      this.queue.splice(i, 1);
    }
    if (outcome === "recorded") {
      this.failOpenRecorded++;
    } else {
      this.failOpenDiscarded++;
    }
    callHook("onFailOpenRecorded", () => this.onFailOpenRecorded?.(record.namespace, record.key, outcome));
    this.#notifyIfDrained();
  }

  /** Fail-open results not recorded yet (runs in progress included). */
  get pending(): number {
    return this.queue.length + this.#claimed;
  }

  /** Resolves when nothing is pending, or after timeoutMs; with how many are still pending. */
  async waitDrained(timeoutMs: number | undefined): Promise<number> {
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    while (this.pending > 0 && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = deadline === Infinity ? undefined : setTimeout(resolve, deadline - Date.now());
        this.#drained.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.pending;
  }

  #notifyIfDrained(): void {
    if (this.pending === 0) {
      const waiters = this.#drained;
      this.#drained = [];
      waiters.forEach((wake) => wake());
    }
  }

  /** A snapshot of the counters. */
  stats(): Stats {
    return {
      calls: this.calls,
      retries: this.retries,
      retriesRefused: this.retriesRefused,
      // Without a breaker every call goes through, as a closed one lets it.
      breakerState: this.breaker?.state ?? "closed",
      breakerOpens: this.breaker?.opens ?? 0,
      failOpenRuns: this.failOpenRuns,
      failOpenRecorded: this.failOpenRecorded,
      failOpenDiscarded: this.failOpenDiscarded,
      failOpenPending: this.pending,
    };
  }
}

/** Returns value if it is a fallback policy; throws a TypeError naming the option and the allowed values otherwise. */
export function checkFallback(value: unknown, name: string): Fallback {
  if (value !== "fail_closed" && value !== "fail_open") {
    throw new TypeError(`ledgerd client: ${name} must be "fail_closed" or "fail_open", got ${JSON.stringify(value)}`);
  }
  return value;
}

/** A copy of a retryable error whose message says why it was not retried. */
function withNote(err: LedgerError, note: string): LedgerError {
  const ErrorClass = err.constructor as new (init: ConstructorParameters<typeof LedgerError>[0]) => LedgerError;
  return new ErrorClass({
    reason: err.reason,
    code: err.code,
    field: err.field,
    rawMessage: `${err.rawMessage} (${note})`,
    cause: err.cause,
    retryDelayMs: err.retryDelayMs,
  });
}

/** Calls an observation hook; what it throws is logged, never raised (a metrics hook must not break the pipeline). */
export function callHook(name: string, hook: () => void): void {
  try {
    hook();
  } catch (e) {
    console.warn(`ledgerd: the ${name} hook threw: ${e instanceof Error ? e.message : String(e)}`);
  }
}
