// The policies without I/O: the circuit breaker driven by a fake clock, the
// retry budget, the attempt limit and RetryInfo. No ledgerd is needed.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Code } from "@connectrpc/connect";

import { CircuitBreaker, RetryBudget, type BreakerState, type Clock } from "../src/breaker.js";
import { CircuitOpenError, DeadlineExceededError, LedgerError, Reason, UnavailableError } from "../src/index.js";
import { attemptOutcome, Policies } from "../src/policy.js";
import { retryDelay } from "../src/retry.js";

/** A clock that moves only when the test says so. */
class FakeClock implements Clock {
  ms = 1_000_000;
  readonly epoch = Date.parse("2026-12-07T10:31:02Z");
  now(): number {
    return this.ms;
  }
  date(): Date {
    return new Date(this.epoch + (this.ms - 1_000_000));
  }
  advance(ms: number): void {
    this.ms += ms;
  }
}

const unavailable = () => new UnavailableError({ reason: Reason.Unavailable, code: Code.Unavailable, rawMessage: "connection refused" });

function breaker(options = {}) {
  const clock = new FakeClock();
  const changes: [BreakerState, BreakerState, unknown][] = [];
  const b = new CircuitBreaker(options, (from, to, last) => changes.push([from, to, last]), clock);
  return { b, clock, changes };
}

function fail(b: CircuitBreaker, n: number): void {
  for (let i = 0; i < n; i++) {
    b.record(b.allow(true), "failure", unavailable());
  }
}

describe("circuit breaker", () => {
  test("opens after failureThreshold consecutive failures, and refuses guarded calls with the time and the last error", () => {
    const { b, clock, changes } = breaker({ failureThreshold: 3 });
    fail(b, 2);
    b.record(b.allow(true), "success"); // a success resets the count
    fail(b, 2);
    assert.equal(b.state, "closed");
    fail(b, 1);
    assert.equal(b.state, "open");
    assert.equal(b.opens, 1);
    assert.deepEqual(changes.map(([from, to]) => [from, to]), [["closed", "open"]]);
    assert.ok(changes[0]![2] instanceof UnavailableError);
    clock.advance(3200);
    assert.throws(
      () => b.allow(true),
      (err: unknown) => {
        assert.ok(err instanceof CircuitOpenError);
        assert.ok(err instanceof UnavailableError, "a CircuitOpenError is an UnavailableError");
        assert.equal(err.since.toISOString(), "2026-12-07T10:31:02.000Z");
        assert.equal(err.message, "ledgerd: circuit open since 2026-12-07T10:31:02Z (3.2s ago), last error: UNAVAILABLE: connection refused");
        return true;
      },
    );
    b.allow(false); // heartbeat, complete, fail, release always pass
  });

  test("opens on the failure ratio over the window once minCalls attempts were made", () => {
    const { b, clock } = breaker({ failureThreshold: 100, failureRatio: 0.5, minCalls: 10, windowMs: 1000 });
    for (let i = 0; i < 9; i++) {
      b.record(b.allow(true), i % 2 === 0 ? "failure" : "success", unavailable());
    }
    assert.equal(b.state, "closed", "9 attempts are below minCalls");
    clock.advance(2000); // the window forgets them
    for (let i = 0; i < 9; i++) {
      b.record(b.allow(true), i % 2 === 0 ? "failure" : "success", unavailable());
    }
    assert.equal(b.state, "closed");
    b.record(b.allow(true), "failure", unavailable()); // 10 attempts, 6 failed
    assert.equal(b.state, "open");
  });

  test("half-open after openForMs lets one probe through: its success closes, its failure re-opens", () => {
    const { b, clock, changes } = breaker({ failureThreshold: 1, openForMs: 5000 });
    fail(b, 1);
    clock.advance(4999);
    assert.equal(b.state, "open");
    clock.advance(1);
    assert.equal(b.state, "half_open");
    const probe = b.allow(true);
    assert.equal(probe.probe, true);
    assert.throws(() => b.allow(true), CircuitOpenError, "one probe at a time");
    b.record(probe, "failure", unavailable());
    assert.equal(b.state, "open");
    assert.equal(b.opens, 2);
    clock.advance(5000);
    b.record(b.allow(true), "success");
    assert.equal(b.state, "closed");
    assert.deepEqual(
      changes.map(([from, to]) => `${from}->${to}`),
      ["closed->open", "open->half_open", "half_open->open", "open->half_open", "half_open->closed"],
    );
  });

  test("a canceled probe lets another through; outcomes of attempts from before a transition do not count", () => {
    const { b, clock } = breaker({ failureThreshold: 1, openForMs: 100 });
    const old = b.allow(true);
    fail(b, 1);
    b.record(old, "failure", unavailable()); // began while closed: does not re-open or count
    assert.equal(b.opens, 1);
    clock.advance(100);
    b.record(b.allow(true), "ignored");
    assert.equal(b.state, "half_open");
    assert.equal(b.allow(true).probe, true);
  });

  test("refuses bad parameters, naming them", () => {
    assert.throws(() => new CircuitBreaker({ failureThreshold: 0 }), /breaker\.failureThreshold must be a positive integer/);
    assert.throws(() => new CircuitBreaker({ failureRatio: 1.5 }), /breaker\.failureRatio must be at most 1/);
    assert.throws(() => new CircuitBreaker({ openForMs: -1 }), /breaker\.openForMs/);
  });
});

