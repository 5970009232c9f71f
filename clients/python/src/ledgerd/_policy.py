"""The client's policies, without I/O: circuit breaker, retry budget, stats,
and the bookkeeping of the fail-open queue (internal).

Nothing here makes a call, sleeps or starts a thread: the sync client
(:mod:`ledgerd.client`) and the asyncio client drive these objects and do
their own waiting. Time comes from injectable clocks (a monotonic one for
durations, a wall clock for the ``since`` that errors show), so that the
state machines are tested with a fake clock. Every object is thread-safe
(short critical sections under a lock), which also makes it safe from an
event loop.

The behaviour is the one the three ledgerd clients share:

- The breaker counts, per RPC attempt, unavailability answers (gRPC
  ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED``) as failures, any other answer
  of the server as a success, and a call the caller cancelled as neither. It
  opens after ``failure_threshold`` consecutive failures, or when over the
  last ``window`` at least ``min_calls`` attempts were made and the failure
  ratio reached ``failure_ratio``. Open, it refuses guarded calls for
  ``open_for``; then it lets one probe through (half-open), whose success
  closes it and whose failure opens it again.
- The retry budget is gRPC's retry throttling: a token bucket that starts
  full with ``max_tokens``, gains ``ratio`` per first attempt and spends one
  per retry, which is made only if a whole token is there.
"""

from __future__ import annotations

import collections
import datetime
import threading
import time
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional, Tuple

import grpc

from .errors import CircuitOpenError

__all__ = [
    "CLOSED",
    "OPEN",
    "HALF_OPEN",
    "FAIL_CLOSED",
    "FAIL_OPEN",
    "RAN",
    "REPLAYED",
    "RAN_UNGUARDED",
    "RECORDED",
    "DISCARDED_COMPLETED",
    "DISCARDED_FAILED",
    "SUCCESS",
    "FAILURE",
    "IGNORED",
    "DEFAULT_FAIL_OPEN_QUEUE",
    "BreakerConfig",
    "CircuitBreaker",
    "Ticket",
    "RetryBudgetConfig",
    "RetryBudget",
    "Stats",
    "Counters",
    "FailOpenRecord",
    "FailOpenQueue",
    "attempt_outcome",
    "check_fallback",
]

#: Breaker states, as :meth:`CircuitBreaker.state` and the change hook name them.
CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

#: Fallback policies of do(): the work does not run while the ledger cannot
#: answer (the default), or it runs unguarded and is recorded afterwards.
FAIL_CLOSED = "fail_closed"
FAIL_OPEN = "fail_open"
_FALLBACKS = (FAIL_CLOSED, FAIL_OPEN)

#: How a do() ended (``Result.outcome``).
RAN = "ran"
REPLAYED = "replayed"
RAN_UNGUARDED = "ran_unguarded"

#: How the recording of a fail-open run ended (``on_fail_open_recorded``).
RECORDED = "recorded"
DISCARDED_COMPLETED = "discarded_completed"
DISCARDED_FAILED = "discarded_failed"

#: What one RPC attempt tells the breaker.
SUCCESS = "success"
FAILURE = "failure"
IGNORED = "ignored"

#: The default bound of the fail-open queue (results waiting to be recorded).
DEFAULT_FAIL_OPEN_QUEUE = 10_000

_UNAVAILABILITY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

MonotonicClock = Callable[[], float]
WallClock = Callable[[], datetime.datetime]
#: The breaker's change hook: called as ``hook(from_state, to_state, last_error)``.
ChangeHook = Callable[[str, str, Optional[BaseException]], object]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def attempt_outcome(code: Optional[grpc.StatusCode]) -> str:
    """What an attempt that ended with status ``code`` (None: OK) tells the
    breaker: FAILURE for UNAVAILABLE and DEADLINE_EXCEEDED, IGNORED for
    CANCELLED (the caller gave up: it says nothing about the server), SUCCESS
    for any other answer (the server is alive, even when it refuses)."""
    if code in _UNAVAILABILITY:
        return FAILURE
    if code == grpc.StatusCode.CANCELLED:
        return IGNORED
    return SUCCESS


