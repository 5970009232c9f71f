"""What the synchronous and the asyncio clients share: limits, defaults, and
the decisions of do() that involve no I/O (internal).

Both clients make the same calls in the same order and decide the same way;
only how they wait (threads or tasks) differs. Keeping the decisions here is
what stops the two from drifting apart.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import grpc

from ._gen.ledger.v1 import ledger_pb2

from . import _convert, _guard, _policy, _retry
from ._convert import DurationLike
from .errors import (
    CancelledError,
    DeadlineExceededError,
    FailedError,
    InProgressError,
    LeaseLostError,
    LedgerError,
    PermanentError,
    UnavailableError,
)
from .lease import BytesLike, Lease, Result

#: The logger of both clients (a library logs where the application asks it to).
log = logging.getLogger("ledgerd")

#: A timeout: seconds, a timedelta, or None for none.
Timeout = Optional[DurationLike]

#: The longest time a single attempt of an RPC may take, in seconds, unless
#: configured (a Reserve that waits gets its wait on top). A stuck attempt is
#: abandoned and retried while the call's timeout allows.
DEFAULT_ATTEMPT_TIMEOUT = 30.0
#: The longest wait do() asks the server for in one Reserve (the server
#: shortens it to its own maximum, 60s unless configured).
MAX_SERVER_WAIT = 30.0
#: The largest message the channel the Client makes accepts, in bytes, unless
#: configured: the largest result ledgerd can store (its
#: --max-result-bytes-ceiling, 16 MiB by default) with room to spare. gRPC's
#: own default (4 MiB) would refuse the replay of a larger result.
DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 64 << 20
#: The channel option that bounds received messages.
_MAX_RECEIVE_OPTION = "grpc.max_receive_message_length"
#: The longest a heartbeat's margin before the lease's end may be, in seconds
#: (it is a tenth of the lease TTL when that is shorter): the time left for
#: the acknowledgement to arrive.
MAX_HEARTBEAT_MARGIN = 1.0
#: The message of the LeaseLostError that stops the work when no heartbeat
#: could be acknowledged before the lease ran out.
LEASE_UNCONFIRMED_MESSAGE = "no heartbeat was acknowledged before the lease ran out (ledgerd unreachable?)"
#: How long the calls that do() makes after its timeout ran out (recording a
#: result, a failure, or releasing the lease) may still take, in seconds.
CLEANUP_TIMEOUT = 5.0
#: The heartbeat interval when the server reports no lease TTL (a third of
#: the ledger's default TTL).
DEFAULT_HEARTBEAT_INTERVAL = 10.0
#: The longest work error message do() records (the server's limit is 8 KiB
#: unless configured).
MAX_ERROR_MESSAGE_BYTES = 4096
#: The longest work error code do() records (the server's limit).
MAX_ERROR_CODE_BYTES = 128
#: How long the fail-open recorder's Reserve asks the server to wait for a
#: holder, in seconds.
RECORD_SERVER_WAIT = 5.0
#: The bound of each of the recorder's calls besides that wait, in seconds.
RECORD_CALL_TIMEOUT = 10.0
# A Reserve that waited for less than this part of its wait_timeout (and
# less than _IMMEDIATE_ANSWER seconds) before answering IN_PROGRESS was
# answered at once (a server that does not wait, or is shutting down): do()
# then sleeps for the server's retry-after hint before asking again.
_IMMEDIATE_ANSWER = 0.5


def read_token(token: Optional[str], token_file: Optional[str]) -> Optional[str]:
    """Returns the API token given by ``token`` or ``token_file``, or None.

    Raises ValueError (which never shows the token) for both, an empty file,
    or a value that cannot be a ledgerd token.
    """
    if token is not None and token_file is not None:
        raise ValueError("ledgerd.Client: pass either token or token_file, not both")
    source = "token"
    if token_file is not None:
        source = f"token_file {token_file!r}"
        with open(token_file, encoding="utf-8") as f:
            token = f.read()
        if not token.strip():
            raise ValueError(f"ledgerd.Client: {source} is empty")
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"ledgerd.Client: token must be a str, got {type(token).__name__}")
    token = token.strip()
    if not token.startswith("ldg_") or any(c <= " " or c == "\x7f" for c in token):
        raise ValueError(f"ledgerd.Client: {source} is not a ledgerd API token (one word that starts with ldg_)")
    return token


def default_owner() -> str:
    """Returns a new owner name, ``"<hostname>/<pid>/<random hex>"``.

    :meth:`Client.do` uses a new one for every call unless given ``owner``.
    """
    host = ""
    try:
        host = socket.gethostname()
    except OSError:
        pass
    return f"{host or 'unknown-host'}/{os.getpid()}/{secrets.token_hex(4)}"


def earliest(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """The earlier of two deadlines, None standing for none."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def answered(error: BaseException) -> bool:
    """Whether error is the ledger's own answer (a refusal), as opposed to the
    ledger not answering in time (unavailable, out of time, cancelled, or a
    failure outside gRPC)."""
    if not isinstance(error, LedgerError) or isinstance(
        error, (UnavailableError, DeadlineExceededError, CancelledError)
    ):
        return False
    return error.code not in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    )


