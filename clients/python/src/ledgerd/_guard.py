"""The policies of one client, as its calls apply them (internal).

:class:`Policies` bundles a client's circuit breaker, retry budget,
attempt limit, counters, fallback policy, fail-open queue and hooks, and
makes the decisions that both the sync and the asyncio client take around
each attempt, each retry and each fail-open run. Like :mod:`._policy` it
does no I/O: the clients make the calls and do the waiting.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Optional, Union

import grpc

from . import _policy, _retry
from ._policy import (
    FAIL_CLOSED,
    BreakerConfig,
    CircuitBreaker,
    Counters,
    FailOpenQueue,
    FailOpenRecord,
    RetryBudget,
    RetryBudgetConfig,
    Stats,
    Ticket,
)
from .errors import CircuitOpenError, DeadlineExceededError, LedgerError, UnavailableError
from .lease import Lease, Result

__all__ = [
    "DEFAULT",
    "UNGUARDED_OPERATIONS",
    "Policies",
    "BreakerOption",
    "RetryBudgetOption",
    "FailOpenHook",
    "FailOpenRecordedHook",
]

_log = logging.getLogger("ledgerd")


class _Default:
    """The marker of an option left at its default (``None`` turns it off)."""

    def __repr__(self) -> str:
        return "DEFAULT"


#: The default of the ``breaker`` and ``retry_budget`` options.
DEFAULT: Any = _Default()

#: The calls the breaker always lets through (their outcomes still count):
#: they protect work already granted, and failing them fast would throw away
#: a result the worker holds.
UNGUARDED_OPERATIONS = frozenset({"heartbeat", "complete", "complete_batch", "fail", "release"})

#: ``breaker=``: a BreakerConfig, a mapping of its fields, DEFAULT, or None (off).
BreakerOption = Union[BreakerConfig, Mapping[str, Any], None, _Default]
#: ``retry_budget=``: a RetryBudgetConfig, a mapping of its fields, DEFAULT, or None (off).
RetryBudgetOption = Union[RetryBudgetConfig, Mapping[str, Any], None, _Default]
#: ``on_fail_open(namespace, key, cause)``.
FailOpenHook = Callable[[str, str, BaseException], object]
#: ``on_fail_open_recorded(namespace, key, outcome)``.
FailOpenRecordedHook = Callable[[str, str, str], object]

#: The first wait before the recorder tries a fail-open result again, and the
#: longest, in seconds.
RECORD_INITIAL_BACKOFF = 0.1
RECORD_MAX_BACKOFF = 5.0


def _config(value: Any, config_class: type, name: str) -> Any:
    """The config of a ``breaker=``/``retry_budget=`` option: its default for
    DEFAULT, None (off), the config itself, or one made from a mapping of its
    fields; raises TypeError naming the option for anything else."""
    if value is DEFAULT:
        return config_class()
    if value is None or isinstance(value, config_class):
        return value
    if isinstance(value, Mapping):
        return config_class(**dict(value))
    raise TypeError(
        f"{name} must be a {config_class.__name__}, a dict of its fields or None, got {type(value).__name__}"
    )


def _call_hook(name: str, hook: Optional[Callable[..., object]], *args: object) -> None:
    """Calls an observation hook; its failure is logged, never raised (a
    metrics hook must not break the pipeline)."""
    if hook is None:
        return
    try:
        hook(*args)
    except Exception as error:  # noqa: BLE001
        _log.warning("ledgerd: the %s hook raised: %r", name, error)


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the ledger could not answer (the cases the
    fallback policy is for): the breaker is open, or the call ended with
    UNAVAILABLE or DEADLINE_EXCEEDED after the retries it was allowed. An
    answer of the ledger (a held key, a refusal) is not."""
    if isinstance(error, CircuitOpenError):
        return True
    return isinstance(error, (UnavailableError, DeadlineExceededError)) and error.code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