def check_fallback(value: str, name: str = "fallback") -> str:
    """Returns ``value`` if it is a fallback policy; raises ValueError naming
    ``name`` and the allowed values otherwise."""
    if value not in _FALLBACKS:
        raise ValueError(f"{name} must be {FAIL_CLOSED!r} or {FAIL_OPEN!r}, got {value!r}")
    return value


def _positive(value: object, name: str, *, integer: bool = False) -> None:
    kind = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, got {type(value).__name__}")
    if not value > 0:  # type: ignore[operator]
        raise ValueError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class BreakerConfig:
    """The parameters of the circuit breaker (``breaker=`` of the clients).

    Attributes:
        failure_threshold: consecutive failed attempts that open it (default 5).
        failure_ratio: the failure ratio over ``window`` that opens it, in
            (0, 1] (default 0.5), once ``min_calls`` attempts were made in it.
        window: the length of that window, in seconds (default 10).
        min_calls: the attempts the window needs before its ratio counts
            (default 20).
        open_for: how long it stays open before it lets a probe through, in
            seconds (default 5).
    """

    failure_threshold: int = 5
    failure_ratio: float = 0.5
    window: float = 10.0
    min_calls: int = 20
    open_for: float = 5.0

    def __post_init__(self) -> None:
        _positive(self.failure_threshold, "breaker failure_threshold", integer=True)
        _positive(self.failure_ratio, "breaker failure_ratio")
        if self.failure_ratio > 1:
            raise ValueError(f"breaker failure_ratio must be at most 1, got {self.failure_ratio!r}")
        _positive(self.window, "breaker window")
        _positive(self.min_calls, "breaker min_calls", integer=True)
        _positive(self.open_for, "breaker open_for")


@dataclass(frozen=True)
class Ticket:
    """The permission :meth:`CircuitBreaker.allow` gives an attempt; hand it
    back to :meth:`CircuitBreaker.record` with the attempt's outcome."""

    #: Whether this attempt is the half-open probe that decides the state.
    probe: bool
    #: Whether the breaker guarded the attempt (False for Heartbeat, Complete...).
    guarded: bool
    #: The generation of the breaker's state when the ticket was given: an
    #: outcome from an older state (an attempt that started before the
    #: breaker opened, say) does not count in the newer one.
    generation: int