def gave_up(operation: str, last: Optional[LedgerError], attempts: int) -> LedgerError:
    """The error a call raises when its deadline passed: the last failure,
    saying so, or a DeadlineExceededError if there was none."""
    if last is None:
        return DeadlineExceededError("the timeout ran out before the call could be made", operation=operation)
    return _guard.with_message(
        last,
        f"{last.message} (gave up after {attempts} attempt{'s' if attempts != 1 else ''}: the timeout ran out)",
        operation=operation,
        retry_delay=False,
    )


def cleanup_deadline(deadline: Optional[float], *, always: bool = False) -> Optional[float]:
    """The deadline of a call do() makes once the work returned: the caller's,
    but at least CLEANUP_TIMEOUT from now. ``always`` bounds it even when the
    caller gave no deadline."""
    floor = time.monotonic() + CLEANUP_TIMEOUT
    if deadline is None:
        return floor if always else None
    return max(deadline, floor)


def channel_options(options: Optional[Sequence[Tuple[str, Any]]], max_receive: int) -> List[Tuple[str, Any]]:
    """The channel's options: the receive limit, then the caller's options;
    a receive limit among these replaces the client's."""
    if isinstance(max_receive, bool) or not isinstance(max_receive, int):
        raise TypeError(f"max_receive_message_bytes must be an int, got {type(max_receive).__name__}")
    if max_receive <= 0 and max_receive != -1:
        raise ValueError(f"max_receive_message_bytes must be positive (or -1 for no limit), got {max_receive}")
    extra = list(options or ())
    if any(name == _MAX_RECEIVE_OPTION for name, _ in extra):
        return extra  # the caller's choice, given explicitly
    return [(_MAX_RECEIVE_OPTION, max_receive)] + extra


def positive_seconds(value: Timeout, name: str) -> Optional[float]:
    if value is None:
        return None
    seconds = _convert.seconds(value, name)
    if not seconds > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return seconds


def truncate(text: str, limit: int) -> str:
    """Makes text valid UTF-8 without NUL bytes, at most limit bytes long."""
    data = text.replace("\x00", "").encode("utf-8", errors="replace")
    return data[:limit].decode("utf-8", errors="ignore")


def describe(exc: BaseException) -> str:
    """The stored message of a work failure: "<type>: <message>", bounded."""
    inner = exc.error if isinstance(exc, PermanentError) and exc.error is not None else exc
    text = str(inner)
    name = type(inner).__name__
    message = truncate(f"{name}: {text}" if text else name, MAX_ERROR_MESSAGE_BYTES)
    return message or "the work failed"


def reserve_request(
    namespace: str,
    key: str,
    owner: str,
    *,
    lease_ttl: Optional[DurationLike] = None,
    fingerprint: Optional[BytesLike] = None,
    metadata: Optional[Mapping[str, str]] = None,
) -> ledger_pb2.ReserveRequest:
    """The ReserveRequest of do() (without its wait_timeout, set per attempt)."""
    request = ledger_pb2.ReserveRequest(
        namespace=namespace,
        key=key,
        owner=owner,
        fingerprint=bytes(fingerprint or b""),
        metadata=dict(metadata or {}),
    )
    if lease_ttl is not None:
        request.lease_ttl.CopyFrom(_convert.to_duration(lease_ttl, "lease_ttl"))
    return request


