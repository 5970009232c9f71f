// The client against a live ledgerd that authenticates. The environment
// names the server and two tokens:
//
//   LEDGERD_AUTH_ADDR          a ledgerd with authentication
//   LEDGERD_AUTH_TOKEN         a token whose principal is a worker on "auth-*"
//   LEDGERD_AUTH_READER_TOKEN  a token whose principal is a reader (not a
//                              worker) on "auth-*"
//
// Without LEDGERD_AUTH_ADDR every test here is reported as skipped, with the
// reason; with it, a missing token fails the file.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { Code } from "@connectrpc/connect";

import {
  createClient,
  NotFoundError,
  PermissionDeniedError,
  State,
  UnauthenticatedError,
  type ClientOptions,
  type LedgerClient,
} from "../src/index.js";

const addr = process.env["LEDGERD_AUTH_ADDR"]?.trim() ?? "";
const workerToken = process.env["LEDGERD_AUTH_TOKEN"]?.trim() ?? "";
const readerToken = process.env["LEDGERD_AUTH_READER_TOKEN"]?.trim() ?? "";
if (addr !== "") {
  const missing = [
    ["LEDGERD_AUTH_TOKEN", workerToken],
    ["LEDGERD_AUTH_READER_TOKEN", readerToken],
  ].filter(([, value]) => value === "");
  if (missing.length > 0) {
    throw new Error(
      `LEDGERD_AUTH_ADDR is set, but not ${missing.map(([name]) => name).join(" nor ")}: the authentication tests cannot run`,
    );
  }
}

/** The timeout of a call whose duration is not what the test is about. */
const TIMEOUT_MS = 60_000;

const T = {
  timeout: 4 * TIMEOUT_MS,
  skip:
    addr === ""
      ? "LEDGERD_AUTH_ADDR is not set: the authentication tests need a ledgerd that authenticates, with " +
        "LEDGERD_AUTH_TOKEN (worker on auth-*) and LEDGERD_AUTH_READER_TOKEN (reader on auth-*)"
      : false,
};

/** Every test's keys are in this namespace; runs share it, so keys are unique. */
const namespace = "auth-x";
const uniqueKey = () => `ts-${randomUUID()}`;
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** Runs f with a plaintext client of the ledgerd, closed afterwards. */
async function withClient<T>(options: Partial<ClientOptions>, f: (client: LedgerClient) => Promise<T>): Promise<T> {
  const client = createClient({ address: addr, insecure: true, ...options });
  try {
    return await f(client);
  } finally {
    client.close();
  }
}

const mustNotRun = (): string => {
  throw new Error("the work must not run");
};

test("a worker token completes a key; a reader token may look it up", T, async () => {
  const key = uniqueKey();
  await withClient({ token: workerToken }, async (worker) => {
    const result = await worker.do(namespace, key, () => "done with a token", { timeoutMs: TIMEOUT_MS });
    assert.equal(text(result.value), "done with a token");
    assert.equal(result.replayed, false);
    assert.equal((await worker.do(namespace, key, mustNotRun, { timeoutMs: TIMEOUT_MS })).replayed, true);
  });
  await withClient({ token: readerToken }, async (reader) => {
    const { entry } = await reader.lookup({ namespace, key }, { timeoutMs: TIMEOUT_MS });
    assert.equal(entry?.state, State.COMPLETED);
    assert.equal(text(entry?.result ?? new Uint8Array()), "done with a token");
  });
});

test("tokenFile", T, async () => {
  const dir = mkdtempSync(join(tmpdir(), "ledgerd-auth-"));
  try {
    const file = join(dir, "token");
    writeFileSync(file, `${workerToken}\n`, { mode: 0o600 });
    const result = await withClient({ tokenFile: file }, (client) => client.do(namespace, uniqueKey(), () => "from a file", { timeoutMs: TIMEOUT_MS }));
    assert.equal(text(result.value), "from a file");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a reader token is denied the work: PermissionDeniedError, and nothing is reserved", T, async () => {
  const key = uniqueKey();
  await withClient({ token: readerToken }, async (reader) => {
    await assert.rejects(reader.do(namespace, key, mustNotRun, { timeoutMs: TIMEOUT_MS }), (err: unknown) => {
      assert.ok(err instanceof PermissionDeniedError, String(err));
      assert.equal(err.reason, "PERMISSION_DENIED");
      assert.equal(err.code, Code.PermissionDenied);
      return true;
    });
    await assert.rejects(reader.lookup({ namespace, key }, { timeoutMs: TIMEOUT_MS }), NotFoundError);
  });
});

test("a worker token is denied outside its namespaces", T, async () => {
  await withClient({ token: workerToken }, async (worker) => {
    await assert.rejects(worker.do("other-ns", uniqueKey(), mustNotRun, { timeoutMs: TIMEOUT_MS }), PermissionDeniedError);
  });
});

test("without a token, or with an unknown one: UnauthenticatedError, at once", T, async () => {
  for (const credentials of [{}, { token: "ldg_0123456789abcdef_not-a-real-secret" }]) {
    let retries = 0;
    const options: Partial<ClientOptions> = { ...credentials, onRetry: () => retries++ };
    await withClient(options, async (client) => {
      await assert.rejects(client.do(namespace, uniqueKey(), mustNotRun, { timeoutMs: TIMEOUT_MS }), (err: unknown) => {
        assert.ok(err instanceof UnauthenticatedError, String(err));
        assert.equal(err.code, Code.Unauthenticated);
        return true;
      });
    });
    assert.equal(retries, 0, "UNAUTHENTICATED is not retried");
  }
});
