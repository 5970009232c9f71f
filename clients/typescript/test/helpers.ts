// Shared test setup: the live ledgerd the tests run against, and small tools.

import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";

import { createClient, type ClientOptions, type LedgerClient } from "../src/index.js";

/** The address of the live ledgerd (env LEDGERD_ADDR); the tests refuse to run without it. */
export const addr: string = (() => {
  const value = process.env["LEDGERD_ADDR"];
  if (!value) {
    throw new Error(
      "LEDGERD_ADDR is not set: these tests need a live ledgerd (started with --min-lease-ttl 50ms), " +
        "e.g. LEDGERD_ADDR=127.0.0.1:7442 npm test",
    );
  }
  return value;
})();

/** A plaintext client of the live ledgerd; the caller closes it. */
export function newClient(options: Partial<ClientOptions> = {}): LedgerClient {
  return createClient({ address: addr, insecure: true, ...options });
}

/** A namespace no other test uses. */
export function uniqueNamespace(): string {
  return `ts-${randomUUID()}`;
}

/** A key no other test uses. */
export function uniqueKey(prefix = "k"): string {
  return `${prefix}-${randomUUID()}`;
}

/** Resolves after ms. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resolves when signal aborts, or rejects after ms: work that waits for its
 * lease to be taken away, bounded.
 */
export function aborted(signal: AbortSignal, ms: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      resolve(signal.reason);
      return;
    }
    const timer = setTimeout(() => reject(new Error(`the signal did not abort within ${ms}ms`)), ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve(signal.reason);
      },
      { once: true },
    );
  });
}

/** The UTF-8 text of bytes. */
export function text(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/** The path of a compiled file under dist/, relative to this file's directory (dist/test). */
export function distPath(relative: string): string {
  return fileURLToPath(new URL(relative, import.meta.url));
}