def heartbeat_interval(value: Optional[DurationLike]) -> Optional[float]:
    """do()'s heartbeat_interval in seconds; None (the default: a third of the
    granted TTL) for None, zero or less, as in the Go client."""
    if value is None:
        return None
    interval = _convert.seconds(value, "heartbeat_interval")
    return interval if interval > 0 else None


def lease_from_acquired(namespace: str, key: str, owner: str, acquired: Any, lease_class: type = Lease) -> Lease:
    """The Lease of a Reserve's ``acquired`` answer."""
    return lease_class(
        namespace=namespace,
        key=key,
        owner=owner,
        fencing_token=acquired.fencing_token,
        attempt=acquired.attempt,
        takeover=acquired.takeover,
        previous_owner=acquired.previous_owner,
        checkpoint=bytes(acquired.checkpoint),
        ttl=_convert.from_duration(acquired.lease_ttl),
        lease_expires_at=_convert.from_timestamp(acquired, "lease_expires_at"),
    )


def replayed_result(completed: Any) -> Result:
    """The Result of a Reserve's ``completed`` answer: a replay."""
    return Result(
        value=bytes(completed.result),
        fencing_token=completed.fencing_token,
        attempt=0,
        replayed=True,
        completed_at=_convert.from_timestamp(completed, "completed_at"),
    )


def failed_error(namespace: str, key: str, failed: Any) -> FailedError:
    """The FailedError of a Reserve's ``failed`` answer."""
    return FailedError(
        namespace=namespace,
        key=key,
        error_code=failed.error.code,
        message=failed.error.message,
        fencing_token=failed.fencing_token,
        attempts=failed.attempts,
        failed_at=_convert.from_timestamp(failed, "failed_at"),
    )


def in_progress_error(namespace: str, key: str, holder: Any, why: str) -> InProgressError:
    """The InProgressError of a Reserve's ``in_progress`` answer."""
    return InProgressError(
        why,
        namespace=namespace,
        key=key,
        owner=holder.owner,
        lease_expires_at=_convert.from_timestamp(holder, "lease_expires_at"),
        retry_after=_convert.from_duration(holder.retry_after),
        attempt=holder.attempt,
    )


def answered_at_once(started: float, wait_for: Optional[float]) -> bool:
    """Whether a Reserve that answered IN_PROGRESS did so without waiting (a
    server that does not wait, or is shutting down): do() then sleeps for the
    server's retry-after hint before asking again."""
    elapsed = time.monotonic() - started
    return wait_for is None or elapsed < min(wait_for / 2, _IMMEDIATE_ANSWER)


def wait_budget(deadline: Optional[float]) -> Optional[float]:
    """The wait_timeout of do()'s next Reserve: MAX_SERVER_WAIT, or what is
    left of the timeout less a margin to deliver the answer in; None when
    too little is left to be worth asking the server to wait."""
    if deadline is None:
        return MAX_SERVER_WAIT
    remaining = deadline - time.monotonic()
    budget = min(MAX_SERVER_WAIT, remaining - min(1.0, remaining / 10))
    return budget if budget >= 0.02 else None


def default_interval(lease: Lease, interval: Optional[float]) -> float:
    """The heartbeat interval of a lease: the one asked for, else a third of the TTL."""
    if interval is not None:
        return interval
    return lease.ttl / 3 if lease.ttl > 0 else DEFAULT_HEARTBEAT_INTERVAL


def lease_deadline(valid_until: Optional[float], ttl: float, interval: float) -> Optional[float]:
    """When the next heartbeat must have been acknowledged: the lease's end
    (``valid_until``) less a margin, but at least a short try from now. Even
    past the lease's presumed end one heartbeat is still tried, briefly: the
    ledger extends an expired lease if nobody took over (fencing beats time),
    and answers LEASE_LOST otherwise."""
    if valid_until is None:
        return None
    margin = min(ttl / 10, MAX_HEARTBEAT_MARGIN)
    floor = time.monotonic() + min(interval, 1.0)
    return max(valid_until - margin, floor)


