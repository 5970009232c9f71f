"""The asyncio client of ledgerd (``ledgerd.aio``), on ``grpc.aio``.

It has the API of the synchronous :class:`ledgerd.Client`, with coroutines::

    import ledgerd.aio

    async def main():
        async with ledgerd.aio.Client("ledgerd.internal:7070", insecure=True) as client:
            async def work(lease):
                return await charge_card(order_id="o-42", fence=lease.fencing_token)

            result = await client.do("billing", "charge/o-42", work, timeout=60)

``do()`` has the sync client's semantics (waiting for a held key,
heartbeats, failures recorded, checkpoints, timeouts); the heartbeats run as
a task instead of a thread. Cancelling the task that awaits ``do()`` while the
work runs cancels the work, releases the lease (so that another worker takes
the key at once) and re-raises :class:`asyncio.CancelledError`. The circuit
breaker, retry budget and stats are the sync client's too (one per Client).

Make the Client inside the event loop that uses it (grpc.aio channels belong
to the loop they were made in), and close it with ``await client.close()`` or
``async with``.
"""

# How this module and ledgerd.client share their code: every decision that
# involves no I/O (arguments and channel, requests, what an answer means,
# retries, breaker, fail-open bookkeeping) lives once, in ledgerd.client's
# open_channel, _common and _guard. What stays written twice here is the
# control flow around the awaits (do(), _call, the recorder and heartbeats
# as tasks instead of threads) and the public signatures: folding those
# would take code generation or a sync-over-async trick that hides the flow.

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
import grpc.aio

from ._gen.ledger.v1 import ledger_pb2

from . import _common, _context, _convert, _guard, _policy, _retry
from ._batch import AsyncBatchMethods
from ._common import (
    CLEANUP_TIMEOUT,
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
    RECORD_CALL_TIMEOUT,
    RECORD_SERVER_WAIT,
    Timeout,
    default_owner,
)
from ._guard import DEFAULT, BreakerOption, FailOpenHook, FailOpenRecordedHook, RetryBudgetOption
from ._policy import FAIL_CLOSED, FailOpenRecord, Stats
from ._version import USER_AGENT
from ._convert import DurationLike
from .admin import AsyncAdminMethods, rpc_table
from .client import DEFAULT_CLOSE_TIMEOUT, Target, open_channel
from .decorator import AsyncIdempotentMethod
from .errors import (
    CancelledError,
    DeadlineExceededError,
    InvalidArgumentError,
    LeaseLostError,
    LedgerError,
    error_from_rpc,
)
from .lease import BytesLike, Lease, Result

_log = _common.log

__all__ = ["Client", "AsyncLease", "AsyncWorkFunction"]

#: A work function of :meth:`Client.do`: takes the lease, returns (an
#: awaitable of) the result as bytes.
AsyncWorkFunction = Callable[[Lease], Union[Awaitable[BytesLike], BytesLike]]


