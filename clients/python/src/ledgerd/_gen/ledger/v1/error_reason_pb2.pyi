from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

ALREADY_EXISTS: ErrorReason
CANCELED: ErrorReason
DEADLINE_EXCEEDED: ErrorReason
DESCRIPTOR: _descriptor.FileDescriptor
ERROR_REASON_UNSPECIFIED: ErrorReason
FINGERPRINT_MISMATCH: ErrorReason
INTERNAL: ErrorReason
INVALID_ARGUMENT: ErrorReason
LEASE_LOST: ErrorReason
NOT_FOUND: ErrorReason
NOT_LEASED: ErrorReason
PERMISSION_DENIED: ErrorReason
QUOTA_EXCEEDED: ErrorReason
RATE_LIMITED: ErrorReason
RESPONSE_TOO_LARGE: ErrorReason
RESULT_CONFLICT: ErrorReason
UNAUTHENTICATED: ErrorReason
UNAVAILABLE: ErrorReason

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