def heartbeat_failure(error: BaseException, lease_deadline_at: Optional[float]) -> Tuple[LedgerError, bool]:
    """What a failed heartbeat means for the lease: the error that cancels the
    work, and whether it is "unconfirmed" (no answer in time, rather than the
    ledger's refusal: a result may still be recorded)."""
    if lease_deadline_at is not None and time.monotonic() >= lease_deadline_at and not answered(error):
        # No answer in time: another worker may hold the key by now.
        unconfirmed = LeaseLostError(LEASE_UNCONFIRMED_MESSAGE, code=None, operation="heartbeat")
        unconfirmed.__cause__ = error
        return unconfirmed, True
    if not isinstance(error, LedgerError):
        wrapped = LedgerError(f"heartbeat failed: {error!r}", operation="heartbeat")
        wrapped.__cause__ = error
        return wrapped, False
    return error, False


def timeout_cancellation(lease: Lease) -> DeadlineExceededError:
    """The reason that cancels the work when do()'s timeout runs out."""
    return DeadlineExceededError(
        f"the timeout of do() ran out while the work for {lease.namespace}/{lease.key} ran",
        operation="do",
    )


def work_failure(exc: BaseException) -> Tuple[str, str, bool]:
    """How a work's exception is recorded: (message, code, retryable); a
    PermanentError is not retryable."""
    if isinstance(exc, PermanentError):
        return describe(exc), truncate(exc.code, MAX_ERROR_CODE_BYTES), False
    return describe(exc), "", True


def not_bytes_error(lease: Lease, value: object) -> TypeError:
    """The error of a work that returned something other than bytes."""
    return TypeError(
        f"the work for {lease.namespace}/{lease.key} returned {type(value).__name__}; "
        "it must return bytes (b'' for no result)"
    )


def timed_out_error(lease: Lease) -> DeadlineExceededError:
    """The error do() raises when the timeout ran out while the work ran and
    the work raised."""
    return DeadlineExceededError(
        f"the timeout ran out while the work for {lease.namespace}/{lease.key} ran "
        f"(token {lease.fencing_token}); the lease was released",
        operation="do",
    )


def completed_result(lease: Lease, value: bytes, completed: Any) -> Result:
    """The Result of a work whose result was recorded now."""
    return Result(
        value=value,
        fencing_token=lease.fencing_token,
        attempt=lease.attempt,
        replayed=False,
        completed_at=_convert.from_timestamp(completed, "completed_at"),
    )


# The requests of the thin typed methods (and of do()'s own calls): both
# clients build them here, and differ only in how they await the call.


def reserve_wait(request: ledger_pb2.ReserveRequest, wait_timeout: Optional[DurationLike]) -> float:
    """Sets a Reserve's ``wait_timeout``; returns the seconds to add to the
    attempt's timeout for it (0 without a wait)."""
    if wait_timeout is None:
        return 0.0
    request.wait_timeout.CopyFrom(_convert.to_duration(wait_timeout, "wait_timeout"))
    return max(0.0, _convert.seconds(wait_timeout, "wait_timeout"))


def heartbeat_request(
    namespace: str,
    key: str,
    fencing_token: int,
    *,
    lease_ttl: Optional[DurationLike] = None,
    checkpoint: Optional[BytesLike] = None,
) -> ledger_pb2.HeartbeatRequest:
    """The HeartbeatRequest of :meth:`Client.heartbeat`."""
    request = ledger_pb2.HeartbeatRequest(namespace=namespace, key=key, fencing_token=fencing_token)
    if lease_ttl is not None:
        request.lease_ttl.CopyFrom(_convert.to_duration(lease_ttl, "lease_ttl"))
    if checkpoint is not None:
        request.checkpoint = bytes(checkpoint)
    return request


def lease_heartbeat_request(lease: Lease) -> Tuple[ledger_pb2.HeartbeatRequest, Optional[bytes], int]:
    """The heartbeat of a lease that do() holds: its TTL again, and the
    checkpoint staged since the last one; returns the request, that
    checkpoint (None: none staged) and its version (for ``_mark_stored``)."""
    checkpoint, version = lease._pending()
    request = heartbeat_request(
        lease.namespace,
        lease.key,
        lease.fencing_token,
        lease_ttl=lease.ttl if lease.ttl > 0 else None,
        checkpoint=checkpoint,
    )
    return request, checkpoint, version