describe("attempt outcomes", () => {
  test("unavailability is a failure, any other answer a success, a cancellation neither", () => {
    assert.equal(attemptOutcome(undefined, false), "success");
    assert.equal(attemptOutcome(unavailable(), false), "failure");
    assert.equal(
      attemptOutcome(new DeadlineExceededError({ reason: Reason.DeadlineExceeded, code: Code.DeadlineExceeded, rawMessage: "" }), false),
      "failure",
    );
    assert.equal(attemptOutcome(new LedgerError({ reason: "", code: Code.FailedPrecondition, rawMessage: "" }), false), "success");
    assert.equal(attemptOutcome(new LedgerError({ reason: "", code: Code.Canceled, rawMessage: "" }), false), "ignored");
    assert.equal(attemptOutcome(unavailable(), true), "ignored");
  });
});

describe("retry budget", () => {
  test("starts full, spends a token per retry, refills by ratio per call, capped", () => {
    const budget = new RetryBudget({ maxTokens: 2, ratio: 0.5 });
    assert.equal(budget.tryRetry(), true);
    assert.equal(budget.tryRetry(), true);
    assert.equal(budget.tryRetry(), false);
    budget.onCall();
    assert.equal(budget.tryRetry(), false, "half a token is not a retry");
    budget.onCall();
    assert.equal(budget.tryRetry(), true);
    for (let i = 0; i < 100; i++) budget.onCall();
    assert.equal(budget.tokens, 2);
  });

  test("retries stay below maxTokens + ratio × calls, and a refused retry says so", () => {
    const policies = new Policies({ breaker: false, retryBudget: { maxTokens: 3, ratio: 0.1 } });
    let refused: unknown;
    for (let call = 0; call < 50; call++) {
      policies.beginCall("reserve");
      for (let attempt = 1; attempt <= 10; attempt++) {
        const r = policies.refuseRetry("reserve", unavailable(), attempt);
        if (r !== undefined) {
          refused = r;
          break;
        }
      }
    }
    assert.ok(policies.retries <= 3 + 0.1 * 50, `${policies.retries} retries`);
    assert.ok(policies.retriesRefused >= 1);
    assert.ok(refused instanceof UnavailableError);
    assert.match((refused as Error).message, /retry budget exhausted/);
    assert.equal(policies.refuseRetry("heartbeat", unavailable(), 1), undefined, "heartbeats are outside the budget");
  });

  test("maxAttempts ends a call first, and says so", () => {
    const policies = new Policies({ maxAttempts: 2 });
    assert.equal(policies.refuseRetry("lookup", unavailable(), 1), undefined);
    assert.match(String(policies.refuseRetry("lookup", unavailable(), 2)), /gave up after 2 attempts \(maxAttempts\)/);
    assert.throws(() => new Policies({ maxAttempts: 0 }), /maxAttempts must be an integer ≥ 1/);
    assert.throws(() => new Policies({ fallback: "open" as never }), /fallback must be "fail_closed" or "fail_open"/);
  });
});

describe("RetryInfo", () => {
  test("a retry waits at least the server's retry_delay", () => {
    const limited = new LedgerError({ reason: Reason.RateLimited, code: Code.Unavailable, rawMessage: "", retryDelayMs: 1500 });
    for (let i = 0; i < 20; i++) {
      assert.ok(retryDelay(50, limited) >= 1500);
      const d = retryDelay(50, unavailable());
      assert.ok(d >= 25 && d < 50, String(d));
    }
  });
});
