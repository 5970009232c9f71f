// process-directory: process a directory of records exactly once, with ledgerd.
//
// The TypeScript twin of clients/python/examples/process_directory.py: the
// same flags, namespace, keys, fingerprints, results and output files, so
// that running both over one directory does the work once (the second
// replays what the first recorded).
//
// Every file of the input directory is a batch of records (one per line).
// Each file is processed under its own ledger key (its path relative to the
// input directory, with "/"), with the SHA-256 of its content as the
// fingerprint: running the pipeline again, from any number of machines at
// once, processes each file once; a file whose content changed under the
// same name is refused (FINGERPRINT_MISMATCH) instead of being silently
// skipped or redone.
//
// The work writes its output through a fenced sink: next to each output file
// (<key>.out) the sink keeps the newest fencing token that wrote it
// (<key>.out.token) and refuses a write with an older token. So a worker that
// was paused, lost its lease and was taken over cannot overwrite the newer
// worker's output: the pipeline's side effects are exactly-once, not just
// its ledger entries.
//
//   node dist/examples/process-directory.js --addr 127.0.0.1:7070 \
//     --input ./records --output ./out [--namespace process-directory] \
//     [--lease-ttl SECONDS] [--timeout SECONDS] [--tls] [--ca FILE]

import { createHash } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmdirSync, statSync, writeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

import { createClient, FailedError, FingerprintMismatchError, type DoResult, type LedgerClient } from "../src/index.js";

/** Raised by {@link FencedSink.write} for a write under an older fencing token. */
export class StaleTokenError extends Error {
  /** Makes the error for a write of relativePath with token, refused because newest wrote it. */
  constructor(relativePath: string, token: bigint, newest: bigint) {
    super(`${relativePath}: token ${token} is older than ${newest}, which already wrote it`);
    this.name = "StaleTokenError";
  }
}

/**
 * Writes output files, refusing writes older than the newest fencing token.
 * For each output path it keeps `<path>.token`, the newest token that wrote
 * it; a write with an older token throws a {@link StaleTokenError}. The same
 * token may write again (a retry of the same grant). Writes are atomic (a
 * temporary file renamed into place) and durable (fsync). Writers of one
 * path are serialized with a lock directory (`<path>.lockdir`: Node.js has
 * no flock), across the processes of this example.
 */
export class FencedSink {
  readonly root: string;

  /** Makes a sink that writes under root. */
  constructor(root: string) {
    this.root = root;
  }

  /** The newest token that wrote relativePath; 0n if none. */
  token(relativePath: string): bigint {
    try {
      return BigInt(readFileSync(join(this.root, relativePath) + ".token", "ascii").trim() || "0");
    } catch {
      return 0n;
    }
  }

  /** Writes data to root/relativePath under token; returns the path (joined as Python's os.path.join does). */
  write(relativePath: string, data: Uint8Array | string, token: bigint): string {
    const path = this.root === "" || this.root.endsWith("/") ? this.root + relativePath : `${this.root}/${relativePath}`;
    mkdirSync(dirname(path), { recursive: true });
    const unlock = lock(path + ".lockdir");
    try {
      const newest = this.token(relativePath);
      if (token < newest) {
        throw new StaleTokenError(relativePath, token, newest);
      }
      writeAtomically(path + ".token", `${token}\n`);
      writeAtomically(path, data);
    } finally {
      unlock();
    }
    return path;
  }
}

/** Takes the lock directory (waiting while another process holds it); returns its release. */
function lock(lockDir: string): () => void {
  const waitBuffer = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      mkdirSync(lockDir);
      return () => rmdirSync(lockDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") {
        throw e;
      }
      Atomics.wait(waitBuffer, 0, 0, 5); // the holder writes two small files
    }
  }
}

function writeAtomically(path: string, data: Uint8Array | string): void {
  const temporary = `${path}.tmp.${process.pid}`;
  const fd = openSync(temporary, "w");
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  const directory = openSync(dirname(path), "r");
  try {
    fsyncSync(directory);
  } finally {
    closeSync(directory);
  }
}

/** Yields [key, path] for every regular file under root, in the order Python's os.walk gives (files, then subdirectories, each sorted). */
export function* inputFiles(root: string, prefix = ""): Generator<[string, string]> {
  const entries = readdirSync(root, { withFileTypes: true });
  const names = entries.map((e) => e.name).sort();
  const directories: string[] = [];
  for (const name of names) {
    const path = join(root, name);
    let stats;
    try {
      stats = statSync(path); // follows symbolic links, as os.path.isfile does
    } catch {
      continue;
    }
    if (stats.isFile()) {
      yield [prefix + name, path];
    } else if (stats.isDirectory()) {
      directories.push(name);
    }
  }
  for (const name of directories) {
    yield* inputFiles(join(root, name), `${prefix}${name}/`);
  }
}

