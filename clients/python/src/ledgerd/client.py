"""The ledgerd client: typed RPC wrappers with retries, and the :meth:`Client.do` helper."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import grpc

from ._gen.ledger.v1 import ledger_pb2

from . import _common, _context, _guard, _policy, _retry
from ._batch import BatchMethods
from ._guard import DEFAULT, BreakerOption, FailOpenHook, FailOpenRecordedHook, RetryBudgetOption
from ._policy import FAIL_CLOSED, FailOpenRecord, Stats
from ._version import USER_AGENT
from ._common import (  # noqa: F401 - DEFAULT_*, MAX_* are part of this module's API
    CLEANUP_TIMEOUT,
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
    LEASE_UNCONFIRMED_MESSAGE,
    MAX_ERROR_CODE_BYTES,
    MAX_ERROR_MESSAGE_BYTES,
    MAX_HEARTBEAT_MARGIN,
    MAX_SERVER_WAIT,
    RECORD_CALL_TIMEOUT,
    RECORD_SERVER_WAIT,
    Timeout,
    default_owner,
)
from ._common import channel_options as _channel_options
from ._common import cleanup_deadline as _cleanup_deadline
from ._common import describe as _describe
from ._common import earliest as _earliest
from ._common import gave_up as _gave_up
from ._common import positive_seconds as _positive_seconds
from ._common import read_token as _read_token
from ._convert import DurationLike
from .errors import (
    CancelledError,
    CircuitOpenError,
    DeadlineExceededError,
    InvalidArgumentError,
    LeaseLostError,
    LedgerError,
    PermanentError,
    error_from_rpc,
)
from .admin import AdminMethods, rpc_table
from .decorator import IdempotentMethod
from .lease import BytesLike, Lease, Result

__all__ = ["Client", "default_owner", "WorkFunction"]

_log = logging.getLogger("ledgerd")

#: A work function for :meth:`Client.do`: takes the lease, returns the result.
WorkFunction = Callable[[Lease], BytesLike]

#: ``target``: one address, several (a list, or a comma-separated string),
#: or a gRPC target such as ``"dns:///ledgerd.internal:7070"``.
Target = Union[str, Sequence[str]]

#: How long :meth:`Client.close` waits for the fail-open results still
#: queued to be recorded, in seconds, unless given.
DEFAULT_CLOSE_TIMEOUT = 10.0

#: The service config of a channel over several replicas: round robin over
#: the replicas whose gRPC health (service "") says SERVING, so that a
#: draining ledgerd (NOT_SERVING) gets no new calls until it serves again.
REPLICAS_SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)


class Client(BatchMethods, AdminMethods, IdempotentMethod):
    """A client of ledgerd, the idempotency ledger.

    Its high-level helper is :meth:`do`; the other methods are thin typed
    wrappers over the generated ``LedgerService`` stub that add retries and
    typed exceptions (see :mod:`ledgerd.errors`). A Client is safe to use
    from many threads; make one per process and share it. Use it as a
    context manager, or call :meth:`close`.

    Every ledgerd RPC is retry-safe, so every method retries a call that
    failed with ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED``, with exponential
    backoff (50ms doubling to 5s) and jitter, until it succeeds or the call's
    ``timeout`` runs out; it then raises the last error
    (:class:`~ledgerd.UnavailableError` or
    :class:`~ledgerd.DeadlineExceededError`). Without a timeout (neither the
    call's nor ``default_timeout``), retries go on until the server answers,
    as in the Go client: give a timeout to bound a call.

    Args:
        target: a gRPC target, e.g. ``"ledgerd.internal:7400"`` or
            ``"dns:///ledgerd.internal:7400"``. The connection is made
            lazily: the constructor does not fail because the server is down.
        credentials: channel credentials (:func:`grpc.ssl_channel_credentials`,
            possibly composed with call credentials) for a secure channel.
        insecure: ``True`` for a plaintext channel without server
            authentication (development and tests). Exactly one of
            ``credentials`` and ``insecure=True`` is required.
        options: gRPC channel options, e.g. ``[("grpc.keepalive_time_ms", 60000)]``.
            They are passed after the client's own, and win over them (a
            ``"grpc.max_receive_message_length"`` here overrides
            ``max_receive_message_bytes``).
        max_receive_message_bytes: the largest response the channel accepts,
            in bytes (default 64 MiB, :data:`DEFAULT_MAX_RECEIVE_MESSAGE_BYTES`;
            ``-1``: no limit). Replays and lookups carry whole results, which
            ledgerd stores up to its ``--max-result-bytes-ceiling`` (16 MiB
            by default); gRPC's own default of 4 MiB would refuse larger
            ones with :class:`~ledgerd.ResourceExhaustedError`. A channel
            passed to :meth:`from_channel` keeps its own setting.
        default_timeout: the timeout, in seconds (or a timedelta), of calls
            that are given none; ``None`` (the default) means unbounded.
        attempt_timeout: the longest a single attempt may take before it is
            abandoned and retried (30s by default; ``None``: no bound besides
            the call's timeout).
        token: an API token (``"ldg_..."``, from ``ledgerctl tokens create``)
            sent with every call as ``authorization: Bearer <token>``, for a
            ledgerd that authenticates. Over TLS it is a call credential
            (:func:`grpc.access_token_call_credentials`), which gRPC sends on
            secure connections only; over plaintext it is sent only because
            ``insecure=True`` said so (development).
        token_file: a file holding the API token instead (read once, here;
            surrounding whitespace is ignored). At most one of ``token`` and
            ``token_file``.
        breaker: the circuit breaker (on by default): a
            :class:`~ledgerd.BreakerConfig` or a dict of its fields
            (``failure_threshold`` 5, ``failure_ratio`` 0.5, ``window`` 10s,
            ``min_calls`` 20, ``open_for`` 5s), or ``None`` to turn it off.
            After repeated UNAVAILABLE or DEADLINE_EXCEEDED answers it opens:
            the calls that start work or read (Reserve, Lookup, the batch and
            admin calls) then fail at once with
            :class:`~ledgerd.CircuitOpenError`, without touching the network,
            until a probe call succeeds. Heartbeat, Complete, Fail and
            Release always go through: they protect work already granted.
        retry_budget: the retry budget (on by default): a
            :class:`~ledgerd.RetryBudgetConfig` or a dict of its fields
            (``max_tokens`` 100, ``ratio`` 0.1), or ``None`` to turn it off.
            Retries never exceed ``max_tokens + ratio * calls``; a call
            denied a retry raises its last error, whose message says
            "retry budget exhausted". Heartbeats are outside the budget.
        max_attempts: the most attempts of one call (``None``, the default:
            retry until the call's timeout, within the budget). Heartbeats
            are retried until the lease's end regardless.
        fallback: what :meth:`do` does when the ledger cannot answer (the
            breaker is open, or UNAVAILABLE/DEADLINE_EXCEEDED after the
            retries allowed): ``"fail_closed"`` (the default: the work does
            not run, do() raises) or ``"fail_open"`` (the work runs
            unguarded, and its result is recorded later). Each do() can
            choose otherwise. See :meth:`do`.
        fail_open_queue: the most fail-open results waiting to be recorded
            (default 10,000); when it is full, fail_open behaves as
            fail_closed.
        on_breaker_change: called as ``on_breaker_change(from_state,
            to_state, last_error)`` on every transition of the breaker
            (states ``"closed"``, ``"open"``, ``"half_open"``).
        on_fail_open: called as ``on_fail_open(namespace, key, cause)``
            before every unguarded run.
        on_fail_open_recorded: called as ``on_fail_open_recorded(namespace,
            key, outcome)`` when the recorder is done with a fail-open result:
            ``"recorded"``, ``"discarded_completed"`` (another worker's result
            was recorded first and is kept) or ``"discarded_failed"`` (the
            key failed permanently, or the ledger refused the result).

    Several replicas: pass a list of addresses (``["10.0.0.1:7070",
    "10.0.0.2:7070"]``), a comma-separated string, or a ``dns:///`` name
    that resolves to several addresses. The client then balances calls
    round robin over the replicas that are up and whose gRPC health says
    SERVING (a draining ledgerd says NOT_SERVING), and comes back to a
    replica when it serves again. Host names in a list are resolved once,
    here; a ``dns:///`` target is re-resolved by gRPC.

    Every call carries the user agent ``ledgerd-python/<version>``.
    """

    def __init__(
        self,
        target: Target,
        *,
        credentials: Optional[grpc.ChannelCredentials] = None,
        insecure: bool = False,
        options: Optional[Sequence[Tuple[str, Any]]] = None,
        max_receive_message_bytes: int = DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
        default_timeout: Timeout = None,
        attempt_timeout: Timeout = DEFAULT_ATTEMPT_TIMEOUT,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        breaker: BreakerOption = DEFAULT,
        retry_budget: RetryBudgetOption = DEFAULT,
        max_attempts: Optional[int] = None,
        fallback: str = FAIL_CLOSED,
        fail_open_queue: int = _policy.DEFAULT_FAIL_OPEN_QUEUE,
        on_breaker_change: Optional[_policy.ChangeHook] = None,
        on_fail_open: Optional[FailOpenHook] = None,
        on_fail_open_recorded: Optional[FailOpenRecordedHook] = None,
    ) -> None:
        policies = _guard.Policies(
            breaker=breaker,
            retry_budget=retry_budget,
            max_attempts=max_attempts,
            fallback=fallback,
            fail_open_queue=fail_open_queue,
            on_breaker_change=on_breaker_change,
            on_fail_open=on_fail_open,
            on_fail_open_recorded=on_fail_open_recorded,
        )
        channel, metadata = open_channel(
            grpc,
            "ledgerd.Client",
            target,
            credentials=credentials,
            insecure=insecure,
            options=options,
            max_receive_message_bytes=max_receive_message_bytes,
            token=token,
            token_file=token_file,
        )
        self._setup(
            channel,
            owns_channel=True,
            default_timeout=default_timeout,
            attempt_timeout=attempt_timeout,
            metadata=metadata,
            policies=policies,
        )

    @classmethod
    def from_channel(
        cls,
        channel: grpc.Channel,
        *,
        default_timeout: Timeout = None,
        attempt_timeout: Timeout = DEFAULT_ATTEMPT_TIMEOUT,
        breaker: BreakerOption = DEFAULT,
        retry_budget: RetryBudgetOption = DEFAULT,
        max_attempts: Optional[int] = None,
        fallback: str = FAIL_CLOSED,
        fail_open_queue: int = _policy.DEFAULT_FAIL_OPEN_QUEUE,
        on_breaker_change: Optional[_policy.ChangeHook] = None,
        on_fail_open: Optional[FailOpenHook] = None,
        on_fail_open_recorded: Optional[FailOpenRecordedHook] = None,
    ) -> "Client":
        """Returns a Client that makes its calls over ``channel``, a channel the
        caller made (e.g. with interceptors) and owns: :meth:`close` does not
        close it. The other arguments are as in the constructor.

        To authenticate over such a channel, make it with the token as a call
        credential: ``grpc.secure_channel(target,
        grpc.composite_channel_credentials(tls, grpc.access_token_call_credentials(token)))``."""
        policies = _guard.Policies(
            breaker=breaker,
            retry_budget=retry_budget,
            max_attempts=max_attempts,
            fallback=fallback,
            fail_open_queue=fail_open_queue,
            on_breaker_change=on_breaker_change,
            on_fail_open=on_fail_open,
            on_fail_open_recorded=on_fail_open_recorded,
        )
        client = cls.__new__(cls)
        client._setup(
            channel,
            owns_channel=False,
            default_timeout=default_timeout,
            attempt_timeout=attempt_timeout,
            policies=policies,
        )
        return client

    def _setup(
        self,
        channel: grpc.Channel,
        *,
        owns_channel: bool,
        default_timeout: Timeout,
        attempt_timeout: Timeout,
        metadata: Optional[Tuple[Tuple[str, str], ...]] = None,
        policies: Optional[_guard.Policies] = None,
    ) -> None:
        self._policies = policies or _guard.Policies()
        self._recorder = _Recorder(self)
        self._channel = channel
        self._metadata = metadata
        self._owns_channel = owns_channel
        self._closed = False
        self._default_timeout = _positive_seconds(default_timeout, "default_timeout")
        self._attempt_timeout = _positive_seconds(attempt_timeout, "attempt_timeout")
        self._rpcs: Dict[str, Any] = rpc_table(channel)

    def close(self, timeout: Optional[float] = DEFAULT_CLOSE_TIMEOUT) -> int:
        """Closes the client; returns how many fail-open results it could not record.

        It first waits up to ``timeout`` seconds (default 10) for the
        fail-open results still queued to be recorded (see :meth:`flush`);
        those still waiting then are lost, and a warning says how many. Then
        it closes the channel the Client made; calls in flight, and later
        ones, fail with :class:`~ledgerd.CancelledError`. A Client made by
        :meth:`from_channel` leaves its channel open (later calls still
        fail). Closing twice is harmless."""
        left = 0
        if not self._closed and self._policies.queue.pending:
            left = self.flush(timeout)
        self._closed = True
        lost = self._recorder.stop()
        unrecorded = _common.warn_unrecorded(left, lost)
        if self._owns_channel:
            self._channel.close()
        return unrecorded

    def flush(self, timeout: Optional[float] = None) -> int:
        """Waits until every fail-open result is recorded (or discarded), for
        at most ``timeout`` seconds (None: as long as it takes); returns how
        many are still waiting (0: all done)."""
        return self._recorder.wait_empty(_common.positive_seconds(timeout, "timeout"))

    def stats(self) -> Stats:
        """A snapshot of the client's counters: calls, retries, the breaker's
        state and openings, and the fail-open runs and their recording."""
        return self._policies.stats()

    @property
    def breaker_state(self) -> str:
        """The circuit breaker's state: ``"closed"``, ``"open"`` or
        ``"half_open"`` (always ``"closed"`` with ``breaker=None``)."""
        return self._policies.stats().breaker_state

    def __enter__(self) -> "Client":
        """Returns the Client; :meth:`close` runs on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Closes the Client."""
        self.close()

    # The thin typed methods.

    def reserve(
        self,
        *,
        namespace: str,
        key: str,
        owner: str,
        lease_ttl: Optional[DurationLike] = None,
        fingerprint: BytesLike = b"",
        metadata: Optional[Mapping[str, str]] = None,
        wait_timeout: Optional[DurationLike] = None,
        timeout: Timeout = None,
    ) -> ledger_pb2.ReserveResponse:
        """Asks for the lease of a key; returns the ``ReserveResponse``.

        Its outcome (``response.WhichOneof("outcome")``) is ``"acquired"``,
        ``"completed"``, ``"in_progress"`` or ``"failed"``: answers, not
        errors. ``lease_ttl`` and ``wait_timeout`` are seconds or timedeltas;
        with ``wait_timeout`` the server waits (bounded) while another owner
        holds the key, and answers as soon as the holder finishes or its lease
        runs out.

        Raises :class:`~ledgerd.InvalidArgumentError` or
        :class:`~ledgerd.FingerprintMismatchError`.
        """
        request = _common.reserve_request(
            namespace, key, owner, lease_ttl=lease_ttl, fingerprint=fingerprint, metadata=metadata
        )
        extra = _common.reserve_wait(request, wait_timeout)
        return self._call("reserve", request, self._deadline(timeout), extra_attempt_time=extra)

    def heartbeat(
        self,
        *,
        namespace: str,
        key: str,
        fencing_token: int,
        lease_ttl: Optional[DurationLike] = None,
        checkpoint: Optional[BytesLike] = None,
        timeout: Timeout = None,
    ) -> ledger_pb2.HeartbeatResponse:
        """Extends the lease held with ``fencing_token``; returns the ``HeartbeatResponse``.

        ``lease_ttl`` is the new lease duration from now (None: the namespace
        default). ``checkpoint``, when not None, replaces the stored
        checkpoint (``b""`` clears it).

        Raises :class:`~ledgerd.InvalidArgumentError` or
        :class:`~ledgerd.LeaseLostError`.
        """
        request = _common.heartbeat_request(namespace, key, fencing_token, lease_ttl=lease_ttl, checkpoint=checkpoint)
        return self._call("heartbeat", request, self._deadline(timeout))

    def complete(
        self,
        *,
        namespace: str,
        key: str,
        fencing_token: int,
        result: BytesLike = b"",
        timeout: Timeout = None,
    ) -> ledger_pb2.CompleteResponse:
        """Records the result of the work under ``fencing_token``; returns the ``CompleteResponse``.

        Raises :class:`~ledgerd.InvalidArgumentError`,
        :class:`~ledgerd.LeaseLostError` (someone took over: the result was
        not recorded) or :class:`~ledgerd.ResultConflictError`.
        """
        request = _common.complete_request(namespace, key, fencing_token, result)
        return self._call("complete", request, self._deadline(timeout))

    def fail(
        self,
        *,
        namespace: str,
        key: str,
        fencing_token: int,
        message: str,
        retryable: bool,
        code: str = "",
        timeout: Timeout = None,
    ) -> ledger_pb2.FailResponse:
        """Records that the work failed; returns the ``FailResponse``.

        A ``retryable`` failure releases the key for the next Reserve; a
        permanent one makes it FAILED. ``message`` is required; ``code`` is an
        optional machine-readable classification.

        Raises :class:`~ledgerd.InvalidArgumentError`,
        :class:`~ledgerd.LeaseLostError` or :class:`~ledgerd.ResultConflictError`.
        """
        request = _common.fail_request(namespace, key, fencing_token, message=message, code=code, retryable=retryable)
        return self._call("fail", request, self._deadline(timeout))

    def release(
        self,
        *,
        namespace: str,
        key: str,
        fencing_token: int,
        timeout: Timeout = None,
    ) -> ledger_pb2.ReleaseResponse:
        """Gives up the lease held with ``fencing_token``; returns the ``ReleaseResponse``.

        The next Reserve of the key acquires it at once.

        Raises :class:`~ledgerd.InvalidArgumentError` or
        :class:`~ledgerd.LeaseLostError`.
        """
        request = _common.release_request(namespace, key, fencing_token)
        return self._call("release", request, self._deadline(timeout))

    def lookup(self, *, namespace: str, key: str, timeout: Timeout = None) -> ledger_pb2.LookupResponse:
        """Returns the ``LookupResponse`` with the whole entry of a key (``response.entry``).

        Raises :class:`~ledgerd.InvalidArgumentError` or
        :class:`~ledgerd.NotFoundError`.
        """
        request = ledger_pb2.LookupRequest(namespace=namespace, key=key)
        return self._call("lookup", request, self._deadline(timeout))

    # do()

    def do(
        self,
        namespace: str,
        key: str,
        work: WorkFunction,
        *,
        owner: Optional[str] = None,
        lease_ttl: Optional[DurationLike] = None,
        fingerprint: Optional[BytesLike] = None,
        metadata: Optional[Mapping[str, str]] = None,
        heartbeat_interval: Optional[DurationLike] = None,
        timeout: Timeout = None,
        wait: bool = True,
        fallback: Optional[str] = None,
    ) -> Result:
        """Makes sure the work for ``(namespace, key)`` is done once, and returns its result.

        Across all the workers that share the ledger, do() runs ``work``
        unless the key is finished, records what it returns, and returns it,
        or the result recorded earlier:

        - If the key is completed, do() returns the stored result with
          ``replayed=True``, without running ``work``.
        - If the key failed permanently, do() raises
          :class:`~ledgerd.FailedError` without running ``work``.
        - If another owner holds the key, do() waits (bounded by ``timeout``)
          and asks again: each Reserve asks the server to hold the answer
          until the holder finishes or its lease runs out (``wait_timeout``);
          if the server answers at once, do() sleeps for its retry-after hint
          (capped at 1s, with jitter). The holder may complete (do() then
          replays its result) or die (its lease runs out and do() takes the
          key over). With ``wait=False`` do() raises
          :class:`~ledgerd.InProgressError` instead; it also raises it when
          ``timeout`` runs out while the key is still held.
        - Otherwise do() holds the lease and calls ``work(lease)`` (see
          :class:`~ledgerd.Lease`). While ``work`` runs, a background thread
          heartbeats the lease every ``heartbeat_interval`` (default: a third
          of the granted TTL), carrying the checkpoint staged with
          :meth:`Lease.set_checkpoint`. The thread is always stopped before
          do() returns or raises. Work must stop when ``lease.cancelled`` is
          set (see below).

        When ``work`` returns bytes, do() records them with Complete and
        returns a :class:`~ledgerd.Result`. If the ledger refuses the result
        as invalid (e.g. larger than the namespace allows), do() records a
        retryable failure that says why and raises the
        :class:`~ledgerd.InvalidArgumentError`. ``work`` must return bytes
        (``b""`` for no result); anything else is a retryable failure and
        raises :class:`TypeError`.

        When ``work`` raises an exception, do() records a failure, retryable
        unless the exception is a :class:`~ledgerd.PermanentError` (see
        :func:`~ledgerd.Permanent`), and re-raises it. A retryable failure
        releases the key: the next do() runs ``work`` again, as a takeover
        with a higher fencing token and ``attempt``, and sees the last
        checkpoint. If ``work`` raises a BaseException that is not an
        Exception (``KeyboardInterrupt``, ``SystemExit``), do() releases the
        lease and re-raises it.

        If the lease is lost (another worker took over after this one's lease
        ran out), ``lease.cancelled`` is set as soon as a heartbeat learns it,
        and do() raises :class:`~ledgerd.LeaseLostError` once ``work``
        returns: the work was superseded and its result, if any, was not
        recorded. If a heartbeat is refused for another reason (e.g. a
        checkpoint above the server's limit), ``lease.cancelled`` is set too;
        unless ``work`` still returns a result, do() then releases the lease
        and raises that error.

        The lease is only good while heartbeats are acknowledged: each one,
        retries included, must be acknowledged before the lease runs out (the
        sending time of the last acknowledged heartbeat, or of the grant, plus
        the TTL, less a margin of a tenth of the TTL, at most 1s; one brief
        try is still made past that point, since the ledger extends an expired
        lease that nobody took over), and each attempt may take at most one
        ``heartbeat_interval``. If that time passes without an answer from
        the ledger (it is unreachable, say), another worker may take the key
        over: ``lease.cancelled`` is set with a :class:`~ledgerd.LeaseLostError`
        ("no heartbeat was acknowledged before the lease ran out"). If
        ``work`` then raises, do() raises that LeaseLostError; if it still
        returns a result, do() tries to record it all the same (the ledger
        accepts it if nobody took over, and answers LEASE_LOST otherwise).

        ``timeout`` (seconds or a timedelta; default: the Client's
        ``default_timeout``, else unbounded) bounds the whole call: waiting
        for another owner, retries while the server is unavailable, and the
        work: when it runs out while ``work`` runs, ``lease.cancelled`` is
        set (``cancel_reason`` is a :class:`~ledgerd.DeadlineExceededError`)
        and heartbeats stop; if ``work`` then raises, do() releases the lease
        and raises :class:`~ledgerd.DeadlineExceededError`. A result that
        ``work`` returns is recorded even so. The calls do() makes after the
        timeout ran out get a short time of their own (5s).

        When the ledger cannot answer (the circuit breaker is open, or the
        Reserve ended with UNAVAILABLE or DEADLINE_EXCEEDED after the retries
        allowed), ``fallback`` decides:

        - ``"fail_closed"`` (the default): ``work`` does not run, and do()
          raises :class:`~ledgerd.CircuitOpenError` or
          :class:`~ledgerd.UnavailableError` (or
          :class:`~ledgerd.DeadlineExceededError`), which callers branch on.
        - ``"fail_open"``, for steps whose side effects are already
          idempotent downstream: ``work`` runs unguarded, with a lease whose
          ``unguarded`` is True and ``fencing_token`` 0 (nothing heartbeats).
          The client's ``on_fail_open`` hook is called first. If ``work``
          raises, nothing is recorded and do() raises that. If it returns,
          do() returns a Result with ``unguarded=True`` (outcome
          ``"ran_unguarded"``), and a background recorder records the
          result once the ledger answers again (Reserve, waiting for a
          holder, then Complete) if the key is still free: a result another
          worker recorded meanwhile is kept and this one discarded, never
          overwritten. What fail-open gives up: exactly-once (two workers
          may both run the work), and, if the process dies before the
          recorder is done, the ledger never learns of the run. When
          ``fail_open_queue`` results already wait, do() fails closed.

        A held key, a failed key, a refusal (fingerprint mismatch, quota,
        permission...) are answers of the ledger: they behave the same under
        both policies.

        Args:
            namespace: the tenant's or pipeline's scope.
            key: the idempotency key.
            work: called as ``work(lease)`` when this call holds the lease;
                returns the result as bytes.
            owner: names the worker in the ledger and its audit trail
                (default: :func:`default_owner`, new for every call). Two
                calls with the same owner for the same key share one lease,
                so give every concurrent worker its own.
            lease_ttl: how long the lease lasts without a heartbeat (seconds
                or timedelta; default: the namespace's, 30s unless configured).
            fingerprint: bytes identifying the request payload, e.g. its
                SHA-256. A later do() of the key with a different fingerprint
                raises :class:`~ledgerd.FingerprintMismatchError`.
            metadata: labels stored on the entry when the lease is granted.
            heartbeat_interval: how often to extend the lease while ``work``
                runs (default: a third of the granted TTL).
            timeout: the bound of the whole call (see above).
            wait: whether to wait while another owner holds the key.
            fallback: ``"fail_closed"`` or ``"fail_open"`` (default: the
                client's ``fallback``); see above.

        Raises:
            FailedError: the key failed permanently.
            InProgressError: another owner holds the key (``wait=False``, or
                the timeout ran out).
            LeaseLostError: the lease was lost, or could not be kept (no
                heartbeat was acknowledged in time); the result was not recorded.
            FingerprintMismatchError, InvalidArgumentError: caller bugs.
            DeadlineExceededError, UnavailableError: the timeout ran out.
            CircuitOpenError: the breaker is open (an UnavailableError).
            Exception: whatever ``work`` raised.
        """
        if not callable(work):
            raise TypeError(f"work must be callable, got {type(work).__name__}")
        policy = self._policies.fallback_for(fallback)
        interval = _common.heartbeat_interval(heartbeat_interval)
        owner = owner or default_owner()
        deadline = self._deadline(timeout)
        request = _common.reserve_request(
            namespace, key, owner, lease_ttl=lease_ttl, fingerprint=fingerprint, metadata=metadata
        )
        server_wait = wait
        while True:
            wait_for = _common.wait_budget(deadline) if server_wait else None
            _common.set_reserve_wait(request, wait_for)
            started = time.monotonic()
            try:
                response = self._call("reserve", request, deadline, extra_attempt_time=wait_for or 0.0)
            except InvalidArgumentError as error:
                if wait_for is not None and error.field == "wait_timeout":
                    # A server that refuses the wait we asked for: poll instead.
                    server_wait = False
                    continue
                raise
            except LedgerError as error:
                if policy == _policy.FAIL_OPEN and _guard.unreachable(error):
                    return self._run_unguarded(namespace, key, owner, work, error, request)
                raise
            answer = _common.reserve_outcome(namespace, key, owner, response)
            if isinstance(answer, Lease):
                return self._run_leased(answer, work, interval, deadline)
            if isinstance(answer, Result):
                return answer  # a replay
            pause = _common.held_pause(
                namespace, key, answer, wait=wait, started=started, wait_for=wait_for, deadline=deadline
            )
            if pause is not None:
                time.sleep(pause)
            _common.check_still_time(namespace, key, answer, deadline)

    def _record_unguarded(self, record: FailOpenRecord) -> Tuple[Optional[str], Optional[BaseException]]:
        """One try of the recorder at a fail-open result: Reserve (waiting a
        while for a holder), then Complete. Returns the outcome, or None (and
        why) to try again later."""
        deadline = time.monotonic() + RECORD_CALL_TIMEOUT + RECORD_SERVER_WAIT
        try:
            response = self._call(
                "reserve",
                _common.record_reserve_request(record),
                deadline,
                extra_attempt_time=RECORD_SERVER_WAIT,
                retry=False,
            )
        except LedgerError as error:
            if _common.record_later(error):
                return None, error
            # The ledger refused the key (fingerprint mismatch, permission...):
            # this result can never be recorded.
            return _common.record_refused(record, error)
        lease, outcome = _common.record_answer(record, response)
        if lease is None:
            return outcome, None
        completion = _common.complete_request(record.namespace, record.key, lease.fencing_token, record.result)
        try:
            self._call("complete", completion, time.monotonic() + RECORD_CALL_TIMEOUT, retry=False)
        except LeaseLostError as error:
            return None, error  # taken over meanwhile: the next Reserve says by whom
        except LedgerError as error:
            if _common.record_later(error):
                return None, error
            # Refused (too large for the namespace, say): free the key with the reason.
            cleanup = time.monotonic() + CLEANUP_TIMEOUT
            self._quietly("fail", lambda: self._fail(lease, _describe(error), "", True, cleanup), error)
            return _common.record_refused(record, error)
        return _policy.RECORDED, None

    # Internals of do().

    def _run_unguarded(
        self, namespace: str, key: str, owner: str, work: WorkFunction, cause: LedgerError, request: Any
    ) -> Result:
        """Runs the work without a lease (fail-open) and queues its result."""
        policies = self._policies
        if not policies.start_unguarded(namespace, key, cause):
            raise cause  # the queue is full: fail closed
        lease = _common.unguarded_lease(namespace, key, owner)
        try:
            value = _context.using_lease(lease, work)
        except BaseException:
            policies.queue.cancel_slot()
            raise
        result = policies.finish_unguarded(
            lease, value, fingerprint=bytes(request.fingerprint), metadata=dict(request.metadata)
        )
        self._recorder.wake()
        return result

    def _run_leased(
        self, lease: Lease, work: WorkFunction, interval: Optional[float], deadline: Optional[float]
    ) -> Result:
        interval = _common.default_interval(lease, interval)
        heartbeats = _Heartbeater(self, lease, interval, deadline)
        heartbeats.start()
        try:
            value = _context.using_lease(lease, work)
        except Exception as exc:
            replacement = self._after_work_error(lease, exc, heartbeats.stop(), deadline)
            if replacement is None:
                raise
            raise replacement  # the work's exception is its __context__
        except BaseException:
            # KeyboardInterrupt, SystemExit...: free the key for another worker.
            heartbeats.stop()
            self._quietly("release", lambda: self._release(lease, _cleanup_deadline(deadline, always=True)))
            raise
        finally:
            heartbeats.stop()
        return self._after_work_result(lease, value, heartbeats.stop(), heartbeats.unconfirmed, deadline)

    def _after_work_result(
        self,
        lease: Lease,
        value: object,
        heartbeat_error: Optional[LedgerError],
        unconfirmed: bool,
        deadline: Optional[float],
    ) -> Result:
        if isinstance(heartbeat_error, LeaseLostError) and not unconfirmed:
            # Complete would be refused: another worker holds the key now.
            raise heartbeat_error
        # When no heartbeat could be acknowledged before the lease ran out
        # (unconfirmed), the result is still offered: the ledger records it
        # if nobody took the key over, and answers LEASE_LOST otherwise.
        cleanup = _cleanup_deadline(deadline)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            error = _common.not_bytes_error(lease, value)
            self._quietly("fail", lambda: self._fail(lease, _describe(error), "", True, cleanup), error)
            raise error
        result = bytes(value)
        try:
            completed = self._call(
                "complete", _common.complete_request(lease.namespace, lease.key, lease.fencing_token, result), cleanup
            )
        except InvalidArgumentError as error:
            # The ledger refused the result (too large, say): keep the reason
            # on the entry, and free the key for the next attempt.
            self._quietly("fail", lambda: self._fail(lease, _describe(error), "", True, cleanup), error)
            raise
        return _common.completed_result(lease, result, completed)

    def _after_work_error(
        self, lease: Lease, exc: Exception, heartbeat_error: Optional[LedgerError], deadline: Optional[float]
    ) -> Optional[BaseException]:
        """Records the work's failure; returns the exception to raise instead of exc, if any."""
        cleanup = _cleanup_deadline(deadline)
        if isinstance(heartbeat_error, LeaseLostError):
            return heartbeat_error
        if heartbeat_error is not None:
            # The work most likely failed because the lease was cancelled with
            # heartbeat_error: report the cause, not the symptom.
            self._quietly("release", lambda: self._release(lease, cleanup), heartbeat_error)
            return heartbeat_error
        if isinstance(lease.cancel_reason, DeadlineExceededError) or (
            deadline is not None and time.monotonic() >= deadline
        ):
            self._quietly("release", lambda: self._release(lease, cleanup), exc)
            return _common.timed_out_error(lease)
        message, code, retryable = _common.work_failure(exc)
        self._quietly("fail", lambda: self._fail(lease, message, code, retryable, cleanup), exc)
        return None

    def _quietly(self, what: str, action: Callable[[], object], note_on: Optional[BaseException] = None) -> None:
        """Runs a cleanup call whose failure must not hide the error being raised:
        logs it, and adds a note to ``note_on`` (Python 3.11+)."""
        try:
            action()
        except Exception as error:  # noqa: BLE001
            _log.warning("ledgerd: %s after the work failed: %s", what, error)
            if note_on is not None and hasattr(note_on, "add_note"):
                note_on.add_note(f"ledgerd: recording this failure ({what}) failed too: {error}")

    def _fail(self, lease: Lease, message: str, code: str, retryable: bool, deadline: Optional[float]) -> None:
        if retryable:
            self._store_checkpoint(lease, deadline)
        request = _common.fail_request(
            lease.namespace, lease.key, lease.fencing_token, message=message, code=code, retryable=retryable
        )
        self._call("fail", request, deadline)

    def _release(self, lease: Lease, deadline: Optional[float]) -> None:
        self._store_checkpoint(lease, deadline)
        self._call("release", _common.release_request(lease.namespace, lease.key, lease.fencing_token), deadline)

    def _store_checkpoint(self, lease: Lease, deadline: Optional[float]) -> None:
        """Sends a staged checkpoint that no heartbeat carried yet, so that it is
        not lost when the lease is given up (Fail and Release carry none)."""
        if lease._pending()[0] is None:
            return
        try:
            self._heartbeat(lease, deadline)
        except LedgerError as error:  # the Fail or Release that follows says more
            _log.debug("ledgerd: storing the last checkpoint failed: %s", error)

    def _heartbeat(
        self,
        lease: Lease,
        deadline: Optional[float],
        stopper: Optional[_retry.Stopper] = None,
        max_attempt_time: Optional[float] = None,
    ) -> None:
        request, checkpoint, version = _common.lease_heartbeat_request(lease)
        self._call("heartbeat", request, deadline, stopper=stopper, max_attempt_time=max_attempt_time)
        if checkpoint is not None:
            lease._mark_stored(version)

    # Calls with retries.

    def _deadline(self, timeout: Timeout) -> Optional[float]:
        seconds = _positive_seconds(timeout, "timeout")
        if seconds is None:
            seconds = self._default_timeout
        return None if seconds is None else time.monotonic() + seconds

    def _call(
        self,
        operation: str,
        request: Any,
        deadline: Optional[float],
        *,
        stopper: Optional[_retry.Stopper] = None,
        extra_attempt_time: float = 0.0,
        max_attempt_time: Optional[float] = None,
        retry: bool = True,
    ) -> Any:
        """Makes one RPC, retrying UNAVAILABLE and DEADLINE_EXCEEDED with backoff
        until it succeeds, fails otherwise, or the deadline (a time.monotonic
        value) passes. Raises a LedgerError; Stopped if stopper was stopped.
        ``max_attempt_time`` bounds each attempt below the client's
        attempt_timeout. ``retry=False`` makes one attempt only (for the
        admin calls that are not retry-safe without a fencing token).

        Each attempt asks the circuit breaker first (a guarded call it
        refuses raises CircuitOpenError) and tells it how it ended; each
        retry needs the retry budget's token and the attempt limit's leave,
        and waits at least the server's RetryInfo delay."""
        rpc = self._rpcs[operation]
        policies = self._policies
        policies.begin_call(operation)
        backoff = _retry.RETRY_INITIAL_BACKOFF
        last: Optional[LedgerError] = None  # the last failure that was retried
        attempts = 0
        while True:
            if stopper is not None and stopper.is_set():
                raise _retry.Stopped()
            if self._closed:
                raise CancelledError("the client is closed", code=grpc.StatusCode.CANCELLED, operation=operation)
            attempt_timeout = _common.attempt_timeout(
                self._attempt_timeout,
                extra_attempt_time,
                max_attempt_time,
                deadline,
                operation=operation,
                last=last,
                attempts=attempts,
            )
            ticket = policies.admit(operation)
            attempts += 1
            try:
                response = self._attempt(rpc, request, attempt_timeout, stopper, self._metadata)
            except grpc.RpcError as rpc_error:
                if stopper is not None and stopper.is_set():
                    policies.settle(ticket, grpc.StatusCode.CANCELLED, None)
                    raise _retry.Stopped() from None
                error = error_from_rpc(rpc_error, operation=operation)
                error.__cause__ = rpc_error
                policies.settle(ticket, error.code, error)
            except BaseException:
                policies.settle(ticket, grpc.StatusCode.CANCELLED, None)  # Stopped, KeyboardInterrupt...
                raise
            else:
                policies.settle(ticket, None, None)
                return response
            pause = _common.retry_pause(
                policies, operation, error, last, attempts=attempts, backoff=backoff, deadline=deadline, retry=retry
            )
            last = error
            if stopper is not None:
                if stopper.wait(pause):
                    raise _retry.Stopped()
            else:
                time.sleep(pause)
            backoff = min(2 * backoff, _retry.RETRY_MAX_BACKOFF)

    @staticmethod
    def _attempt(
        rpc: Any,
        request: Any,
        timeout: Optional[float],
        stopper: Optional[_retry.Stopper],
        metadata: Optional[Tuple[Tuple[str, str], ...]],
    ) -> Any:
        if stopper is None:
            return rpc(request, timeout=timeout, metadata=metadata)
        future = rpc.future(request, timeout=timeout, metadata=metadata)
        unregister = stopper.register(future.cancel)
        try:
            return future.result()
        except grpc.FutureCancelledError:
            raise _retry.Stopped() from None
        finally:
            unregister()


class _Recorder:
    """Records fail-open results from a background thread, started on the
    first one, while the client is open (see :meth:`Client.do`)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._queue = client._policies.queue
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._generation = 0  # bumped by wake(), so that no wake-up is lost

    def wake(self) -> None:
        """Says a result was queued: starts the thread if needed."""
        with self._cond:
            self._generation += 1
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="ledgerd-fail-open-recorder", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_empty(self, timeout: Optional[float]) -> int:
        """Waits until nothing is pending, or timeout; returns what is left."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                left = self._queue.pending
                if left == 0:
                    return 0
                wait = 1.0  # also catches runs whose work raised (no notification)
                if end is not None:
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        return left
                    wait = min(wait, remaining)
                self._cond.wait(wait)

    def stop(self) -> List[FailOpenRecord]:
        """Stops the thread; returns the records it had not recorded."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLEANUP_TIMEOUT)
        return self._queue.abandon()

    def _run(self) -> None:
        policies = self._client._policies
        while True:
            with self._cond:
                if self._stopping:
                    return
                generation = self._generation
            record, wait = self._queue.next_due()
            if record is None:
                with self._cond:
                    if not self._stopping and generation == self._generation:
                        self._cond.wait(wait)
                continue
            outcome: Optional[str] = None
            error: Optional[BaseException] = None
            try:
                outcome, error = self._client._record_unguarded(record)
            except Exception as exc:  # noqa: BLE001 - keep the thread alive; try again later
                error = exc
                _log.warning("ledgerd: recording the fail-open result of %s/%s: %r", record.namespace, record.key, exc)
            policies.settle_record(record, outcome, error)
            with self._cond:
                self._cond.notify_all()


class _Heartbeater:
    """Keeps a lease alive from a background thread while the work runs.

    Every heartbeat, its retries included, must be acknowledged before the
    lease runs out: it has until ``valid_until`` (the sending time of the last
    acknowledged heartbeat, at first of the grant, plus the TTL) less a margin
    for the answer's trip, and each attempt at most one interval. When that
    time passes without an answer from the ledger (it is unreachable, say),
    another worker may take the key over: the work is cancelled with a
    :class:`~ledgerd.LeaseLostError` (:attr:`unconfirmed` is then True).
    """

    def __init__(self, client: Client, lease: Lease, interval: float, deadline: Optional[float]) -> None:
        self._client = client
        self._lease = lease
        self._interval = interval
        self._deadline = deadline
        self._stopper = _retry.Stopper()
        self._thread = threading.Thread(
            target=self._run, name=f"ledgerd-heartbeat:{lease.namespace}/{lease.key}", daemon=True
        )
        # The grant was made a moment ago; counting the TTL from now is off by
        # one round trip at most, and the margin covers it.
        self._valid_until: Optional[float] = time.monotonic() + lease.ttl if lease.ttl > 0 else None
        #: Why the heartbeats ended early, if they did; read after stop().
        self.error: Optional[LedgerError] = None
        #: True when they ended because no heartbeat could be acknowledged
        #: before the lease ran out (self.error is then a LeaseLostError that
        #: no ledger answer confirmed: a result may still be recorded).
        self.unconfirmed = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> Optional[LedgerError]:
        """Ends the heartbeats (cancelling a call in flight) and waits for the
        thread; returns the error that ended them early. May be called again."""
        self._stopper.stop()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join()
        return self.error

    def _deadline_passed(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _lease_deadline(self) -> Optional[float]:
        """When the next heartbeat must have been acknowledged (see _common.lease_deadline)."""
        return _common.lease_deadline(self._valid_until, self._lease.ttl, self._interval)

    def _run(self) -> None:
        lease = self._lease
        next_beat = time.monotonic() + self._interval
        while True:
            wake = next_beat if self._deadline is None else min(next_beat, self._deadline)
            if self._stopper.wait(max(0.0, wake - time.monotonic())):
                return
            if self._deadline_passed():
                self._end_by_timeout()
                return
            lease_deadline = self._lease_deadline()
            call_deadline = _earliest(lease_deadline, self._deadline)
            sent_at = time.monotonic()
            try:
                # Each attempt gets at most one interval, so that a hung
                # connection is abandoned and another attempt made in time.
                self._client._heartbeat(lease, call_deadline, self._stopper, max_attempt_time=self._interval)
            except _retry.Stopped:
                return
            except Exception as error:  # noqa: BLE001 - any failure ends the lease
                if self._stopper.is_set():
                    return  # stopped during the call: not a failure
                if self._deadline_passed():
                    self._end_by_timeout()
                    return
                error, self.unconfirmed = _common.heartbeat_failure(error, lease_deadline)
                # Refused (LEASE_LOST, or a bad checkpoint), or not answered in
                # time: the lease cannot be kept, so the work must stop.
                self.error = error
                lease._cancel(error)
                return
            if self._valid_until is not None:
                self._valid_until = sent_at + lease.ttl
            next_beat = time.monotonic() + self._interval

    def _end_by_timeout(self) -> None:
        self._lease._cancel(_common.timeout_cancellation(self._lease))


def open_channel(
    api: Any,
    client_name: str,
    target: Target,
    *,
    credentials: Optional[grpc.ChannelCredentials],
    insecure: bool,
    options: Optional[Sequence[Tuple[str, Any]]],
    max_receive_message_bytes: int,
    token: Optional[str],
    token_file: Optional[str],
) -> Tuple[Any, Optional[Tuple[Tuple[str, str], ...]]]:
    """The channel that a Client's constructor makes, and the metadata its
    calls carry (the token over plaintext, else None).

    ``api`` is ``grpc`` or ``grpc.aio`` (the two have the same channel
    functions); ``client_name`` starts the messages of the ValueErrors it
    raises for the constructor's bad arguments (see :class:`Client`).
    """
    bearer = _read_token(token, token_file)
    if credentials is not None and insecure:
        raise ValueError(f"{client_name}: pass either credentials or insecure=True, not both")
    if credentials is None and not insecure:
        raise ValueError(
            f"{client_name}: transport security must be chosen: pass credentials="
            "grpc.ssl_channel_credentials(...) or, for development only, insecure=True"
            + (" (which sends the token in plaintext)" if bearer is not None else "")
        )
    grpc_target, balancing = resolve_target(target)
    channel_options = [("grpc.primary_user_agent", USER_AGENT)] + balancing
    channel_options += _channel_options(options, max_receive_message_bytes)
    if insecure:
        channel = api.insecure_channel(grpc_target, options=channel_options)
        if bearer is not None:
            # Call credentials need a secure channel: over the plaintext
            # one that insecure=True asked for, the header goes with
            # every call as metadata.
            return channel, (("authorization", "Bearer " + bearer),)
        return channel, None
    if bearer is not None:
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(bearer))
    return api.secure_channel(grpc_target, credentials, options=channel_options), None


def resolve_target(target: Target) -> Tuple[str, List[Tuple[str, Any]]]:
    """The gRPC target of ``target`` and the channel options it needs.

    One address, or a gRPC target with a scheme other than dns, is used as
    is. Several addresses (a list, or a comma-separated string) become one
    ``ipv4:``/``ipv6:`` target, host names resolved now; a ``dns:`` target
    stays as it is. Both get :data:`REPLICAS_SERVICE_CONFIG` (round robin
    over the healthy replicas). Raises ValueError for an empty or malformed
    address, naming it.
    """
    if isinstance(target, str):
        text = target.strip()
        if text.startswith("dns:"):
            return text, [("grpc.service_config", REPLICAS_SERVICE_CONFIG)]
        scheme = text.split(":", 1)[0]
        if "://" in text or scheme in ("ipv4", "ipv6", "unix", "unix-abstract", "vsock"):
            # A gRPC target of its own; several IP addresses are replicas.
            several = scheme in ("ipv4", "ipv6") and "," in text
            return text, [("grpc.service_config", REPLICAS_SERVICE_CONFIG)] if several else []
        addresses = [part.strip() for part in text.split(",")]
    elif isinstance(target, Sequence):
        addresses = [str(part).strip() for part in target]
    else:
        raise TypeError(f"target must be a str or a list of addresses, got {type(target).__name__}")
    if not addresses or any(not a for a in addresses):
        raise ValueError(f"target: an address is empty in {target!r}")
    if len(addresses) == 1:
        return addresses[0], []
    resolved = [_resolve(address) for address in addresses]
    families = {family for family, _ in resolved}
    if families == {4}:
        joined = "ipv4:" + ",".join(endpoint for _, endpoint in resolved)
    elif families == {6}:
        joined = "ipv6:" + ",".join(endpoint for _, endpoint in resolved)
    else:
        raise ValueError(f"target: the addresses {addresses!r} mix IPv4 and IPv6; give one family")
    options: List[Tuple[str, Any]] = [("grpc.service_config", REPLICAS_SERVICE_CONFIG)]
    names = [a for a in addresses if not _is_ip(_host_port(a)[0])]
    if names:
        # Host names were resolved here: TLS checks the certificate against
        # the first name, not against an IP address.
        options.append(("grpc.default_authority", names[0]))
    return joined, options


def _host_port(address: str) -> Tuple[str, str]:
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"target: address {address!r} is not [IPv6]:port")
        return host, rest[1:]
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target: address {address!r} is not host:port")
    return host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(address: str) -> Tuple[int, str]:
    """(4 or 6, "ip:port") of a host:port, a name resolved to its first address."""
    host, port = _host_port(address)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError as error:
            raise ValueError(f"target: cannot resolve {address!r}: {error}") from error
        infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first
        ip = ipaddress.ip_address(infos[0][4][0])
    if ip.version == 6:
        return 6, f"[{ip}]:{port}"
    return 4, f"{ip}:{port}"
