// The TypeScript runner of the clients' conformance suite (clients/conformance).
//
// Runs every scenario file (JSON) of $LEDGER_CONFORMANCE_SCENARIOS against
// live ledgerd replicas, one after another, each with a fresh client built
// from its `client` section, and prints one JSON line per scenario on
// stdout: {"scenario":...,"ok":true} or {...,"ok":false,"error":"step 3 (do
// k1): ..."}. Logs go to stderr. Exits 0 only if every scenario passed. The
// harness (clients/conformance, Go) starts the replicas and the control
// server and sets the environment (see clients/conformance/README.md).
//
//   npm run --silent conformance

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

import {
  CircuitOpenError,
  createClient,
  DeadlineExceededError,
  FailedError,
  FingerprintMismatchError,
  InvalidArgumentError,
  LeaseLostError,
  permanent,
  PermissionDeniedError,
  ResourceExhaustedError,
  UnavailableError,
  type BreakerOptions,
  type ClientOptions,
  type DoResult,
  type LedgerClient,
  type Stats,
} from "../src/index.js";

// The timeout of a do() whose step gives none: a bound, so that a broken
// client fails its scenario instead of hanging the suite.
const defaultDoTimeoutMs = 60_000;
// The timeout of a control call.
const controlTimeoutMs = 60_000;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Obj = { [key: string]: Json };

/** A step's expectation did not hold (its message says how). */
class StepFailure extends Error {}

/** The error a scenario's work throws ({"error": ...}); marked with permanent() when the work says so. */
class ScenarioWorkError extends Error {}

