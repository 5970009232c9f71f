// doBatch: do() for many keys of one namespace, with one work call for the
// keys this worker acquires, as the Go client's DoBatch (see
// LedgerClient.doBatch for the semantics).

import { durationFromMs } from "@bufbuild/protobuf/wkt";

import type { InternalCallOptions, LedgerClient } from "./client.js";
import {
  afterward,
  bytesOf,
  dateOf,
  defaultOwner,
  errorMessage,
  fail,
  failedError,
  heartbeaterOf,
  leaseOf,
  LeaseState,
  release,
  replayedResult,
  resultBytes,
  type DoOptions,
  type DoResult,
  workControllerOf,
  type Lease,
} from "./do.js";
import { FailedError, InProgressError, InvalidArgumentError, isPermanent, itemError } from "./errors.js";
import type { ReserveResponse } from "./gen/ledger/v1/ledger_pb.js";
import { scope, type Scope } from "./retry.js";

/** The most items ledgerd takes in one batch call by default; doBatch splits longer lists into calls of this size. */
export const MAX_BATCH_ITEMS = 1000;

/** Options of {@link LedgerClient.doBatch}: do()'s, but for the fallback (a batch always fails closed). */
export type DoBatchOptions = Omit<DoOptions, "fallback">;

/**
 * The work of {@link LedgerClient.doBatch}: called once with the keys this
 * worker acquired (in the order given) and their leases (same order, for
 * their fencing tokens), and a signal that aborts when a lease cannot be
 * kept or the caller gives up. It resolves one result per key, in order.
 */
export type BatchWork = (
  keys: string[],
  batch: { signal: AbortSignal; leases: Lease[] },
) => Promise<(Uint8Array | string)[]> | (Uint8Array | string)[];

/** The outcome of one key of {@link LedgerClient.doBatch}: a result, or the error that says why there is none. */
export interface BatchResult {
  /** The key. */
  key: string;
  /** The work's result (recorded now), or the one recorded earlier (replayed); undefined when error is set. */
  result?: DoResult;
  /**
   * Why the key has no result: an {@link InProgressError} (another worker
   * holds it), a {@link FailedError} (it failed permanently), the work's
   * error, or the {@link LedgerError} of the key's Reserve or Complete
   * (LeaseLostError, InvalidArgumentError, ...).
   */
  error?: unknown;
}

/** doBatch(): see LedgerClient.doBatch. */
export async function runDoBatch(
  client: LedgerClient,
  namespace: string,
  keys: string[],
  work: BatchWork,
  options: DoBatchOptions,
): Promise<BatchResult[]> {
  if (typeof work !== "function") {
    throw new TypeError("ledgerd doBatch: work must be a function");
  }
  if (!Array.isArray(keys)) {
    throw new TypeError("ledgerd doBatch: keys must be an array of strings");
  }
  const owner = options.owner || defaultOwner();
  const s = scope(options.signal, options.timeoutMs, `ledgerd doBatch ${namespace}`);
  try {
    const results: BatchResult[] = [];
    for (let start = 0; start < keys.length; start += MAX_BATCH_ITEMS) {
      results.push(...(await doChunk(client, s, namespace, keys.slice(start, start + MAX_BATCH_ITEMS), work, options, owner)));
    }
    return results;
  } finally {
    s.dispose();
  }
}

async function doChunk(
  client: LedgerClient,
  s: Scope,
  namespace: string,
  keys: string[],
  work: BatchWork,
  options: DoBatchOptions,
  owner: string,
): Promise<BatchResult[]> {
  const fingerprint = options.fingerprint === undefined ? undefined : bytesOf(options.fingerprint);
  const leaseTtl = options.leaseTtlMs ? durationFromMs(options.leaseTtlMs) : undefined;
  const callOptions: InternalCallOptions = { signal: s.signal, deadline: s.deadline };
  const reserved = await client.reserveBatch(
    { namespace, owner, leaseTtl, items: keys.map((key) => ({ key, fingerprint, metadata: options.metadata })) },
    callOptions,
  );
  const results: BatchResult[] = keys.map((key) => ({ key }));
  const held: LeaseState[] = [];
  const heldAt: number[] = []; // held[j] is keys[heldAt[j]]
  for (const [i, r] of reserved.results.entries()) {
    const key = keys[i]!;
    let answer: ReserveResponse | undefined;
    if (r.result.case === "error") {
      if (r.result.value.reason !== "RESPONSE_TOO_LARGE") {
        results[i]!.error = itemError(r.result.value);
        continue;
      }
      // No room in the batch's answer: ask for this key alone (the same
      // owner gets the same lease back if one was granted).
      try {
        answer = await client.reserve({ namespace, key, owner, leaseTtl, fingerprint, metadata: options.metadata }, callOptions);
      } catch (e) {
        results[i]!.error = e;
        continue;
      }
    } else if (r.result.case === "reserved") {
      answer = r.result.value;
    }
    const outcome = answer?.outcome;
    switch (outcome?.case) {
      case "acquired":
        held.push(new LeaseState(namespace, key, owner, outcome.value));
        heldAt.push(i);
        break;
      case "completed":
        results[i]!.result = replayedResult(outcome.value);
        break;
      case "failed":
        results[i]!.error = failedError(namespace, key, outcome.value);
        break;
      case "inProgress":
        results[i]!.error = new InProgressError(key, outcome.value.owner);
        break;
      default:
        results[i]!.error = new Error("ledgerd doBatch: reserve returned an outcome this client does not know");
    }
  }
  if (held.length === 0) {
    return results;
  }
  const outcomes = await runBatch(client, s, held, work, options);
  heldAt.forEach((i, j) => {
    results[i] = outcomes[j]!;
  });
  return results;
}

