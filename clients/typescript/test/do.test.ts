// client.do() against the live ledgerd in LEDGERD_ADDR.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { Code } from "@connectrpc/connect";

import {
  BadRequestSchema,
  FailedError,
  FingerprintMismatchError,
  InvalidArgumentError,
  LeaseLostError,
  NotFoundError,
  permanent,
  PermanentError,
  State,
  type Lease,
} from "../src/index.js";
import {
  aborted,
  forceRelease,
  LONG_LEASE_MS,
  newClient,
  PATIENCE_MS,
  ReserveWatch,
  T,
  text,
  TIMEOUT_MS,
  uniqueKey,
  uniqueNamespace,
  waitFor,
} from "./helpers.js";

const client = newClient();
after(() => client.close());

/** The timeout of a do() whose timeout must run out while the work runs: long enough for the Reserve before the work. */
const WORK_TIMEOUT_MS = 5_000;

/** Work for a do() that must replay or fail without running it. */
function mustNotRun(): Promise<string> {
  throw new Error("work ran, but should not have");
}

describe("do", () => {
  test("runs the work on a fresh key once, and replays its result the second time", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    let runs = 0;
    let seen: Lease | undefined;
    const first = await client.do(
      ns,
      key,
      async (lease) => {
        runs++;
        seen = lease;
        return "receipt-1";
      },
      { owner: "worker-a", metadata: { run: "2024-06-01" }, timeoutMs: TIMEOUT_MS },
    );
    assert.equal(runs, 1);
    assert.ok(seen);
    assert.equal(seen.namespace, ns);
    assert.equal(seen.key, key);
    assert.equal(seen.owner, "worker-a");
    assert.equal(seen.fencingToken, 1n);
    assert.equal(seen.attempt, 1);
    assert.equal(seen.takeover, false);
    assert.equal(seen.previousOwner, "");
    assert.equal(seen.checkpoint.length, 0);
    assert.equal(seen.leaseTtlMs, 30_000); // the namespace default
    assert.equal(seen.signal.aborted, false);

    assert.equal(text(first.value), "receipt-1");
    assert.equal(first.fencingToken, 1n);
    assert.equal(first.attempt, 1);
    assert.equal(first.replayed, false);
    assert.ok(Math.abs(first.completedAt.getTime() - Date.now()) < 60_000);

    const second = await client.do(ns, key, mustNotRun, { owner: "worker-b", timeoutMs: TIMEOUT_MS });
    assert.equal(runs, 1);
    assert.deepEqual(second, { ...first, attempt: 0, replayed: true, outcome: "replayed" });
    assert.equal(first.outcome, "ran");
    assert.equal(first.unguarded, false);

    const { entry } = await client.lookup({ namespace: ns, key }, { timeoutMs: TIMEOUT_MS });
    assert.equal(entry?.state, State.COMPLETED);
    assert.equal(entry?.owner, "worker-a");
    assert.equal(text(entry!.result), "receipt-1");
    assert.deepEqual(entry?.metadata, { run: "2024-06-01" });
  });

  test("stores a Uint8Array result as is, and defaults the owner to host/pid/random", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    let owner = "";
    const bytes = new Uint8Array([0, 1, 2, 255]);
    const result = await client.do(ns, key, async (lease) => {
      owner = lease.owner;
      return Buffer.from(bytes);
    });
    assert.deepEqual(result.value, bytes);
    assert.match(owner, new RegExp(`^.+/${process.pid}/[0-9a-f]{8}$`));
    const { entry } = await client.lookup({ namespace: ns, key });
    assert.deepEqual(entry?.result, bytes);
  });

  /** Reserves key for "holder" with a lease that outlasts the test, and returns its fencing token. */
  async function hold(ns: string, key: string): Promise<bigint> {
    const held = await client.reserve({ namespace: ns, key, owner: "holder", leaseTtl: { seconds: BigInt(LONG_LEASE_MS / 1000) } });
    assert.equal(held.outcome.case, "acquired");
    return held.outcome.value.fencingToken;
  }

  test("waits while another owner holds the key, then replays its result without running the work", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const token = await hold(ns, key);
    const watch = new ReserveWatch();
    const waiter = newClient({ interceptors: [watch.interceptor] });
    try {
      const result = waiter.do(ns, key, mustNotRun, { owner: "waiter", timeoutMs: TIMEOUT_MS });
      // The holder completes once the waiter has asked.
      await watch.sent();
      await client.complete({ namespace: ns, key, fencingToken: token, result: new TextEncoder().encode("by the holder") });
      const { value, replayed, fencingToken } = await result;
      assert.equal(text(value), "by the holder");
      assert.equal(replayed, true);
      assert.equal(fencingToken, token);
    } finally {
      waiter.close();
    }
  });

  test("the server holds the waiting Reserve: one call, answered when the holder completes", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const token = await hold(ns, key);
    const watch = new ReserveWatch();
    const waiter = newClient({ interceptors: [watch.interceptor] });
    try {
      const result = waiter.do(ns, key, mustNotRun, { owner: "waiter", timeoutMs: TIMEOUT_MS });
      await watch.sent();
      // The holder's lease outlasts the server's wait: only the completion
      // can answer this Reserve before its wait runs out.
      await client.complete({ namespace: ns, key, fencingToken: token, result: new TextEncoder().encode("by the holder") });
      const { value, replayed } = await result;
      assert.equal(text(value), "by the holder");
      assert.equal(replayed, true);
      assert.equal(watch.requests.length, 1, `${watch.requests.length} Reserves`);
      assert.ok(watch.requests[0]?.waitTimeout, "the Reserve asks the server to wait");
    } finally {
      waiter.close();
    }
  });

  test("with maxWaitMs 0 it polls on the retry-after hint instead, and still replays", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const token = await hold(ns, key);
    const watch = new ReserveWatch();
    const polling = newClient({ maxWaitMs: 0, interceptors: [watch.interceptor] });
    try {
      const result = polling.do(ns, key, mustNotRun, { owner: "poller", timeoutMs: TIMEOUT_MS });
      // The first poll was answered IN_PROGRESS (the poller asked again):
      // then the holder completes.
      await watch.sent(2);
      await client.complete({ namespace: ns, key, fencingToken: token, result: new TextEncoder().encode("by the holder") });
      const { value, replayed, fencingToken } = await result;
      assert.equal(text(value), "by the holder");
      assert.equal(replayed, true);
      assert.equal(fencingToken, token);
      assert.ok(watch.requests.length >= 2, `${watch.requests.length} Reserves`);
      for (const request of watch.requests) {
        assert.equal(request.waitTimeout, undefined, "a poll does not ask the server to wait");
      }
    } finally {
      polling.close();
    }
  });

  test("gives up waiting when its timeout runs out, with a TimeoutError", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    await hold(ns, key);
    const started = Date.now();
    await assert.rejects(client.do(ns, key, mustNotRun, { owner: "waiter", timeoutMs: 300 }), (err: Error) => {
      assert.equal(err.name, "TimeoutError");
      return true;
    });
    const elapsed = Date.now() - started;
    // The holder's lease outlasts the test: only the timeout could end it.
    assert.ok(elapsed >= 300, `gave up after ${elapsed}ms, before its timeout`);
  });

  test("refuses the same key with a different fingerprint", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    await client.do(ns, key, async () => "done", { fingerprint: "payload-a" });
    // The same fingerprint replays.
    const again = await client.do(ns, key, mustNotRun, { fingerprint: new TextEncoder().encode("payload-a") });
    assert.equal(again.replayed, true);
    await assert.rejects(client.do(ns, key, mustNotRun, { fingerprint: "payload-b" }), (err: unknown) => {
      assert.ok(err instanceof FingerprintMismatchError);
      assert.equal(err.reason, "FINGERPRINT_MISMATCH");
      assert.equal(err.code, Code.FailedPrecondition);
      return true;
    });
    // No fingerprint matches only none.
    await assert.rejects(client.do(ns, key, mustNotRun), FingerprintMismatchError);
  });

  test("names the field of an invalid argument, and changes nothing", T, async () => {
    const ns = uniqueNamespace();
    await assert.rejects(client.do(ns, "", mustNotRun), (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError);
      assert.equal(err.reason, "INVALID_ARGUMENT");
      assert.equal(err.code, Code.InvalidArgument);
      assert.equal(err.field, "key");
      // The details come from the Go server exactly as the proto says.
      const [badRequest] = (err.cause as import("@connectrpc/connect").ConnectError).findDetails(BadRequestSchema);
      assert.equal(badRequest?.fieldViolations[0]?.field, "key");
      assert.notEqual(badRequest?.fieldViolations[0]?.description, "");
      return true;
    });
    const key = uniqueKey();
    await assert.rejects(client.do(ns, key, mustNotRun, { leaseTtlMs: 10 }), (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError);
      assert.equal(err.field, "lease_ttl");
      return true;
    });
    await assert.rejects(client.do("-not a namespace", key, mustNotRun), (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError);
      assert.equal(err.field, "namespace");
      return true;
    });
    await assert.rejects(client.lookup({ namespace: ns, key }), NotFoundError);
  });

  test("a permanent failure fails the key: the next do() rejects with FailedError without running the work", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const cause = new Error("malformed record");
    await assert.rejects(
      client.do(ns, key, async () => {
        throw permanent(cause);
      }),
      (err: unknown) => {
        assert.ok(err instanceof PermanentError);
        assert.equal(err.cause, cause);
        return true;
      },
    );
    await assert.rejects(client.do(ns, key, mustNotRun), (err: unknown) => {
      assert.ok(err instanceof FailedError);
      assert.equal(err.namespace, ns);
      assert.equal(err.key, key);
      assert.equal(err.errorMessage, "malformed record");
      assert.equal(err.fencingToken, 1n);
      assert.equal(err.attempts, 1);
      assert.ok(err.failedAt.getTime() > 0);
      assert.match(err.message, /failed permanently at attempt 1 \(token 1\): malformed record/);
      return true;
    });
    const { entry } = await client.lookup({ namespace: ns, key });
    assert.equal(entry?.state, State.FAILED);
  });

  test("a retryable failure releases the key: the next do() is attempt 2 and resumes from the checkpoint", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const flaky = new Error("upstream timed out");
    await assert.rejects(
      client.do(ns, key, async (lease) => {
        lease.setCheckpoint("page-3");
        throw flaky;
      }, { owner: "first" }),
      (err: unknown) => err === flaky,
    );
    const { entry } = await client.lookup({ namespace: ns, key });
    assert.equal(entry?.state, State.RELEASED);
    assert.equal(entry?.error?.message, "upstream timed out");
    assert.equal(text(entry!.checkpoint), "page-3");

    let seen: Lease | undefined;
    const result = await client.do(ns, key, async (lease) => {
      seen = lease;
      return "second time lucky";
    }, { owner: "second" });
    assert.equal(seen?.attempt, 2);
    assert.equal(seen?.takeover, true);
    assert.equal(seen?.previousOwner, "first");
    assert.equal(seen?.fencingToken, 2n);
    assert.equal(text(seen!.checkpoint), "page-3");
    assert.equal(result.attempt, 2);
    assert.equal(result.fencingToken, 2n);
    assert.equal(result.replayed, false);
  });

  test("heartbeats keep the lease past its TTL, and carry the staged checkpoint", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const ttlMs = 3000;
    const probe = newClient();
    const leaseEndMs = async () => {
      const { entry } = await probe.lookup({ namespace: ns, key }, { timeoutMs: TIMEOUT_MS });
      return entry?.leaseExpiresAt ? Number(entry.leaseExpiresAt.seconds) * 1000 + entry.leaseExpiresAt.nanos / 1e6 : 0;
    };
    try {
      const result = await client.do(
        ns,
        key,
        async (lease) => {
          assert.equal(lease.leaseTtlMs, ttlMs);
          lease.setCheckpoint(new Uint8Array([7, 7]));
          // Work until a heartbeat has moved the lease's end a whole TTL past
          // where the grant put it: the lease has outlived its TTL.
          const grantedUntil = await leaseEndMs();
          await waitFor(async () => (await leaseEndMs()) >= grantedUntil + ttlMs, "a heartbeat extended the lease past its first TTL");
          const other = await probe.reserve({ namespace: ns, key, owner: "intruder", leaseTtl: { seconds: 1n } });
          assert.equal(other.outcome.case, "inProgress", "another owner got the key while the work ran");
          assert.equal(other.outcome.value?.owner, "holder");
          const { entry } = await probe.lookup({ namespace: ns, key });
          assert.deepEqual(entry?.checkpoint, new Uint8Array([7, 7]));
          assert.equal(lease.signal.aborted, false);
          return "kept";
        },
        // A heartbeat every 250ms: the lease would run out only if none got
        // through for 2.7s (its TTL less the client's margin).
        { owner: "holder", leaseTtlMs: ttlMs, heartbeatIntervalMs: 250, timeoutMs: TIMEOUT_MS },
      );
      assert.equal(result.fencingToken, 1n);
      assert.equal(result.attempt, 1);
    } finally {
      probe.close();
    }
  });

  test("a lease lost mid-work aborts lease.signal with LeaseLostError, and do() rejects with it", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const intruder = newClient();
    try {
      let reason: unknown;
      let intruderToken = 0n;
      const outcome = client.do(
        ns,
        key,
        async (lease) => {
          // The lease ends while the work runs (an admin's ForceRelease: a
          // lease left to run out would race the heartbeat that extends
          // it), and the intruder takes the key over.
          await forceRelease(ns, key);
          const taken = await intruder.reserve({ namespace: ns, key, owner: "intruder", leaseTtl: { seconds: 300n } });
          assert.equal(taken.outcome.case, "acquired");
          intruderToken = taken.outcome.value.fencingToken;
          assert.ok(intruderToken > 1n);
          reason = await aborted(lease.signal, PATIENCE_MS);
          throw reason;
        },
        { owner: "slow", leaseTtlMs: LONG_LEASE_MS, heartbeatIntervalMs: 200, timeoutMs: TIMEOUT_MS },
      );
      await assert.rejects(outcome, (err: unknown) => {
        assert.ok(err instanceof LeaseLostError);
        assert.equal(err.reason, "LEASE_LOST");
        assert.equal(err.code, Code.Aborted);
        return true;
      });
      assert.ok(reason instanceof LeaseLostError);
      // do() neither failed nor released the intruder's key.
      const { entry } = await client.lookup({ namespace: ns, key });
      assert.equal(entry?.state, State.LEASED);
      assert.equal(entry?.owner, "intruder");
      assert.equal(entry?.fencingToken, intruderToken);
    } finally {
      intruder.close();
    }
  });

  test("a lease lost while the work still resolves: the result is not recorded", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const intruder = newClient();
    try {
      const outcome = client.do(
        ns,
        key,
        async (lease) => {
          await forceRelease(ns, key);
          await intruder.reserve({ namespace: ns, key, owner: "intruder", leaseTtl: { seconds: 300n } });
          await aborted(lease.signal, PATIENCE_MS);
          return "stale result";
        },
        { owner: "slow", leaseTtlMs: LONG_LEASE_MS, heartbeatIntervalMs: 200, timeoutMs: TIMEOUT_MS },
      );
      await assert.rejects(outcome, LeaseLostError);
      const { entry } = await client.lookup({ namespace: ns, key });
      assert.equal(entry?.state, State.LEASED);
      assert.equal(entry?.result.length, 0);
    } finally {
      intruder.close();
    }
  });

  test("a caller abort during the work releases the lease and rejects with the abort reason", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const controller = new AbortController();
    const reason = new Error("shutting down");
    let workReason: unknown;
    const outcome = client.do(
      ns,
      key,
      async (lease) => {
        lease.setCheckpoint("half-way");
        controller.abort(reason); // the caller aborts while the work runs
        workReason = await aborted(lease.signal, PATIENCE_MS);
        throw new Error("interrupted");
      },
      { signal: controller.signal, leaseTtlMs: LONG_LEASE_MS },
    );
    await assert.rejects(outcome, (err: unknown) => err === reason);
    assert.equal(workReason, reason);
    const { entry } = await client.lookup({ namespace: ns, key });
    assert.equal(entry?.state, State.RELEASED);
    assert.equal(text(entry!.checkpoint), "half-way");

    // The key is free at once: the next do() takes it over.
    const next = await client.do(ns, key, async (lease) => `resumed from ${text(lease.checkpoint)}`, { timeoutMs: TIMEOUT_MS });
    assert.equal(text(next.value), "resumed from half-way");
    assert.equal(next.attempt, 2);
  });

  test("a timeout during the work aborts lease.signal, releases the lease and rejects with a TimeoutError", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    let workReason: unknown;
    await assert.rejects(
      client.do(ns, key, async (lease) => {
        workReason = await aborted(lease.signal, PATIENCE_MS);
        throw workReason;
      }, { leaseTtlMs: LONG_LEASE_MS, timeoutMs: WORK_TIMEOUT_MS }),
      (err: Error) => err.name === "TimeoutError" && err === workReason,
    );
    const { entry } = await client.lookup({ namespace: ns, key });
    assert.equal(entry?.state, State.RELEASED);
  });

  test("a heartbeat refused for another reason aborts lease.signal with its error; the lease is released", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    let workReason: unknown;
    await assert.rejects(
      client.do(ns, key, async (lease) => {
        lease.setCheckpoint(new Uint8Array((64 << 10) + 1)); // above the default 64 KiB
        workReason = await aborted(lease.signal, PATIENCE_MS);
        throw new Error("gave up");
      }, { leaseTtlMs: LONG_LEASE_MS, heartbeatIntervalMs: 250, timeoutMs: TIMEOUT_MS }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError);
        assert.equal(err.field, "checkpoint");
        assert.equal(err, workReason);
        return true;
      },
    );
    const { entry } = await client.lookup({ namespace: ns, key });
    assert.equal(entry?.state, State.RELEASED);
    assert.equal(entry?.checkpoint.length, 0);
  });

  test("rejects with the abort reason at once when the signal has already aborted", T, async () => {
    const reason = new Error("already gone");
    await assert.rejects(
      client.do(uniqueNamespace(), uniqueKey(), mustNotRun, { signal: AbortSignal.abort(reason) }),
      (err: unknown) => err === reason,
    );
  });

  test("a result the ledger refuses is recorded as a retryable failure, and rejects with InvalidArgumentError", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    await assert.rejects(
      client.do(ns, key, async () => new Uint8Array(2 << 20)), // above the default 1 MiB
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError);
        assert.equal(err.field, "result");
        return true;
      },
    );
    const { entry } = await client.lookup({ namespace: ns, key });
    assert.equal(entry?.state, State.RELEASED);
    assert.match(entry?.error?.message ?? "", /result/);
  });

  test("work that resolves something other than bytes or a string is a retryable failure", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    await assert.rejects(
      client.do(ns, key, (async () => 42) as unknown as () => Promise<string>),
      (err: unknown) => err instanceof TypeError && /Uint8Array or a string/.test(err.message),
    );
    const { entry } = await client.lookup({ namespace: ns, key });
    assert.equal(entry?.state, State.RELEASED);
  });
});
