// The thin methods and their retries.

import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, test } from "node:test";

import { Code } from "@connectrpc/connect";

import {
  createClient,
  LeaseLostError,
  ResultConflictError,
  State,
  UnavailableError,
  type LedgerError,
} from "../src/index.js";
import { LONG_LEASE_MS, newClient, T, uniqueKey, uniqueNamespace } from "./helpers.js";

const client = newClient();
after(() => client.close());
const bytes = (s: string) => new TextEncoder().encode(s);

test("reserve, heartbeat, complete, lookup: the lease's life through the thin methods", T, async () => {
  const namespace = uniqueNamespace();
  const key = uniqueKey();
  const ttl = BigInt(LONG_LEASE_MS / 1000); // the lease outlasts the test
  const reserved = await client.reserve({ namespace, key, owner: "a", leaseTtl: { seconds: ttl }, fingerprint: bytes("fp") });
  assert.equal(reserved.outcome.case, "acquired");
  const acquired = reserved.outcome.value!;
  assert.equal(acquired.fencingToken, 1n);
  assert.equal(acquired.leaseTtl?.seconds, ttl);

  // Idempotent: the same owner gets the same token back.
  const again = await client.reserve({ namespace, key, owner: "a", fingerprint: bytes("fp") });
  assert.equal(again.outcome.case, "acquired");
  assert.equal(again.outcome.value?.fencingToken, 1n);

  const other = await client.reserve({ namespace, key, owner: "b", fingerprint: bytes("fp") });
  assert.equal(other.outcome.case, "inProgress");
  assert.equal(other.outcome.value?.owner, "a");
  assert.ok((other.outcome.value?.retryAfter?.nanos ?? 0) > 0 || (other.outcome.value?.retryAfter?.seconds ?? 0n) > 0n);

  const beat = await client.heartbeat({ namespace, key, fencingToken: 1n, checkpoint: bytes("cp") });
  assert.ok(beat.leaseExpiresAt);
  await assert.rejects(client.heartbeat({ namespace, key, fencingToken: 7n }), LeaseLostError);

  const done = await client.complete({ namespace, key, fencingToken: 1n, result: bytes("r") });
  assert.equal(done.alreadyCompleted, false);
  const repeated = await client.complete({ namespace, key, fencingToken: 1n, result: bytes("r") });
  assert.equal(repeated.alreadyCompleted, true);
  await assert.rejects(client.complete({ namespace, key, fencingToken: 1n, result: bytes("other") }), (err: unknown) => {
    assert.ok(err instanceof ResultConflictError);
    assert.equal(err.code, Code.FailedPrecondition);
    return true;
  });

  const { entry } = await client.lookup({ namespace, key });
  assert.equal(entry?.state, State.COMPLETED);
  assert.deepEqual(entry?.checkpoint, bytes("cp"));
  assert.deepEqual(entry?.fingerprint, bytes("fp"));
});

test("fail and release through the thin methods", T, async () => {
  const namespace = uniqueNamespace();
  const key = uniqueKey();
  await client.reserve({ namespace, key, owner: "a" });
  const released = await client.release({ namespace, key, fencingToken: 1n });
  assert.equal(released.alreadyReleased, false);
  const retaken = await client.reserve({ namespace, key, owner: "b" });
  assert.equal(retaken.outcome.case === "acquired" && retaken.outcome.value.fencingToken, 2n);
  const failed = await client.fail({ namespace, key, fencingToken: 2n, error: { code: "bad_input", message: "no" }, retryable: false });
  assert.equal(failed.state, State.FAILED);
  const reserved = await client.reserve({ namespace, key, owner: "c" });
  assert.equal(reserved.outcome.case, "failed");
  assert.equal(reserved.outcome.value?.error?.code, "bad_input");
});

test("retries UNAVAILABLE with backoff until the call's timeout, then rejects with a TimeoutError", T, async () => {
  // A port nothing listens on: every attempt is refused (UNAVAILABLE).
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));

  const retries: { error: LedgerError; attempt: number; delayMs: number }[] = [];
  const down = createClient({
    address: `127.0.0.1:${port}`,
    insecure: true,
    retry: { initialBackoffMs: 20, maxBackoffMs: 80 },
    onRetry: (info) => retries.push(info),
  });
  try {
    const started = Date.now();
    await assert.rejects(down.lookup({ namespace: "ns", key: "k" }, { timeoutMs: 2000 }), (err: Error) => {
      assert.equal(err.name, "TimeoutError");
      return true;
    });
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 2000, `gave up after ${elapsed}ms, before the timeout`);
    assert.ok(retries.length >= 3, `only ${retries.length} retries`);
    for (const [i, retry] of retries.entries()) {
      assert.ok(retry.error instanceof UnavailableError, String(retry.error));
      assert.equal(retry.attempt, i + 1);
      assert.ok(retry.delayMs >= 10 && retry.delayMs < 80, `delay ${retry.delayMs}`);
    }

    // An abort signal ends the retries with its own reason.
    const controller = new AbortController();
    const reason = new Error("stop");
    const aborting = createClient({
      address: `127.0.0.1:${port}`,
      insecure: true,
      retry: { initialBackoffMs: 20, maxBackoffMs: 80 },
      onRetry: () => controller.abort(reason), // during the retries
    });
    try {
      await assert.rejects(aborting.reserve({ namespace: "ns", key: "k", owner: "o" }, { signal: controller.signal }), (err) => err === reason);
    } finally {
      aborting.close();
    }
  } finally {
    down.close();
  }
});

test("sends the client's headers", T, async () => {
  const seen: string[] = [];
  const withHeaders = newClient({
    headers: { "x-ledgerd-test": "hello" },
    interceptors: [
      (next) => async (req) => {
        seen.push(req.header.get("x-ledgerd-test") ?? "");
        return next(req);
      },
    ],
  });
  try {
    await withHeaders.reserve({ namespace: uniqueNamespace(), key: uniqueKey(), owner: "o" }, { headers: { "x-other": "1" } });
    assert.deepEqual(seen, ["hello"]);
  } finally {
    withHeaders.close();
  }
});
