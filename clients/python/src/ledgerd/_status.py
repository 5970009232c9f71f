"""Decoding of the ``grpc-status-details-bin`` trailer (a ``google.rpc.Status``).

ledgerd puts a ``google.rpc.ErrorInfo`` (and, for invalid arguments, a
``google.rpc.BadRequest``) in the details of every error status. The Python
classes for these messages live in ``googleapis-common-protos``, which is not
a dependency of this client (and not part of Debian's ``python3-protobuf``).
The messages are small and frozen, so they are decoded here straight from the
protobuf wire format. That works the same on every protobuf runtime (python,
cpp or upb; 3.x, 4.x or later) and cannot collide with another copy of the
``google/rpc/*.proto`` descriptors in the process.

Unknown fields and unknown detail types are skipped, as protobuf parsers do.
Malformed input raises ``ValueError``; callers treat it as "no details".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple, Union

__all__ = [
    "STATUS_DETAILS_KEY",
    "ERROR_INFO_TYPE",
    "BAD_REQUEST_TYPE",
    "RETRY_INFO_TYPE",
    "ErrorInfo",
    "FieldViolation",
    "StatusDetails",
    "decode_status",
]

#: The trailing metadata key gRPC uses for a serialized google.rpc.Status.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: The type URL of a google.rpc.ErrorInfo packed in a google.protobuf.Any.
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
#: The type URL of a google.rpc.BadRequest packed in a google.protobuf.Any.
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
#: The type URL of a google.rpc.RetryInfo packed in a google.protobuf.Any.
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"

_VARINT, _FIXED64, _LEN, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5

_Value = Union[int, bytes]


@dataclass(frozen=True)
class ErrorInfo:
    """A decoded ``google.rpc.ErrorInfo``: why an error happened."""

    reason: str = ""
    domain: str = ""
    metadata: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldViolation:
    """One ``google.rpc.BadRequest.FieldViolation``: a field and what is wrong."""

    field: str = ""
    description: str = ""


@dataclass(frozen=True)
class StatusDetails:
    """A decoded ``google.rpc.Status`` with the detail types ledgerd sends."""

    code: int = 0
    message: str = ""
    error_infos: Tuple[ErrorInfo, ...] = ()
    field_violations: Tuple[FieldViolation, ...] = ()
    #: The RetryInfo's retry_delay in seconds, when the status carries one:
    #: the server's "do not retry before" (rate limits, a draining server).
    retry_delay: Optional[float] = None
    #: Type URLs of details this decoder does not know (kept for diagnostics).
    other_types: Tuple[str, ...] = ()


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[Tuple[int, int, _Value]]:
    """Yields (field number, wire type, value) for each field of a message."""
    pos = 0
    end = len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire_type == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire_type, value
        elif wire_type == _LEN:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated length-delimited field")
            yield number, wire_type, bytes(buf[pos : pos + length])
            pos += length
        elif wire_type == _FIXED64:
            if pos + 8 > end:
                raise ValueError("truncated fixed64 field")
            yield number, wire_type, int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire_type == _FIXED32:
            if pos + 4 > end:
                raise ValueError("truncated fixed32 field")
            yield number, wire_type, int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:  # groups are not used by any of these messages
            raise ValueError(f"unsupported wire type {wire_type}")


def _text(value: _Value) -> str:
    if not isinstance(value, bytes):
        raise ValueError("expected a length-delimited string")
    return value.decode("utf-8", errors="replace")


def _decode_error_info(buf: bytes) -> ErrorInfo:
    # message ErrorInfo { string reason = 1; string domain = 2;
    #                     map<string, string> metadata = 3; }
    reason, domain, metadata = "", "", {}
    for number, wire_type, value in _fields(buf):
        if number == 1 and wire_type == _LEN:
            reason = _text(value)
        elif number == 2 and wire_type == _LEN:
            domain = _text(value)
        elif number == 3 and wire_type == _LEN:
            key, val = "", ""  # map entry: string key = 1; string value = 2;
            for n, wt, v in _fields(value):  # type: ignore[arg-type]
                if n == 1 and wt == _LEN:
                    key = _text(v)
                elif n == 2 and wt == _LEN:
                    val = _text(v)
            metadata[key] = val
    return ErrorInfo(reason=reason, domain=domain, metadata=metadata)


def _decode_bad_request(buf: bytes) -> List[FieldViolation]:
    # message BadRequest { repeated FieldViolation field_violations = 1; }
    # message FieldViolation { string field = 1; string description = 2; ... }
    violations = []
    for number, wire_type, value in _fields(buf):
        if number == 1 and wire_type == _LEN:
            name, description = "", ""
            for n, wt, v in _fields(value):  # type: ignore[arg-type]
                if n == 1 and wt == _LEN:
                    name = _text(v)
                elif n == 2 and wt == _LEN:
                    description = _text(v)
            violations.append(FieldViolation(field=name, description=description))
    return violations


def _decode_retry_info(buf: bytes) -> float:
    # message RetryInfo { google.protobuf.Duration retry_delay = 1; }
    # message Duration { int64 seconds = 1; int32 nanos = 2; }
    seconds, nanos = 0, 0
    for number, wire_type, value in _fields(buf):
        if number == 1 and wire_type == _LEN:
            for n, wt, v in _fields(value):  # type: ignore[arg-type]
                if n == 1 and wt == _VARINT:
                    seconds = int(v)  # type: ignore[arg-type]
                elif n == 2 and wt == _VARINT:
                    nanos = int(v)  # type: ignore[arg-type]
    if seconds >= 1 << 63:
        seconds -= 1 << 64
    if nanos >= 1 << 63:
        nanos -= 1 << 64
    return max(0.0, seconds + nanos / 1e9)


def decode_status(data: bytes) -> StatusDetails:
    """Decodes a serialized ``google.rpc.Status``.

    Returns its code, message, and the ErrorInfo and BadRequest details it
    carries. Raises ``ValueError`` if ``data`` is not a valid encoding.
    """
    # message Status { int32 code = 1; string message = 2;
    #                  repeated google.protobuf.Any details = 3; }
    # message Any { string type_url = 1; bytes value = 2; }
    code, message = 0, ""
    infos: List[ErrorInfo] = []
    violations: List[FieldViolation] = []
    others: List[str] = []
    retry_delay: Optional[float] = None
    for number, wire_type, value in _fields(bytes(data)):
        if number == 1 and wire_type == _VARINT:
            code = int(value)  # type: ignore[arg-type]
            if code >= 1 << 63:  # a negative int32, sign-extended
                code -= 1 << 64
        elif number == 2 and wire_type == _LEN:
            message = _text(value)
        elif number == 3 and wire_type == _LEN:
            type_url, payload = "", b""
            for n, wt, v in _fields(value):  # type: ignore[arg-type]
                if n == 1 and wt == _LEN:
                    type_url = _text(v)
                elif n == 2 and wt == _LEN:
                    payload = v  # type: ignore[assignment]
            if type_url == ERROR_INFO_TYPE:
                infos.append(_decode_error_info(payload))
            elif type_url == BAD_REQUEST_TYPE:
                violations.extend(_decode_bad_request(payload))
            elif type_url == RETRY_INFO_TYPE:
                retry_delay = _decode_retry_info(payload)
            else:
                others.append(type_url)
    return StatusDetails(
        code=code,
        message=message,
        error_infos=tuple(infos),
        field_violations=tuple(violations),
        retry_delay=retry_delay,
        other_types=tuple(others),
    )


def find_status_details(trailing_metadata: Optional[object]) -> Optional[bytes]:
    """Returns the ``grpc-status-details-bin`` value of trailing metadata, if any."""
    if not trailing_metadata:
        return None
    try:
        items = list(trailing_metadata)  # type: ignore[call-overload]
    except TypeError:
        return None
    for item in items:
        try:
            key, value = item  # _Metadatum is a (key, value) namedtuple
        except (TypeError, ValueError):
            continue
        if key == STATUS_DETAILS_KEY and isinstance(value, (bytes, bytearray)):
            return bytes(value)
    return None
