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

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import grpc
import grpc.aio

from ledger.v1 import ledger_pb2

from . import _common, _context, _convert, _policy, _retry
from ._batch import AsyncBatchMethods
from ._common import DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_MAX_RECEIVE_MESSAGE_BYTES, Timeout, default_owner
from ._convert import DurationLike
from .admin import AsyncAdminMethods, admin_rpcs
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

__all__ = ["Client", "AsyncLease", "AsyncWorkFunction"]

#: A work function of :meth:`Client.do`: takes the lease, returns (an
#: awaitable of) the result as bytes.
AsyncWorkFunction = Callable[[Lease], Union[Awaitable[BytesLike], BytesLike]]

#: The calls the breaker lets through even when open: they protect work
#: already granted (failing them fast would throw away a result the worker
#: holds). Their outcomes still count.
_UNGUARDED = frozenset({"heartbeat", "complete", "complete_batch", "fail", "release"})
#: The calls outside the retry budget: heartbeats keep a granted lease, and
#: retrying them is what keeps the work alive.
_OUTSIDE_BUDGET = frozenset({"heartbeat"})


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

    The arguments are the sync client's (see :class:`ledgerd.Client`):
    ``target``, ``credentials`` or ``insecure=True``, ``options``,
    ``max_receive_message_bytes``, ``default_timeout``, ``attempt_timeout``,
    ``token`` or ``token_file``, and the policies:

    Args:
        breaker: the circuit breaker's parameters (a
            :class:`ledgerd.BreakerConfig`; default: its defaults), or
            ``None`` for no breaker.
        on_breaker_change: called as ``hook(from_state, to_state, last_error)``
            on every transition of the breaker.
        retry_budget: the retry budget's parameters (a
            :class:`ledgerd.RetryBudgetConfig`; default: its defaults), or
            ``None`` for no budget.
        max_attempts: the most attempts of one call (``None``, the default:
            until its timeout runs out).

    A Client is bound to the event loop it was made in; make one per loop
    and share it among tasks.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: Optional[grpc.ChannelCredentials] = None,
        insecure: bool = False,
        options: Optional[Sequence[Tuple[str, Any]]] = None,
        max_receive_message_bytes: int = DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
        default_timeout: Timeout = None,
        attempt_timeout: Timeout = DEFAULT_ATTEMPT_TIMEOUT,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        breaker: Optional[_policy.BreakerConfig] = _policy.BreakerConfig(),
        on_breaker_change: Optional[_policy.ChangeHook] = None,
        retry_budget: Optional[_policy.RetryBudgetConfig] = _policy.RetryBudgetConfig(),
        max_attempts: Optional[int] = None,
    ) -> None:
        bearer = _common.read_token(token, token_file)
        if credentials is not None and insecure:
            raise ValueError("ledgerd.aio.Client: pass either credentials or insecure=True, not both")
        if credentials is None and not insecure:
            raise ValueError(
                "ledgerd.aio.Client: transport security must be chosen: pass credentials="
                "grpc.ssl_channel_credentials(...) or, for development only, insecure=True"
                + (" (which sends the token in plaintext)" if bearer is not None else "")
            )
        channel_options = _common.channel_options(options, max_receive_message_bytes)
        metadata: Optional[Tuple[Tuple[str, str], ...]] = None
        if insecure:
            channel = grpc.aio.insecure_channel(target, options=channel_options)
            if bearer is not None:
                # As in the sync client: call credentials need a secure
                # channel, so over plaintext the header goes as metadata.
                metadata = (("authorization", "Bearer " + bearer),)
        else:
            if bearer is not None:
                credentials = grpc.composite_channel_credentials(
                    credentials, grpc.access_token_call_credentials(bearer)
                )
            channel = grpc.aio.secure_channel(target, credentials, options=channel_options)
        self._setup(
            channel,
            owns_channel=True,
            default_timeout=default_timeout,
            attempt_timeout=attempt_timeout,
            metadata=metadata,
            breaker=breaker,
            on_breaker_change=on_breaker_change,
            retry_budget=retry_budget,
            max_attempts=max_attempts,
        )

    @classmethod
    def from_channel(
        cls,
        channel: grpc.aio.Channel,
        *,
        default_timeout: Timeout = None,
        attempt_timeout: Timeout = DEFAULT_ATTEMPT_TIMEOUT,
        breaker: Optional[_policy.BreakerConfig] = _policy.BreakerConfig(),
        on_breaker_change: Optional[_policy.ChangeHook] = None,
        retry_budget: Optional[_policy.RetryBudgetConfig] = _policy.RetryBudgetConfig(),
        max_attempts: Optional[int] = None,
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
            breaker=breaker,
            on_breaker_change=on_breaker_change,
            retry_budget=retry_budget,
            max_attempts=max_attempts,
        )
        return client

    def _setup(
        self,
        channel: grpc.aio.Channel,
        *,
        owns_channel: bool,
        default_timeout: Timeout,
        attempt_timeout: Timeout,
        metadata: Optional[Tuple[Tuple[str, str], ...]] = None,
        breaker: Optional[_policy.BreakerConfig],
        on_breaker_change: Optional[_policy.ChangeHook],
        retry_budget: Optional[_policy.RetryBudgetConfig],
        max_attempts: Optional[int],
    ) -> None:
        if max_attempts is not None and (isinstance(max_attempts, bool) or not isinstance(max_attempts, int)):
            raise TypeError(f"max_attempts must be an int or None, got {type(max_attempts).__name__}")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._channel = channel
        self._metadata = metadata
        self._owns_channel = owns_channel
        self._closed = False
        self._default_timeout = _common.positive_seconds(default_timeout, "default_timeout")
        self._attempt_timeout = _common.positive_seconds(attempt_timeout, "attempt_timeout")
        self._breaker = None if breaker is None else _policy.CircuitBreaker(breaker, on_change=on_breaker_change)
        self._budget = None if retry_budget is None else _policy.RetryBudget(retry_budget)
        self._max_attempts = max_attempts
        self._counters = _policy.Counters()
        self._rpcs: Dict[str, Any] = admin_rpcs(channel)

    async def close(self) -> None:
        """Closes the channel the Client made; calls in flight, and later ones,
        fail with :class:`~ledgerd.CancelledError`. A Client made by
        :meth:`from_channel` leaves its channel open. Closing twice is harmless."""
        self._closed = True
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> "Client":
        """Returns the Client; :meth:`close` runs on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Closes the Client."""
        await self.close()

    @property
    def breaker_state(self) -> str:
        """The circuit breaker's state: ``"closed"``, ``"open"``,
        ``"half_open"``, or ``"disabled"`` without a breaker."""
        return "disabled" if self._breaker is None else self._breaker.state

    def stats(self) -> _policy.Stats:
        """A snapshot of the client's counters (see :class:`ledgerd.Stats`)."""
        return _policy.Stats(
            calls=self._counters.calls,
            retries=self._counters.retries,
            retries_refused=self._counters.retries_refused,
            breaker_state=self.breaker_state,
            breaker_opens=0 if self._breaker is None else self._breaker.opens,
        )

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
        extra = 0.0
        if wait_timeout is not None:
            request.wait_timeout.CopyFrom(_convert.to_duration(wait_timeout, "wait_timeout"))
            extra = max(0.0, _convert.seconds(wait_timeout, "wait_timeout"))
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
        request = ledger_pb2.HeartbeatRequest(namespace=namespace, key=key, fencing_token=fencing_token)
        if lease_ttl is not None:
            request.lease_ttl.CopyFrom(_convert.to_duration(lease_ttl, "lease_ttl"))
        if checkpoint is not None:
            request.checkpoint = bytes(checkpoint)
        return await self._call("heartbeat", request, self._deadline(timeout))

    async def complete(
        self, *, namespace: str, key: str, fencing_token: int, result: BytesLike = b"", timeout: Timeout = None
    ) -> ledger_pb2.CompleteResponse:
        """Records the result of the work under ``fencing_token`` (see :meth:`ledgerd.Client.complete`)."""
        request = ledger_pb2.CompleteRequest(
            namespace=namespace, key=key, fencing_token=fencing_token, result=bytes(result)
        )
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
        request = ledger_pb2.FailRequest(
            namespace=namespace,
            key=key,
            fencing_token=fencing_token,
            error=ledger_pb2.WorkError(code=code, message=message),
            retryable=retryable,
        )
        return await self._call("fail", request, self._deadline(timeout))

    async def release(
        self, *, namespace: str, key: str, fencing_token: int, timeout: Timeout = None
    ) -> ledger_pb2.ReleaseResponse:
        """Gives up the lease held with ``fencing_token`` (see :meth:`ledgerd.Client.release`)."""
        request = ledger_pb2.ReleaseRequest(namespace=namespace, key=key, fencing_token=fencing_token)
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
        propagates.

        Raises what :meth:`ledgerd.Client.do` raises.
        """
        if not callable(work):
            raise TypeError(f"work must be callable, got {type(work).__name__}")
        interval = _common.heartbeat_interval(heartbeat_interval)
        owner = owner or default_owner()
        deadline = self._deadline(timeout)
        request = _common.reserve_request(
            namespace, key, owner, lease_ttl=lease_ttl, fingerprint=fingerprint, metadata=metadata
        )
        server_wait = wait
        while True:
            wait_for = _common.wait_budget(deadline) if server_wait else None
            if wait_for is not None:
                request.wait_timeout.CopyFrom(_convert.to_duration(wait_for, "wait_timeout"))
            else:
                request.ClearField("wait_timeout")
            started = time.monotonic()
            try:
                response = await self._call("reserve", request, deadline, extra_attempt_time=wait_for or 0.0)
            except InvalidArgumentError as error:
                if wait_for is not None and error.field == "wait_timeout":
                    server_wait = False  # a server that refuses the wait we asked for: poll instead
                    continue
                raise
            outcome = response.WhichOneof("outcome")
            if outcome == "acquired":
                lease = _common.lease_from_acquired(namespace, key, owner, response.acquired, AsyncLease)
                return await self._run_leased(lease, work, interval, deadline)  # type: ignore[arg-type]
            if outcome == "completed":
                return _common.replayed_result(response.completed)
            if outcome == "failed":
                raise _common.failed_error(namespace, key, response.failed)
            if outcome == "in_progress":
                holder = response.in_progress
                if wait:
                    if _common.answered_at_once(started, wait_for):
                        pause = _retry.poll_interval(_convert.from_duration(holder.retry_after))
                        if deadline is not None:
                            pause = min(pause, max(0.0, deadline - time.monotonic()))
                        await asyncio.sleep(pause)
                    if deadline is None or time.monotonic() < deadline:
                        continue
                    why = f"{namespace}/{key} is still held by {holder.owner!r} and the timeout ran out"
                else:
                    why = f"{namespace}/{key} is held by {holder.owner!r}"
                raise _common.in_progress_error(namespace, key, holder, why)
            raise LedgerError(
                f"reserve returned an outcome this client does not know ({outcome})", operation="reserve"
            )

    # Internals of do().

    async def _run_leased(
        self, lease: AsyncLease, work: AsyncWorkFunction, interval: Optional[float], deadline: Optional[float]
    ) -> Result:
        heartbeats = _Heartbeater(self, lease, _common.default_interval(lease, interval), deadline)
        heartbeats.start()
        token = _context.set_lease(lease)
        try:
            value = work(lease)
            if inspect.isawaitable(value):
                value = await value
        except asyncio.CancelledError:
            # The caller cancelled do(): free the key for another worker.
            await heartbeats.stop()
            await self._quietly_shielded("release", self._release(lease, _common.cleanup_deadline(deadline, always=True)))
            raise
        except Exception as exc:
            replacement = await self._after_work_error(lease, exc, await heartbeats.stop(), deadline)
            if replacement is None:
                raise
            raise replacement  # the work's exception is its __context__
        except BaseException:
            await heartbeats.stop()
            await self._quietly_shielded("release", self._release(lease, _common.cleanup_deadline(deadline, always=True)))
            raise
        finally:
            _context.reset(token)
            await heartbeats.stop()
        return await self._after_work_result(lease, value, await heartbeats.stop(), heartbeats.unconfirmed, deadline)

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
                "complete",
                ledger_pb2.CompleteRequest(
                    namespace=lease.namespace, key=lease.key, fencing_token=lease.fencing_token, result=result
                ),
                cleanup,
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

    async def _quietly_shielded(self, what: str, action: Awaitable[object]) -> None:
        """:meth:`_quietly`, shielded from the cancellation of the caller's
        task: a release that cancellation started must still reach the ledger."""
        try:
            await asyncio.shield(self._quietly(what, action))
        except asyncio.CancelledError:
            pass  # cancelled again while releasing: the shielded call goes on

    async def _fail(self, lease: Lease, message: str, code: str, retryable: bool, deadline: Optional[float]) -> None:
        if retryable:
            await self._store_checkpoint(lease, deadline)
        await self._call(
            "fail",
            ledger_pb2.FailRequest(
                namespace=lease.namespace,
                key=lease.key,
                fencing_token=lease.fencing_token,
                error=ledger_pb2.WorkError(code=code, message=message),
                retryable=retryable,
            ),
            deadline,
        )

    async def _release(self, lease: Lease, deadline: Optional[float]) -> None:
        await self._store_checkpoint(lease, deadline)
        await self._call(
            "release",
            ledger_pb2.ReleaseRequest(namespace=lease.namespace, key=lease.key, fencing_token=lease.fencing_token),
            deadline,
        )

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
        checkpoint, version = lease._pending()
        request = ledger_pb2.HeartbeatRequest(
            namespace=lease.namespace, key=lease.key, fencing_token=lease.fencing_token
        )
        if lease.ttl > 0:
            request.lease_ttl.CopyFrom(_convert.to_duration(lease.ttl, "lease_ttl"))
        if checkpoint is not None:
            request.checkpoint = checkpoint
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
        (at least the server's RetryInfo delay) while the deadline, the
        client's max_attempts and its retry budget allow (``retry=False``:
        one attempt). Each attempt asks the breaker first (a guarded call
        raises CircuitOpenError while it is open) and tells it the outcome.
        Raises a LedgerError."""
        rpc = self._rpcs[operation]
        guarded = operation not in _UNGUARDED
        backoff = _retry.RETRY_INITIAL_BACKOFF
        last: Optional[LedgerError] = None  # the last failure that was retried
        attempts = 0
        self._counters.add(calls=1)
        if self._budget is not None:
            self._budget.on_call()
        while True:
            if self._closed:
                raise CancelledError("the client is closed", code=grpc.StatusCode.CANCELLED, operation=operation)
            attempt_timeout = None if self._attempt_timeout is None else self._attempt_timeout + extra_attempt_time
            if max_attempt_time is not None:
                attempt_timeout = max_attempt_time if attempt_timeout is None else min(attempt_timeout, max_attempt_time)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _common.gave_up(operation, last, attempts)
                attempt_timeout = remaining if attempt_timeout is None else min(attempt_timeout, remaining)
            ticket = None
            if self._breaker is not None:
                try:
                    ticket = self._breaker.allow(guarded=guarded)
                except LedgerError as refused:
                    refused.operation = operation
                    raise
            attempts += 1
            try:
                response = await rpc(request, timeout=attempt_timeout, metadata=self._metadata)
            except asyncio.CancelledError:
                if ticket is not None:
                    self._breaker.record(ticket, _policy.IGNORED)  # type: ignore[union-attr]
                raise
            except grpc.RpcError as rpc_error:
                error = error_from_rpc(rpc_error, operation=operation)
                error.__cause__ = rpc_error
                if ticket is not None:
                    self._breaker.record(ticket, _policy.attempt_outcome(error.code), error)  # type: ignore[union-attr]
            else:
                if ticket is not None:
                    self._breaker.record(ticket, _policy.SUCCESS)  # type: ignore[union-attr]
                return response
            if error.code not in _retry.RETRYABLE_CODES or not retry:
                raise error
            if deadline is not None and time.monotonic() >= deadline:
                raise _common.gave_up(operation, last or error, attempts)
            if self._max_attempts is not None and attempts >= self._max_attempts:
                raise _common.gave_up_after(operation, error, attempts, "the client's max_attempts was reached")
            if operation not in _OUTSIDE_BUDGET and self._budget is not None and not self._budget.try_retry():
                self._counters.add(retries_refused=1)
                raise _common.gave_up_after(operation, error, attempts, "retry budget exhausted")
            self._counters.add(retries=1)
            last = error
            pause = max(_retry.jitter(backoff), error.retry_delay or 0.0)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause)
            backoff = min(2 * backoff, _retry.RETRY_MAX_BACKOFF)


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
            try:
                await asyncio.shield(asyncio.wait({task}))
            except asyncio.CancelledError:
                pass  # the caller is being cancelled; the task ends on its own
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