def complete_request(namespace: str, key: str, fencing_token: int, result: BytesLike) -> ledger_pb2.CompleteRequest:
    """The CompleteRequest that records ``result`` under ``fencing_token``."""
    return ledger_pb2.CompleteRequest(namespace=namespace, key=key, fencing_token=fencing_token, result=bytes(result))


def fail_request(
    namespace: str, key: str, fencing_token: int, *, message: str, code: str, retryable: bool
) -> ledger_pb2.FailRequest:
    """The FailRequest that records a work failure under ``fencing_token``."""
    return ledger_pb2.FailRequest(
        namespace=namespace,
        key=key,
        fencing_token=fencing_token,
        error=ledger_pb2.WorkError(code=code, message=message),
        retryable=retryable,
    )


def release_request(namespace: str, key: str, fencing_token: int) -> ledger_pb2.ReleaseRequest:
    """The ReleaseRequest that gives up the lease held with ``fencing_token``."""
    return ledger_pb2.ReleaseRequest(namespace=namespace, key=key, fencing_token=fencing_token)


# do()'s handling of a Reserve's answer.


def set_reserve_wait(request: ledger_pb2.ReserveRequest, wait_for: Optional[float]) -> None:
    """Sets (or, for None, clears) the wait_timeout of do()'s next Reserve."""
    if wait_for is not None:
        request.wait_timeout.CopyFrom(_convert.to_duration(wait_for, "wait_timeout"))
    else:
        request.ClearField("wait_timeout")


def reserve_outcome(
    namespace: str, key: str, owner: str, response: ledger_pb2.ReserveResponse, lease_class: type = Lease
) -> Any:
    """What do()'s Reserve answered: a Lease (``lease_class``) to run the work
    under, the Result of a replay, or the holder (``response.in_progress``)
    of a key held by another owner. Raises FailedError for a key that failed
    permanently, and LedgerError for an outcome this client does not know."""
    outcome = response.WhichOneof("outcome")
    if outcome == "acquired":
        return lease_from_acquired(namespace, key, owner, response.acquired, lease_class)
    if outcome == "completed":
        return replayed_result(response.completed)
    if outcome == "failed":
        raise failed_error(namespace, key, response.failed)
    if outcome == "in_progress":
        return response.in_progress
    raise LedgerError(f"reserve returned an outcome this client does not know ({outcome})", operation="reserve")


def held_pause(
    namespace: str,
    key: str,
    holder: Any,
    *,
    wait: bool,
    started: float,
    wait_for: Optional[float],
    deadline: Optional[float],
) -> Optional[float]:
    """How long do() sleeps before asking again for a key another owner holds
    (None: ask again at once, the server having waited). Raises
    InProgressError when do() must not wait (``wait=False``)."""
    if not wait:
        raise in_progress_error(namespace, key, holder, f"{namespace}/{key} is held by {holder.owner!r}")
    if not answered_at_once(started, wait_for):
        return None
    pause = _retry.poll_interval(_convert.from_duration(holder.retry_after))
    if deadline is not None:
        pause = min(pause, max(0.0, deadline - time.monotonic()))
    return pause


def check_still_time(namespace: str, key: str, holder: Any, deadline: Optional[float]) -> None:
    """Raises InProgressError when do()'s timeout ran out while the key is still held."""
    if deadline is not None and time.monotonic() >= deadline:
        why = f"{namespace}/{key} is still held by {holder.owner!r} and the timeout ran out"
        raise in_progress_error(namespace, key, holder, why)


# The fail-open recorder's decisions (the clients make its calls).


def record_reserve_request(record: _policy.FailOpenRecord) -> ledger_pb2.ReserveRequest:
    """The recorder's Reserve of a fail-open result: waits a while for a holder."""
    request = reserve_request(
        record.namespace, record.key, record.owner, fingerprint=record.fingerprint, metadata=record.metadata
    )
    request.wait_timeout.CopyFrom(_convert.to_duration(RECORD_SERVER_WAIT, "wait_timeout"))
    return request


def record_later(error: BaseException) -> bool:
    """Whether the recorder tries a result again after ``error`` (the ledger
    did not answer, or the call was cancelled), rather than giving it up."""
    return _guard.unreachable(error) or isinstance(error, CancelledError)