function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run this through the conformance harness (clients/conformance)`);
  }
  return value;
}

const control = env("LEDGER_CONFORMANCE_CONTROL").replace(/\/$/, "");
const prefix = env("LEDGER_CONFORMANCE_PREFIX");
const utf8 = new TextDecoder();

/** The contract's neutral name (KIND) of an error. */
function errorKind(err: unknown): string {
  if (err instanceof ScenarioWorkError || (err instanceof Error && err.cause instanceof ScenarioWorkError)) {
    return "work_error";
  }
  if (err instanceof CircuitOpenError) return "circuit_open";
  if (err instanceof FailedError) return "failed";
  if (err instanceof LeaseLostError) return "lease_lost";
  if (err instanceof DeadlineExceededError) return "deadline_exceeded";
  if (err instanceof UnavailableError) return "unavailable";
  if (err instanceof InvalidArgumentError) return "invalid_argument";
  if (err instanceof FingerprintMismatchError) return "fingerprint_mismatch";
  if (err instanceof PermissionDeniedError) return "permission_denied";
  if (err instanceof ResourceExhaustedError && err.reason === "QUOTA_EXCEEDED") return "quota_exceeded";
  if (err instanceof DOMException && err.name === "TimeoutError") return "deadline_exceeded";
  return `other (${err instanceof Error ? `${err.name}: ${err.message}` : String(err)})`;
}

async function post(path: string, body?: Json): Promise<Json> {
  const response = await fetch(control + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body ?? {}),
    signal: AbortSignal.timeout(controlTimeoutMs),
  });
  const text = await response.text();
  if (response.status < 200 || response.status > 299) {
    throw new StepFailure(`control ${path} answered ${response.status}: ${text.trim()}`);
  }
  return text ? (JSON.parse(text) as Json) : null;
}

/** The client a scenario's `client` section describes. */
function clientOf(section: Obj): LedgerClient {
  const options: ClientOptions = { insecure: true };
  switch (section["target"] ?? "proxy") {
    case "proxy":
      options.address = env("LEDGER_ADDR");
      break;
    case "direct":
      options.address = env("LEDGER_DIRECT_ADDR");
      break;
    case "replicas":
      options.addresses = env("LEDGER_REPLICAS").split(",");
      break;
    default:
      throw new StepFailure(`unknown client target ${JSON.stringify(section["target"])}`);
  }
  const breaker = section["breaker"];
  if (breaker === "off") {
    options.breaker = false;
  } else if (breaker && typeof breaker === "object" && !Array.isArray(breaker)) {
    const b: BreakerOptions = {};
    const n = (k: string) => (typeof breaker[k] === "number" ? (breaker[k] as number) : undefined);
    b.failureThreshold = n("failure_threshold");
    b.failureRatio = n("failure_ratio");
    b.windowMs = n("window_ms");
    b.minCalls = n("min_calls");
    b.openForMs = n("open_for_ms");
    options.breaker = b;
  }
  const budget = section["retry_budget"];
  if (budget && typeof budget === "object" && !Array.isArray(budget)) {
    options.retryBudget = {
      maxTokens: typeof budget["max_tokens"] === "number" ? budget["max_tokens"] : undefined,
      ratio: typeof budget["ratio"] === "number" ? budget["ratio"] : undefined,
    };
  }
  if (typeof section["max_attempts"] === "number") {
    options.maxAttempts = section["max_attempts"];
  }
  if (section["fallback"] !== undefined) {
    options.fallback = section["fallback"] as ClientOptions["fallback"];
  }
  return createClient(options);
}

/** The result of a work description W: its text, or undefined for one that throws. */
function workResult(w: Obj): string {
  if (typeof w["result_bytes"] === "number") {
    return "x".repeat(w["result_bytes"]);
  }
  return typeof w["result"] === "string" ? w["result"] : "";
}

function workError(w: Obj): Error | undefined {
  if (typeof w["error"] !== "string") {
    return undefined;
  }
  const err = new ScenarioWorkError(w["error"]);
  return w["permanent"] === true ? permanent(err) : err;
}

/** What a do() or one batch item ended with, as the expectations name it. */
interface Ended {
  outcome: string;
  result?: string;
  error?: string;
  workRan?: boolean;
}

function endedOf(result: DoResult | undefined, err: unknown): Ended {
  if (result) {
    return { outcome: result.outcome, result: utf8.decode(result.value) };
  }
  return { outcome: "error", error: errorKind(err) };
}

function check(ended: Ended, expect: Obj): void {
  if (expect["outcome"] !== undefined && ended.outcome !== expect["outcome"]) {
    throw new StepFailure(
      `expected outcome ${expect["outcome"]}, got ${ended.outcome}${ended.error ? ` (${ended.error})` : ""}${ended.result !== undefined ? ` (result ${JSON.stringify(ended.result.slice(0, 80))})` : ""}`,
    );
  }
  if (expect["error"] !== undefined && ended.error !== expect["error"]) {
    throw new StepFailure(`expected error ${expect["error"]}, got ${ended.error ?? `outcome ${ended.outcome}`}`);
  }
  if (expect["result"] !== undefined && ended.result !== expect["result"]) {
    throw new StepFailure(`expected result ${JSON.stringify(expect["result"])}, got ${JSON.stringify(ended.result)}`);
  }
  if (expect["work_ran"] !== undefined && ended.workRan !== expect["work_ran"]) {
    throw new StepFailure(`expected work_ran ${expect["work_ran"]}, got ${ended.workRan}`);
  }
}

const statNames: Record<string, keyof Stats> = {
  calls: "calls",
  retries: "retries",
  retries_refused: "retriesRefused",
  breaker_state: "breakerState",
  breaker_opens: "breakerOpens",
  fail_open_runs: "failOpenRuns",
  fail_open_recorded: "failOpenRecorded",
  fail_open_discarded: "failOpenDiscarded",
  fail_open_pending: "failOpenPending",
};

/** Replaces ${i} in every string of a step. */
function substitute(value: Json, i: number): Json {
  if (typeof value === "string") {
    return value.replaceAll("${i}", String(i));
  }
  if (Array.isArray(value)) {
    return value.map((v) => substitute(v, i));
  }
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, i)]));
  }
  return value;
}

/** Runs one scenario's steps with its own client. */
class ScenarioRun {
  readonly namespace: string;
  readonly client: LedgerClient;

  constructor(scenario: Obj) {
    this.namespace = prefix + String(scenario["name"]);
    this.client = clientOf((scenario["client"] as Obj | undefined) ?? {});
  }

  async step(step: Obj): Promise<void> {
    const ops = Object.keys(step).filter((k) => k !== "expect" && k !== "within_ms");
    if (ops.length !== 1) {
      throw new StepFailure(`a step has one operation, got ${ops.join(", ") || "none"}`);
    }
    const op = ops[0]!;
    const arg = step[op]!;
    const expect = step["expect"];
    switch (op) {
      case "do":
        return this.do(arg as Obj, expect as Obj | undefined);
      case "do_batch":
        return this.doBatch(arg as Obj, expect as Obj[] | undefined);
      case "repeat": {
        const { times, step: inner } = arg as { times: number; step: Obj };
        for (let i = 0; i < times; i++) {
          try {
            await this.step(substitute(inner, i) as Obj);
          } catch (e) {
            throw new StepFailure(`repetition ${i}: ${e instanceof Error ? e.message : String(e)}`);
          }
        }
        return;
      }
      case "control": {
        const { path, body } = arg as { path: string; body?: Json };
        await post(path, body);
        return;
      }
      case "sleep_ms":
        await new Promise((resolve) => setTimeout(resolve, arg as number));
        return;
      case "expect_breaker": {
        const within = typeof step["within_ms"] === "number" ? (step["within_ms"] as number) : 10_000;
        const deadline = Date.now() + within;
        for (;;) {
          const state = this.client.breakerState;
          if (state === arg) return;
          if (Date.now() >= deadline) {
            throw new StepFailure(`expected breaker ${arg}, still ${state} after ${within}ms`);
          }
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
      case "expect_stats":
        return this.expectStats(arg as Obj);
      case "flush": {
        const timeout = typeof (arg as Obj)["timeout_ms"] === "number" ? ((arg as Obj)["timeout_ms"] as number) : 20_000;
        const pending = await this.client.flush(timeout);
        const want = (expect as Obj | undefined)?.["pending"];
        if (want !== undefined && pending !== want) {
          throw new StepFailure(`expected pending ${want} after flush, got ${pending}`);
        }
        return;
      }
      case "expect_entry":
        return this.expectEntry(arg as Obj);
      default:
        throw new StepFailure(`unknown operation ${op}`);
    }
  }

  async do(arg: Obj, expect: Obj | undefined): Promise<void> {
    const key = String(arg["key"]);
    const w = (arg["work"] as Obj | undefined) ?? {};
    let workRan = false;
    let result: DoResult | undefined;
    let error: unknown;
    try {
      result = await this.client.do(
        this.namespace,
        key,
        async () => {
          workRan = true;
          if (w["steal"] === true) {
            await post("/steal", { namespace: this.namespace, key });
          }
          const err = workError(w);
          if (err) {
            throw err;
          }
          return workResult(w);
        },
        {
          timeoutMs: typeof arg["timeout_ms"] === "number" ? arg["timeout_ms"] : defaultDoTimeoutMs,
          leaseTtlMs: typeof arg["lease_ttl_ms"] === "number" ? arg["lease_ttl_ms"] : undefined,
          fallback: arg["fallback"] as "fail_open" | "fail_closed" | undefined,
        },
      );
    } catch (e) {
      if (e instanceof StepFailure) throw e;
      error = e;
    }
    const ended = { ...endedOf(result, error), workRan };
    if (error !== undefined && expect?.["outcome"] !== "error") {
      console.error(`do ${key}:`, error);
    }
    if (expect) {
      check(ended, expect);
    }
  }

  async doBatch(arg: Obj, expect: Obj[] | undefined): Promise<void> {
    const items = (arg["items"] as Obj[]).map((item) => ({ key: String(item["key"]), work: (item["work"] as Obj | undefined) ?? {} }));
    const byKey = new Map(items.map((item) => [item.key, item.work]));
    const results = await this.client.doBatch(
      this.namespace,
      items.map((item) => item.key),
      async (keys) => {
        // One call for the acquired keys: the first error among them, else each key's result.
        for (const key of keys) {
          const err = workError(byKey.get(key)!);
          if (err) {
            throw err;
          }
        }
        return keys.map((key) => workResult(byKey.get(key)!));
      },
      { timeoutMs: typeof arg["timeout_ms"] === "number" ? arg["timeout_ms"] : defaultDoTimeoutMs },
    );
    if (!expect) {
      return;
    }
    if (results.length !== expect.length) {
      throw new StepFailure(`expected ${expect.length} results, got ${results.length}`);
    }
    results.forEach((r, i) => {
      try {
        check(endedOf(r.result, r.error), expect[i]!);
      } catch (e) {
        throw new StepFailure(`item ${i} (${r.key}): ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  }

  expectStats(want: Obj): void {
    const stats = this.client.stats();
    for (const [name, bound] of Object.entries(want)) {
      const field = statNames[name];
      if (!field) {
        throw new StepFailure(`unknown stat ${name}`);
      }
      const got = stats[field];
      if (bound !== null && typeof bound === "object" && !Array.isArray(bound)) {
        if (typeof bound["min"] === "number" && (got as number) < bound["min"]) {
          throw new StepFailure(`expected ${name} ≥ ${bound["min"]}, got ${got} (${JSON.stringify(stats)})`);
        }
        if (typeof bound["max"] === "number" && (got as number) > bound["max"]) {
          throw new StepFailure(`expected ${name} ≤ ${bound["max"]}, got ${got} (${JSON.stringify(stats)})`);
        }
      } else if (String(got) !== String(bound)) {
        throw new StepFailure(`expected ${name} ${bound}, got ${got} (${JSON.stringify(stats)})`);
      }
    }
  }

  async expectEntry(want: Obj): Promise<void> {
    const key = String(want["key"]);
    const url = `${control}/entry?namespace=${encodeURIComponent(this.namespace)}&key=${encodeURIComponent(key)}`;
    const response = await fetch(url, { signal: AbortSignal.timeout(controlTimeoutMs) });
    const text = await response.text();
    if (response.status === 404) {
      if (want["absent"] !== true) {
        throw new StepFailure(`entry ${key} is absent`);
      }
      return;
    }
    if (response.status !== 200) {
      throw new StepFailure(`control /entry answered ${response.status}: ${text.trim()}`);
    }
    if (want["absent"] === true) {
      throw new StepFailure(`expected entry ${key} absent, got ${text.trim()}`);
    }
    const entry = JSON.parse(text) as Obj;
    for (const field of ["state", "result", "attempts"]) {
      if (want[field] !== undefined && entry[field] !== want[field]) {
        throw new StepFailure(`expected entry ${key} ${field} ${JSON.stringify(want[field])}, got ${JSON.stringify(entry[field])}`);
      }
    }
    if (typeof want["owner_prefix"] === "string" && !String(entry["owner"]).startsWith(want["owner_prefix"])) {
      throw new StepFailure(`expected entry ${key} owner to start with ${want["owner_prefix"]}, got ${JSON.stringify(entry["owner"])}`);
    }
  }
}