class CircuitBreaker:
    """The circuit breaker of one client (see the module docstring).

    Use :meth:`allow` before each attempt of a guarded call (it raises
    :class:`~ledgerd.CircuitOpenError` when the attempt may not be made),
    :meth:`allow` with ``guarded=False`` for the calls that protect work
    already granted (they always pass), and :meth:`record` after each attempt.

    ``on_change(from_state, to_state, last_error)`` is called on every
    transition, outside the breaker's lock; an exception it raises is
    swallowed (a metrics hook must not break calls).
    """

    def __init__(
        self,
        config: Optional[BreakerConfig] = None,
        *,
        on_change: Optional[ChangeHook] = None,
        clock: MonotonicClock = time.monotonic,
        wall_clock: WallClock = _utcnow,
    ) -> None:
        self.config = config or BreakerConfig()
        self._on_change = on_change
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._generation = 0
        self._consecutive = 0
        self._window: Deque[Tuple[float, bool]] = collections.deque()  # (when, failed)
        self._window_failures = 0
        self._opened_at = 0.0  # monotonic
        self._since: Optional[datetime.datetime] = None  # wall clock
        self._last_error: Optional[BaseException] = None
        self._probe_out = False
        self._opens = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``. An open breaker whose
        ``open_for`` has passed reads (and becomes) half-open."""
        with self._lock:
            changes = self._tick()
            state = self._state
        self._notify(changes)
        return state

    @property
    def opens(self) -> int:
        """How many times the breaker opened (re-openings after a failed probe included)."""
        with self._lock:
            return self._opens

    @property
    def last_error(self) -> Optional[BaseException]:
        """The last unavailability error counted, or None."""
        with self._lock:
            return self._last_error

    def allow(self, *, guarded: bool = True) -> Ticket:
        """Lets an attempt through and returns its ticket, or raises
        :class:`~ledgerd.CircuitOpenError` for a guarded attempt while the
        breaker is open, or half-open with its probe out."""
        with self._lock:
            changes = self._tick()
            ticket: Optional[Ticket] = None
            if not guarded:
                ticket = Ticket(probe=False, guarded=False, generation=self._generation)
            elif self._state == CLOSED:
                ticket = Ticket(probe=False, guarded=True, generation=self._generation)
            elif self._state == HALF_OPEN and not self._probe_out:
                self._probe_out = True
                ticket = Ticket(probe=True, guarded=True, generation=self._generation)
            refusal = None if ticket is not None else self._open_error()
        self._notify(changes)
        if refusal is not None:
            raise refusal
        assert ticket is not None
        return ticket

    def refusal(self) -> Optional[CircuitOpenError]:
        """The error :meth:`allow` would raise for a guarded attempt now, or
        None; unlike allow() it claims nothing (a retry asks it before it
        spends a token on an attempt the breaker would refuse)."""
        with self._lock:
            changes = self._tick()
            refused = self._state == OPEN or (self._state == HALF_OPEN and self._probe_out)
            error = self._open_error() if refused else None
        self._notify(changes)
        return error

    def record(self, ticket: Ticket, outcome: str, error: Optional[BaseException] = None) -> None:
        """Counts the outcome of an attempt (SUCCESS, FAILURE or IGNORED; see
        :func:`attempt_outcome`); ``error`` is the attempt's error, kept as
        the last error for a FAILURE.

        The probe's outcome decides a half-open breaker. Other outcomes
        count only while the breaker is closed, and only if it has not
        changed state since the ticket was given: an attempt that began
        before the breaker opened says nothing about the server now.
        """
        if outcome not in (SUCCESS, FAILURE, IGNORED):
            raise ValueError(f"outcome must be {SUCCESS!r}, {FAILURE!r} or {IGNORED!r}, got {outcome!r}")
        with self._lock:
            if outcome == FAILURE and error is not None:
                self._last_error = error
            changes = self._tick()
            if ticket.probe:
                if ticket.generation == self._generation and self._state == HALF_OPEN:
                    self._probe_out = False
                    if outcome == SUCCESS:
                        changes.append(self._move(CLOSED))
                    elif outcome == FAILURE:
                        changes.append(self._open())
            elif outcome != IGNORED and self._state == CLOSED and ticket.generation == self._generation:
                self._count(outcome == FAILURE)
                if self._should_open():
                    changes.append(self._open())
        self._notify(changes)

    # Internals; the callers hold self._lock (but for _notify).

    def _count(self, failed: bool) -> None:
        now = self._clock()
        self._consecutive = self._consecutive + 1 if failed else 0
        self._window.append((now, failed))
        if failed:
            self._window_failures += 1
        self._prune(now)

    def _prune(self, now: float) -> None:
        horizon = now - self.config.window
        while self._window and self._window[0][0] <= horizon:
            _, failed = self._window.popleft()
            if failed:
                self._window_failures -= 1

    def _should_open(self) -> bool:
        if self._consecutive >= self.config.failure_threshold:
            return True
        calls = len(self._window)
        return calls >= self.config.min_calls and self._window_failures >= self.config.failure_ratio * calls

    def _tick(self) -> List[Tuple[str, str, Optional[BaseException]]]:
        """Moves an open breaker whose time is up to half-open."""
        if self._state == OPEN and self._clock() >= self._opened_at + self.config.open_for:
            return [self._move(HALF_OPEN)]
        return []

    def _open(self) -> Tuple[str, str, Optional[BaseException]]:
        self._opened_at = self._clock()
        self._since = self._wall_clock()
        self._opens += 1
        return self._move(OPEN)

    def _move(self, to: str) -> Tuple[str, str, Optional[BaseException]]:
        change = (self._state, to, self._last_error)
        self._state = to
        self._generation += 1
        self._probe_out = False
        self._consecutive = 0
        self._window.clear()
        self._window_failures = 0
        return change

    def _open_error(self) -> CircuitOpenError:
        since = self._since or self._wall_clock()
        age = max(0.0, self._clock() - self._opened_at)
        return CircuitOpenError(since=since, age=age, last_error=self._last_error)

    def _notify(self, changes: List[Tuple[str, str, Optional[BaseException]]]) -> None:
        if self._on_change is None:
            return
        for old, new, error in changes:
            try:
                self._on_change(old, new, error)
            except Exception:  # noqa: BLE001 - a hook must not break calls
                pass


@dataclass(frozen=True)
class RetryBudgetConfig:
    """The parameters of the retry budget (``retry_budget=`` of the clients).

    Attributes:
        max_tokens: the bucket's size and initial content (default 100).
        ratio: the tokens each first attempt adds (default 0.1; 0: the
            bucket never refills): retries stay below
            ``max_tokens + ratio * calls``.
    """

    max_tokens: float = 100.0
    ratio: float = 0.1

    def __post_init__(self) -> None:
        _positive(self.max_tokens, "retry_budget max_tokens")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)):
            raise TypeError(f"retry_budget ratio must be a number, got {type(self.ratio).__name__}")
        if self.ratio < 0:
            raise ValueError(f"retry_budget ratio must be 0 or more, got {self.ratio!r}")


class RetryBudget:
    """gRPC's retry throttling: a token bucket shared by all of a client's calls."""

    def __init__(self, config: Optional[RetryBudgetConfig] = None) -> None:
        self.config = config or RetryBudgetConfig()
        self._lock = threading.Lock()
        self._tokens = float(self.config.max_tokens)

    @property
    def tokens(self) -> float:
        """The tokens in the bucket now."""
        with self._lock:
            return self._tokens

    def on_call(self) -> None:
        """Counts the first attempt of a call: adds ``ratio`` tokens, up to ``max_tokens``."""
        with self._lock:
            self._tokens = min(self.config.max_tokens, self._tokens + self.config.ratio)

    def try_retry(self) -> bool:
        """Spends a token for a retry; False (and nothing spent) if no whole token is there."""
        with self._lock:
            # A small tolerance: ten additions of 0.1 make 0.9999999999999999.
            if self._tokens < 1.0 - 1e-9:
                return False
            self._tokens = max(0.0, self._tokens - 1.0)
            return True


@dataclass(frozen=True)
class Stats:
    """A snapshot of a client's counters (``Client.stats()``).

    Attributes:
        calls: RPC calls made (first attempts), guarded or not.
        retries: retries made (attempts after the first).
        retries_refused: retries the budget refused.
        breaker_state: ``"closed"``, ``"open"`` or ``"half_open"``
            (``"closed"`` without a breaker: every call goes through).
        breaker_opens: how many times the breaker opened.
        fail_open_runs: works run unguarded by the fail-open policy.
        fail_open_recorded: their results recorded in the ledger afterwards.
        fail_open_discarded: their results discarded because the key had
            been completed or had failed by then.
        fail_open_pending: results still waiting to be recorded.
    """

    calls: int = 0
    retries: int = 0
    retries_refused: int = 0
    breaker_state: str = CLOSED
    breaker_opens: int = 0
    fail_open_runs: int = 0
    fail_open_recorded: int = 0
    fail_open_discarded: int = 0
    fail_open_pending: int = 0

    def as_dict(self) -> Dict[str, object]:
        """The snapshot as a dict (for metrics exporters and logs)."""
        return dict(self.__dict__)


class Counters:
    """The call and retry counters behind :class:`Stats` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.retries = 0
        self.retries_refused = 0

    def add(self, *, calls: int = 0, retries: int = 0, retries_refused: int = 0) -> None:
        """Adds to the counters."""
        with self._lock:
            self.calls += calls
            self.retries += retries
            self.retries_refused += retries_refused


