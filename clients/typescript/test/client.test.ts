// The thin methods and their retries.

import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { createServer } from "node:net";
import { after, test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import {
  CanceledError,
  createClient,
  DeadlineExceededError,
  isRetryable,
  LeaseLostError,
  ResultConflictError,
  State,
  toLedgerError,
  UnavailableError,
  type LedgerError,
} from "../src/index.js";
import { attemptError } from "../src/client.js";
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
    // Without them the breaker would open, and the budget end the retries,
    // before the timeout: this test is about the backoff alone.
    breaker: false,
    retryBudget: false,
  });
  try {
    const started = Date.now();
    await assert.rejects(down.lookup({ namespace: "ns", key: "k" }, { timeoutMs: 2000 }), (err: Error) => {
      assert.equal(err.name, "TimeoutError");
      return true;
    });
    const elapsed = Date.now() - started;
    // Date.now() counts whole milliseconds, and a timer may fire within the
    // last one: 1999 is the timeout, 1998 would be giving up early.
    assert.ok(elapsed >= 1999, `gave up after ${elapsed}ms, before the timeout`);
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

/**
 * Starts an HTTP/2 server that answers no call: it resets each stream with
 * RST_STREAM CANCEL, when the call's grpc-timeout runs out (as a gRPC server
 * does at a call's deadline), or at once. Resolves with its address and a
 * function that stops it.
 */
async function resettingServer(when: "at the deadline" | "at once"): Promise<{ address: string; stop: () => Promise<void> }> {
  const server = http2.createServer();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  server.on("stream", (stream, headers) => {
    stream.on("error", () => undefined);
    const timeout = /^(\d+)m$/.exec(String(headers["grpc-timeout"] ?? ""));
    const reset = () => stream.close(http2.constants.NGHTTP2_CANCEL);
    if (when === "at once" || !timeout) {
      reset();
      return;
    }
    const timer = setTimeout(() => {
      timers.delete(timer);
      reset();
    }, Number(timeout[1]));
    timers.add(timer);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    address: `127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        timers.forEach(clearTimeout);
        server.close(() => resolve());
      }),
  };
}

test("an attempt the server resets at its deadline is DEADLINE_EXCEEDED and retried; the call ends with its TimeoutError", T, async () => {
  const server = await resettingServer("at the deadline");
  const retries: LedgerError[] = [];
  const impatient = createClient({
    address: server.address,
    insecure: true,
    attemptTimeoutMs: 100,
    onRetry: ({ error }) => retries.push(error),
    breaker: false, // every attempt ends DEADLINE_EXCEEDED: the breaker would open
    retryBudget: false,
  });
  try {
    await assert.rejects(impatient.lookup({ namespace: "ns", key: "k" }, { timeoutMs: 2000 }), (err: Error) => {
      assert.equal(err.name, "TimeoutError", String(err));
      return true;
    });
    assert.ok(retries.length >= 1, "the attempts were retried");
    for (const error of retries) {
      assert.ok(error instanceof DeadlineExceededError, String(error));
    }
  } finally {
    impatient.close();
    await server.stop();
  }
});

test("a reset (CANCELED) once the attempt's grpc-timeout ran out is DEADLINE_EXCEEDED; before, it stays CANCELED", () => {
  // What a gRPC server does at a call's deadline, seen by a client whose
  // own timer has not fired yet (its event loop was busy): the ordering a
  // busy machine produces, which a live server cannot be made to show on cue.
  const reset = () => new ConnectError("http/2 stream closed with error code CANCEL (0x8)", Code.Canceled);
  const live = new AbortController().signal;
  const late = attemptError(reset(), 100, Date.now() - 150, live);
  assert.ok(late instanceof ConnectError);
  assert.equal(late.code, Code.DeadlineExceeded);
  assert.ok(isRetryable(toLedgerError(late)));
  for (const [what, err] of [
    ["before the deadline", attemptError(reset(), 60_000, Date.now(), live)],
    ["without a deadline", attemptError(reset(), undefined, Date.now() - 150, live)],
    ["after the caller's abort", attemptError(reset(), 100, Date.now() - 150, AbortSignal.abort())],
  ] as const) {
    assert.equal((err as ConnectError).code, Code.Canceled, what);
  }
  const other = new ConnectError("no", Code.Unavailable);
  assert.equal(attemptError(other, 100, Date.now() - 150, live), other);
});

test("a call the server resets before its deadline is CANCELED, and not retried", T, async () => {
  const server = await resettingServer("at once");
  const retries: LedgerError[] = [];
  const patient = createClient({ address: server.address, insecure: true, onRetry: ({ error }) => retries.push(error) });
  try {
    await assert.rejects(patient.lookup({ namespace: "ns", key: "k" }, { timeoutMs: 60_000 }), CanceledError);
    assert.deepEqual(retries, []);
  } finally {
    patient.close();
    await server.stop();
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
