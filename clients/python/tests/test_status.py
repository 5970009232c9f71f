"""Decoding of google.rpc.Status details and the mapping to exceptions (no server needed)."""

from __future__ import annotations

import pickle
import unittest

import support  # noqa: F401 - sets sys.path

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from ledgerd.pb import error_reason_pb2

import ledgerd
from ledgerd import _status
from ledgerd.errors import error_from_status

# A google.rpc.Status exactly as ledgerd sent it for ReserveRequest.namespace
# "bad ns" (captured from the server): an ErrorInfo and a BadRequest.
CAPTURED_INVALID_NAMESPACE = (
    b"\x08\x03\x12Minvalid namespace: must match [A-Za-z0-9][A-Za-z0-9._-]*, found ' ' at byte 3"
    b"\x1a[\n(type.googleapis.com/google.rpc.ErrorInfo\x12/\n\x10INVALID_ARGUMENT\x12\x07ledgerd"
    b"\x1a\x12\n\x05field\x12\tnamespace\x1av\n)type.googleapis.com/google.rpc.BadRequest\x12I\nG"
    b"\n\tnamespace\x12:must match [A-Za-z0-9][A-Za-z0-9._-]*, found ' ' at byte 3"
)


def _rpc_message_classes():
    """Status, ErrorInfo and BadRequest classes built by the protobuf runtime
    from a hand-written descriptor in a private pool: an encoder that is
    independent of the decoder under test."""
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="ledgerd_test/google_rpc_subset.proto", package="google.rpc", syntax="proto3"
    )
    proto.dependency.append("google/protobuf/any.proto")
    status = proto.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    status.field.add(
        name="details", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".google.protobuf.Any"
    )
    info = proto.message_type.add(name="ErrorInfo")
    info.field.add(name="reason", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    info.field.add(name="domain", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry = info.nested_type.add(name="MetadataEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    info.field.add(
        name="metadata",
        number=3,
        type=F.TYPE_MESSAGE,
        label=F.LABEL_REPEATED,
        type_name=".google.rpc.ErrorInfo.MetadataEntry",
    )
    bad = proto.message_type.add(name="BadRequest")
    violation = bad.nested_type.add(name="FieldViolation")
    violation.field.add(name="field", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    violation.field.add(name="description", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    violation.field.add(name="reason", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    bad.field.add(
        name="field_violations",
        number=1,
        type=F.TYPE_MESSAGE,
        label=F.LABEL_REPEATED,
        type_name=".google.rpc.BadRequest.FieldViolation",
    )
    any_proto = descriptor_pb2.FileDescriptorProto()
    any_pb2.DESCRIPTOR.CopyToProto(any_proto)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_proto.SerializeToString())
    pool.AddSerializedFile(proto.SerializeToString())

    def message_class(name):
        descriptor = pool.FindMessageTypeByName(name)
        if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
            return message_factory.GetMessageClass(descriptor)
        return message_factory.MessageFactory(pool).GetPrototype(descriptor)

    return (
        message_class("google.rpc.Status"),
        message_class("google.rpc.ErrorInfo"),
        message_class("google.rpc.BadRequest"),
    )


Status, ErrorInfo, BadRequest = _rpc_message_classes()


def _status_bytes(code, message, *details):
    status = Status(code=code, message=message)
    for type_url, detail in details:
        status.details.add(type_url=type_url, value=detail.SerializeToString())
    return status.SerializeToString()


class DecodeStatusTest(unittest.TestCase):
    def test_captured_server_status(self):
        decoded = _status.decode_status(CAPTURED_INVALID_NAMESPACE)
        self.assertEqual(decoded.code, 3)
        self.assertTrue(decoded.message.startswith("invalid namespace"))
        self.assertEqual(len(decoded.error_infos), 1)
        self.assertEqual(decoded.error_infos[0].reason, "INVALID_ARGUMENT")
        self.assertEqual(decoded.error_infos[0].domain, "ledgerd")
        self.assertEqual(decoded.error_infos[0].metadata, {"field": "namespace"})
        self.assertEqual([v.field for v in decoded.field_violations], ["namespace"])
        self.assertIn("must match", decoded.field_violations[0].description)

    def test_matches_the_protobuf_runtime_encoding(self):
        info = ErrorInfo(reason="LEASE_LOST", domain="ledgerd", metadata={"a": "1", "b": "ünïcode", "": "empty"})
        bad = BadRequest()
        bad.field_violations.add(field="key", description="too long", reason="TOO_LONG")
        bad.field_violations.add(field="owner", description="empty")
        other = ErrorInfo(reason="X")
        data = _status_bytes(
            10,
            "the token is stale",
            ("type.googleapis.com/google.rpc.ErrorInfo", info),
            ("type.googleapis.com/google.rpc.BadRequest", bad),
            ("type.googleapis.com/google.rpc.DebugInfo", other),
        )
        decoded = _status.decode_status(data)
        self.assertEqual(decoded.code, 10)
        self.assertEqual(decoded.message, "the token is stale")
        self.assertEqual(decoded.error_infos[0].reason, "LEASE_LOST")
        self.assertEqual(decoded.error_infos[0].metadata, {"a": "1", "b": "ünïcode", "": "empty"})
        self.assertEqual(
            [(v.field, v.description) for v in decoded.field_violations], [("key", "too long"), ("owner", "empty")]
        )
        self.assertEqual(decoded.other_types, ("type.googleapis.com/google.rpc.DebugInfo",))

    def test_negative_code_and_unknown_fields(self):
        data = _status_bytes(-1, "m")
        # Unknown fields of every wire type: varint 99, fixed64 98, fixed32 97, bytes 96.
        data += bytes([0x98, 0x06, 0x05])  # field 99, varint 5
        data += bytes([0x91, 0x06]) + b"\x00" * 8  # field 98, fixed64
        data += bytes([0x8D, 0x06]) + b"\x00" * 4  # field 97, fixed32
        data += bytes([0x82, 0x06, 0x02]) + b"hi"  # field 96, length-delimited
        decoded = _status.decode_status(data)
        self.assertEqual(decoded.code, -1)
        self.assertEqual(decoded.message, "m")

    def test_empty_status(self):
        decoded = _status.decode_status(b"")
        self.assertEqual((decoded.code, decoded.message, decoded.error_infos), (0, "", ()))

    def test_malformed_input_raises_value_error(self):
        for data in (
            CAPTURED_INVALID_NAMESPACE[:-5],  # truncated
            b"\x12\x05ab",  # length beyond the end
            b"\x08",  # truncated varint
            b"\x0b",  # a group (wire type 3)
            b"\x00\x01",  # field number 0
            b"\x08" + b"\xff" * 11,  # varint too long
        ):
            with self.subTest(data=data):
                with self.assertRaises(ValueError):
                    _status.decode_status(data)

    def test_find_status_details(self):
        metadata = (("other", "x"), ("grpc-status-details-bin", b"\x08\x01"))
        self.assertEqual(_status.find_status_details(metadata), b"\x08\x01")
        self.assertIsNone(_status.find_status_details(None))
        self.assertIsNone(_status.find_status_details((("other", "x"),)))


class ErrorMappingTest(unittest.TestCase):
    def _details(self, reason, code=9, domain="ledgerd", field=None):
        info = ErrorInfo(reason=reason, domain=domain)
        parts = [("type.googleapis.com/google.rpc.ErrorInfo", info)]
        if field:
            info.metadata["field"] = field
            bad = BadRequest()
            bad.field_violations.add(field=field, description="broken")
            parts.append(("type.googleapis.com/google.rpc.BadRequest", bad))
        return _status_bytes(code, "message", *parts)

    def test_every_reason_has_its_class(self):
        cases = {
            "INVALID_ARGUMENT": (grpc.StatusCode.INVALID_ARGUMENT, ledgerd.InvalidArgumentError),
            "FINGERPRINT_MISMATCH": (grpc.StatusCode.FAILED_PRECONDITION, ledgerd.FingerprintMismatchError),
            "LEASE_LOST": (grpc.StatusCode.ABORTED, ledgerd.LeaseLostError),
            "RESULT_CONFLICT": (grpc.StatusCode.FAILED_PRECONDITION, ledgerd.ResultConflictError),
            "NOT_FOUND": (grpc.StatusCode.NOT_FOUND, ledgerd.NotFoundError),
            "UNAUTHENTICATED": (grpc.StatusCode.UNAUTHENTICATED, ledgerd.UnauthenticatedError),
            "PERMISSION_DENIED": (grpc.StatusCode.PERMISSION_DENIED, ledgerd.PermissionDeniedError),
            "RESOURCE_EXHAUSTED": (grpc.StatusCode.RESOURCE_EXHAUSTED, ledgerd.ResourceExhaustedError),
            "RATE_LIMITED": (grpc.StatusCode.RESOURCE_EXHAUSTED, ledgerd.ResourceExhaustedError),
            "QUOTA_EXCEEDED": (grpc.StatusCode.RESOURCE_EXHAUSTED, ledgerd.ResourceExhaustedError),
            "UNAVAILABLE": (grpc.StatusCode.UNAVAILABLE, ledgerd.UnavailableError),
            "DEADLINE_EXCEEDED": (grpc.StatusCode.DEADLINE_EXCEEDED, ledgerd.DeadlineExceededError),
            "CANCELED": (grpc.StatusCode.CANCELLED, ledgerd.CancelledError),
            "INTERNAL": (grpc.StatusCode.INTERNAL, ledgerd.InternalError),
        }
        for reason, (code, cls) in cases.items():
            with self.subTest(reason=reason):
                error = error_from_status(code, "message", self._details(reason, code.value[0]), operation="op")
                self.assertIs(type(error), cls)
                self.assertIsInstance(error, ledgerd.LedgerError)
                self.assertEqual(error.reason, reason)
                self.assertEqual(error.code, code)
                self.assertEqual(error.operation, "op")
                self.assertEqual(str(error), f"op: {reason}: message")

    def test_every_reason_ledger_service_returns_has_a_class(self):
        # The reasons are the names of ledger.v1.ErrorReason; a new one needs
        # its class here. Not a LedgerService call's reason: the zero value,
        # the admin RPCs' own (this client has no admin methods), and a batch
        # item's.
        not_raised = {"ERROR_REASON_UNSPECIFIED", "NOT_LEASED", "ALREADY_EXISTS", "RESPONSE_TOO_LARGE"}
        self.assertEqual(error_reason_pb2.ErrorReason.Name(error_reason_pb2.LEASE_LOST), "LEASE_LOST")
        for reason in error_reason_pb2.ErrorReason.keys():
            if reason in not_raised:
                continue
            with self.subTest(reason=reason):
                error = error_from_status(grpc.StatusCode.UNKNOWN, "m", self._details(reason, 2))
                self.assertIsNot(type(error), ledgerd.LedgerError, "no class for this reason")
                self.assertEqual(error.reason, reason)

    def test_fingerprint_and_conflict_share_a_code_and_are_told_apart(self):
        code = grpc.StatusCode.FAILED_PRECONDITION
        self.assertIsInstance(
            error_from_status(code, "m", self._details("FINGERPRINT_MISMATCH")), ledgerd.FingerprintMismatchError
        )
        self.assertIsInstance(error_from_status(code, "m", self._details("RESULT_CONFLICT")), ledgerd.ResultConflictError)
        # Without details the code alone cannot tell: the base class, no reason.
        plain = error_from_status(code, "m", None)
        self.assertIs(type(plain), ledgerd.LedgerError)
        self.assertEqual(plain.reason, "")
        self.assertEqual(str(plain), "FAILED_PRECONDITION: m")

    def test_field_comes_from_bad_request(self):
        error = error_from_status(
            grpc.StatusCode.INVALID_ARGUMENT, "m", self._details("INVALID_ARGUMENT", 3, field="lease_ttl")
        )
        self.assertIsInstance(error, ledgerd.InvalidArgumentError)
        self.assertEqual(error.field, "lease_ttl")
        self.assertEqual(error.metadata, {"field": "lease_ttl"})
        captured = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "m", CAPTURED_INVALID_NAMESPACE)
        self.assertEqual(captured.field, "namespace")

    def test_status_without_details_gets_the_reason_of_its_code(self):
        error = error_from_status(grpc.StatusCode.UNAVAILABLE, "connection refused", None)
        self.assertIsInstance(error, ledgerd.UnavailableError)
        self.assertEqual(error.reason, "UNAVAILABLE")
        self.assertIsNone(error.field)
        self.assertIsInstance(error_from_status(grpc.StatusCode.ABORTED, "m", None), ledgerd.LeaseLostError)
        unknown = error_from_status(grpc.StatusCode.UNKNOWN, "m", None)
        self.assertIs(type(unknown), ledgerd.LedgerError)

    def test_foreign_domain_is_ignored(self):
        error = error_from_status(grpc.StatusCode.ABORTED, "m", self._details("SOMETHING_ELSE", domain="proxy.example"))
        self.assertIsInstance(error, ledgerd.LeaseLostError)  # from the code
        self.assertEqual(error.reason, "LEASE_LOST")

    def test_unknown_reason_keeps_the_reason_on_the_base_class(self):
        error = error_from_status(grpc.StatusCode.FAILED_PRECONDITION, "m", self._details("NEW_REASON"))
        self.assertIs(type(error), ledgerd.LedgerError)
        self.assertEqual(error.reason, "NEW_REASON")

    def test_malformed_details_fall_back_to_the_code(self):
        error = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "m", b"\x1a\x50garbage")
        self.assertIsInstance(error, ledgerd.InvalidArgumentError)
        self.assertIsNone(error.field)

    def test_errors_pickle(self):
        error = error_from_status(
            grpc.StatusCode.INVALID_ARGUMENT, "m", self._details("INVALID_ARGUMENT", 3, field="key"), operation="reserve"
        )
        copy = pickle.loads(pickle.dumps(error))
        self.assertIs(type(copy), ledgerd.InvalidArgumentError)
        self.assertEqual((copy.field, copy.reason, copy.code, str(copy)), (error.field, error.reason, error.code, str(error)))
        timeout = pickle.loads(pickle.dumps(ledgerd.DeadlineExceededError("late", operation="do")))
        self.assertIsInstance(timeout, TimeoutError)
        self.assertEqual(str(timeout), "do: DEADLINE_EXCEEDED: late")
        failed = ledgerd.FailedError(
            namespace="ns", key="k", error_code="bad", message="boom", fencing_token=3, attempts=2, failed_at=None
        )
        self.assertEqual(str(pickle.loads(pickle.dumps(failed))), str(failed))

    def test_permanent(self):
        cause = ValueError("bad record")
        wrapped = ledgerd.Permanent(cause, code="bad_input")
        self.assertIsInstance(wrapped, ledgerd.PermanentError)
        self.assertIs(wrapped.error, cause)
        self.assertIs(wrapped.__cause__, cause)
        self.assertEqual(wrapped.code, "bad_input")
        self.assertEqual(str(wrapped), "bad record")
        with self.assertRaises(TypeError):
            ledgerd.Permanent("not an exception")  # type: ignore[arg-type]


if __name__ == "__main__":
    unittest.main()
