// ledgerd becomes unreachable while the work runs: a proxy between the
// client and the live ledgerd (LEDGERD_ADDR) is closed, or cut, mid-work.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { LeaseLostError, State, type Lease } from "../src/index.js";
import { aborted, newClient, PATIENCE_MS, T, TcpProxy, text, TIMEOUT_MS, uniqueKey, uniqueNamespace } from "./helpers.js";

const direct = newClient();
after(() => direct.close());

/** Rejects if promise does not settle within ms (the timer is cleared either way). */
async function within<V>(promise: Promise<V>, ms: number, what: string): Promise<V> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms}ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The timers (setTimeout/setInterval) alive in this process. */
function timers(): number {
  return process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
}

describe("ledgerd unreachable mid-work", () => {
  test("the work is aborted with LeaseLostError before another worker may take over, and do() rejects with it", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const timersBefore = timers();
    const proxy = await TcpProxy.start();
    const client = newClient({ address: proxy.addr }); // no timeout: do() is unbounded
    try {
      let started!: () => void;
      const working = new Promise<void>((resolve) => (started = resolve));
      let reason: unknown;
      const outcome = client.do(
        ns,
        key,
        async (lease: Lease) => {
          started();
          reason = await aborted(lease.signal, PATIENCE_MS);
          throw reason;
        },
        { leaseTtlMs: 1000, heartbeatIntervalMs: 100 },
      );
      await within(working, PATIENCE_MS, "the work's start");
      await proxy.close();
      await within(
        assert.rejects(outcome, (err: unknown) => {
          assert.ok(err instanceof LeaseLostError, `do() rejected with ${String(err)}`);
          assert.equal(err.reason, "LEASE_LOST");
          assert.match(err.message, /no heartbeat was acknowledged before the lease ran out/);
          assert.equal(err, reason, "the work's signal aborted with the same error");
          return true;
        }),
        PATIENCE_MS,
        "do()",
      );
      assert.ok(reason instanceof LeaseLostError);
      client.close();
      assert.equal(timers(), timersBefore, "do() left no timer behind");
      // The ledger still holds the lease (nobody answered for it); it runs out.
      const { entry } = await direct.lookup({ namespace: ns, key }, { timeoutMs: TIMEOUT_MS });
      assert.equal(entry?.state, State.LEASED);
      assert.equal(entry?.fencingToken, 1n);
      assert.equal(entry?.result.length, 0);
    } finally {
      client.close();
      await proxy.close();
    }
  });

  test("a result the work still resolves afterwards is recorded when nobody took over", T, async () => {
    const ns = uniqueNamespace();
    const key = uniqueKey();
    const proxy = await TcpProxy.start();
    const client = newClient({ address: proxy.addr });
    try {
      let started!: () => void;
      const working = new Promise<void>((resolve) => (started = resolve));
      let reason: unknown;
      const outcome = client.do(
        ns,
        key,
        async (lease: Lease) => {
          started();
          reason = await aborted(lease.signal, PATIENCE_MS);
          proxy.restore(); // ledgerd is back; nobody took the key over
          return "finished anyway";
        },
        { leaseTtlMs: 1000, heartbeatIntervalMs: 100, timeoutMs: TIMEOUT_MS },
      );
      await within(working, PATIENCE_MS, "the work's start");
      proxy.cut();
      const result = await within(outcome, TIMEOUT_MS + PATIENCE_MS, "do()");
      assert.ok(reason instanceof LeaseLostError);
      assert.equal(text(result.value), "finished anyway");
      assert.equal(result.fencingToken, 1n);
      assert.equal(result.replayed, false);
      const { entry } = await direct.lookup({ namespace: ns, key }, { timeoutMs: TIMEOUT_MS });
      assert.equal(entry?.state, State.COMPLETED);
      assert.equal(text(entry!.result), "finished anyway");
    } finally {
      client.close();
      await proxy.close();
    }
  });
});
