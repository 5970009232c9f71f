"""Batches: ``do_batch``, ``reserve_batch``, ``complete_batch`` and
``lookup_batch`` of both clients (mixed into :class:`ledgerd.Client` and
:class:`ledgerd.aio.Client`).

``do_batch`` has the Go client's ``DoBatch`` semantics: one ReserveBatch
(per 1000 keys), one call of the work for every key this worker acquired,
heartbeats for each lease while it runs, and one CompleteBatch for the
results; one :class:`BatchResult` per key, in order. A key another worker
holds is not waited for; a completed key is replayed; each key fails alone.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import grpc

from ._gen.ledger.v1 import ledger_pb2

from . import _common, _convert
from ._convert import DurationLike
from .errors import _REASON_CLASSES, InvalidArgumentError, LedgerError
from .lease import BytesLike, Lease, Result

__all__ = ["MAX_BATCH_ITEMS", "BatchResult", "item_error", "BatchWorkFunction", "AsyncBatchWorkFunction"]

#: The most items ledgerd takes in one batch call by default: do_batch
#: splits longer lists of keys into calls of this size. The thin
#: ``*_batch`` methods send what they are given (the server refuses more
#: than its maximum with INVALID_ARGUMENT, field ``items`` or ``keys``).
MAX_BATCH_ITEMS = 1000
#: The most result bytes do_batch sends in one CompleteBatch: the server
#: bounds a request by its message size (at least 4 MiB), so larger results
#: go in several calls.
MAX_COMPLETE_BATCH_BYTES = 3 << 20

#: The work of :meth:`ledgerd.Client.do_batch`: takes the leases this worker
#: acquired, returns one result (bytes) per lease, in the same order.
BatchWorkFunction = Callable[[List[Lease]], Sequence[BytesLike]]
#: The work of :meth:`ledgerd.aio.Client.do_batch`: the same, async.
AsyncBatchWorkFunction = Callable[[List[Lease]], Union[Awaitable[Sequence[BytesLike]], Sequence[BytesLike]]]

#: The ItemError reason of an item the batch's response had no room for.
_RESPONSE_TOO_LARGE = "RESPONSE_TOO_LARGE"


@dataclass
class BatchResult:
    """The outcome of one key of ``do_batch``.

    Attributes:
        key: the key.
        result: the :class:`~ledgerd.Result` when ``error`` is None: recorded
            now (``replayed`` False) or replayed.
        error: why the key has no result: :class:`~ledgerd.InProgressError`
            (another worker holds it: do_batch does not wait; call it again
            for such keys, or use do()), :class:`~ledgerd.FailedError` (it
            failed permanently), the exception the work raised (recorded as
            a failure, retryable unless a :class:`~ledgerd.PermanentError`),
            or the :class:`~ledgerd.LedgerError` of the key's Reserve or
            Complete (LeaseLostError, InvalidArgumentError, ...).
    """

    key: str
    result: Optional[Result] = None
    error: Optional[BaseException] = None

    @property
    def ok(self) -> bool:
        """True when the key has a result."""
        return self.error is None


def item_error(error: ledger_pb2.ItemError, *, operation: Optional[str] = None) -> LedgerError:
    """Turns a batch item's ``ItemError`` into the :class:`~ledgerd.LedgerError`
    subclass the singleton call would have raised (LeaseLostError for
    LEASE_LOST, InvalidArgumentError with its ``field``, ...)."""
    try:
        code: Optional[grpc.StatusCode] = next(c for c in grpc.StatusCode if c.value[0] == error.code)
    except StopIteration:
        code = None
    cls = _REASON_CLASSES.get(error.reason, LedgerError)
    metadata = dict(error.metadata)
    return cls(
        error.message or error.reason or "batch item failed",
        reason=error.reason,
        code=code,
        field=error.field or metadata.get("field") or None,
        operation=operation,
        metadata=metadata,
    )


def _check_keys(keys: Sequence[str]) -> List[str]:
    if isinstance(keys, (str, bytes)):
        raise TypeError("keys must be a sequence of str, not a single string")
    keys = list(keys)
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise TypeError(f"keys[{i}] must be a str, got {type(key).__name__}")
    return keys


def _reserve_batch_request(
    namespace: str,
    owner: str,
    items: Sequence[Union[str, ledger_pb2.ReserveBatchItem]],
    lease_ttl: Optional[DurationLike],
    fingerprint: Optional[BytesLike] = None,
    metadata: Optional[Mapping[str, str]] = None,
) -> ledger_pb2.ReserveBatchRequest:
    request = ledger_pb2.ReserveBatchRequest(namespace=namespace, owner=owner)
    if lease_ttl is not None:
        request.lease_ttl.CopyFrom(_convert.to_duration(lease_ttl, "lease_ttl"))
    for i, item in enumerate(items):
        if isinstance(item, str):
            request.items.add(key=item, fingerprint=bytes(fingerprint or b""), metadata=dict(metadata or {}))
        elif isinstance(item, ledger_pb2.ReserveBatchItem):
            request.items.append(item)
        else:
            raise TypeError(f"items[{i}] must be a key (str) or a ReserveBatchItem, got {type(item).__name__}")
    return request


def _complete_batch_request(
    namespace: str, items: Sequence[Union[Tuple[str, int, BytesLike], ledger_pb2.CompleteBatchItem]]
) -> ledger_pb2.CompleteBatchRequest:
    request = ledger_pb2.CompleteBatchRequest(namespace=namespace)
    for i, item in enumerate(items):
        if isinstance(item, ledger_pb2.CompleteBatchItem):
            request.items.append(item)
        elif isinstance(item, tuple) and len(item) == 3:
            key, token, result = item
            request.items.add(key=key, fencing_token=token, result=bytes(result))
        else:
            raise TypeError(
                f"items[{i}] must be a (key, fencing_token, result) tuple or a CompleteBatchItem, got {type(item).__name__}"
            )
    return request


class _Plan:
    """The non-I/O part of one chunk of do_batch: what its ReserveBatch
    answered, per key, and the leases to run the work under."""

    def __init__(
        self,
        namespace: str,
        keys: List[str],
        owner: str,
        lease_ttl: Optional[DurationLike],
        fingerprint: Optional[BytesLike],
        metadata: Optional[Mapping[str, str]],
    ) -> None:
        self.namespace = namespace
        self.keys = keys
        self.owner = owner
        self.lease_ttl = lease_ttl
        self.fingerprint = fingerprint
        self.metadata = metadata
        self.results = [BatchResult(key=key) for key in keys]
        self.held: List[Lease] = []
        self.held_at: List[int] = []  # held[j] is keys[held_at[j]]
        self.too_large: List[int] = []  # keys to ask for alone

    def batch_request(self) -> ledger_pb2.ReserveBatchRequest:
        """The chunk's ReserveBatch."""
        return _reserve_batch_request(
            self.namespace, self.owner, self.keys, self.lease_ttl, self.fingerprint, self.metadata
        )

    def single_request(self, i: int) -> ledger_pb2.ReserveRequest:
        """The Reserve of keys[i] alone (one of :attr:`too_large`)."""
        return _common.reserve_request(
            self.namespace,
            self.keys[i],
            self.owner,
            lease_ttl=self.lease_ttl,
            fingerprint=self.fingerprint,
            metadata=self.metadata,
        )

    def take(self, i: int, answer: ledger_pb2.ReserveResponse, lease_class: type) -> None:
        """Files the Reserve answer of keys[i]."""
        key = self.keys[i]
        outcome = answer.WhichOneof("outcome")
        if outcome == "acquired":
            self.held.append(_common.lease_from_acquired(self.namespace, key, self.owner, answer.acquired, lease_class))
            self.held_at.append(i)
        elif outcome == "completed":
            self.results[i].result = _common.replayed_result(answer.completed)
        elif outcome == "failed":
            self.results[i].error = _common.failed_error(self.namespace, key, answer.failed)
        elif outcome == "in_progress":
            self.results[i].error = _common.in_progress_error(
                self.namespace,
                key,
                answer.in_progress,
                f"{self.namespace}/{key} is held by {answer.in_progress.owner!r}",
            )
        else:
            self.results[i].error = LedgerError(
                f"reserve returned an outcome this client does not know ({outcome})", operation="reserve batch"
            )

    def take_batch(self, response: ledger_pb2.ReserveBatchResponse, lease_class: type) -> None:
        """Files ReserveBatch's answers; items without room in the response
        are left in :attr:`too_large`, to be asked for alone (the same owner
        gets the same lease back if one was granted)."""
        for i, r in enumerate(response.results):
            if r.WhichOneof("result") == "error":
                if r.error.reason == _RESPONSE_TOO_LARGE:
                    self.too_large.append(i)
                else:
                    self.results[i].error = item_error(r.error, operation="reserve batch")
                continue
            self.take(i, r.reserved, lease_class)

    def finish(self, outcomes: List[BatchResult]) -> List[BatchResult]:
        for j, i in enumerate(self.held_at):
            self.results[i].result, self.results[i].error = outcomes[j].result, outcomes[j].error
        return self.results