def record_refused(record: _policy.FailOpenRecord, error: LedgerError) -> Tuple[str, LedgerError]:
    """The outcome of a fail-open result the ledger refused (a fingerprint
    mismatch, a permission, a result too large...): it can never be
    recorded, and is discarded."""
    log.warning("ledgerd: the ledger refused the fail-open result of %s/%s: %s", record.namespace, record.key, error)
    return _policy.DISCARDED_FAILED, error


def record_answer(
    record: _policy.FailOpenRecord, response: ledger_pb2.ReserveResponse
) -> Tuple[Optional[Lease], Optional[str]]:
    """What the recorder's Reserve answered: the lease to Complete the result
    under (``record.token`` is set to its token), or no lease and the
    record's outcome (None: the key is still held, ask again later)."""
    outcome = response.WhichOneof("outcome")
    if outcome == "completed":
        # Our own Complete may have landed with its answer lost.
        ours = record.token != 0 and response.completed.fencing_token == record.token
        return None, (_policy.RECORDED if ours else _policy.DISCARDED_COMPLETED)
    if outcome == "failed":
        return None, _policy.DISCARDED_FAILED
    if outcome != "acquired":
        return None, None  # still held: ask again
    lease = lease_from_acquired(record.namespace, record.key, record.owner, response.acquired)
    record.token = lease.fencing_token
    return lease, None


# The retry loop of one RPC (the clients' ``_call``): its decisions.


def attempt_timeout(
    client_bound: Optional[float],
    extra_attempt_time: float,
    max_attempt_time: Optional[float],
    deadline: Optional[float],
    *,
    operation: str,
    last: Optional[LedgerError],
    attempts: int,
) -> Optional[float]:
    """The timeout of a call's next attempt: the client's attempt_timeout
    (``client_bound``) plus ``extra_attempt_time``, at most
    ``max_attempt_time`` and what is left until ``deadline`` (None: no
    bound). Raises the call's last failure (see :func:`gave_up`) when the
    deadline passed."""
    timeout = None if client_bound is None else client_bound + extra_attempt_time
    if max_attempt_time is not None:
        timeout = max_attempt_time if timeout is None else min(timeout, max_attempt_time)
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise gave_up(operation, last, attempts)
        timeout = remaining if timeout is None else min(timeout, remaining)
    return timeout


def retry_pause(
    policies: _guard.Policies,
    operation: str,
    error: LedgerError,
    last: Optional[LedgerError],
    *,
    attempts: int,
    backoff: float,
    deadline: Optional[float],
    retry: bool,
) -> float:
    """How long a call waits before retrying the attempt that failed with
    ``error``; raises the error the call ends with instead when it may not
    retry (not a retryable code, ``retry=False``, the deadline passed, or
    the policies refuse: attempt limit, open breaker, empty retry budget)."""
    if error.code not in _retry.RETRYABLE_CODES or not retry:
        raise error
    if deadline is not None and time.monotonic() >= deadline:
        # This attempt most likely failed because the time ran out; the
        # failure that was being retried, if any, says more.
        raise gave_up(operation, last or error, attempts)
    refusal = policies.refuse_retry(operation, error, attempts)
    if refusal is not None:
        raise refusal
    pause = policies.retry_pause(backoff, error)
    if deadline is not None:
        pause = min(pause, max(0.0, deadline - time.monotonic()))
    return pause


def unguarded_lease(namespace: str, key: str, owner: str, lease_class: type = Lease) -> Lease:
    """The lease a fail-open run's work sees: no lease in the ledger, fencing
    token 0, ``unguarded`` True."""
    return lease_class(
        namespace=namespace,
        key=key,
        owner=owner,
        fencing_token=0,
        attempt=0,
        takeover=False,
        previous_owner="",
        checkpoint=b"",
        ttl=0.0,
        lease_expires_at=None,
        unguarded=True,
    )


def warn_unrecorded(left: int, lost: Sequence[_policy.FailOpenRecord]) -> int:
    """Logs, when close() leaves fail-open results unrecorded, how many and
    which; returns how many."""
    if lost or left:
        log.warning(
            "ledgerd: closed with %d fail-open result(s) not recorded in the ledger: %s",
            max(left, len(lost)),
            ", ".join(f"{r.namespace}/{r.key}" for r in lost[:20]) or "being recorded",
        )
    return max(left, len(lost))
