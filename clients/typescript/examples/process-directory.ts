// process-directory: process a directory of records exactly once.
//
// Every file in --in is a record. Its name is the idempotency key and its
// SHA-256 is the fingerprint, so that the same name with different content
// is refused (FINGERPRINT_MISMATCH) instead of being silently skipped. The
// work transforms the record and writes the output through a fenced sink,
// passing the lease's fencing token: the sink refuses a write older than the
// newest token it has seen for the record, so a worker that was paused,
// taken over and woke up again cannot overwrite the output of the worker
// that replaced it. Run it twice (or in several processes at once): every
// record is processed once, and the later runs replay the stored results.
//
//   node dist/examples/process-directory.js --addr 127.0.0.1:7070 \
//     --in ./records --out ./processed [--namespace records] [--tls]
//
// The connection is plaintext unless --tls is given (a local ledgerd, like
// the Go quickstart).

import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

import { createClient, FailedError, permanent, type LedgerClient } from "../src/index.js";

/** Raised by {@link FencedSink.write} for a write under an older fencing token. */
export class StaleTokenError extends Error {
  /** Makes the error for a write of name with token, refused because newest was seen. */
  constructor(name: string, token: bigint, newest: bigint) {
    super(`refused write of ${name} with fencing token ${token}: token ${newest} has written it already`);
    this.name = "StaleTokenError";
  }
}

/**
 * A downstream system that honours fencing tokens: it remembers, per record,
 * the newest token that wrote it, and refuses writes with an older one. Here
 * it is a directory (one output file and one token file per record, each
 * replaced atomically by a rename); a database sink would do the same check
 * in its write, e.g. `UPDATE ... SET ..., token = $new WHERE token <= $new`.
 * This one assumes that it is the only writer of its directory in this process.
 */
export class FencedSink {
  readonly #dir: string;

  /** Makes a sink that writes into dir (created if missing). */
  constructor(dir: string) {
    this.#dir = dir;
    mkdirSync(dir, { recursive: true });
  }

  /** The newest fencing token that wrote name, or -1n if none did. */
  newestToken(name: string): bigint {
    try {
      return BigInt(readFileSync(join(this.#dir, `${name}.token`), "utf8").trim());
    } catch {
      return -1n;
    }
  }

  /** Writes data as the output of name under token; throws a {@link StaleTokenError} for an older token. */
  write(name: string, data: string, token: bigint): void {
    const newest = this.newestToken(name);
    if (token < newest) {
      throw new StaleTokenError(name, token, newest);
    }
    this.#replace(`${name}.token`, `${token}\n`);
    this.#replace(name, data);
  }

  #replace(file: string, data: string): void {
    const target = join(this.#dir, file);
    const temporary = `${target}.tmp-${process.pid}`;
    writeFileSync(temporary, data);
    renameSync(temporary, target);
  }
}

/** The transformation of a record: here, upper-case every line and count them. */
function transform(text: string): string {
  const lines = text.split("\n").filter((line) => line !== "");
  return lines.map((line) => line.toUpperCase()).join("\n") + `\n# ${lines.length} lines\n`;
}

/** Counts of one run of {@link processDirectory}. */
export interface Summary {
  /** Records whose work ran in this run. */
  processed: number;
  /** Records completed earlier, whose stored result was replayed. */
  replayed: number;
  /** Records that failed (permanently now or earlier, or with an error this run). */
  failed: number;
}

/**
 * Processes every file of inDir exactly once into outDir, under the ledger
 * namespace, and returns the counts. Log lines go to log.
 */
export async function processDirectory(
  client: LedgerClient,
  namespace: string,
  inDir: string,
  outDir: string,
  log: (line: string) => void = console.log,
): Promise<Summary> {
  const sink = new FencedSink(outDir);
  const summary: Summary = { processed: 0, replayed: 0, failed: 0 };
  const names = readdirSync(inDir, { withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => entry.name)
    .sort();
  for (const name of names) {
    const content = readFileSync(join(inDir, name));
    const fingerprint = createHash("sha256").update(content).digest();
    try {
      const result = await client.do(
        namespace,
        name,
        async (lease) => {
          const text = content.toString("utf8");
          if (text.includes("\0")) {
            // Retrying cannot fix the input: fail the key for good.
            throw permanent(new Error(`${name} is not a text record`));
          }
          sink.write(name, transform(text), lease.fencingToken);
          return `wrote ${name} (token ${lease.fencingToken})`;
        },
        { fingerprint, metadata: { pipeline: "process-directory" }, timeoutMs: 60_000 },
      );
      const value = new TextDecoder().decode(result.value);
      if (result.replayed) {
        summary.replayed++;
        log(`${name}: already done: ${value}`);
      } else {
        summary.processed++;
        log(`${name}: ${value}`);
      }
    } catch (err) {
      summary.failed++;
      if (err instanceof FailedError) {
        log(`${name}: failed permanently earlier: ${err.errorMessage}`);
      } else {
        log(`${name}: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
      }
    }
  }
  return summary;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      addr: { type: "string", default: "127.0.0.1:7070" },
      in: { type: "string" },
      out: { type: "string" },
      namespace: { type: "string", default: "records" },
      tls: { type: "boolean", default: false },
    },
  });
  if (!values.in || !values.out) {
    throw new Error("usage: process-directory --addr HOST:PORT --in DIR --out DIR [--namespace NS] [--tls]");
  }
  const client = createClient({ address: values.addr, insecure: !values.tls });
  try {
    const summary = await processDirectory(client, values.namespace, resolve(values.in), resolve(values.out));
    console.log(`processed ${summary.processed}, replayed ${summary.replayed}, failed ${summary.failed}`);
    if (summary.failed > 0) {
      process.exitCode = 1;
    }
  } finally {
    client.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