def _work_values(values: object, held: List[Lease]) -> Optional[Exception]:
    """Why the values the batch's work returned cannot be recorded, or None."""
    try:
        count = len(values)  # type: ignore[arg-type]
    except TypeError:
        return TypeError(f"the batch's work returned {type(values).__name__}; it must return a list of bytes")
    if count != len(held):
        return ValueError(f"the batch's work returned {count} results for {len(held)} keys")
    return None


def _failed_work(
    held: List[Lease], problem: BaseException, heartbeat_error: Optional[LedgerError], deadline: Optional[float]
) -> Tuple[List[BatchResult], Optional[Tuple[str, str, bool]]]:
    """The results of a batch whose work raised (or returned what cannot be
    recorded): every key gets an error. Also returns how the keys' failure
    is recorded: Fail's (message, code, retryable), or None to release the
    leases instead (the work stopped because a lease could not be kept or
    the timeout ran out: the cause, not the symptom, is reported)."""
    out = [BatchResult(key=lease.key) for lease in held]
    timed_out = deadline is not None and time.monotonic() >= deadline
    if heartbeat_error is not None or timed_out:
        cause: BaseException = heartbeat_error or _common.timed_out_error(held[0])
        for result in out:
            result.error = LedgerError(
                f"the batch's work stopped: {cause} (the lease was released)", operation="do batch"
            )
            result.error.__cause__ = problem
        return out, None
    for result in out:
        result.error = problem
    return out, _common.work_failure(problem)


