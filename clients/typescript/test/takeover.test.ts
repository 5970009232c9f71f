// Takeover after a worker process is killed mid-work, against the live ledgerd.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { after, test } from "node:test";

import { LeaseLostError, State, type Lease } from "../src/index.js";
import { addr, distPath, newClient, PATIENCE_MS, T, text, TIMEOUT_MS, uniqueKey, uniqueNamespace } from "./helpers.js";

const client = newClient();
after(() => client.close());

/** Starts a worker process that holds the key's lease, and resolves with it and its fencing token. */
async function startHolder(namespace: string, key: string, owner: string, leaseTtlMs: number) {
  const child = spawn(process.execPath, [distPath("./fixtures/hold-lease.js"), addr, namespace, key, owner, String(leaseTtlMs)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), PATIENCE_MS);
  try {
    const lines = createInterface({ input: child.stdout });
    const [line] = (await once(lines, "line")) as [string];
    lines.close();
    return { child, token: BigInt(JSON.parse(line).fencing_token) };
  } finally {
    clearTimeout(timer);
  }
}

test("takes over from a worker killed mid-work; the dead worker's token is refused", T, async () => {
  const ns = uniqueNamespace();
  const key = uniqueKey();
  const { child, token } = await startHolder(ns, key, "doomed-worker", 400);
  assert.equal(token, 1n);
  const exited = once(child, "exit");
  child.kill("SIGKILL");
  const [, signal] = await exited;
  assert.equal(signal, "SIGKILL");

  let seen: Lease | undefined;
  let lateComplete: unknown;
  // The dead worker's lease runs out (nobody heartbeats it any more) and the
  // successor, waiting for it, takes the key over.
  const result = await client.do(
    ns,
    key,
    async (lease) => {
      seen = lease;
      // The dead worker's token is no longer the key's: a zombie's late
      // Complete is refused, whatever the clock says.
      lateComplete = await client
        .complete({ namespace: ns, key, fencingToken: token, result: new TextEncoder().encode("zombie") })
        .catch((e: unknown) => e);
      return "done by the successor";
    },
    { owner: "successor", timeoutMs: TIMEOUT_MS },
  );

  assert.equal(seen?.fencingToken, token + 1n);
  assert.equal(seen?.attempt, 2);
  assert.equal(seen?.takeover, true);
  assert.equal(seen?.previousOwner, "doomed-worker");
  assert.ok(lateComplete instanceof LeaseLostError, `late complete: ${String(lateComplete)}`);
  assert.equal(result.fencingToken, token + 1n);
  assert.equal(result.replayed, false);

  // After the completion too.
  await assert.rejects(
    client.complete({ namespace: ns, key, fencingToken: token, result: new TextEncoder().encode("zombie") }),
    LeaseLostError,
  );
  const { entry } = await client.lookup({ namespace: ns, key });
  assert.equal(entry?.state, State.COMPLETED);
  assert.equal(entry?.owner, "successor");
  assert.equal(entry?.fencingToken, token + 1n);
  assert.equal(entry?.attempts, 2);
  assert.equal(text(entry!.result), "done by the successor");
});
