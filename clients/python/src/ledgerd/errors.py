"""The exceptions of the ledgerd client.

Every error the server returns carries a machine-readable reason (a
``google.rpc.ErrorInfo`` of domain ``ledgerd``); the client raises the
subclass of :class:`LedgerError` that matches it, so that callers branch with
``except``::

    try:
        client.complete(namespace=ns, key=key, fencing_token=token, result=b"ok")
    except ledgerd.LeaseLostError:
        ...  # someone took over: abandon the work

Besides the errors of RPCs, :meth:`ledgerd.Client.do` raises
:class:`FailedError` (the key failed permanently) and :class:`InProgressError`
(another owner holds the key and the caller would not, or could no longer,
wait). A work function marks a failure as permanent with :class:`PermanentError`
or :func:`Permanent`.
"""

from __future__ import annotations

import datetime
from typing import Dict, Optional, Type

import grpc
from ._gen.ledger.v1 import error_reason_pb2

from . import _status

__all__ = [
    "ERROR_DOMAIN",
    "LedgerError",
    "InvalidArgumentError",
    "FingerprintMismatchError",
    "LeaseLostError",
    "ResultConflictError",
    "NotFoundError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnavailableError",
    "CircuitOpenError",
    "DeadlineExceededError",
    "CancelledError",
    "InternalError",
    "FailedError",
    "InProgressError",
    "PermanentError",
    "Permanent",
    "error_from_rpc",
]

#: The google.rpc.ErrorInfo domain of every ledgerd error.
ERROR_DOMAIN = "ledgerd"


def _reason(value: int) -> str:
    """The reason string of a ``ledger.v1.ErrorReason`` value: its name, as
    ledgerd sends it (error_reason.proto defines the reasons, once)."""
    return error_reason_pb2.ErrorReason.Name(value)


# The reason of a RESOURCE_EXHAUSTED status without a ledgerd ErrorInfo:
# gRPC's own (a response over the receive limit, say). ledgerd never sends
# it, so it is not an ErrorReason.
_RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