def _refuse_not_bytes(held: List[Lease], values: List[Any], not_bytes: List[int], out: List[BatchResult]) -> None:
    """Gives each key whose work value is not bytes its TypeError (its
    lease is then failed with it, retryably)."""
    for j in not_bytes:
        out[j].error = _common.not_bytes_error(held[j], values[j])


def _take_completions(
    held: List[Lease],
    values: List[Any],
    chunk: List[int],
    response: ledger_pb2.CompleteBatchResponse,
    out: List[BatchResult],
) -> List[int]:
    """Files CompleteBatch's answers for ``chunk``; returns the indexes whose
    result the ledger refused as invalid (too large, say), whose leases are
    then failed with the reason, to free the keys."""
    refused: List[int] = []
    for j, r in zip(chunk, response.results):
        if r.WhichOneof("result") == "error":
            error = item_error(r.error, operation="complete batch")
            out[j].error = error
            if isinstance(error, InvalidArgumentError):
                refused.append(j)
            continue
        out[j].result = _common.completed_result(held[j], bytes(values[j]), r.completed)
    return refused


def _complete_chunks(held: List[Lease], values: Sequence[object]) -> Tuple[List[List[int]], List[int]]:
    """Splits the results to record into CompleteBatch calls of at most
    MAX_BATCH_ITEMS items and MAX_COMPLETE_BATCH_BYTES bytes (at least one
    item each); returns them with the indexes whose value is not bytes."""
    chunks: List[List[int]] = []
    not_bytes: List[int] = []
    current: List[int] = []
    size = 0
    for j, value in enumerate(values):
        if not isinstance(value, (bytes, bytearray, memoryview)):
            not_bytes.append(j)
            continue
        n = len(value)
        if current and (len(current) >= MAX_BATCH_ITEMS or size + n > MAX_COMPLETE_BATCH_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(j)
        size += n
    if current:
        chunks.append(current)
    return chunks, not_bytes


class BatchMethods:
    """The batch methods of the synchronous :class:`ledgerd.Client`."""

    def reserve_batch(
        self,
        *,
        namespace: str,
        owner: str,
        items: Sequence[Union[str, ledger_pb2.ReserveBatchItem]],
        lease_ttl: Optional[DurationLike] = None,
        timeout: _common.Timeout = None,
    ) -> ledger_pb2.ReserveBatchResponse:
        """Reserves many keys of one namespace for ``owner`` in one call;
        returns the ``ReserveBatchResponse``: one result per item, in order,
        each Reserve's answer or an ``ItemError`` (turn it into an exception
        with :func:`ledgerd.item_error`). ``items`` are keys or
        ``ReserveBatchItem`` messages (with a fingerprint or metadata). An
        item never waits for a held key. Raises only for what every item
        shares (namespace, owner, lease_ttl, the number of items)."""
        request = _reserve_batch_request(namespace, owner, items, lease_ttl)
        return self._call("reserve_batch", request, self._deadline(timeout))  # type: ignore[attr-defined]

    def complete_batch(
        self,
        *,
        namespace: str,
        items: Sequence[Union[Tuple[str, int, BytesLike], ledger_pb2.CompleteBatchItem]],
        timeout: _common.Timeout = None,
    ) -> ledger_pb2.CompleteBatchResponse:
        """Completes many keys of one namespace in one call; ``items`` are
        ``(key, fencing_token, result)`` tuples or ``CompleteBatchItem``
        messages. Returns the ``CompleteBatchResponse``: one result per item,
        in order, each Complete's answer or an ``ItemError``. The request is
        bounded by the server's message size (at least 4 MiB): send large
        results in smaller batches."""
        request = _complete_batch_request(namespace, items)
        return self._call("complete_batch", request, self._deadline(timeout))  # type: ignore[attr-defined]

    def lookup_batch(
        self, *, namespace: str, keys: Sequence[str], timeout: _common.Timeout = None
    ) -> ledger_pb2.LookupBatchResponse:
        """Returns the entries of many keys of one namespace in one call: the
        ``LookupBatchResponse``, one result per key, in order, an ``Entry``
        or an ``ItemError`` (NOT_FOUND for a key the ledger does not hold)."""
        request = ledger_pb2.LookupBatchRequest(namespace=namespace, keys=_check_keys(keys))
        return self._call("lookup_batch", request, self._deadline(timeout))  # type: ignore[attr-defined]

    def do_batch(
        self,
        namespace: str,
        keys: Sequence[str],
        work: BatchWorkFunction,
        *,
        owner: Optional[str] = None,
        lease_ttl: Optional[DurationLike] = None,
        fingerprint: Optional[BytesLike] = None,
        metadata: Optional[Mapping[str, str]] = None,
        heartbeat_interval: Optional[DurationLike] = None,
        timeout: _common.Timeout = None,
    ) -> List[BatchResult]:
        """do() for many keys of one namespace at once, with one work call
        for all the keys this worker acquires.

        It reserves the keys with ReserveBatch (in calls of
        :data:`MAX_BATCH_ITEMS`), calls ``work(leases)`` once with the leases
        it acquired (in the order of ``keys``) while heartbeating each of
        them from a background thread, records the results ``work`` returns
        (one bytes per lease, in the same order) with CompleteBatch, and
        returns one :class:`BatchResult` per key, in the order of ``keys``:

        - a completed key is replayed (``result.replayed``), and not given to work;
        - a key another worker holds gets an :class:`~ledgerd.InProgressError`
          at once: do_batch does not wait (call it again for those keys, or
          use do());
        - a key that failed permanently gets a :class:`~ledgerd.FailedError`.

        When ``work`` raises, every acquired key records a failure (retryable
        unless the exception is a :class:`~ledgerd.PermanentError`) and gets
        the exception. If a lease of the batch cannot be kept (lost, or no
        heartbeat acknowledged in time), its ``cancelled`` is set; results
        ``work`` still returns are offered to CompleteBatch, which records
        those of the keys nobody took over (the others get
        :class:`~ledgerd.LeaseLostError`). If ``work`` raises after a lease
        could not be kept, or after ``timeout`` ran out, the leases are
        released. ``KeyboardInterrupt``/``SystemExit`` release them and
        propagate.

        The options are do()'s; ``fingerprint`` and ``metadata`` apply to
        every key. do_batch raises only for what all keys share (a bad
        namespace or option), or the error of a ReserveBatch that could not
        be made (nothing ran then).
        """
        if not callable(work):
            raise TypeError(f"work must be callable, got {type(work).__name__}")
        keys = _check_keys(keys)
        owner = owner or _common.default_owner()
        interval = _common.heartbeat_interval(heartbeat_interval)
        deadline = self._deadline(timeout)  # type: ignore[attr-defined]
        results: List[BatchResult] = []
        for start in range(0, len(keys), MAX_BATCH_ITEMS):
            chunk = keys[start : start + MAX_BATCH_ITEMS]
            plan = _Plan(namespace, chunk, owner, lease_ttl, fingerprint, metadata)
            plan.take_batch(self._call("reserve_batch", plan.batch_request(), deadline), Lease)  # type: ignore[attr-defined]
            for i in plan.too_large:
                try:
                    plan.take(i, self._call("reserve", plan.single_request(i), deadline), Lease)  # type: ignore[attr-defined]
                except LedgerError as error:
                    plan.results[i].error = error
            outcomes = self._run_batch(plan.held, work, interval, deadline) if plan.held else []
            results.extend(plan.finish(outcomes))
        return results

    def _run_batch(
        self, held: List[Lease], work: BatchWorkFunction, interval: Optional[float], deadline: Optional[float]
    ) -> List[BatchResult]:
        from .client import _Heartbeater  # here: client.py imports this module

        heartbeats = [_Heartbeater(self, lease, _common.default_interval(lease, interval), deadline) for lease in held]  # type: ignore[arg-type]
        for h in heartbeats:
            h.start()

        def stop_all() -> Optional[LedgerError]:
            errors = [h.stop() for h in heartbeats]
            return next((e for e in errors if e is not None), None)

        try:
            values = work(list(held))
            problem = _work_values(values, held)
        except Exception as exc:  # noqa: BLE001 - recorded for every key
            values, problem = None, exc
        except BaseException:
            stop_all()
            cleanup = _common.cleanup_deadline(deadline, always=True)
            for lease in held:
                self._quietly("release", lambda lease=lease: self._release(lease, cleanup))  # type: ignore[attr-defined]
            raise
        finally:
            heartbeat_error = stop_all()
        cleanup = _common.cleanup_deadline(deadline)
        if problem is None:
            out = [BatchResult(key=lease.key) for lease in held]
            self._complete_held(held, list(values), out, cleanup)  # type: ignore[arg-type]
            return out
        out, failure = _failed_work(held, problem, heartbeat_error, deadline)
        for lease, result in zip(held, out):
            if failure is None:
                self._quietly("release", lambda lease=lease: self._release(lease, cleanup), result.error)  # type: ignore[attr-defined]
            else:
                message, code, retryable = failure
                self._quietly(  # type: ignore[attr-defined]
                    "fail", lambda lease=lease: self._fail(lease, message, code, retryable, cleanup), problem
                )
        return out

    def _complete_held(
        self, held: List[Lease], values: List[Any], out: List[BatchResult], cleanup: Optional[float]
    ) -> None:
        chunks, not_bytes = _complete_chunks(held, values)
        _refuse_not_bytes(held, values, not_bytes, out)
        for j in not_bytes:
            self._fail_with(held[j], out[j].error, cleanup)
        for chunk in chunks:
            request = _complete_batch_request(
                held[0].namespace, [(held[j].key, held[j].fencing_token, values[j]) for j in chunk]
            )
            try:
                response = self._call("complete_batch", request, cleanup)  # type: ignore[attr-defined]
            except LedgerError as error:
                for j in chunk:
                    out[j].error = error
                continue
            for j in _take_completions(held, values, chunk, response, out):
                self._fail_with(held[j], out[j].error, cleanup)

    def _fail_with(self, lease: Lease, error: Any, cleanup: Optional[float]) -> None:
        """Fails a lease retryably with ``error``'s description (the value its
        work returned cannot be recorded), quietly."""
        self._quietly("fail", lambda: self._fail(lease, _common.describe(error), "", True, cleanup), error)  # type: ignore[attr-defined]


class AsyncBatchMethods:
    """The batch methods of :class:`ledgerd.aio.Client` (see :class:`BatchMethods`)."""

    async def reserve_batch(
        self,
        *,
        namespace: str,
        owner: str,
        items: Sequence[Union[str, ledger_pb2.ReserveBatchItem]],
        lease_ttl: Optional[DurationLike] = None,
        timeout: _common.Timeout = None,
    ) -> ledger_pb2.ReserveBatchResponse:
        """See :meth:`ledgerd.Client.reserve_batch`."""
        request = _reserve_batch_request(namespace, owner, items, lease_ttl)
        return await self._call("reserve_batch", request, self._deadline(timeout))  # type: ignore[attr-defined]

    async def complete_batch(
        self,
        *,
        namespace: str,
        items: Sequence[Union[Tuple[str, int, BytesLike], ledger_pb2.CompleteBatchItem]],
        timeout: _common.Timeout = None,
    ) -> ledger_pb2.CompleteBatchResponse:
        """See :meth:`ledgerd.Client.complete_batch`."""
        request = _complete_batch_request(namespace, items)
        return await self._call("complete_batch", request, self._deadline(timeout))  # type: ignore[attr-defined]

    async def lookup_batch(
        self, *, namespace: str, keys: Sequence[str], timeout: _common.Timeout = None
    ) -> ledger_pb2.LookupBatchResponse:
        """See :meth:`ledgerd.Client.lookup_batch`."""
        request = ledger_pb2.LookupBatchRequest(namespace=namespace, keys=_check_keys(keys))
        return await self._call("lookup_batch", request, self._deadline(timeout))  # type: ignore[attr-defined]

    async def do_batch(
        self,
        namespace: str,
        keys: Sequence[str],
        work: AsyncBatchWorkFunction,
        *,
        owner: Optional[str] = None,
        lease_ttl: Optional[DurationLike] = None,
        fingerprint: Optional[BytesLike] = None,
        metadata: Optional[Mapping[str, str]] = None,
        heartbeat_interval: Optional[DurationLike] = None,
        timeout: _common.Timeout = None,
    ) -> List[BatchResult]:
        """:meth:`ledgerd.Client.do_batch` with ``work`` an async function
        (``await work(leases)``); heartbeats run as tasks. Cancelling the
        task awaiting do_batch while the work runs releases the leases and
        propagates :class:`asyncio.CancelledError`."""
        from .aio import AsyncLease  # here: aio imports this module

        if not callable(work):
            raise TypeError(f"work must be callable, got {type(work).__name__}")
        keys = _check_keys(keys)
        owner = owner or _common.default_owner()
        interval = _common.heartbeat_interval(heartbeat_interval)
        deadline = self._deadline(timeout)  # type: ignore[attr-defined]
        results: List[BatchResult] = []
        for start in range(0, len(keys), MAX_BATCH_ITEMS):
            chunk = keys[start : start + MAX_BATCH_ITEMS]
            plan = _Plan(namespace, chunk, owner, lease_ttl, fingerprint, metadata)
            plan.take_batch(await self._call("reserve_batch", plan.batch_request(), deadline), AsyncLease)  # type: ignore[attr-defined]
            for i in plan.too_large:
                try:
                    plan.take(i, await self._call("reserve", plan.single_request(i), deadline), AsyncLease)  # type: ignore[attr-defined]
                except LedgerError as error:
                    plan.results[i].error = error
            outcomes = await self._run_batch(plan.held, work, interval, deadline) if plan.held else []
            results.extend(plan.finish(outcomes))
        return results

    async def _run_batch(
        self, held: List[Lease], work: AsyncBatchWorkFunction, interval: Optional[float], deadline: Optional[float]
    ) -> List[BatchResult]:
        from .aio import _Heartbeater

        heartbeats = [
            _Heartbeater(self, lease, _common.default_interval(lease, interval), deadline)  # type: ignore[arg-type]
            for lease in held
        ]
        for h in heartbeats:
            h.start()
        try:
            return await self._run_batch_work(held, heartbeats, work, deadline)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            # Cancelled while the work ran or its outcome was recorded: free the keys.
            await self._abandon(held, heartbeats, deadline)  # type: ignore[attr-defined]
            raise

    async def _run_batch_work(
        self, held: List[Lease], heartbeats: List[Any], work: AsyncBatchWorkFunction, deadline: Optional[float]
    ) -> List[BatchResult]:
        async def stop_all() -> Optional[LedgerError]:
            errors = [await h.stop() for h in heartbeats]
            return next((e for e in errors if e is not None), None)

        try:
            values: Any = work(list(held))
            if inspect.isawaitable(values):
                values = await values
            problem = _work_values(values, held)
        except Exception as exc:  # noqa: BLE001 - recorded for every key
            values, problem = None, exc
        heartbeat_error = await stop_all()
        cleanup = _common.cleanup_deadline(deadline)
        if problem is None:
            out = [BatchResult(key=lease.key) for lease in held]
            await self._complete_held(held, list(values), out, cleanup)
            return out
        out, failure = _failed_work(held, problem, heartbeat_error, deadline)
        if failure is None:
            await asyncio.gather(
                *(
                    self._quietly("release", self._release(lease, cleanup), result.error)  # type: ignore[attr-defined]
                    for lease, result in zip(held, out)
                )
            )
            return out
        message, code, retryable = failure
        await asyncio.gather(
            *(
                self._quietly("fail", self._fail(lease, message, code, retryable, cleanup), problem)  # type: ignore[attr-defined]
                for lease in held
            )
        )
        return out

    async def _complete_held(
        self, held: List[Lease], values: List[Any], out: List[BatchResult], cleanup: Optional[float]
    ) -> None:
        chunks, not_bytes = _complete_chunks(held, values)
        _refuse_not_bytes(held, values, not_bytes, out)
        for j in not_bytes:
            await self._fail_with(held[j], out[j].error, cleanup)
        for chunk in chunks:
            request = _complete_batch_request(
                held[0].namespace, [(held[j].key, held[j].fencing_token, values[j]) for j in chunk]
            )
            try:
                response = await self._call("complete_batch", request, cleanup)  # type: ignore[attr-defined]
            except LedgerError as error:
                for j in chunk:
                    out[j].error = error
                continue
            for j in _take_completions(held, values, chunk, response, out):
                await self._fail_with(held[j], out[j].error, cleanup)

    async def _fail_with(self, lease: Lease, error: Any, cleanup: Optional[float]) -> None:
        """:meth:`BatchMethods._fail_with`, awaited."""
        await self._quietly("fail", self._fail(lease, _common.describe(error), "", True, cleanup), error)  # type: ignore[attr-defined]
