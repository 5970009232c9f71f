"""Python client of ledgerd, the central idempotency ledger.

A pipeline step wraps its work in :meth:`Client.do`, which claims the key,
heartbeats the lease while the work runs, records the result (or the
failure), and replays a stored result instead of running the work again::

    import ledgerd

    with ledgerd.Client("localhost:7070", insecure=True) as client:
        result = client.do("billing", "invoice-42", lambda lease: send_invoice(lease.fencing_token))
        print(result.value, result.replayed)

Errors are subclasses of :class:`LedgerError`, one per ledgerd reason
(:class:`LeaseLostError`, :class:`FingerprintMismatchError`, ...). The
generated protobuf messages are importable from :mod:`ledgerd.pb`
(``from ledgerd.pb import ledger_pb2``).
"""

import logging as _logging

from ._batch import MAX_BATCH_ITEMS, BatchResult, item_error
from ._context import current_lease
from .admin import EventExport
from .client import Client, WorkFunction, default_owner
from .decorator import json_deserializer, json_serializer
from .errors import (
    ERROR_DOMAIN,
    CancelledError,
    CircuitOpenError,
    DeadlineExceededError,
    FailedError,
    FingerprintMismatchError,
    InProgressError,
    InternalError,
    InvalidArgumentError,
    LeaseLostError,
    LedgerError,
    NotFoundError,
    Permanent,
    PermanentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ResultConflictError,
    UnauthenticatedError,
    UnavailableError,
)
from .lease import Lease, Result
from ._policy import BreakerConfig, RetryBudgetConfig, Stats

__all__ = [
    "Client",
    "WorkFunction",
    "default_owner",
    "current_lease",
    "BatchResult",
    "item_error",
    "MAX_BATCH_ITEMS",
    "EventExport",
    "json_serializer",
    "json_deserializer",
    "Lease",
    "Result",
    "BreakerConfig",
    "RetryBudgetConfig",
    "Stats",
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
]

# A library logs only where the application asks it to (cleanup failures are
# also attached to the raised exception as notes).
_logging.getLogger("ledgerd").addHandler(_logging.NullHandler())

#: The version of this client package (and of the ledgerd it belongs with).
from ._version import __version__  # noqa: E402
