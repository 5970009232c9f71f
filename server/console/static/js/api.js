// api.js calls ledgerd's RPCs through its HTTP/JSON gateway, with the
// caller's own credentials: an API token kept in this tab's sessionStorage
// (never a cookie, never in a URL) and sent as "Authorization: Bearer", or,
// over HTTPS, the browser's client certificate. Every permission is the
// RPC's own: a refusal comes back as the gateway's status JSON and is shown
// as such.

const TOKEN_KEY = "ledgerd.console.token";

/** token returns the API token of this tab, or "" when none was given. */
export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

/** setToken keeps (or, with "", forgets) the API token for this tab only. */
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// The gRPC status codes by number, as the gateway's error body carries them.
const CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
  "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

/** RPCError is a refused call: the gRPC code's name, the message and the ErrorInfo reason. */
export class RPCError extends Error {
  constructor(code, message, reason, httpStatus) {
    super(message);
    this.code = code;
    this.reason = reason;
    this.httpStatus = httpStatus;
  }

  /** describe is what the page shows: "PERMISSION_DENIED: message (reason)". */
  describe() {
    const reason = this.reason && this.reason !== this.code ? ` (${this.reason})` : "";
    return `${this.code}: ${this.message}${reason}`;
  }
}

/**
 * call invokes service/method with the request object and resolves with the
 * response object, or rejects with an RPCError.
 */
export async function call(service, method, request) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  // Relative to the console's own URL (…/ui/), so that a proxy that serves
  // ledgerd under a path prefix keeps working.
  const url = new URL(`../ledger.v1.${service}/${method}`, document.baseURI);
  let res;
  try {
    res = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify(request || {}),
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error",
    });
  } catch (err) {
    throw new RPCError("UNAVAILABLE", `ledgerd could not be reached: ${err.message}`, "", 0);
  }
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = null;
  }
  if (res.ok && body) return body;
  if (body && typeof body.code === "number") {
    const info = (body.details || []).find((d) => d && d.reason);
    throw new RPCError(CODES[body.code] || `code ${body.code}`, body.message || res.statusText, info ? info.reason : "", res.status);
  }
  throw new RPCError(`HTTP ${res.status}`, text.slice(0, 300) || res.statusText, "", res.status);
}

/** admin calls a LedgerAdminService method. */
export function admin(method, request) {
  return call("LedgerAdminService", method, request);
}

/** ledger calls a LedgerService method. */
export function ledger(method, request) {
  return call("LedgerService", method, request);
}

let caller = null;

/** whoAmI is the WhoAmIResponse of the signed-in caller (principal, bindings), or null before sign-in. */
export function whoAmI() {
  return caller;
}

/** setWhoAmI records the caller's WhoAmIResponse (app.js does, at sign-in). */
export function setWhoAmI(response) {
  caller = response;
}
