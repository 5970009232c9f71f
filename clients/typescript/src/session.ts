import type * as http2 from "node:http2";

import { Http2SessionManager } from "@connectrpc/connect-node";

/**
 * An Http2SessionManager whose connections can never crash the process with
 * a late "error" event.
 *
 * When a server sends GOAWAY (NO_ERROR) on a connection with no open streams
 * — a replica draining, a load balancer closing an idle connection — connect-node
 * destroys the connection with an error that Node raises only once the socket
 * has closed. If a new call reconnects in between, the manager has already
 * removed its listeners from the old connection, and that late error becomes
 * an uncaught exception. The old connection is no longer used by then, so the
 * error carries nothing a caller could act on: this manager gives every
 * connection it hands out a listener that drops it, the same guard connect-node
 * already puts on connections it aborts itself.
 */
export class GuardedSessionManager extends Http2SessionManager {
  readonly #guarded = new WeakSet<http2.Http2Session>();

  override async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await super.request(method, path, headers, options);
    const session = stream.session;
    if (session !== undefined && !this.#guarded.has(session)) {
      this.#guarded.add(session);
      session.on("error", ignoreLateError);
    }
    return stream;
  }
}

function ignoreLateError(): void {
  // The manager's own listener reports errors while the connection is in use;
  // see GuardedSessionManager.
}