class LedgerError(Exception):
    """Base class of every error the ledgerd client raises.

    Attributes:
        reason: the ledgerd reason, e.g. ``"LEASE_LOST"`` (the
            ``google.rpc.ErrorInfo`` reason). When the status carries no
            ledgerd ErrorInfo (gRPC itself made it, e.g. for a connection
            that could not be made), it is derived from the status code where
            ledgerd uses that code for a single reason, and is ``""``
            otherwise. :class:`FailedError` and :class:`InProgressError`,
            which are outcomes of :meth:`~ledgerd.Client.do` rather than RPC
            errors, use ``"FAILED"`` and ``"IN_PROGRESS"``.
        code: the gRPC status code (a :class:`grpc.StatusCode`), or ``None``
            when the error did not come from an RPC.
        field: the request field that broke a limit or a format (e.g.
            ``"key"``) for ``INVALID_ARGUMENT``; ``None`` otherwise.
        message: the server's message (or the client's, for errors that did
            not come from an RPC).
        operation: the RPC that failed (``"reserve"``, ``"complete"``, ...),
            or ``None``.
        metadata: the ErrorInfo metadata (e.g. ``{"field": "key"}``).
        retry_delay: the server's RetryInfo retry_delay in seconds (the
            least time to wait before retrying), or ``None`` if it sent none.
            The client's retries always wait at least that long.
    """

    #: The reason an instance of this class has unless the server says otherwise.
    default_reason: str = ""

    def __init__(
        self,
        message: str,
        *,
        reason: Optional[str] = None,
        code: Optional[grpc.StatusCode] = None,
        field: Optional[str] = None,
        operation: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = self.default_reason if reason is None else reason
        self.code = code
        self.field = field
        self.operation = operation
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.retry_delay: Optional[float] = None

    def __str__(self) -> str:
        label = self.reason or (self.code.name if self.code is not None else "")
        parts = [p for p in (self.operation, label) if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message

    def __reduce__(self):  # type: ignore[override]
        # Keyword-only constructors do not survive the default pickling of
        # exceptions (multiprocessing, concurrent.futures): rebuild from state.
        return (_restore_error, (type(self), self.args, dict(self.__dict__)))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, reason={self.reason!r}, "
            f"code={self.code}, field={self.field!r}, operation={self.operation!r})"
        )


def _restore_error(cls: type, args: tuple, state: dict) -> "LedgerError":
    error = cls.__new__(cls, *args)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class InvalidArgumentError(LedgerError):
    """A request field broke a limit or a format (reason ``INVALID_ARGUMENT``).

    Nothing was changed; do not retry as is. :attr:`field` names the field.
    """

    default_reason = _reason(error_reason_pb2.INVALID_ARGUMENT)


class FingerprintMismatchError(LedgerError):
    """The key was first reserved with a different fingerprint (``FINGERPRINT_MISMATCH``).

    Same key, different request: a caller bug that retrying cannot fix.
    """

    default_reason = _reason(error_reason_pb2.FINGERPRINT_MISMATCH)


class LeaseLostError(LedgerError):
    """The fencing token is no longer the key's current one (``LEASE_LOST``).

    Another worker took over (this one's lease ran out), or the key finished.
    Abandon the work: its result was not recorded.
    """

    default_reason = _reason(error_reason_pb2.LEASE_LOST)


class ResultConflictError(LedgerError):
    """A retried Complete or Fail carried a different result or error (``RESULT_CONFLICT``)."""

    default_reason = _reason(error_reason_pb2.RESULT_CONFLICT)


class NotFoundError(LedgerError):
    """The ledger holds no entry for the key (``NOT_FOUND``, from Lookup)."""

    default_reason = _reason(error_reason_pb2.NOT_FOUND)


class UnauthenticatedError(LedgerError):
    """The call carried no or bad credentials (``UNAUTHENTICATED``)."""

    default_reason = _reason(error_reason_pb2.UNAUTHENTICATED)


class PermissionDeniedError(LedgerError):
    """The caller may not do this in the namespace (``PERMISSION_DENIED``)."""

    default_reason = _reason(error_reason_pb2.PERMISSION_DENIED)


class ResourceExhaustedError(LedgerError):
    """A rate limit or quota was hit: ``RATE_LIMITED`` (retry after the
    server's RetryInfo), ``QUOTA_EXCEEDED`` (a Reserve over the namespace's
    max_held_leases, worth retrying later; or a Complete over its
    max_stored_bytes, which leaves the lease held), or ``RESOURCE_EXHAUSTED``
    from gRPC itself. ``reason`` says which; ``metadata`` names the quota,
    its limit and the usage. Nothing was done."""

    default_reason = _RESOURCE_EXHAUSTED


class UnavailableError(LedgerError):
    """The server or its database could not be reached (``UNAVAILABLE``).

    The client retries it with backoff until the call's timeout, so a caller
    sees it only once the timeout ran out while the server was unavailable.
    """

    default_reason = _reason(error_reason_pb2.UNAVAILABLE)


class CircuitOpenError(UnavailableError):
    """The client's circuit breaker is open: the call was not made (reason ``CIRCUIT_OPEN``).

    After repeated unavailability answers the client fails guarded calls at
    once, without touching the network, for the breaker's ``open_for``; then
    it lets one probe call through. It is an :class:`UnavailableError`, so
    code that handles an unreachable ledger handles it too. :attr:`code` is
    ``None`` (no RPC was made).

    Attributes:
        since: when the breaker opened (aware UTC datetime, local clock).
        last_error: the last unavailability error the breaker counted, or None.
    """

    default_reason = "CIRCUIT_OPEN"

    def __init__(
        self,
        *,
        since: datetime.datetime,
        age: float,
        last_error: Optional[BaseException],
        operation: Optional[str] = None,
    ) -> None:
        stamp = since.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = f"ledgerd: circuit open since {stamp} ({age:.1f}s ago), last error: {last_error}"
        super().__init__(message, operation=operation)
        self.since = since
        self.last_error = last_error

    def __str__(self) -> str:
        # The message names the client already; no operation or reason prefix.
        return self.message


class DeadlineExceededError(LedgerError, TimeoutError):
    """The call ran out of time; its effect is unknown (``DEADLINE_EXCEEDED``).

    The client retries while the call's timeout has time left, so a caller
    sees it only when the timeout itself ran out. It is also a
    :class:`TimeoutError`.
    """

    default_reason = _reason(error_reason_pb2.DEADLINE_EXCEEDED)


class CancelledError(LedgerError):
    """The call was cancelled, e.g. because the client was closed (``CANCELED``)."""

    default_reason = _reason(error_reason_pb2.CANCELED)


class InternalError(LedgerError):
    """A bug in ledgerd (``INTERNAL``); the details are in the server's log."""

    default_reason = _reason(error_reason_pb2.INTERNAL)


class FailedError(LedgerError):
    """The key failed permanently; raised by :meth:`~ledgerd.Client.do`.

    An earlier run's work raised a :class:`PermanentError`, which the ledger
    stored. The work is not run again; a new attempt needs a new key (or an
    admin reset of this one). :attr:`reason` is ``"FAILED"`` and
    :attr:`code` is ``None``.

    Attributes:
        namespace, key: the failed key.
        error_code: the stored error's machine-readable code (may be ``""``).
        message: the stored error's message.
        fencing_token: the token of the grant whose work failed.
        attempts: how many grants the key had.
        failed_at: when the key failed (UTC, database clock), or ``None``.
    """

    default_reason = "FAILED"

    def __init__(
        self,
        *,
        namespace: str,
        key: str,
        error_code: str,
        message: str,
        fencing_token: int,
        attempts: int,
        failed_at: Optional[datetime.datetime],
    ) -> None:
        super().__init__(message)
        self.namespace = namespace
        self.key = key
        self.error_code = error_code
        self.fencing_token = fencing_token
        self.attempts = attempts
        self.failed_at = failed_at

    def __str__(self) -> str:
        stored = f"{self.error_code}: {self.message}" if self.error_code else self.message
        return (
            f"{self.namespace}/{self.key} failed permanently at attempt {self.attempts} "
            f"(token {self.fencing_token}): {stored}"
        )


class InProgressError(LedgerError):
    """Another owner holds the key; raised by :meth:`~ledgerd.Client.do`.

    Raised at once with ``wait=False``, or when do()'s timeout ran out while
    the other owner still held the key. :attr:`reason` is ``"IN_PROGRESS"``.

    Attributes:
        namespace, key: the key.
        owner: the holder.
        lease_expires_at: when the holder's lease runs out unless it
            heartbeats (UTC, database clock), or ``None``.
        retry_after: the server's hint, in seconds, for when to ask again.
        attempt: the holder's attempt number.
    """

    default_reason = "IN_PROGRESS"

    def __init__(
        self,
        message: str,
        *,
        namespace: str,
        key: str,
        owner: str,
        lease_expires_at: Optional[datetime.datetime],
        retry_after: float,
        attempt: int,
    ) -> None:
        super().__init__(message)
        self.namespace = namespace
        self.key = key
        self.owner = owner
        self.lease_expires_at = lease_expires_at
        self.retry_after = retry_after
        self.attempt = attempt


class PermanentError(Exception):
    """Raise it (or a subclass) from the work to record a permanent failure.

    When the work passed to :meth:`~ledgerd.Client.do` raises a
    ``PermanentError``, do() records a permanent failure: the key becomes
    FAILED and every later do() of it raises :class:`FailedError` without
    running the work. Any other exception records a retryable failure: the
    key is released and the next do() runs the work again.

    Use it directly, ``raise PermanentError("malformed record", code="bad_input")``,
    as a base class of your own exceptions, or wrap another exception with
    :func:`Permanent`.

    Attributes:
        error: the wrapped exception, or ``None``.
        code: a short machine-readable code stored with the failure
            (optional, at most 128 bytes), e.g. ``"bad_input"``.
    """

    def __init__(self, *args: object, code: str = "") -> None:
        super().__init__(*args)
        self.code = code
        self.error: Optional[BaseException] = None

    def __str__(self) -> str:
        if self.error is not None and not self.args:
            return str(self.error)
        return super().__str__()


def Permanent(error: BaseException, *, code: str = "") -> PermanentError:  # noqa: N802 (mirrors the Go client)
    """Wraps ``error`` in a :class:`PermanentError`: ``raise ledgerd.Permanent(exc)``.

    The stored failure message is the wrapped exception's; it is also the new
    exception's ``__cause__``.
    """
    if not isinstance(error, BaseException):
        raise TypeError(f"Permanent() needs an exception, got {type(error).__name__}")
    wrapped = PermanentError(code=code)
    wrapped.error = error
    wrapped.__cause__ = error
    return wrapped


_REASON_CLASSES: Dict[str, Type[LedgerError]] = {
    cls.default_reason: cls
    for cls in (
        InvalidArgumentError,
        FingerprintMismatchError,
        LeaseLostError,
        ResultConflictError,
        NotFoundError,
        UnauthenticatedError,
        PermissionDeniedError,
        ResourceExhaustedError,
        UnavailableError,
        DeadlineExceededError,
        CancelledError,
        InternalError,
    )
}

# The reasons that share a class.
_REASON_CLASSES[_reason(error_reason_pb2.RATE_LIMITED)] = ResourceExhaustedError
_REASON_CLASSES[_reason(error_reason_pb2.QUOTA_EXCEEDED)] = ResourceExhaustedError

# The reason of a status without a ledgerd ErrorInfo, for the codes ledgerd
# uses for a single reason (FAILED_PRECONDITION, for one, could be either
# FINGERPRINT_MISMATCH or RESULT_CONFLICT and gets none). As in the Go client.
_CODE_REASONS: Dict[grpc.StatusCode, str] = {
    grpc.StatusCode.INVALID_ARGUMENT: _reason(error_reason_pb2.INVALID_ARGUMENT),
    grpc.StatusCode.ABORTED: _reason(error_reason_pb2.LEASE_LOST),
    grpc.StatusCode.NOT_FOUND: _reason(error_reason_pb2.NOT_FOUND),
    grpc.StatusCode.UNAUTHENTICATED: _reason(error_reason_pb2.UNAUTHENTICATED),
    grpc.StatusCode.PERMISSION_DENIED: _reason(error_reason_pb2.PERMISSION_DENIED),
    grpc.StatusCode.RESOURCE_EXHAUSTED: _RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE: _reason(error_reason_pb2.UNAVAILABLE),
    grpc.StatusCode.DEADLINE_EXCEEDED: _reason(error_reason_pb2.DEADLINE_EXCEEDED),
    grpc.StatusCode.CANCELLED: _reason(error_reason_pb2.CANCELED),
    grpc.StatusCode.INTERNAL: _reason(error_reason_pb2.INTERNAL),
}


def error_from_status(
    code: Optional[grpc.StatusCode],
    message: str,
    details: Optional[bytes],
    *,
    operation: Optional[str] = None,
) -> LedgerError:
    """Builds the :class:`LedgerError` subclass for a gRPC status.

    ``details`` is the serialized google.rpc.Status from the
    ``grpc-status-details-bin`` trailer, if there was one.
    """
    reason = _CODE_REASONS.get(code, "") if code is not None else ""
    field: Optional[str] = None
    metadata: Dict[str, str] = {}
    retry_delay: Optional[float] = None
    if details:
        try:
            decoded = _status.decode_status(details)
        except ValueError:
            decoded = None  # a broken trailer: keep what the code says
        if decoded is not None:
            for info in decoded.error_infos:
                if info.domain == ERROR_DOMAIN:
                    reason = info.reason
                    metadata = dict(info.metadata)
                    field = metadata.get("field") or field
                    break
            if decoded.field_violations:
                field = decoded.field_violations[0].field or field
            retry_delay = decoded.retry_delay
    cls = _REASON_CLASSES.get(reason, LedgerError)
    error = cls(
        message or (code.name if code is not None else "unknown error"),
        reason=reason,
        code=code,
        field=field,
        operation=operation,
        metadata=metadata,
    )
    error.retry_delay = retry_delay
    return error


def error_from_rpc(error: grpc.RpcError, *, operation: Optional[str] = None) -> LedgerError:
    """Turns a :class:`grpc.RpcError` into the matching :class:`LedgerError` subclass.

    It reads the status code, the message and the google.rpc.Status details
    (ErrorInfo reason and metadata, BadRequest field) of the call.
    """
    code = _call_attr(error, "code")
    message = _call_attr(error, "details") or ""
    trailing = _call_attr(error, "trailing_metadata")
    details = _status.find_status_details(trailing)
    return error_from_status(code, str(message), details, operation=operation)


def _call_attr(error: grpc.RpcError, name: str) -> object:
    method = getattr(error, name, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:  # noqa: BLE001 - a broken RpcError must not hide the original one
        return None
