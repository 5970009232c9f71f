// The API token: how createClient takes it, and that every call carries it
// (no ledgerd needed: an interceptor after the client's own sees the
// headers and ends each call before it leaves the process).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { createClient, InvalidArgumentError, type ClientOptions } from "../src/index.js";

const TOKEN = "ldg_0123456789abcdef_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA";
const dir = mkdtempSync(join(tmpdir(), "ledgerd-token-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The authorization headers the calls of a client made with options carry, one per call. */
async function authorizationOf(options: Partial<ClientOptions>, calls = 2): Promise<(string | null)[]> {
  const seen: (string | null)[] = [];
  const capture: Interceptor = () => async (req) => {
    seen.push(req.header.get("authorization"));
    throw new ConnectError("stopped by the test", Code.InvalidArgument);
  };
  const client = createClient({ address: "127.0.0.1:1", ...options, interceptors: [capture] });
  try {
    for (let i = 0; i < calls; i++) {
      await assert.rejects(client.lookup({ namespace: "ns", key: "k" }, { timeoutMs: 5_000 }), InvalidArgumentError);
    }
  } finally {
    client.close();
  }
  return seen;
}

test("every call carries the token as a bearer authorization header", async () => {
  assert.deepEqual(await authorizationOf({ insecure: true, token: TOKEN }), [`Bearer ${TOKEN}`, `Bearer ${TOKEN}`]);
  assert.deepEqual(await authorizationOf({ token: TOKEN }), [`Bearer ${TOKEN}`, `Bearer ${TOKEN}`], "over TLS too");
  assert.deepEqual(await authorizationOf({ insecure: true, token: `  ${TOKEN}\n` }), [`Bearer ${TOKEN}`, `Bearer ${TOKEN}`]);
  assert.deepEqual(await authorizationOf({ insecure: true }), [null, null], "no token, no header");
});

test("tokenFile reads the token once, trimmed", async () => {
  const file = join(dir, "token");
  writeFileSync(file, `${TOKEN}\n`, { mode: 0o600 });
  assert.deepEqual(await authorizationOf({ insecure: true, tokenFile: file }, 1), [`Bearer ${TOKEN}`]);
  const empty = join(dir, "empty");
  writeFileSync(empty, "");
  assert.throws(() => createClient({ address: "127.0.0.1:1", insecure: true, tokenFile: empty }), /tokenFile .* is empty/);
  assert.throws(() => createClient({ address: "127.0.0.1:1", insecure: true, tokenFile: join(dir, "missing") }), /ENOENT/);
});

test("a token never travels in plaintext without insecure: true", () => {
  assert.throws(
    () => createClient({ address: "http://127.0.0.1:1", token: TOKEN }),
    /is plaintext; pass insecure: true to allow it/,
  );
});

test("conflicting or malformed tokens are refused, without showing them", () => {
  assert.throws(
    () => createClient({ address: "127.0.0.1:1", insecure: true, token: TOKEN, tokenFile: join(dir, "token") }),
    /either token or tokenFile/,
  );
  assert.throws(
    () => createClient({ address: "127.0.0.1:1", insecure: true, token: TOKEN, headers: { Authorization: "Bearer x" } }),
    /either as token or as an authorization header/,
  );
  const transport = createGrpcTransport({ baseUrl: "http://127.0.0.1:1" });
  assert.throws(() => createClient({ address: "", transport, token: TOKEN }), /transport of your own/);
  for (const bad of ["", "  ", `Bearer ${TOKEN}`, `${TOKEN}\r\nx-evil: 1`, "c2VjcmV0-without-prefix"]) {
    assert.throws(
      () => createClient({ address: "127.0.0.1:1", insecure: true, token: bad }),
      (err: unknown) => {
        assert.ok(err instanceof TypeError);
        assert.match(err.message, /token is not a ledgerd API token/);
        assert.doesNotMatch(err.message, /c2VjcmV0/);
        return true;
      },
      JSON.stringify(bad),
    );
  }
});
