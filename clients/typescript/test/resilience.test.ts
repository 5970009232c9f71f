// The client while ledgerd is out of reach, and with several replicas: the
// circuit breaker, the fallback policies of do() (fail closed, fail open
// with its recorder), batches, the user agent, and round robin over
// replicas, against the live ledgerd (LEDGERD_ADDR), made unreachable
// through TCP proxies of the test's own.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, describe, test } from "node:test";

import {
  CircuitOpenError,
  createClient,
  FailedError,
  InProgressError,
  permanent,
  State,
  UnavailableError,
  VERSION,
  type BreakerState,
  type FailOpenOutcome,
  type Lease,
} from "../src/index.js";
import { addr, distPath, LONG_LEASE_MS, newClient, PATIENCE_MS, T, TcpProxy, text, TIMEOUT_MS, uniqueKey, uniqueNamespace, waitFor } from "./helpers.js";

const direct = newClient();
after(() => direct.close());

describe("ledgerd out of reach", () => {
  test("fail closed (the default): the work does not run; the breaker opens, then fails calls at once, and its probe closes it", T, async () => {
    const proxy = await TcpProxy.start();
    const changes: string[] = [];
    const client = newClient({
      address: proxy.addr,
      maxAttempts: 1,
      breaker: { failureThreshold: 2, openForMs: 200 },
      onBreakerChange: (from: BreakerState, to: BreakerState) => changes.push(`${from}->${to}`),
    });
    const ns = uniqueNamespace();
    let runs = 0;
    const work = async () => {
      runs++;
      return "r";
    };
    try {
      proxy.cut();
      for (const key of ["k1", "k2"]) {
        await assert.rejects(client.do(ns, key, work, { timeoutMs: TIMEOUT_MS }), (err: unknown) => {
          assert.ok(err instanceof UnavailableError && !(err instanceof CircuitOpenError), String(err));
          return true;
        });
      }
      await assert.rejects(client.do(ns, "k3", work, { timeoutMs: TIMEOUT_MS }), (err: unknown) => {
        assert.ok(err instanceof CircuitOpenError, String(err));
        assert.match(err.message, /^ledgerd: circuit open since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+\.\ds ago\), last error: UNAVAILABLE/);
        return true;
      });
      assert.equal(runs, 0, "the work never ran");
      assert.equal(client.breakerState === "open" || client.breakerState === "half_open", true);
      proxy.restore();
      // The first call after openForMs is the probe; its success closes the breaker.
      const result = await waitFor(
        () => client.do(ns, "k4", work, { timeoutMs: TIMEOUT_MS }).catch((e: unknown) => (e instanceof CircuitOpenError ? undefined : Promise.reject(e))),
        "the probe closed the breaker",
      );
      assert.equal(result!.outcome, "ran");
      assert.equal(client.breakerState, "closed");
      assert.deepEqual(changes, ["closed->open", "open->half_open", "half_open->closed"]);
      const stats = client.stats();
      assert.equal(stats.breakerOpens, 1);
      assert.equal(stats.failOpenRuns, 0);
      await assert.rejects(direct.lookup({ namespace: ns, key: "k1" }), /NOT_FOUND/);
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  test("fail open: the work runs unguarded, is reported, and its result is recorded once ledgerd is back", T, async () => {
    const proxy = await TcpProxy.start();
    const runs: string[] = [];
    const recorded: [string, FailOpenOutcome][] = [];
    const client = newClient({
      address: proxy.addr,
      maxAttempts: 2,
      breaker: { failureThreshold: 2, openForMs: 200 },
      onFailOpen: (_ns, key, cause) => runs.push(`${key}: ${cause instanceof UnavailableError}`),
      onFailOpenRecorded: (_ns, key, outcome) => recorded.push([key, outcome]),
    });
    const ns = uniqueNamespace();
    try {
      proxy.cut();
      let seen: Lease | undefined;
      const result = await client.do(
        ns,
        "k1",
        async (lease) => {
          seen = lease;
          return "offline";
        },
        { fallback: "fail_open", timeoutMs: TIMEOUT_MS },
      );
      assert.equal(result.outcome, "ran_unguarded");
      assert.equal(result.unguarded, true);
      assert.equal(result.fencingToken, 0n);
      assert.equal(text(result.value), "offline");
      assert.equal(seen?.unguarded, true);
      assert.equal(seen?.fencingToken, 0n);
      assert.deepEqual(runs, ["k1: true"]);
      assert.equal(client.stats().failOpenPending, 1);
      proxy.restore();
      assert.equal(await client.flush(PATIENCE_MS), 0);
      assert.deepEqual(recorded, [["k1", "recorded"]]);
      const { entry } = await direct.lookup({ namespace: ns, key: "k1" });
      assert.equal(entry?.state, State.COMPLETED);
      assert.equal(text(entry!.result), "offline");
      const stats = client.stats();
      assert.equal(stats.failOpenRuns, 1);
      assert.equal(stats.failOpenRecorded, 1);
      assert.equal(stats.failOpenPending, 0);
      // The next do() replays the recorded result.
      const again = await client.do(ns, "k1", async () => "not this", { timeoutMs: TIMEOUT_MS });
      assert.equal(again.outcome, "replayed");
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  test("fail open with a full queue fails closed; close() says how many results it could not record", T, async () => {
    const proxy = await TcpProxy.start();
    const client = newClient({ address: proxy.addr, maxAttempts: 1, fallback: "fail_open", failOpenQueue: 1, breaker: false });
    const ns = uniqueNamespace();
    let runs = 0;
    const work = async () => `run ${++runs}`;
    const warn = console.warn;
    const warnings: string[] = [];
    console.warn = (line: string) => warnings.push(line);
    try {
      proxy.cut();
      assert.equal((await client.do(ns, "k1", work, { timeoutMs: TIMEOUT_MS })).outcome, "ran_unguarded");
      await assert.rejects(client.do(ns, "k2", work, { timeoutMs: TIMEOUT_MS }), (err: unknown) => {
        assert.ok(err instanceof UnavailableError, String(err));
        assert.match(err.message, /failOpenQueue/);
        return true;
      });
      assert.equal(runs, 1);
      assert.equal(await client.flush(50), 1, "nothing can be recorded while ledgerd is out of reach");
      assert.equal(await client.close(50), 1);
      assert.ok(warnings.some((w) => w.includes(`${ns}/k1`)), warnings.join("\n"));
    } finally {
      console.warn = warn;
      await proxy.close();
    }
  });
});

describe("doBatch", () => {
  test("each key's own outcome, in order; one work call for the acquired keys, with their leases", T, async () => {
    const ns = uniqueNamespace();
    await direct.do(ns, "done", async () => "before", { timeoutMs: TIMEOUT_MS });
    await assert.rejects(direct.do(ns, "gone", async () => Promise.reject(permanent(new Error("bad"))), { timeoutMs: TIMEOUT_MS }));
    await direct.reserve({ namespace: ns, key: "held", owner: "someone-else", leaseTtl: { seconds: BigInt(LONG_LEASE_MS / 1000) } });
    const calls: string[][] = [];
    const results = await direct.doBatch(
      ns,
      ["done", "new1", "gone", "held", "new2"],
      async (keys, { leases, signal }) => {
        calls.push(keys);
        assert.equal(signal.aborted, false);
        assert.deepEqual(
          leases.map((l) => [l.key, l.attempt, l.fencingToken > 0n]),
          keys.map((k) => [k, 1, true]),
        );
        return keys.map((k) => `done ${k}`);
      },
      { timeoutMs: TIMEOUT_MS },
    );
    assert.deepEqual(calls, [["new1", "new2"]]);
    assert.deepEqual(
      results.map((r) => [r.key, r.result?.outcome ?? r.error?.constructor.name, r.result && text(r.result.value)]),
      [
        ["done", "replayed", "before"],
        ["new1", "ran", "done new1"],
        ["gone", FailedError.name, undefined],
        ["held", InProgressError.name, undefined],
        ["new2", "ran", "done new2"],
      ],
    );
    const looked = await direct.lookupBatch({ namespace: ns, keys: ["new1", "nope"] });
    assert.equal(looked.results[0]?.result.case, "entry");
    assert.equal(looked.results[1]?.result.case, "error");
  });

  test("a work error fails every acquired key: retryable, or permanent when marked", T, async () => {
    const ns = uniqueNamespace();
    const boom = new Error("batch broke");
    const results = await direct.doBatch(ns, ["a", "b"], async () => Promise.reject(boom), { timeoutMs: TIMEOUT_MS });
    assert.deepEqual(results.map((r) => r.error), [boom, boom]);
    const { entry } = await direct.lookup({ namespace: ns, key: "a" });
    assert.equal(entry?.state, State.RELEASED);
    const again = await direct.doBatch(ns, ["a", "b"], async () => Promise.reject(permanent(boom)), { timeoutMs: TIMEOUT_MS });
    assert.equal(again.length, 2);
    const after = await direct.lookupBatch({ namespace: ns, keys: ["a", "b"] });
    assert.deepEqual(
      after.results.map((r) => r.result.case === "entry" && r.result.value.state),
      [State.FAILED, State.FAILED],
    );
  });
});

describe("the package", () => {
  test("sends ledgerd-typescript/<VERSION> as its user agent; VERSION is the package's version", T, async () => {
    const pkg = JSON.parse(readFileSync(distPath("../../package.json"), "utf8")) as { version: string };
    assert.equal(VERSION, pkg.version);
    const agents: string[] = [];
    const client = newClient({
      interceptors: [
        (next) => async (req) => {
          agents.push(req.header.get("user-agent") ?? "");
          return next(req);
        },
      ],
    });
    try {
      await client.reserve({ namespace: uniqueNamespace(), key: uniqueKey(), owner: "o" });
      assert.deepEqual(agents, [`ledgerd-typescript/${VERSION}`]);
    } finally {
      await client.close();
    }
  });
});

describe("several replicas", () => {
  test("calls go round robin over the replicas, and ride out one that goes away", T, async () => {
    // Two proxies in front of the live ledgerd stand for two replicas.
    const a = await TcpProxy.start();
    const b = await TcpProxy.start();
    const [aAddr, bAddr] = [a.addr, b.addr];
    const client = createClient({ addresses: [aAddr, bAddr], insecure: true, healthCheckIntervalMs: 100 });
    const ns = uniqueNamespace();
    try {
      for (let i = 0; i < 6; i++) {
        assert.equal((await client.do(ns, `a${i}`, async () => `a${i}`, { timeoutMs: TIMEOUT_MS })).outcome, "ran");
      }
      assert.ok(a.accepted >= 1 && b.accepted >= 1, `connections: a ${a.accepted}, b ${b.accepted}`);
      await b.close(); // refuses connections from now on
      for (let i = 0; i < 6; i++) {
        const result = await client.do(ns, `b${i}`, async () => `b${i}`, { timeoutMs: TIMEOUT_MS });
        assert.equal(text(result.value), `b${i}`);
      }
      await waitFor(() => client.replicas().find((r) => r.address === bAddr)?.healthy === false, "b is skipped");
      assert.equal(client.replicas().find((r) => r.address === aAddr)?.healthy, true);
    } finally {
      await client.close();
      await a.close();
    }
  });

  test("a dns:/// name is looked up, and its addresses balanced", T, async () => {
    const port = addr.slice(addr.lastIndexOf(":") + 1);
    const client = createClient({ address: `dns:///localhost:${port}`, insecure: true });
    try {
      const result = await client.do(uniqueNamespace(), uniqueKey(), async () => "via dns", { timeoutMs: TIMEOUT_MS });
      assert.equal(text(result.value), "via dns");
      assert.ok(client.replicas().length >= 1);
    } finally {
      await client.close();
    }
  });
});