class AsyncLease(Lease):
    """The :class:`~ledgerd.Lease` of an asyncio do(): the same attributes,
    plus :meth:`wait_cancelled` to await :attr:`cancelled` without blocking
    the event loop."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cancelled_async = asyncio.Event()

    async def wait_cancelled(self, timeout: Optional[float] = None) -> bool:
        """Waits until the lease is cancelled (lost, refused, or do()'s timeout),
        at most ``timeout`` seconds; returns whether it was."""
        if self.cancelled.is_set():
            return True
        try:
            await asyncio.wait_for(self._cancelled_async.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _cancel(self, reason: BaseException) -> None:
        super()._cancel(reason)
        self._cancelled_async.set()


class Client(AsyncBatchMethods, AsyncAdminMethods, AsyncIdempotentMethod):
    """An asyncio client of ledgerd: :class:`ledgerd.Client`'s API, with coroutines.

    The arguments are the sync client's, with the same meaning and defaults
    (see :class:`ledgerd.Client`): ``target`` (one address, several, or a
    ``dns:///`` name: round robin over the healthy replicas),
    ``credentials`` or ``insecure=True``, ``options``,
    ``max_receive_message_bytes``, ``default_timeout``, ``attempt_timeout``,
    ``token`` or ``token_file``, and the policies: ``breaker`` (a
    :class:`ledgerd.BreakerConfig`, a dict of its fields, or None: off),
    ``retry_budget`` (a :class:`ledgerd.RetryBudgetConfig`, a dict, or
    None), ``max_attempts``, ``fallback`` (``"fail_closed"`` or
    ``"fail_open"``), ``fail_open_queue``, and the hooks
    ``on_breaker_change(from_state, to_state, last_error)``,
    ``on_fail_open(namespace, key, cause)`` and
    ``on_fail_open_recorded(namespace, key, outcome)``. The fail-open
    recorder runs as a task of the Client's event loop.

    A Client is bound to the event loop it was made in (grpc.aio channels
    are): make it inside the loop, share it among that loop's tasks, and
    close it with ``await client.close()`` or ``async with``.
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
            grpc.aio,
            "ledgerd.aio.Client",
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
        channel: grpc.aio.Channel,
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
        """Returns a Client that makes its calls over ``channel``, a
        ``grpc.aio`` channel the caller made and owns: :meth:`close` does not
        close it. The other arguments are as in the constructor."""
        client = cls.__new__(cls)
        client._setup(
            channel,
            owns_channel=False,
            default_timeout=default_timeout,
            attempt_timeout=attempt_timeout,
            policies=_guard.Policies(
                breaker=breaker,
                retry_budget=retry_budget,
                max_attempts=max_attempts,
                fallback=fallback,
                fail_open_queue=fail_open_queue,
                on_breaker_change=on_breaker_change,
                on_fail_open=on_fail_open,
                on_fail_open_recorded=on_fail_open_recorded,
            ),
        )
        return client

    def _setup(
        self,
        channel: grpc.aio.Channel,
        *,
        owns_channel: bool,
        default_timeout: Timeout,
        attempt_timeout: Timeout,
        policies: _guard.Policies,
        metadata: Optional[Tuple[Tuple[str, str], ...]] = None,
    ) -> None:
        self._channel = channel
        self._metadata = metadata
        self._owns_channel = owns_channel
        self._closed = False
        self._default_timeout = _common.positive_seconds(default_timeout, "default_timeout")
        self._attempt_timeout = _common.positive_seconds(attempt_timeout, "attempt_timeout")
        self._policies = policies
        self._recorder = _Recorder(self)
        self._rpcs: Dict[str, Any] = rpc_table(channel)

    async def close(self, timeout: Optional[float] = DEFAULT_CLOSE_TIMEOUT) -> int:
        """Closes the client; returns how many fail-open results it could not record.

        It first waits up to ``timeout`` seconds (default 10) for the
        fail-open results still queued to be recorded (see :meth:`flush`);
        those still waiting then are lost, and a warning says how many. Then
        it closes the channel the Client made; calls in flight, and later
        ones, fail with :class:`~ledgerd.CancelledError`. A Client made by
        :meth:`from_channel` leaves its channel open. Closing twice is harmless."""
        left = 0
        if not self._closed and self._policies.queue.pending:
            left = await self.flush(timeout)
        self._closed = True
        lost = await self._recorder.stop()
        unrecorded = _common.warn_unrecorded(left, lost)
        if self._owns_channel:
            await self._channel.close()
        return unrecorded

    async def flush(self, timeout: Optional[float] = None) -> int:
        """Waits until every fail-open result is recorded (or discarded), for
        at most ``timeout`` seconds (None: as long as it takes); returns how
        many are still waiting (0: all done)."""
        return await self._recorder.wait_empty(_common.positive_seconds(timeout, "timeout"))

    async def __aenter__(self) -> "Client":
        """Returns the Client; :meth:`close` runs on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Closes the Client."""
        await self.close()

    @property
    def breaker_state(self) -> str:
        """The circuit breaker's state: ``"closed"``, ``"open"``,
        ``"half_open"``, or ``"disabled"`` (``breaker=None``)."""
        breaker = self._policies.breaker
        return "disabled" if breaker is None else breaker.state

    def stats(self) -> Stats:
        """A snapshot of the client's counters (see :class:`ledgerd.Stats`)."""
        return self._policies.stats()

    # The thin typed methods.

    async def reserve(
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
        """Asks for the lease of a key; returns the ``ReserveResponse``
        (see :meth:`ledgerd.Client.reserve`)."""
        request = _common.reserve_request(
            namespace, key, owner, lease_ttl=lease_ttl, fingerprint=fingerprint, metadata=metadata
        )
        extra = _common.reserve_wait(request, wait_timeout)
        return await self._call("reserve", request, self._deadline(timeout), extra_attempt_time=extra)

    async def heartbeat(
        self,
        *,
        namespace: str,
        key: str,
        fencing_token: int,
        lease_ttl: Optional[DurationLike] = None,
        checkpoint: Optional[BytesLike] = None,
        timeout: Timeout = None,
    ) -> ledger_pb2.HeartbeatResponse:
        """Extends the lease held with ``fencing_token`` (see :meth:`ledgerd.Client.heartbeat`)."""
        request = _common.heartbeat_request(namespace, key, fencing_token, lease_ttl=lease_ttl, checkpoint=checkpoint)
        return await self._call("heartbeat", request, self._deadline(timeout))

    async def complete(
        self, *, namespace: str, key: str, fencing_token: int, result: BytesLike = b"", timeout: Timeout = None
    ) -> ledger_pb2.CompleteResponse:
        """Records the result of the work under ``fencing_token`` (see :meth:`ledgerd.Client.complete`)."""
        request = _common.complete_request(namespace, key, fencing_token, result)
        return await self._call("complete", request, self._deadline(timeout))

    async def fail(
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
        """Records that the work failed (see :meth:`ledgerd.Client.fail`)."""
        request = _common.fail_request(namespace, key, fencing_token, message=message, code=code, retryable=retryable)
        return await self._call("fail", request, self._deadline(timeout))

    async def release(
        self, *, namespace: str, key: str, fencing_token: int, timeout: Timeout = None
    ) -> ledger_pb2.ReleaseResponse:
        """Gives up the lease held with ``fencing_token`` (see :meth:`ledgerd.Client.release`)."""
        request = _common.release_request(namespace, key, fencing_token)
        return await self._call("release", request, self._deadline(timeout))

    async def lookup(self, *, namespace: str, key: str, timeout: Timeout = None) -> ledger_pb2.LookupResponse:
        """Returns the ``LookupResponse`` with the whole entry of a key (see :meth:`ledgerd.Client.lookup`)."""
        request = ledger_pb2.LookupRequest(namespace=namespace, key=key)
        return await self._call("lookup", request, self._deadline(timeout))

    # do()

    async def do(
        self,
        namespace: str,
        key: str,
        work: AsyncWorkFunction,
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

        The semantics are :meth:`ledgerd.Client.do`'s, with ``work`` an async
        function called as ``await work(lease)`` (a plain function returning
        bytes is accepted too; it runs on the event loop, so it must not
        block). The lease is an :class:`AsyncLease`, also available as
        :func:`ledgerd.current_lease` while the work runs. Heartbeats run as
        a task, stopped before do() returns or raises. If the task awaiting
        do() is cancelled while the work runs, the work is cancelled with
        it, the lease is released, and :class:`asyncio.CancelledError`
        propagates. ``fallback`` (``"fail_closed"`` or ``"fail_open"``;
        default: the client's) decides what happens when the ledger cannot
        answer, as in the sync client; a fail-open result is recorded by a
        task of this Client's event loop.

        Raises what :meth:`ledgerd.Client.do` raises.
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
                response = await self._call("reserve", request, deadline, extra_attempt_time=wait_for or 0.0)
            except InvalidArgumentError as error:
                if wait_for is not None and error.field == "wait_timeout":
                    server_wait = False  # a server that refuses the wait we asked for: poll instead
                    continue
                raise
            except LedgerError as error:
                if policy == _policy.FAIL_OPEN and _guard.unreachable(error):
                    return await self._run_unguarded(namespace, key, owner, work, error, request)
                raise
            answer = _common.reserve_outcome(namespace, key, owner, response, AsyncLease)
            if isinstance(answer, Lease):
                return await self._run_leased(answer, work, interval, deadline)  # type: ignore[arg-type]
            if isinstance(answer, Result):
                return answer  # a replay
            pause = _common.held_pause(
                namespace, key, answer, wait=wait, started=started, wait_for=wait_for, deadline=deadline
            )
            if pause is not None:
                await asyncio.sleep(pause)
            _common.check_still_time(namespace, key, answer, deadline)

    # Fail-open.

    async def _run_unguarded(
        self, namespace: str, key: str, owner: str, work: AsyncWorkFunction, cause: LedgerError, request: Any
    ) -> Result:
        """Runs the work without a lease (fail-open) and queues its result."""
        policies = self._policies
        if not policies.start_unguarded(namespace, key, cause):
            raise cause  # the queue is full: fail closed
        lease = _common.unguarded_lease(namespace, key, owner, AsyncLease)
        token = _context.set_lease(lease)
        try:
            value = work(lease)
            if inspect.isawaitable(value):
                value = await value
        except BaseException:
            policies.queue.cancel_slot()
            raise
        finally:
            _context.reset(token)
        result = policies.finish_unguarded(
            lease, value, fingerprint=bytes(request.fingerprint), metadata=dict(request.metadata)
        )
        self._recorder.wake()
        return result

    async def _record_unguarded(self, record: FailOpenRecord) -> Tuple[Optional[str], Optional[BaseException]]:
        """One try of the recorder at a fail-open result: Reserve (waiting a
        while for a holder), then Complete. Returns the outcome, or None (and
        why) to try again later. The sync client's ``_record_unguarded``,
        awaited."""
        deadline = time.monotonic() + RECORD_CALL_TIMEOUT + RECORD_SERVER_WAIT
        try:
            response = await self._call(
                "reserve",
                _common.record_reserve_request(record),
                deadline,
                extra_attempt_time=RECORD_SERVER_WAIT,
                retry=False,
            )
        except LedgerError as error:
            if _common.record_later(error):
                return None, error
            return _common.record_refused(record, error)
        lease, outcome = _common.record_answer(record, response)
        if lease is None:
            return outcome, None
        completion = _common.complete_request(record.namespace, record.key, lease.fencing_token, record.result)
        try:
            await self._call("complete", completion, time.monotonic() + RECORD_CALL_TIMEOUT, retry=False)
        except LeaseLostError as error:
            return None, error  # taken over meanwhile: the next Reserve says by whom
        except LedgerError as error:
            if _common.record_later(error):
                return None, error
            cleanup = time.monotonic() + CLEANUP_TIMEOUT
            await self._quietly("fail", self._fail(lease, _common.describe(error), "", True, cleanup), error)
            return _common.record_refused(record, error)
        return _policy.RECORDED, None

    # Internals of do().

    async def _run_leased(
        self, lease: AsyncLease, work: AsyncWorkFunction, interval: Optional[float], deadline: Optional[float]
    ) -> Result:
        heartbeats = _Heartbeater(self, lease, _common.default_interval(lease, interval), deadline)
        heartbeats.start()
        try:
            token = _context.set_lease(lease)
            try:
                value = work(lease)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                replacement = await self._after_work_error(lease, exc, await heartbeats.stop(), deadline)
                if replacement is None:
                    raise
                raise replacement  # the work's exception is its __context__
            finally:
                _context.reset(token)
            heartbeat_error = await heartbeats.stop()
            return await self._after_work_result(lease, value, heartbeat_error, heartbeats.unconfirmed, deadline)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            # The caller cancelled do() (while the work ran, or while its
            # outcome was being recorded): free the key for another worker.
            await self._abandon([lease], [heartbeats], deadline)
            raise

    async def _abandon(self, leases: List[Lease], heartbeats: List["_Heartbeater"], deadline: Optional[float]) -> None:
        """Stops the heartbeats and releases the leases after a cancellation,
        shielded from it (and from a second one), so that the release
        reaches the ledger. A lease whose key was recorded meanwhile is
        refused (LEASE_LOST), quietly."""
        cleanup = _common.cleanup_deadline(deadline, always=True)

        async def release() -> None:
            for h in heartbeats:
                await h.stop()
            await asyncio.gather(*(self._quietly("release", self._release(lease, cleanup)) for lease in leases))

        try:
            await asyncio.shield(release())
        except asyncio.CancelledError:
            pass  # cancelled again while releasing: the shielded release goes on

    async def _after_work_result(
        self,
        lease: Lease,
        value: object,
        heartbeat_error: Optional[LedgerError],
        unconfirmed: bool,
        deadline: Optional[float],
    ) -> Result:
        if isinstance(heartbeat_error, LeaseLostError) and not unconfirmed:
            raise heartbeat_error  # Complete would be refused: another worker holds the key now
        cleanup = _common.cleanup_deadline(deadline)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            error = _common.not_bytes_error(lease, value)
            await self._quietly("fail", self._fail(lease, _common.describe(error), "", True, cleanup), error)
            raise error
        result = bytes(value)
        try:
            completed = await self._call(
                "complete", _common.complete_request(lease.namespace, lease.key, lease.fencing_token, result), cleanup
            )
        except InvalidArgumentError as error:
            # The ledger refused the result (too large, say): keep the reason
            # on the entry, and free the key for the next attempt.
            await self._quietly("fail", self._fail(lease, _common.describe(error), "", True, cleanup), error)
            raise
        return _common.completed_result(lease, result, completed)

    async def _after_work_error(
        self, lease: Lease, exc: Exception, heartbeat_error: Optional[LedgerError], deadline: Optional[float]
    ) -> Optional[BaseException]:
        """Records the work's failure; returns the exception to raise instead of exc, if any."""
        cleanup = _common.cleanup_deadline(deadline)
        if isinstance(heartbeat_error, LeaseLostError):
            return heartbeat_error
        if heartbeat_error is not None:
            await self._quietly("release", self._release(lease, cleanup), heartbeat_error)
            return heartbeat_error
        if isinstance(lease.cancel_reason, DeadlineExceededError) or (
            deadline is not None and time.monotonic() >= deadline
        ):
            await self._quietly("release", self._release(lease, cleanup), exc)
            return _common.timed_out_error(lease)
        message, code, retryable = _common.work_failure(exc)
        await self._quietly("fail", self._fail(lease, message, code, retryable, cleanup), exc)
        return None

    async def _quietly(self, what: str, action: Awaitable[object], note_on: Optional[BaseException] = None) -> None:
        """Awaits a cleanup call whose failure must not hide the error being
        raised: logs it, and adds a note to ``note_on`` (Python 3.11+)."""
        try:
            await action
        except Exception as error:  # noqa: BLE001
            _common.log.warning("ledgerd: %s after the work failed: %s", what, error)
            if note_on is not None and hasattr(note_on, "add_note"):
                note_on.add_note(f"ledgerd: recording this failure ({what}) failed too: {error}")

    async def _fail(self, lease: Lease, message: str, code: str, retryable: bool, deadline: Optional[float]) -> None:
        if retryable:
            await self._store_checkpoint(lease, deadline)
        request = _common.fail_request(
            lease.namespace, lease.key, lease.fencing_token, message=message, code=code, retryable=retryable
        )
        await self._call("fail", request, deadline)

    async def _release(self, lease: Lease, deadline: Optional[float]) -> None:
        await self._store_checkpoint(lease, deadline)
        await self._call("release", _common.release_request(lease.namespace, lease.key, lease.fencing_token), deadline)

    async def _store_checkpoint(self, lease: Lease, deadline: Optional[float]) -> None:
        """Sends a staged checkpoint that no heartbeat carried yet (Fail and Release carry none)."""
        if lease._pending()[0] is None:
            return
        try:
            await self._heartbeat(lease, deadline)
        except LedgerError as error:  # the Fail or Release that follows says more
            _common.log.debug("ledgerd: storing the last checkpoint failed: %s", error)

    async def _heartbeat(
        self, lease: Lease, deadline: Optional[float], max_attempt_time: Optional[float] = None
    ) -> None:
        request, checkpoint, version = _common.lease_heartbeat_request(lease)
        await self._call("heartbeat", request, deadline, max_attempt_time=max_attempt_time)
        if checkpoint is not None:
            lease._mark_stored(version)

    # Calls with retries.

    def _deadline(self, timeout: Timeout) -> Optional[float]:
        seconds = _common.positive_seconds(timeout, "timeout")
        if seconds is None:
            seconds = self._default_timeout
        return None if seconds is None else time.monotonic() + seconds

    async def _call(
        self,
        operation: str,
        request: Any,
        deadline: Optional[float],
        *,
        extra_attempt_time: float = 0.0,
        max_attempt_time: Optional[float] = None,
        retry: bool = True,
    ) -> Any:
        """Makes one RPC, retrying UNAVAILABLE and DEADLINE_EXCEEDED with backoff
        until it succeeds, fails otherwise, or the deadline (a time.monotonic
        value) passes (``retry=False``: one attempt only). Each attempt asks
        the circuit breaker first (a guarded call it refuses raises
        CircuitOpenError) and tells it how it ended; each retry needs the
        retry budget's token and the attempt limit's leave, and waits at
        least the server's RetryInfo delay. Raises a LedgerError."""
        rpc = self._rpcs[operation]
        policies = self._policies
        policies.begin_call(operation)
        backoff = _retry.RETRY_INITIAL_BACKOFF
        last: Optional[LedgerError] = None  # the last failure that was retried
        attempts = 0
        while True:
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
                response = await rpc(request, timeout=attempt_timeout, metadata=self._metadata)
            except grpc.RpcError as rpc_error:
                error = error_from_rpc(rpc_error, operation=operation)
                error.__cause__ = rpc_error
                policies.settle(ticket, error.code, error)
            except BaseException:
                policies.settle(ticket, grpc.StatusCode.CANCELLED, None)  # asyncio.CancelledError...
                raise
            else:
                policies.settle(ticket, None, None)
                return response
            pause = _common.retry_pause(
                policies, operation, error, last, attempts=attempts, backoff=backoff, deadline=deadline, retry=retry
            )
            last = error
            await asyncio.sleep(pause)
            backoff = min(2 * backoff, _retry.RETRY_MAX_BACKOFF)


class _Recorder:
    """Records fail-open results once the ledger is back: a task of the
    Client's event loop, started by the first queued result (the sync
    client's recorder thread, as a task)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._queue = client._policies.queue
        self._task: Optional[asyncio.Task[None]] = None
        self._wakeup: Optional[asyncio.Event] = None
        self._changed: Optional[asyncio.Event] = None
        self._stopping = False

    def _events(self) -> Tuple[asyncio.Event, asyncio.Event]:
        # Made lazily, inside the loop that runs the client.
        if self._wakeup is None or self._changed is None:
            self._wakeup, self._changed = asyncio.Event(), asyncio.Event()
        return self._wakeup, self._changed

    def wake(self) -> None:
        """Says a result was queued: starts the task if needed."""
        wakeup, _ = self._events()
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ledgerd-fail-open-recorder")
        wakeup.set()

    async def wait_empty(self, timeout: Optional[float]) -> int:
        """Waits until nothing is pending, or timeout; returns what is left."""
        _, changed = self._events()
        end = None if timeout is None else time.monotonic() + timeout
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
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> List[FailOpenRecord]:
        """Stops the task; returns the records it had not recorded."""
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=CLEANUP_TIMEOUT)
        return self._queue.abandon()

    async def _run(self) -> None:
        policies = self._client._policies
        wakeup, changed = self._events()
        while not self._stopping:
            record, wait = self._queue.next_due()
            if record is None:
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                continue
            outcome: Optional[str] = None
            error: Optional[BaseException] = None
            try:
                outcome, error = await self._client._record_unguarded(record)
            except asyncio.CancelledError:
                self._queue.retry_later(record, 0.0)  # back in the queue: close() reports it
                raise
            except Exception as exc:  # noqa: BLE001 - keep the task alive; try again later
                error = exc
                _log.warning("ledgerd: recording the fail-open result of %s/%s: %r", record.namespace, record.key, exc)
            policies.settle_record(record, outcome, error)
            changed.set()


class _Heartbeater:
    """Keeps a lease alive from a task while the work runs: the sync
    client's heartbeat thread, as a task (see ``ledgerd.client._Heartbeater``
    for the rules; the decisions are shared in ``_common``)."""

    def __init__(self, client: Client, lease: Lease, interval: float, deadline: Optional[float]) -> None:
        self._client = client
        self._lease = lease
        self._interval = interval
        self._deadline = deadline
        self._task: Optional[asyncio.Task[None]] = None
        # The grant was made a moment ago; counting the TTL from now is off by
        # one round trip at most, and the margin covers it.
        self._valid_until: Optional[float] = time.monotonic() + lease.ttl if lease.ttl > 0 else None
        #: Why the heartbeats ended early, if they did; read after stop().
        self.error: Optional[LedgerError] = None
        #: True when they ended because no heartbeat could be acknowledged in time.
        self.unconfirmed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"ledgerd-heartbeat:{self._lease.namespace}/{self._lease.key}"
        )

    async def stop(self) -> Optional[LedgerError]:
        """Ends the heartbeats (cancelling a call in flight) and waits for the
        task; returns the error that ended them early. May be called again."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # Shielded: the caller's cancellation must not leave the task
            # half-stopped; it is re-raised once the task has ended.
            await asyncio.shield(asyncio.wait({task}))
        return self.error

    def _deadline_passed(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    async def _run(self) -> None:
        lease = self._lease
        next_beat = time.monotonic() + self._interval
        while True:
            wake = next_beat if self._deadline is None else min(next_beat, self._deadline)
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            if self._deadline_passed():
                lease._cancel(_common.timeout_cancellation(lease))
                return
            lease_deadline = _common.lease_deadline(self._valid_until, lease.ttl, self._interval)
            call_deadline = _common.earliest(lease_deadline, self._deadline)
            sent_at = time.monotonic()
            try:
                # Each attempt gets at most one interval, so that a hung
                # connection is abandoned and another attempt made in time.
                await self._client._heartbeat(lease, call_deadline, max_attempt_time=self._interval)
            except Exception as error:  # noqa: BLE001 - any failure ends the lease
                if self._deadline_passed():
                    lease._cancel(_common.timeout_cancellation(lease))
                    return
                self.error, self.unconfirmed = _common.heartbeat_failure(error, lease_deadline)
                lease._cancel(self.error)
                return
            if self._valid_until is not None:
                self._valid_until = sent_at + lease.ttl
            next_beat = time.monotonic() + self._interval
