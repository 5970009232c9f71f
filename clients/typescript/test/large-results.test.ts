// Results above gRPC's customary 4 MiB receive limit, against the live
// ledgerd (LEDGERD_ADDR), which stores results up to its ceiling (16 MiB by
// default) in a namespace that allows them.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { createClient as createConnectClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { clientDefaults, ResourceExhaustedError } from "../src/index.js";
import { LedgerAdminService } from "../src/gen/ledger/v1/admin_pb.js";
import { addr, newClient, T, TIMEOUT_MS, uniqueKey, uniqueNamespace } from "./helpers.js";

const client = newClient();
after(() => client.close());

/** Creates namespace ns allowing results of up to maxResultBytes, through the admin API (the test ledgerd has no authentication). */
async function createNamespace(ns: string, maxResultBytes: number): Promise<void> {
  const baseUrl = `http://${addr}`;
  const sessions = new Http2SessionManager(baseUrl);
  try {
    const admin = createConnectClient(LedgerAdminService, createGrpcTransport({ baseUrl, sessionManager: sessions }));
    await admin.createNamespace(
      { name: ns, settings: { maxResultBytes }, reason: "typescript client test: results above 4 MiB" },
      { timeoutMs: TIMEOUT_MS },
    );
  } finally {
    sessions.abort();
  }
}

test("a 5 MiB result is recorded, replayed and looked up (64 MiB accepted by default); readMaxBytes lowers the limit", T, async () => {
  assert.equal(clientDefaults.readMaxBytes, 64 << 20);
  const ns = uniqueNamespace();
  const key = uniqueKey();
  await createNamespace(ns, 6 << 20); // the default namespace allows 1 MiB
  const payload = new Uint8Array(5 << 20).map((_, i) => i % 251);

  const first = await client.do(ns, key, async () => payload, { timeoutMs: TIMEOUT_MS });
  assert.equal(first.replayed, false);
  const replay = await client.do(ns, key, async () => assert.fail("the work must not run"), { timeoutMs: TIMEOUT_MS });
  assert.equal(replay.replayed, true);
  assert.deepEqual(replay.value, payload);
  const { entry } = await client.lookup({ namespace: ns, key }, { timeoutMs: TIMEOUT_MS });
  assert.deepEqual(entry?.result, payload);

  const small = newClient({ readMaxBytes: 1 << 20 });
  try {
    await assert.rejects(
      small.do(ns, key, async () => assert.fail("the work must not run"), { timeoutMs: TIMEOUT_MS }),
      (err: unknown) => err instanceof ResourceExhaustedError,
    );
  } finally {
    small.close();
  }
  assert.throws(() => newClient({ readMaxBytes: 0 }), TypeError);
});