/** The processing of one file (a stand-in): normalizes each non-empty record. Returns the output and the number of records. */
export function transform(records: Uint8Array): [string, number] {
  const lines = new TextDecoder().decode(records).split(/\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/);
  const kept = lines.map((line) => line.trim().toUpperCase()).filter((line) => line !== "");
  return [kept.join("\n") + (kept.length > 0 ? "\n" : ""), kept.length];
}

/** A string as Python's json.dumps writes it (ensure_ascii: every character outside " " to "~" as \\uXXXX). */
function pythonJson(value: string): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Options of {@link processFile}. */
export interface ProcessOptions {
  /** The lease TTL in seconds (default: the namespace's). */
  leaseTtl?: number;
  /** The bound of each file's processing, in seconds (default 60). */
  timeout?: number;
}

/** Processes one input file exactly once; resolves with the ledger's result. */
export async function processFile(
  client: LedgerClient,
  sink: FencedSink,
  namespace: string,
  key: string,
  path: string,
  options: ProcessOptions = {},
): Promise<DoResult> {
  const content = readFileSync(path);
  const fingerprint = createHash("sha256").update(content).digest();
  return client.do(
    namespace,
    key,
    (lease) => {
      const [output, count] = transform(content);
      lease.signal.throwIfAborted(); // do not write if the lease is already gone
      const written = sink.write(key + ".out", output, lease.fencingToken);
      // What Python's json.dumps(summary, sort_keys=True) writes, byte for byte.
      return (
        `{"output": ${pythonJson(written)}, "records": ${count}, ` +
        `"sha256": "${fingerprint.toString("hex")}", "token": ${lease.fencingToken}}`
      );
    },
    {
      fingerprint,
      metadata: { pipeline: "process_directory", input: resolve(path).slice(0, 512) },
      leaseTtlMs: options.leaseTtl === undefined ? undefined : options.leaseTtl * 1000,
      timeoutMs: (options.timeout ?? 60) * 1000,
    },
  );
}

/** Counts of one run of {@link processDirectory}. */
export interface Summary {
  /** Files whose work ran in this run. */
  processed: number;
  /** Files processed earlier, whose stored result was replayed. */
  replayed: number;
  /** Files that failed (permanently now or earlier, changed, or with an error this run). */
  failed: number;
}

/** Processes every file of input into output, under the namespace; log gets one line per file. */
export async function processDirectory(
  client: LedgerClient,
  namespace: string,
  input: string,
  output: string,
  options: ProcessOptions = {},
  log: (line: string) => void = console.log,
  logError: (line: string) => void = console.error,
): Promise<Summary> {
  const sink = new FencedSink(output);
  const summary: Summary = { processed: 0, replayed: 0, failed: 0 };
  for (const [key, path] of inputFiles(input)) {
    let result: DoResult;
    try {
      result = await processFile(client, sink, namespace, key, path, options);
    } catch (err) {
      summary.failed++;
      if (err instanceof FingerprintMismatchError) {
        logError(`${key}: changed since it was processed (fingerprint mismatch); use a new key`);
      } else if (err instanceof FailedError) {
        logError(`${key}: failed permanently earlier: ${err.message}`);
      } else {
        logError(`${key}: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
      }
      continue;
    }
    const stored = JSON.parse(new TextDecoder().decode(result.value)) as { records: number; output: string };
    if (result.replayed) {
      summary.replayed++;
      log(`${key}: already processed (token ${result.fencingToken}), ${stored.records} records`);
    } else {
      summary.processed++;
      log(`${key}: processed (token ${result.fencingToken}, attempt ${result.attempt}), ${stored.records} records -> ${stored.output}`);
    }
  }
  return summary;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      addr: { type: "string" },
      input: { type: "string" },
      output: { type: "string" },
      namespace: { type: "string", default: "process-directory" },
      "lease-ttl": { type: "string" },
      timeout: { type: "string", default: "60" },
      tls: { type: "boolean", default: false },
      ca: { type: "string" },
    },
  });
  if (!values.addr || !values.input || !values.output) {
    console.error(
      "usage: process-directory --addr HOST:PORT --input DIR --output DIR [--namespace NS] [--lease-ttl S] [--timeout S] [--tls] [--ca FILE]",
    );
    return 2;
  }
  const secure = values.tls || values.ca !== undefined;
  const client = createClient({
    address: values.addr,
    insecure: !secure,
    tls: values.ca ? { ca: readFileSync(values.ca) } : undefined,
  });
  try {
    const summary = await processDirectory(client, values.namespace, values.input, values.output, {
      leaseTtl: values["lease-ttl"] === undefined ? undefined : Number(values["lease-ttl"]),
      timeout: Number(values.timeout),
    });
    console.log(`${summary.processed} processed, ${summary.replayed} already done, ${summary.failed} failed`);
    return summary.failed > 0 ? 1 : 0;
  } finally {
    await client.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exitCode = 1;
    },
  );
}