@dataclass
class FailOpenRecord:
    """A result of a fail-open run, waiting to be recorded in the ledger."""

    namespace: str
    key: str
    result: bytes
    owner: str
    fingerprint: bytes = b""
    metadata: Optional[Dict[str, str]] = None
    #: When the recorder may try it next (the queue's monotonic clock).
    not_before: float = 0.0
    #: Recording attempts so far (for backoff).
    tries: int = 0
    #: The fencing token of the lease the recorder got for it, once it got
    #: one (0 before): a completed key with this token holds our result.
    token: int = 0


class FailOpenQueue:
    """The bookkeeping of results that fail-open runs produced while the
    ledger could not answer: a bounded queue, and the fail-open counters.

    The client's recorder takes records with :meth:`next_due`, tries to
    record each one, and calls :meth:`finish` with the outcome or
    :meth:`retry_later`. Waiting (for a record to be due, for the queue to
    empty) is the client's: :meth:`next_due` says how long to sleep and
    :attr:`pending` whether flush() is done.
    """

    def __init__(self, capacity: int = DEFAULT_FAIL_OPEN_QUEUE, *, clock: MonotonicClock = time.monotonic) -> None:
        _positive(capacity, "fail_open_queue", integer=True)
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: Deque[FailOpenRecord] = collections.deque()
        self._in_flight = 0
        self.runs = 0
        self.recorded = 0
        self.discarded = 0

    @property
    def pending(self) -> int:
        """Records not recorded or discarded yet (queued or being recorded)."""
        with self._lock:
            return len(self._waiting) + self._in_flight

    def reserve_slot(self) -> bool:
        """Claims room for the result of a fail-open run that is about to
        start, and counts the run; False (nothing counted) when the queue is
        full, in which case the run must not happen (fail closed). Follow it
        with :meth:`put` when the work returns, or :meth:`cancel_slot` when
        it raises."""
        with self._lock:
            if len(self._waiting) + self._in_flight >= self.capacity:
                return False
            self._in_flight += 1
            self.runs += 1
            return True

    def cancel_slot(self) -> None:
        """Gives back a slot whose work raised: nothing is to be recorded."""
        with self._lock:
            self._in_flight -= 1

    def put(self, record: FailOpenRecord) -> None:
        """Queues the result of a run whose slot was reserved."""
        with self._lock:
            self._in_flight -= 1
            record.not_before = self._clock()
            self._waiting.append(record)

    def next_due(self) -> Tuple[Optional[FailOpenRecord], Optional[float]]:
        """Takes the first record that is due, if any: ``(record, None)``;
        otherwise ``(None, seconds until the next one is due)``, or
        ``(None, None)`` when the queue is empty. A taken record stays
        pending until :meth:`finish` or :meth:`retry_later`."""
        with self._lock:
            if not self._waiting:
                return None, None
            now = self._clock()
            for index, record in enumerate(self._waiting):
                if record.not_before <= now:
                    del self._waiting[index]
                    self._in_flight += 1
                    return record, None
            return None, min(r.not_before for r in self._waiting) - now

    def retry_later(self, record: FailOpenRecord, delay: float) -> None:
        """Puts a record that could not be recorded yet back, due in ``delay`` seconds."""
        with self._lock:
            self._in_flight -= 1
            record.tries += 1
            record.not_before = self._clock() + max(0.0, delay)
            self._waiting.append(record)

    def finish(self, record: FailOpenRecord, outcome: str) -> None:
        """Ends a taken record with RECORDED, DISCARDED_COMPLETED or DISCARDED_FAILED."""
        if outcome not in (RECORDED, DISCARDED_COMPLETED, DISCARDED_FAILED):
            raise ValueError(f"fail-open outcome must be recorded or discarded_*, got {outcome!r}")
        with self._lock:
            self._in_flight -= 1
            if outcome == RECORDED:
                self.recorded += 1
            else:
                self.discarded += 1

    def abandon(self) -> List[FailOpenRecord]:
        """Empties the queue of waiting records and returns them (close() gave
        up on them); records being recorded stay pending until finished."""
        with self._lock:
            records = list(self._waiting)
            self._waiting.clear()
            return records
