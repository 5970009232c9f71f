// The recorder of fail-open results: when do() ran the work unguarded
// because the ledger could not answer, its result waits in the client's
// queue until the ledger is back; the recorder then reserves the key (as the
// same owner, waiting for a holder as do() does) and completes it. A key
// completed by another worker meanwhile keeps that worker's result (ours is
// discarded, never written over); a key that failed discards ours too.

import { durationFromMs } from "@bufbuild/protobuf/wkt";

import type { InternalCallOptions, LedgerClient } from "./client.js";
import { CanceledError, CircuitOpenError, LeaseLostError, LedgerError } from "./errors.js";
import { unreachable, type FailOpenOutcome, type FailOpenRecord } from "./policy.js";
import { jitter } from "./retry.js";

// The wait the recorder asks of the server while another worker holds the key.
const recordServerWaitMs = 5_000;
// Bounds one attempt of the recorder's calls.
const recordCallTimeoutMs = 10_000;
// The backoff between two tries at a record the ledger could not take.
const recordInitialBackoffMs = 100;
const recordMaxBackoffMs = 5_000;

/** Records the client's fail-open results in the background, one at a time, oldest first. */
export class Recorder {
  readonly #client: LedgerClient;
  #running = false;
  #stopped = false;
  #wake: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #controller = new AbortController();

  constructor(client: LedgerClient) {
    this.#client = client;
  }

  /** Starts recording, or wakes a recorder waiting out a backoff. */
  wake(): void {
    if (this.#stopped) {
      return;
    }
    if (this.#running) {
      this.#wake?.();
      return;
    }
    this.#running = true;
    void this.#loop().finally(() => {
      this.#running = false;
      // A record queued after the loop saw an empty queue, but before this
      // ran, found the recorder still running: start again for it.
      if (!this.#stopped && this.#client.policies.queue.length > 0) {
        this.wake();
      }
    });
  }

  /** Stops recording; returns the records that were not recorded (lost). */
  stop(): FailOpenRecord[] {
    this.#stopped = true;
    this.#controller.abort();
    clearTimeout(this.#timer);
    this.#wake?.();
    return [...this.#client.policies.queue];
  }

  async #loop(): Promise<void> {
    const policies = this.#client.policies;
    while (!this.#stopped && policies.queue.length > 0) {
      const record = policies.queue[0]!;
      record.tries++;
      let outcome: FailOpenOutcome | undefined;
      let error: unknown;
      try {
        outcome = await this.#recordOne(record);
      } catch (e) {
        error = e;
      }
      if (outcome !== undefined) {
        if (outcome !== "recorded") {
          console.warn(`ledgerd: the fail-open result of ${record.namespace}/${record.key} was discarded (${outcome})`);
        }
        policies.finish(record, outcome);
        continue;
      }
      if (this.#stopped) {
        return;
      }
      // Move it to the back, so that one key held for long does not hold up the others.
      policies.queue.push(...policies.queue.splice(policies.queue.indexOf(record), 1));
      await this.#sleep(this.#backoff(record, error));
    }
  }

  /** The wait before the next try: backoff with jitter, but at least until an open breaker lets a probe through, and the server's RetryInfo. */
  #backoff(record: FailOpenRecord, error: unknown): number {
    let delay = jitter(Math.min(recordMaxBackoffMs, recordInitialBackoffMs * 2 ** Math.min(record.tries, 20)));
    const breaker = this.#client.policies.breaker;
    if (error instanceof CircuitOpenError && breaker) {
      delay = Math.max(delay, breaker.config.openForMs - (Date.now() - error.since.getTime()));
    }
    if (error instanceof LedgerError && error.retryDelayMs) {
      delay = Math.max(delay, error.retryDelayMs);
    }
    return delay;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = () => {
        clearTimeout(this.#timer);
        this.#wake = undefined;
        resolve();
      };
      this.#timer = setTimeout(() => this.#wake?.(), ms);
      // Pending records do not keep the process alive: close() or flush() waits for them.
      this.#timer.unref();
    });
  }

  /** One try at a record: its outcome, or undefined (try again later); throws the error that made it fail. */
  async #recordOne(record: FailOpenRecord): Promise<FailOpenOutcome | undefined> {
    const client = this.#client;
    const signal = this.#controller.signal;
    let response;
    try {
      response = await client.reserve(
        {
          namespace: record.namespace,
          key: record.key,
          owner: record.owner,
          fingerprint: record.fingerprint,
          metadata: record.metadata,
          waitTimeout: durationFromMs(recordServerWaitMs),
        },
        once(signal, recordCallTimeoutMs + recordServerWaitMs),
      );
    } catch (e) {
      if (unreachable(e) || e instanceof CanceledError || signal.aborted) {
        throw e;
      }
      // The ledger refused the key (fingerprint mismatch, permission...): this result can never be recorded.
      console.warn(`ledgerd: the ledger refused the fail-open result of ${record.namespace}/${record.key}: ${String(e)}`);
      return "discarded_failed";
    }
    const outcome = response.outcome;
    switch (outcome.case) {
      case "completed":
        // Our own Complete may have landed with its answer lost.
        return record.token !== 0n && outcome.value.fencingToken === record.token ? "recorded" : "discarded_completed";
      case "failed":
        return "discarded_failed";
      case "acquired":
        break;
      default:
        return undefined; // still held: ask again
    }
    const token = outcome.value.fencingToken;
    record.token = token;
    try {
      await client.complete(
        { namespace: record.namespace, key: record.key, fencingToken: token, result: record.result },
        once(signal, recordCallTimeoutMs),
      );
    } catch (e) {
      if (e instanceof LeaseLostError || unreachable(e) || e instanceof CanceledError || signal.aborted) {
        throw e; // taken over meanwhile, or unreachable: the next Reserve says more
      }
      // Refused (too large for the namespace, say): free the key with the reason.
      await client
        .fail(
          { namespace: record.namespace, key: record.key, fencingToken: token, error: { message: `fail-open result refused: ${String(e)}` }, retryable: true },
          { signal, timeoutMs: recordCallTimeoutMs },
        )
        .catch(() => undefined);
      console.warn(`ledgerd: the ledger refused the fail-open result of ${record.namespace}/${record.key}: ${String(e)}`);
      return "discarded_failed";
    }
    return "recorded";
  }
}


/** Options of one attempt, without retries: the recorder does its own backoff. */
function once(signal: AbortSignal, timeoutMs: number): InternalCallOptions {
  return { signal, timeoutMs, retry: false };
}
