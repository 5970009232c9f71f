// A server's GOAWAY on an idle connection, followed at once by a new call,
// must not crash the process with the old connection's late error.

import assert from "node:assert/strict";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { test } from "node:test";

import { GuardedSessionManager } from "../src/session.js";

/** Ends a request, reads its answer and waits until the stream closes; returns the HTTP status. */
async function drain(stream: http2.ClientHttp2Stream): Promise<number> {
  const closed = new Promise<void>((resolve) => stream.once("close", () => resolve()));
  stream.end();
  let status = 0;
  stream.on("response", (headers) => (status = Number(headers[":status"])));
  for await (const _ of stream) {
    // discard the body
  }
  await closed;
  return status;
}

// No live ledgerd needed: a plain HTTP/2 server plays the replica that goes away.
test("a GOAWAY on an idle connection followed by a new request does not crash the process", { timeout: 60_000 }, async () => {
  const sessions: http2.ServerHttp2Session[] = [];
  const server = http2.createServer();
  server.on("session", (session) => sessions.push(session));
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200 });
    stream.end("ok");
    // Once the answer is out, the connection is idle: tell the client to go away.
    const session = stream.session!;
    stream.on("close", () => session.goaway(http2.constants.NGHTTP2_NO_ERROR));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const uncaught: unknown[] = [];
  const record = (err: unknown) => uncaught.push(err);
  process.on("uncaughtException", record);
  const manager = new GuardedSessionManager(url);
  try {
    const first = await manager.request("POST", "/first", {}, {});
    const session = first.session!;
    // Node raises a destroyed connection's deferred error just before "close".
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    // The second request starts in the same turn as the GOAWAY arrives, after
    // the manager has destroyed the old connection but before Node raises its
    // deferred error: the manager reconnects and drops its listeners on the
    // old connection.
    const second = new Promise<number>((resolve, reject) => {
      session.once("goaway", () => {
        manager.request("POST", "/second", {}, {}).then(drain).then(resolve, reject);
      });
    });
    assert.equal(await drain(first), 200);
    assert.equal(await second, 200, "the request after the GOAWAY was answered on a new connection");
    await closed;
    assert.equal(sessions.length, 2, "the second request used a new connection");
    assert.deepEqual(uncaught, [], "no uncaught exception");
  } finally {
    process.off("uncaughtException", record);
    manager.abort();
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    sessions.forEach((session) => session.destroy());
    await stopped;
  }
});