/** A short description of a step for error messages, e.g. "do k1". */
function describeStep(step: Obj): string {
  const op = Object.keys(step).find((k) => k !== "expect" && k !== "within_ms") ?? "?";
  const arg = step[op];
  if (arg && typeof arg === "object" && !Array.isArray(arg)) {
    const detail = arg["key"] ?? arg["path"];
    return detail === undefined ? op : `${op} ${String(detail)}`;
  }
  return `${op} ${JSON.stringify(arg)}`;
}

async function runScenario(scenario: Obj): Promise<string | undefined> {
  const run = new ScenarioRun(scenario);
  try {
    const steps = scenario["steps"] as Obj[];
    for (const [i, step] of steps.entries()) {
      try {
        await run.step(step);
      } catch (e) {
        return `step ${i + 1} (${describeStep(step)}): ${e instanceof Error ? e.message : String(e)}`;
      }
    }
    return undefined;
  } finally {
    const lost = await run.client.close(20_000);
    if (lost > 0) {
      console.error(`${scenario["name"]}: ${lost} fail-open result(s) not recorded`);
    }
  }
}

async function main(): Promise<number> {
  const dir = env("LEDGER_CONFORMANCE_SCENARIOS");
  const only = (process.env["LEDGER_CONFORMANCE_ONLY"] ?? "").split(",").filter((n) => n !== "");
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort();
  let failed = 0;
  for (const file of files) {
    const scenario = JSON.parse(readFileSync(join(dir, file), "utf8")) as Obj;
    const name = String(scenario["name"] ?? file.replace(/\.json$/, ""));
    if (only.length > 0 && !only.includes(name)) {
      continue;
    }
    const started = Date.now();
    let error: string | undefined;
    try {
      error = await runScenario(scenario);
    } catch (e) {
      error = `the scenario could not run: ${e instanceof Error ? e.message : String(e)}`;
    }
    console.error(`${name}: ${error === undefined ? "ok" : `FAILED: ${error}`} (${Date.now() - started}ms)`);
    process.stdout.write(JSON.stringify(error === undefined ? { scenario: name, ok: true } : { scenario: name, ok: false, error }) + "\n");
    if (error !== undefined) {
      failed++;
    }
  }
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);