class Policies:
    """A client's breaker, retry budget, attempt limit, counters, fallback
    and fail-open bookkeeping (see the Client's arguments of the same names)."""

    def __init__(
        self,
        *,
        breaker: BreakerOption = DEFAULT,
        retry_budget: RetryBudgetOption = DEFAULT,
        max_attempts: Optional[int] = None,
        fallback: str = FAIL_CLOSED,
        fail_open_queue: int = _policy.DEFAULT_FAIL_OPEN_QUEUE,
        on_breaker_change: Optional[_policy.ChangeHook] = None,
        on_fail_open: Optional[FailOpenHook] = None,
        on_fail_open_recorded: Optional[FailOpenRecordedHook] = None,
    ) -> None:
        config: Optional[BreakerConfig] = _config(breaker, BreakerConfig, "breaker")
        self.breaker = None if config is None else CircuitBreaker(config, on_change=on_breaker_change)
        budget: Optional[RetryBudgetConfig] = _config(retry_budget, RetryBudgetConfig, "retry_budget")
        self.budget = None if budget is None else RetryBudget(budget)
        if max_attempts is not None:
            if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
                raise TypeError(f"max_attempts must be an int or None, got {type(max_attempts).__name__}")
            if max_attempts < 1:
                raise ValueError(f"max_attempts must be at least 1 (or None: until the timeout), got {max_attempts}")
        self.max_attempts = max_attempts
        self.fallback = _policy.check_fallback(fallback)
        self.queue = FailOpenQueue(fail_open_queue)
        self.counters = Counters()
        self.on_fail_open = on_fail_open
        self.on_fail_open_recorded = on_fail_open_recorded

    # Around each call and attempt.

    def begin_call(self, operation: str) -> None:
        """Counts a call's first attempt (and, but for heartbeats, feeds the budget)."""
        self.counters.add(calls=1)
        if self.budget is not None and operation != "heartbeat":
            self.budget.on_call()

    def admit(self, operation: str) -> Optional[Ticket]:
        """The breaker's permission for an attempt, or None without a
        breaker; raises CircuitOpenError for a guarded call it refuses."""
        if self.breaker is None:
            return None
        try:
            return self.breaker.allow(guarded=operation not in UNGUARDED_OPERATIONS)
        except CircuitOpenError as error:
            error.operation = operation
            raise

    def settle(self, ticket: Optional[Ticket], code: Optional[grpc.StatusCode], error: Optional[BaseException]) -> None:
        """Tells the breaker how the attempt ended (``code`` None: OK)."""
        if self.breaker is not None and ticket is not None:
            self.breaker.record(ticket, _policy.attempt_outcome(code), error)

    def refuse_retry(self, operation: str, error: LedgerError, attempts: int) -> Optional[LedgerError]:
        """Whether a retryable failure may be retried: None (retry; the token
        is spent and the retry counted), or the error to raise instead (the
        attempt limit was reached, or the budget is empty, or the breaker
        opened and would refuse the retry)."""
        if self.max_attempts is not None and attempts >= self.max_attempts and operation != "heartbeat":
            return _with_note(error, f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} (max_attempts)")
        if self.breaker is not None and operation not in UNGUARDED_OPERATIONS:
            refused = self.breaker.refusal()
            if refused is not None:
                refused.operation = operation
                return refused
        if self.budget is not None and operation != "heartbeat" and not self.budget.try_retry():
            self.counters.add(retries_refused=1)
            return _with_note(error, f"retry budget exhausted after {attempts} attempt{'s' if attempts != 1 else ''}")
        self.counters.add(retries=1)
        return None

    @staticmethod
    def retry_pause(backoff: float, error: LedgerError) -> float:
        """The wait before a retry: the jittered backoff, but never less than
        the server's RetryInfo retry_delay."""
        return max(_retry.jitter(backoff), error.retry_delay or 0.0)

    # Fail-open.

    def fallback_for(self, fallback: Optional[str]) -> str:
        """do()'s fallback: the call's, else the client's."""
        return self.fallback if fallback is None else _policy.check_fallback(fallback)

    def start_unguarded(self, namespace: str, key: str, cause: BaseException) -> bool:
        """Claims a slot for a fail-open run of the key and reports it (the
        on_fail_open hook, the fail_open_runs counter). False when the queue
        is full: the run must not happen, do() fails closed."""
        if not self.queue.reserve_slot():
            if hasattr(cause, "add_note"):
                cause.add_note(
                    f"ledgerd: fail_open fell back to fail_closed: {self.queue.capacity} results "
                    "already wait to be recorded (fail_open_queue)"
                )
            return False
        _call_hook("on_fail_open", self.on_fail_open, namespace, key, cause)
        return True

    def finish_unguarded(
        self,
        lease: Lease,
        value: object,
        *,
        fingerprint: bytes = b"",
        metadata: Optional[Mapping[str, str]] = None,
    ) -> Result:
        """Queues the result of a fail-open run for the recorder; returns do()'s
        Result. Raises TypeError (and frees the slot) if the work did not
        return bytes."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            self.queue.cancel_slot()
            raise TypeError(
                f"the work for {lease.namespace}/{lease.key} returned {type(value).__name__}; "
                "it must return bytes (b'' for no result)"
            )
        result = bytes(value)
        self.queue.put(
            FailOpenRecord(
                namespace=lease.namespace,
                key=lease.key,
                result=result,
                owner=lease.owner,
                fingerprint=fingerprint,
                metadata=dict(metadata or {}),
            )
        )
        return Result(value=result, fencing_token=0, attempt=0, replayed=False, completed_at=None, unguarded=True)

    def recorded(self, record: FailOpenRecord, outcome: str) -> None:
        """Ends a queued record with its outcome and reports it."""
        self.queue.finish(record, outcome)
        if outcome != _policy.RECORDED:
            _log.info(
                "ledgerd: the fail-open result of %s/%s was discarded (%s)", record.namespace, record.key, outcome
            )
        _call_hook("on_fail_open_recorded", self.on_fail_open_recorded, record.namespace, record.key, outcome)

    def settle_record(self, record: FailOpenRecord, outcome: Optional[str], error: Optional[BaseException]) -> None:
        """Ends one try of the recorder at a record: its outcome, or (None)
        back in the queue until :meth:`record_backoff` has passed."""
        if outcome is None:
            self.queue.retry_later(record, self.record_backoff(record, error))
        else:
            self.recorded(record, outcome)

    def record_backoff(self, record: FailOpenRecord, error: Optional[BaseException]) -> float:
        """How long the recorder waits before trying a record again: backoff
        with jitter, but at least until an open breaker lets a probe through."""
        delay = _retry.jitter(min(RECORD_MAX_BACKOFF, RECORD_INITIAL_BACKOFF * 2**record.tries))
        if isinstance(error, CircuitOpenError) and self.breaker is not None:
            opened_for = (time.time() - error.since.timestamp()) if error.since else 0.0
            delay = max(delay, self.breaker.config.open_for - opened_for)
        if isinstance(error, LedgerError) and error.retry_delay:
            delay = max(delay, error.retry_delay)
        return delay

    # Observation.

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        counters = self.counters
        queue = self.queue
        return Stats(
            calls=counters.calls,
            retries=counters.retries,
            retries_refused=counters.retries_refused,
            # Without a breaker every call goes through, as a closed one lets it.
            breaker_state=_policy.CLOSED if self.breaker is None else self.breaker.state,
            breaker_opens=0 if self.breaker is None else self.breaker.opens,
            fail_open_runs=queue.runs,
            fail_open_recorded=queue.recorded,
            fail_open_discarded=queue.discarded,
            fail_open_pending=queue.pending,
        )


def _with_note(error: LedgerError, note: str) -> LedgerError:
    """A copy of a retryable error whose message says why it was not retried."""
    return with_message(error, f"{error.message} ({note})")


def with_message(
    error: LedgerError, message: str, *, operation: Optional[str] = None, retry_delay: bool = True
) -> LedgerError:
    """A copy of ``error`` (its type, reason, code, field, metadata and
    cause) with another message; ``operation``, when given, replaces the
    error's, and ``retry_delay=False`` leaves the copy's RetryInfo delay unset."""
    copy = type(error)(
        message,
        reason=error.reason,
        code=error.code,
        field=error.field,
        operation=error.operation if operation is None else operation,
        metadata=error.metadata,
    )
    if retry_delay:
        copy.retry_delay = error.retry_delay
    copy.__cause__ = error.__cause__
    return copy
