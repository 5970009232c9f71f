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
import { aborted, delay, newClient, text, uniqueKey, uniqueNamespace } from "./helpers.js";

const client = newClient();
after(() => client.close());

const T = { timeout: 30_000 };

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
      { owner: "worker-a", metadata: { run: "2024-06-01" }, timeoutMs: 10_000 },
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

    const second = await client.do(ns, key, mustNotRun, { owner: "worker-b", timeoutMs: 10_000 });
    assert.equal(runs, 1);
    assert.deepEqual(second, { ...first, attempt: 0, replayed: true });

    const { entry } = await client.lookup({ namespace: ns, key }, { timeoutMs: 5000 });
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

  test("waits while another owner holds the key, then replays its result without running the work", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const held = await client.reserve({ namespace: ns, key, owner: "holder", leaseTtl: { seconds: 10n } });
    assert.equal(held.outcome.case, "acquired");
    const token = held.outcome.value.fencingToken;
    const completion = delay(500).then(() =>
      client.complete({ namespace: ns, key, fencingToken: token, result: new TextEncoder().encode("by the holder") }),
    );

    const started = Date.now();
    const result = await client.do(ns, key, mustNotRun, { owner: "waiter", timeoutMs: 10_000 });
    const elapsed = Date.now() - started;
    await completion;
    assert.equal(text(result.value), "by the holder");
    assert.equal(result.replayed, true);
    assert.equal(result.fencingToken, token);
    assert.ok(elapsed >= 400, `resolved after ${elapsed}ms, before the holder completed`);
    assert.ok(elapsed < 5000, `resolved only after ${elapsed}ms`);
  });

  test("the server holds the waiting Reserve: one call, answered as soon as the holder completes", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    let reserves = 0;
    const counting = newClient({
      interceptors: [(next) => async (req) => {
        if (req.method.name === "Reserve") {
          reserves++;
        }
        return next(req);
      }],
    });
    try {
      const held = await client.reserve({ namespace: ns, key, owner: "holder", leaseTtl: { seconds: 10n } });
      assert.equal(held.outcome.case, "acquired");
      const token = held.outcome.value.fencingToken;
      const completion = delay(500).then(() =>
        client.complete({ namespace: ns, key, fencingToken: token, result: new TextEncoder().encode("by the holder") }),
      );
      const started = Date.now();
      const result = await counting.do(ns, key, mustNotRun, { owner: "waiter", timeoutMs: 10_000 });
      const elapsed = Date.now() - started;
      await completion;
      assert.equal(text(result.value), "by the holder");
      assert.equal(result.replayed, true);
      assert.equal(reserves, 1, `${reserves} Reserves`);
      assert.ok(elapsed >= 400 && elapsed < 900, `resolved after ${elapsed}ms`);
    } finally {
      counting.close();
    }
  });

  test("with maxWaitMs 0 it polls on the retry-after hint instead, and still replays", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    let reserves = 0;
    const polling = newClient({
      maxWaitMs: 0,
      interceptors: [(next) => async (req) => {
        if (req.method.name === "Reserve") {
          reserves++;
        }
        return next(req);
      }],
    });
    try {
      const held = await client.reserve({ namespace: ns, key, owner: "holder", leaseTtl: { nanos: 300_000_000 } });
      assert.equal(held.outcome.case, "acquired");
      const token = held.outcome.value.fencingToken;
      const completion = delay(1500).then(() =>
        client.complete({ namespace: ns, key, fencingToken: token, result: new TextEncoder().encode("too late") }),
      );
      // The holder's lease (300ms) runs out long before it completes: the
      // poller, asking again on the retry-after hint, takes over and runs the work.
      const result = await polling.do(ns, key, async (lease) => `took over from ${lease.previousOwner}`, {
        owner: "poller",
        timeoutMs: 10_000,
      });
      await assert.rejects(completion, LeaseLostError);
      assert.equal(text(result.value), "took over from holder");
      assert.equal(result.fencingToken, 2n);
      assert.ok(reserves >= 2, `${reserves} Reserves`);
    } finally {
      polling.close();
    }
  });

  test("gives up waiting when its timeout runs out, with a TimeoutError", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    await client.reserve({ namespace: ns, key, owner: "holder", leaseTtl: { seconds: 30n } });
    const started = Date.now();
    await assert.rejects(client.do(ns, key, mustNotRun, { owner: "waiter", timeoutMs: 300 }), (err: Error) => {
      assert.equal(err.name, "TimeoutError");
      return true;
    });
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 250 && elapsed < 3000, `gave up after ${elapsed}ms`);
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
    const probe = newClient();
    try {
      const result = await client.do(
        ns,
        key,
        async (lease) => {
          assert.equal(lease.leaseTtlMs, 200);
          lease.setCheckpoint(new Uint8Array([7, 7]));
          // Three TTLs of work: without heartbeats the lease would be gone.
          await delay(600);
          const other = await probe.reserve({ namespace: ns, key, owner: "intruder", leaseTtl: { nanos: 100_000_000 } });
          assert.equal(other.outcome.case, "inProgress", "another owner got the key while the work ran");
          assert.equal(other.outcome.value?.owner, "holder");
          const { entry } = await probe.lookup({ namespace: ns, key });
          assert.equal(entry?.leaseExpired, false);
          assert.deepEqual(entry?.checkpoint, new Uint8Array([7, 7]));
          assert.equal(lease.signal.aborted, false);
          return "kept";
        },
        { owner: "holder", leaseTtlMs: 200, timeoutMs: 10_000 },
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
      const outcome = client.do(
        ns,
        key,
        async (lease) => {
          // Heartbeats are too rare for the lease: it runs out, and the
          // intruder takes the key over.
          await delay(300);
          const taken = await intruder.reserve({ namespace: ns, key, owner: "intruder", leaseTtl: { seconds: 10n } });
          assert.equal(taken.outcome.case, "acquired");
          assert.equal(taken.outcome.value?.fencingToken, 2n);
          reason = await aborted(lease.signal, 5000);
          throw reason;
        },
        { owner: "slow", leaseTtlMs: 100, heartbeatIntervalMs: 600, timeoutMs: 10_000 },
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
      assert.equal(entry?.fencingToken, 2n);
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
          await delay(300);
          await intruder.reserve({ namespace: ns, key, owner: "intruder", leaseTtl: { seconds: 10n } });
          await aborted(lease.signal, 5000);
          return "stale result";
        },
        { owner: "slow", leaseTtlMs: 100, heartbeatIntervalMs: 600, timeoutMs: 10_000 },
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
        setTimeout(() => controller.abort(reason), 100);
        workReason = await aborted(lease.signal, 5000);
        throw new Error("interrupted");
      },
      { signal: controller.signal, leaseTtlMs: 10_000 },
    );
    await assert.rejects(outcome, (err: unknown) => err === reason);
    assert.equal(workReason, reason);
    const { entry } = await client.lookup({ namespace: ns, key });
    assert.equal(entry?.state, State.RELEASED);
    assert.equal(text(entry!.checkpoint), "half-way");

    // The key is free at once: the next do() takes it over.
    const next = await client.do(ns, key, async (lease) => `resumed from ${text(lease.checkpoint)}`, { timeoutMs: 10_000 });
    assert.equal(text(next.value), "resumed from half-way");
    assert.equal(next.attempt, 2);
  });

  test("a timeout during the work aborts lease.signal, releases the lease and rejects with a TimeoutError", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    let workReason: unknown;
    await assert.rejects(
      client.do(ns, key, async (lease) => {
        workReason = await aborted(lease.signal, 5000);
        throw workReason;
      }, { timeoutMs: 200 }),
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
        workReason = await aborted(lease.signal, 5000);
        throw new Error("gave up");
      }, { leaseTtlMs: 150, timeoutMs: 10_000 }),
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
