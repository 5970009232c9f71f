// Error-detail decoding and the error classes, without a server.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import {
  BadRequestSchema,
  ErrorInfoSchema,
  ErrorReason,
  ErrorReasonSchema,
  FingerprintMismatchError,
  InvalidArgumentError,
  isPermanent,
  isRetryable,
  LeaseLostError,
  LedgerError,
  NotFoundError,
  permanent,
  PermanentError,
  Reason,
  ResourceExhaustedError,
  ResultConflictError,
  toLedgerError,
  UnavailableError,
  createClient,
} from "../src/index.js";
import { errorMessage } from "../src/do.js";

/** A ConnectError as the gRPC transport parses it from the wire: details as (type name, bytes). */
function wireError(code: Code, message: string, details: { type: string; value: Uint8Array }[]): ConnectError {
  const err = new ConnectError(message, code);
  err.details.push(...details);
  return err;
}

function concat(...parts: (number[] | string)[]): Uint8Array {
  const bytes: number[] = [];
  for (const part of parts) {
    bytes.push(...(typeof part === "string" ? new TextEncoder().encode(part) : part));
  }
  return new Uint8Array(bytes);
}

describe("error details", () => {
  test("decodes a hand-encoded google.rpc.ErrorInfo and BadRequest (the upstream field numbers)", () => {
    // ErrorInfo{reason: "INVALID_ARGUMENT", domain: "ledgerd", metadata: {field: "key"}}
    const entry = concat([0x0a, 5], "field", [0x12, 3], "key");
    const info = concat([0x0a, 16], "INVALID_ARGUMENT", [0x12, 7], "ledgerd", [0x1a, entry.length], Array.from(entry));
    // BadRequest{field_violations: [{field: "key", description: "is required"}]}
    const violation = concat([0x0a, 3], "key", [0x12, 11], "is required");
    const badRequest = concat([0x0a, violation.length], Array.from(violation));

    const connectError = wireError(Code.InvalidArgument, "invalid key: is required", [
      { type: "google.rpc.ErrorInfo", value: info },
      { type: "google.rpc.BadRequest", value: badRequest },
    ]);
    const [decodedInfo] = connectError.findDetails(ErrorInfoSchema);
    assert.equal(decodedInfo?.reason, "INVALID_ARGUMENT");
    assert.equal(decodedInfo?.domain, "ledgerd");
    assert.deepEqual(decodedInfo?.metadata, { field: "key" });
    const [decodedBadRequest] = connectError.findDetails(BadRequestSchema);
    assert.equal(decodedBadRequest?.fieldViolations[0]?.field, "key");
    assert.equal(decodedBadRequest?.fieldViolations[0]?.description, "is required");

    const err = toLedgerError(connectError);
    assert.ok(err instanceof InvalidArgumentError);
    assert.ok(err instanceof LedgerError);
    assert.equal(err.reason, "INVALID_ARGUMENT");
    assert.equal(err.code, Code.InvalidArgument);
    assert.equal(err.field, "key");
    assert.equal(err.rawMessage, "invalid key: is required");
    assert.equal(err.message, "INVALID_ARGUMENT: invalid key: is required");
    assert.equal(err.name, "InvalidArgumentError");
    assert.equal(err.cause, connectError);
  });

  test("the BadRequest field wins over ErrorInfo metadata; ErrorInfo metadata alone names the field", () => {
    const encode = (reason: string, field?: string) =>
      toBinary(ErrorInfoSchema, create(ErrorInfoSchema, { reason, domain: "ledgerd", metadata: field ? { field } : {} }));
    const both = toLedgerError(
      wireError(Code.InvalidArgument, "bad", [
        { type: "google.rpc.ErrorInfo", value: encode("INVALID_ARGUMENT", "from_info") },
        {
          type: "google.rpc.BadRequest",
          value: toBinary(BadRequestSchema, create(BadRequestSchema, { fieldViolations: [{ field: "lease_ttl" }] })),
        },
      ]),
    ) as LedgerError;
    assert.equal(both.field, "lease_ttl");
    const infoOnly = toLedgerError(
      wireError(Code.InvalidArgument, "bad", [{ type: "google.rpc.ErrorInfo", value: encode("INVALID_ARGUMENT", "owner") }]),
    ) as LedgerError;
    assert.equal(infoOnly.field, "owner");
  });

  test("maps every reason to its class, whatever the code says", () => {
    const cases: [string, Code, new (...args: never[]) => LedgerError][] = [
      ["LEASE_LOST", Code.Aborted, LeaseLostError],
      ["FINGERPRINT_MISMATCH", Code.FailedPrecondition, FingerprintMismatchError],
      ["RESULT_CONFLICT", Code.FailedPrecondition, ResultConflictError],
      ["NOT_FOUND", Code.NotFound, NotFoundError],
      ["UNAVAILABLE", Code.Unavailable, UnavailableError],
      ["RATE_LIMITED", Code.ResourceExhausted, ResourceExhaustedError],
      ["QUOTA_EXCEEDED", Code.ResourceExhausted, ResourceExhaustedError],
    ];
    for (const [reason, code, ErrorClass] of cases) {
      const value = toBinary(ErrorInfoSchema, create(ErrorInfoSchema, { reason, domain: "ledgerd" }));
      const err = toLedgerError(wireError(code, "m", [{ type: "google.rpc.ErrorInfo", value }]));
      assert.ok(err instanceof ErrorClass, `${reason} -> ${ErrorClass.name}`);
      assert.equal((err as LedgerError).reason, reason);
      assert.equal((err as LedgerError).field, "");
    }
  });

  test("the reasons are the names of the generated ErrorReason, and each one LedgerService returns has its class", () => {
    const leaseLost: "LEASE_LOST" = Reason.LeaseLost; // typed as the literal name
    assert.equal(leaseLost, "LEASE_LOST");
    assert.equal(ErrorReasonSchema.value[ErrorReason.LEASE_LOST]?.name, "LEASE_LOST");
    const names = ErrorReasonSchema.values.map((value) => value.name);
    for (const reason of Object.values(Reason)) {
      if (reason !== Reason.ResourceExhausted) {
        assert.ok(names.includes(reason), `${reason} is not an ErrorReason`);
      }
    }
    // Not the reason of a LedgerService call's status: the zero value, the
    // admin RPCs' own (this client has no admin methods), and a batch item's.
    const notRaised = new Set(["ERROR_REASON_UNSPECIFIED", "NOT_LEASED", "ALREADY_EXISTS", "RESPONSE_TOO_LARGE"]);
    for (const name of names.filter((n) => !notRaised.has(n))) {
      const value = toBinary(ErrorInfoSchema, create(ErrorInfoSchema, { reason: name, domain: "ledgerd" }));
      const err = toLedgerError(wireError(Code.Unknown, "m", [{ type: "google.rpc.ErrorInfo", value }])) as LedgerError;
      assert.notEqual(err.constructor, LedgerError, `${name} has no error class`);
      assert.equal(err.reason, name);
    }
  });

  test("without a ledgerd ErrorInfo the reason comes from the code, where it is unambiguous", () => {
    const foreign = toBinary(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "SOMETHING", domain: "proxy.example" }));
    const aborted = toLedgerError(wireError(Code.Aborted, "m", [{ type: "google.rpc.ErrorInfo", value: foreign }]));
    assert.ok(aborted instanceof LeaseLostError);
    assert.equal(aborted.reason, "LEASE_LOST");

    const unavailable = toLedgerError(new ConnectError("connect ECONNREFUSED", Code.Unavailable));
    assert.ok(unavailable instanceof UnavailableError);
    assert.ok(isRetryable(unavailable));
    assert.ok(isRetryable(toLedgerError(new ConnectError("late", Code.DeadlineExceeded))));
    assert.ok(!isRetryable(toLedgerError(new ConnectError("bad", Code.InvalidArgument))));

    // FAILED_PRECONDITION is FINGERPRINT_MISMATCH or RESULT_CONFLICT: no reason.
    const precondition = toLedgerError(new ConnectError("m", Code.FailedPrecondition)) as LedgerError;
    assert.equal(precondition.constructor, LedgerError);
    assert.equal(precondition.reason, "");
    assert.equal(precondition.message, "FailedPrecondition: m");
  });

  test("a connection that broke before an answer is UNAVAILABLE (retried), not LEASE_LOST or INTERNAL", () => {
    const nodeError = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:1`), { code });
    for (const [code, connectCode] of [
      ["ECONNRESET", Code.Aborted], // what Connect makes of a reset connection
      ["ERR_STREAM_DESTROYED", Code.Aborted],
      ["EPIPE", Code.Internal],
      ["ERR_HTTP2_GOAWAY_SESSION", Code.Internal],
    ] as const) {
      const connectError = new ConnectError(`connect ${code}`, connectCode, undefined, undefined, nodeError(code));
      const err = toLedgerError(connectError);
      assert.ok(err instanceof UnavailableError, `${code} -> ${String(err)}`);
      assert.equal(err.code, Code.Unavailable);
      assert.equal(err.reason, "UNAVAILABLE");
      assert.equal(err.cause, connectError);
      assert.ok(isRetryable(err));
    }
    // The ledger's own answer keeps its reason, whatever its cause says.
    const value = toBinary(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "LEASE_LOST", domain: "ledgerd" }));
    const answer = wireError(Code.Aborted, "m", [{ type: "google.rpc.ErrorInfo", value }]);
    answer.cause = nodeError("ECONNRESET");
    assert.ok(toLedgerError(answer) instanceof LeaseLostError);
    // A stream the server refused (it was going away) was not processed.
    const refusedCause = Object.assign(new Error("Stream closed with error code NGHTTP2_REFUSED_STREAM"), {
      code: "ERR_HTTP2_STREAM_ERROR",
    });
    const refused = toLedgerError(new ConnectError(refusedCause.message, Code.Internal, undefined, undefined, refusedCause));
    assert.ok(refused instanceof UnavailableError, String(refused));
    assert.ok(isRetryable(refused));
    const otherReset = Object.assign(new Error("Stream closed with error code NGHTTP2_PROTOCOL_ERROR"), {
      code: "ERR_HTTP2_STREAM_ERROR",
    });
    assert.equal(
      (toLedgerError(new ConnectError(otherReset.message, Code.Internal, undefined, undefined, otherReset)) as LedgerError).code,
      Code.Internal,
    );
    // Other Node errors (a TLS failure, say) keep Connect's code.
    const tls = new ConnectError("bad cert", Code.Internal, undefined, undefined, nodeError("ERR_TLS_CERT_ALTNAME_INVALID"));
    assert.equal((toLedgerError(tls) as LedgerError).code, Code.Internal);
  });

  test("reads the server's RetryInfo as retryDelayMs", () => {
    const err = toLedgerError(
      wireError(Code.Unavailable, "slow down", [
        { type: "google.rpc.RetryInfo", value: new Uint8Array([0x0a, 0x06, 0x08, 0x02, 0x10, 0x80, 0xe1, 0xeb, 0x17]) }, // 2.05s
      ]),
    ) as LedgerError;
    assert.equal(err.retryDelayMs, 2050);
    assert.equal((toLedgerError(new ConnectError("m", Code.Unavailable)) as LedgerError).retryDelayMs, undefined);
  });

  test("skips details it cannot decode", () => {
    const err = toLedgerError(
      wireError(Code.Aborted, "m", [
        { type: "google.rpc.ErrorInfo", value: new Uint8Array([0x0a, 0x50, 0x01]) }, // truncated
        { type: "google.rpc.RetryInfo", value: new Uint8Array([0x0a, 0x00]) },
      ]),
    );
    assert.ok(err instanceof LeaseLostError);
  });

  test("keeps errors that are not ConnectErrors, and LedgerErrors, as they are", () => {
    const plain = new TypeError("x");
    assert.equal(toLedgerError(plain), plain);
    const ledger = toLedgerError(new ConnectError("m", Code.NotFound));
    assert.equal(toLedgerError(ledger), ledger);
  });
});

describe("permanent", () => {
  test("marks an error permanent, keeps it as the cause, and is found through cause chains", () => {
    const original = new Error("malformed record");
    const marked = permanent(original);
    assert.ok(marked instanceof PermanentError);
    assert.equal(marked.message, "malformed record");
    assert.equal(marked.cause, original);
    assert.equal(permanent(marked), marked);
    assert.ok(isPermanent(marked));
    assert.ok(isPermanent(new Error("wrapper", { cause: marked })));
    assert.ok(!isPermanent(original));
    assert.ok(!isPermanent("text"));
    assert.equal(permanent("text").message, "text");
  });
});

describe("errorMessage", () => {
  test("is never empty, has no NUL, and is cut to 4 KiB of valid UTF-8", () => {
    assert.equal(errorMessage(new Error("a\0b")), "ab");
    assert.equal(errorMessage(new RangeError("")), "RangeError with an empty message");
    assert.equal(errorMessage(undefined), "undefined");
    assert.equal(errorMessage("\ud800x"), "\ufffdx");
    const long = errorMessage(new Error("é".repeat(5000)));
    assert.ok(new TextEncoder().encode(long).length <= 4096);
    assert.equal(long, "é".repeat(2048));
  });
});

describe("createClient", () => {
  test("requires an explicit insecure opt-in for plaintext", () => {
    assert.throws(() => createClient({ address: "http://127.0.0.1:1" }), /insecure/);
    assert.throws(() => createClient({ address: "https://127.0.0.1:1", insecure: true }), /TLS/);
    assert.throws(() => createClient({ address: "ftp://ledgerd:7400" }), /scheme/);
    assert.throws(() => createClient({ address: "" }), TypeError);
    createClient({ address: "127.0.0.1:1", insecure: true }).close();
    createClient({ address: "http://127.0.0.1:1", insecure: true }).close();
    createClient({ address: "127.0.0.1:1" }).close();
  });
});