/** Runs work for the held leases, with a heartbeater each, and records what it resolves. */
async function runBatch(client: LedgerClient, s: Scope, held: LeaseState[], work: BatchWork, options: DoBatchOptions): Promise<BatchResult[]> {
  const { controller: workController, dispose: stopFollowingCaller } = workControllerOf(s);
  const heartbeats = held.map((state) => heartbeaterOf(client, state, options.heartbeatIntervalMs, workController));
  const leases: Lease[] = held.map((state) => leaseOf(state, workController.signal));
  const keys = held.map((state) => state.key);

  let values: Uint8Array[] | undefined;
  let workError: unknown;
  let workFailed = false;
  heartbeats.forEach((h) => h.start());
  try {
    const returned = await work(keys, { signal: workController.signal, leases });
    if (!Array.isArray(returned) || returned.length !== keys.length) {
      throw new TypeError(
        `ledgerd doBatch: work must resolve one result per key: ${keys.length} keys, got ${Array.isArray(returned) ? returned.length : typeof returned}`,
      );
    }
    values = returned.map((v) => resultBytes(v));
  } catch (e) {
    workFailed = true;
    workError = e;
  }
  let heartbeatError: unknown;
  for (const h of heartbeats) {
    const err = await h.stop();
    heartbeatError ??= err;
  }
  stopFollowingCaller();

  const out: BatchResult[] = held.map((state) => ({ key: state.key }));
  if (!workFailed && values) {
    await completeBatch(client, s, held, values, out);
  } else if (heartbeatError !== undefined || s.signal.aborted) {
    const cause = heartbeatError ?? s.signal.reason;
    await Promise.all(held.map((state) => release(client, s, state).catch(() => undefined)));
    out.forEach((o) => (o.error = cause));
  } else {
    const retryable = !isPermanent(workError);
    await Promise.all(held.map((state) => fail(client, s, state, errorMessage(workError), retryable).catch(() => undefined)));
    out.forEach((o) => (o.error = workError));
  }
  return out;
}

/**
 * Records the work's results with CompleteBatch. A result the ledger
 * refuses as invalid is recorded as a retryable failure that says why, as
 * do() does.
 */
async function completeBatch(client: LedgerClient, s: Scope, held: LeaseState[], values: Uint8Array[], out: BatchResult[]): Promise<void> {
  const a = afterward(s);
  try {
    let completed;
    try {
      completed = await client.completeBatch(
        {
          namespace: held[0]!.namespace,
          items: held.map((state, j) => ({ key: state.key, fencingToken: state.token, result: values[j] })),
        },
        a.options,
      );
    } catch (e) {
      out.forEach((o) => (o.error = e));
      return;
    }
    const refused: number[] = [];
    for (const [j, r] of completed.results.entries()) {
      const state = held[j]!;
      if (r.result.case === "error") {
        const err = itemError(r.result.value);
        out[j]!.error = err;
        if (err instanceof InvalidArgumentError) {
          refused.push(j);
        }
        continue;
      }
      out[j]!.result = {
        value: values[j]!,
        fencingToken: state.token,
        attempt: state.acquired.attempt,
        replayed: false,
        completedAt: dateOf(r.result.case === "completed" ? r.result.value.completedAt : undefined),
        outcome: "ran",
        unguarded: false,
      };
    }
    await Promise.all(refused.map((j) => fail(client, s, held[j]!, errorMessage(out[j]!.error), true).catch(() => undefined)));
  } finally {
    a.dispose();
  }
}

