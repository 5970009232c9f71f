// contest-worker: one contestant of the cross-language test
// (clients/crosslang). Several workers, in any language, race for the same
// key; the ledger must let the work run once and every worker must report
// the same value.
//
//   node clients/typescript/dist/examples/contest-worker.js --addr A \
//     --namespace N --key K --owner O --work-log FILE --work-ms MS [--lease-ttl-ms T]
//
// The work appends "<owner>\n" to FILE (and fsyncs it), sleeps MS ms and
// returns "done by <owner>". On success the worker prints exactly one JSON
// line {"owner","value","replayed","fencing_token"} to stdout and exits 0; on
// error it prints the error to stderr and exits 1. The connection is
// plaintext (a test harness's local ledgerd).

import { closeSync, fsyncSync, openSync, writeSync } from "node:fs";
import { parseArgs } from "node:util";

import { createClient, type Lease } from "../src/index.js";

function usage(message: string): never {
  process.stderr.write(
    `contest-worker: ${message}\nusage: contest-worker --addr A --namespace N --key K --owner O --work-log FILE --work-ms MS [--lease-ttl-ms T]\n`,
  );
  process.exit(2);
}

function nonNegativeInt(name: string, text: string | undefined): number | undefined {
  if (text === undefined) {
    return undefined;
  }
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) {
    usage(`--${name} must be a non-negative integer, got ${JSON.stringify(text)}`);
  }
  return value;
}

/** Appends one line to the work log and makes it durable before the work goes on. */
function appendDurably(file: string, line: string): void {
  const fd = openSync(file, "a");
  try {
    writeSync(fd, line);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Sleeps ms, or rejects as soon as the lease must be given up. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        addr: { type: "string" },
        namespace: { type: "string" },
        key: { type: "string" },
        owner: { type: "string" },
        "work-log": { type: "string" },
        "work-ms": { type: "string" },
        "lease-ttl-ms": { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    usage((e as Error).message);
  }
  for (const name of ["addr", "namespace", "key", "owner", "work-log", "work-ms"] as const) {
    if (values[name] === undefined) {
      usage(`--${name} is required`);
    }
  }
  const owner = values.owner!;
  const workLog = values["work-log"]!;
  const workMs = nonNegativeInt("work-ms", values["work-ms"])!;
  const leaseTtlMs = nonNegativeInt("lease-ttl-ms", values["lease-ttl-ms"]);

  const client = createClient({ address: values.addr!, insecure: true });
  try {
    const result = await client.do(
      values.namespace!,
      values.key!,
      async (lease: Lease) => {
        appendDurably(workLog, `${owner}\n`);
        await sleep(workMs, lease.signal);
        return `done by ${owner}`;
      },
      { owner, leaseTtlMs },
    );
    process.stdout.write(
      JSON.stringify({
        owner,
        value: new TextDecoder().decode(result.value),
        replayed: result.replayed,
        fencing_token: Number(result.fencingToken),
      }) + "\n",
    );
  } finally {
    client.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`contest-worker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
