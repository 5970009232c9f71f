// Retries, waits and signals.
//
// Every ledgerd RPC is retry-safe (see ledger.proto), so the client retries a
// call that failed for a reason that means "try again" (UNAVAILABLE, and
// DEADLINE_EXCEEDED while the caller's own time has not run out) until it
// succeeds or the caller's signal aborts, with exponential backoff and
// jitter. As in the Go client, the caller's signal or timeout is the usual
// bound, not a count of attempts: a database failover can take longer than
// a few quick retries. Around every attempt the client's policies decide:
// the circuit breaker may refuse it at once, the retry budget may refuse a
// retry, and maxAttempts may end the call (see policy.ts).

import { Code } from "@connectrpc/connect";

import { LedgerError, toLedgerError } from "./errors.js";
import type { Policies } from "./policy.js";

/** How the client backs off between two attempts of a failed call. */
export interface RetryPolicy {
  /** The wait before the first retry, in ms (default 50). */
  initialBackoffMs: number;
  /** The cap of the wait between two attempts, in ms (default 5000). */
  maxBackoffMs: number;
}

/** The default {@link RetryPolicy}: 50ms, doubling, at most 5s, with jitter. */
export const defaultRetryPolicy: Readonly<RetryPolicy> = Object.freeze({
  initialBackoffMs: 50,
  maxBackoffMs: 5000,
});

/**
 * Called before every retry of a failed call, with the error that made the
 * client retry, the number of the attempt that failed (1 for the first) and
 * the wait before the next one, in ms. Meant for logs and metrics.
 */
export type RetryListener = (info: { method: string; error: LedgerError; attempt: number; delayMs: number }) => void;

/**
 * Reports whether a failed call should be made again: the server or its
 * database could not be reached, or the server ran out of time (when the
 * caller's signal has not aborted; withRetries checks that first).
 */
export function isRetryable(err: unknown): boolean {
  return err instanceof LedgerError && (err.code === Code.Unavailable || err.code === Code.DeadlineExceeded);
}

/**
 * Calls rpc until it succeeds, fails with an error that is not worth
 * retrying (rejected as a LedgerError), signal aborts (rejected with the
 * signal's reason), or the policies end it: the breaker refuses an attempt
 * (a CircuitOpenError), or a retry is refused by maxAttempts or the retry
 * budget (the last error, saying so). Every attempt's outcome is counted by
 * the breaker. With retry false, one attempt is made.
 */
export async function withRetries<T>(
  method: string,
  rpc: () => Promise<T>,
  signal: AbortSignal,
  policy: RetryPolicy,
  onRetry: RetryListener | undefined,
  policies: Policies,
  retry = true,
): Promise<T> {
  let backoff = policy.initialBackoffMs;
  policies.beginCall(method);
  for (let attempt = 1; ; attempt++) {
    signal.throwIfAborted();
    const ticket = policies.admit(method);
    let err: unknown;
    try {
      const response = await rpc();
      policies.settle(ticket, undefined, false);
      return response;
    } catch (e) {
      err = toLedgerError(e);
      policies.settle(ticket, err, signal.aborted);
    }
    // This attempt most likely failed because the signal aborted.
    signal.throwIfAborted();
    if (!isRetryable(err) || !retry) {
      throw err;
    }
    const refused = policies.refuseRetry(method, err as LedgerError, attempt);
    if (refused !== undefined) {
      throw refused;
    }
    const delayMs = retryDelay(backoff, err as LedgerError);
    onRetry?.({ method, error: err as LedgerError, attempt, delayMs });
    await sleep(delayMs, signal);
    backoff = Math.min(2 * backoff, policy.maxBackoffMs);
  }
}

/**
 * The wait before a retry: the backoff with jitter, but never less than the
 * server's RetryInfo retry_delay when the error carries one.
 */
export function retryDelay(backoffMs: number, err: LedgerError): number {
  return Math.max(jitter(backoffMs), err.retryDelayMs ?? 0);
}

/** Returns a random duration in [ms/2, ms), so that clients that failed together do not retry together. */
export function jitter(ms: number): number {
  return ms / 2 + Math.random() * (ms / 2);
}

/**
 * Resolves after ms, or rejects with signal's reason as soon as it aborts.
 * The timer and the listener are removed either way.
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A signal that aborts when the caller's signal does or when the timeout
 * runs out, whichever comes first, and the deadline it implies. dispose()
 * clears the timer and removes the listener; call it before settling.
 */
export interface Scope {
  /** Aborts with the caller's reason, or with a TimeoutError DOMException. */
  readonly signal: AbortSignal;
  /** When the timeout runs out (Date.now() scale), or undefined for none. */
  readonly deadline: number | undefined;
  /** The time left until the deadline in ms, or undefined for none. */
  remainingMs(): number | undefined;
  /** Clears the timer and removes the listener. */
  dispose(): void;
}

/** Makes a {@link Scope} of the caller's signal and timeout; what is undefined does not bound it. */
export function scope(signal: AbortSignal | undefined, timeoutMs: number | undefined, what: string): Scope {
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let deadline: number | undefined;
  const onAbort = () => controller.abort(signal?.reason);
  if (signal?.aborted) {
    controller.abort(signal.reason);
  } else {
    signal?.addEventListener("abort", onAbort, { once: true });
  }
  if (timeoutMs !== undefined && Number.isFinite(timeoutMs) && !controller.signal.aborted) {
    deadline = Date.now() + Math.max(0, timeoutMs);
    timer = setTimeout(() => {
      controller.abort(new DOMException(`${what} timed out after ${timeoutMs}ms`, "TimeoutError"));
    }, Math.max(0, timeoutMs));
  }
  return {
    signal: controller.signal,
    deadline,
    remainingMs: () => (deadline === undefined ? undefined : Math.max(0, deadline - Date.now())),
    dispose() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    },
  };
}
