"""The admin and audit calls an on-call engineer scripts, on both clients
(mixed into :class:`ledgerd.Client` and :class:`ledgerd.aio.Client`).

They are ``LedgerAdminService`` calls over the client's channel, so the
client's token needs the matching role (``reader`` for listings, histories
and events; ``admin`` for force release, reset and namespaces). Listings
are iterators that follow ``next_page_token`` until the last page; one page
at a time is fetched, as the iteration asks for it::

    for entry in client.iter_entries("billing", states=["leased"], stuck=True):
        client.force_release("billing", entry.key, reason="stuck since the deploy")

    export = client.export_events("billing", start_time=since)
    for event in export:
        write(event)
    since = export.settled_until  # where the next export starts

The events export stops where the server says newer events may still be
settling (``settled_until``): an export that always starts the next run at
the previous run's ``settled_until`` never misses an event (see
``ListEvents`` in admin.proto).
"""

from __future__ import annotations

import datetime
from typing import Any, AsyncIterator, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

from google.protobuf import timestamp_pb2

from ._gen.ledger.v1 import admin_pb2, admin_pb2_grpc, ledger_pb2, ledger_pb2_grpc

from . import _common, _convert

__all__ = ["EventExport", "AsyncEventExport", "rpc_table"]

#: A state filter: ``"leased"``, ``"STATE_LEASED"``, or the enum value.
StateLike = Union[str, int]
#: An event kind filter: ``"completed"``, ``"EVENT_KIND_COMPLETED"``, or the enum value.
KindLike = Union[str, int]

#: The largest page the server returns (its page_size maximum).
MAX_PAGE_SIZE = 1000


def rpc_table(channel: Any) -> Dict[str, Any]:
    """Every RPC a client calls, by the operation name its errors carry
    (``error.operation``): those of LedgerService and LedgerAdminService."""
    ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
    admin = admin_pb2_grpc.LedgerAdminServiceStub(channel)
    return {
        "reserve": ledger.Reserve,
        "heartbeat": ledger.Heartbeat,
        "complete": ledger.Complete,
        "fail": ledger.Fail,
        "release": ledger.Release,
        "lookup": ledger.Lookup,
        "reserve_batch": ledger.ReserveBatch,
        "complete_batch": ledger.CompleteBatch,
        "lookup_batch": ledger.LookupBatch,
        "list_entries": admin.ListEntries,
        "get_history": admin.GetHistory,
        "list_events": admin.ListEvents,
        "force_release": admin.ForceRelease,
        "reset_key": admin.ResetKey,
        "list_namespaces": admin.ListNamespaces,
        "get_namespace": admin.GetNamespace,
    }


def _enum(value: Union[str, int], enum: Any, prefix: str, name: str) -> int:
    """An enum value from its number, its full name or its short name (any case)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a str or an int, got bool")
    if isinstance(value, int):
        if value not in enum.values() or value == 0:
            raise ValueError(f"{name}: {value} is not a {prefix.rstrip('_')} value")
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or an int, got {type(value).__name__}")
    upper = value.upper()
    full = upper if upper.startswith(prefix) else prefix + upper
    if full not in enum.keys() or enum.Value(full) == 0:
        allowed = ", ".join(k[len(prefix) :].lower() for k in enum.keys() if enum.Value(k) != 0)
        raise ValueError(f"{name}: unknown value {value!r} (one of: {allowed})")
    return int(enum.Value(full))


def _timestamp(value: Optional[datetime.datetime], name: str) -> Optional[timestamp_pb2.Timestamp]:
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        raise TypeError(f"{name} must be a datetime.datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError(f"{name} must be an aware datetime (with a tzinfo, e.g. UTC), got a naive one")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(datetime.timezone.utc).replace(tzinfo=None))
    return stamp


def _page_size(page_size: Optional[int]) -> int:
    if page_size is None:
        return 0
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise TypeError(f"page_size must be an int, got {type(page_size).__name__}")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    return page_size


def _reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("reason is required: it is recorded in the audit event")
    return reason


def _entries_request(
    namespace: str,
    states: Iterable[StateLike],
    owner: str,
    key_prefix: str,
    updated_after: Optional[datetime.datetime],
    updated_before: Optional[datetime.datetime],
    stuck: bool,
    page_size: Optional[int],
) -> admin_pb2.ListEntriesRequest:
    request = admin_pb2.ListEntriesRequest(
        namespace=namespace,
        states=[_enum(s, ledger_pb2.State, "STATE_", "states") for s in states],
        owner=owner,
        key_prefix=key_prefix,
        stuck=stuck,
        page_size=_page_size(page_size),
    )
    after = _timestamp(updated_after, "updated_after")
    if after is not None:
        request.updated_after.CopyFrom(after)
    before = _timestamp(updated_before, "updated_before")
    if before is not None:
        request.updated_before.CopyFrom(before)
    return request


def _events_request(
    namespace: str,
    start_time: Optional[datetime.datetime],
    end_time: Optional[datetime.datetime],
    kinds: Iterable[KindLike],
    include_unsettled: bool,
    page_size: Optional[int],
) -> admin_pb2.ListEventsRequest:
    request = admin_pb2.ListEventsRequest(
        namespace=namespace,
        kinds=[_enum(k, ledger_pb2.EventKind, "EVENT_KIND_", "kinds") for k in kinds],
        include_unsettled=include_unsettled,
        page_size=_page_size(page_size),
    )
    start = _timestamp(start_time, "start_time")
    if start is not None:
        request.start_time.CopyFrom(start)
    end = _timestamp(end_time, "end_time")
    if end is not None:
        request.end_time.CopyFrom(end)
    return request


def _force_release_request(
    namespace: str, key: str, reason: str, fencing_token: Optional[int]
) -> admin_pb2.ForceReleaseRequest:
    return admin_pb2.ForceReleaseRequest(
        namespace=namespace, key=key, reason=_reason(reason), fencing_token=fencing_token or 0
    )


def _reset_key_request(
    namespace: str, key: str, reason: str, fencing_token: Optional[int]
) -> admin_pb2.ResetKeyRequest:
    return admin_pb2.ResetKeyRequest(
        namespace=namespace, key=key, reason=_reason(reason), fencing_token=fencing_token or 0
    )


def _pages(
    client: Any,
    operation: str,
    request: Any,
    timeout: _common.Timeout,
    field: str,
    on_page: Optional[Callable[[Any], None]] = None,
) -> Iterator[Any]:
    """Yields the items (``response.<field>``) of a listing's every page,
    following the page tokens; each page's call gets its own ``timeout``.
    ``on_page`` sees each response before its items are yielded."""
    while True:
        response = client._call(operation, request, client._deadline(timeout))
        if on_page is not None:
            on_page(response)
        yield from getattr(response, field)
        if not response.next_page_token:
            return
        request.page_token = response.next_page_token


async def _async_pages(
    client: Any,
    operation: str,
    request: Any,
    timeout: _common.Timeout,
    field: str,
    on_page: Optional[Callable[[Any], None]] = None,
) -> AsyncIterator[Any]:
    """:func:`_pages` for the asyncio client (the same steps, awaited)."""
    while True:
        response = await client._call(operation, request, client._deadline(timeout))
        if on_page is not None:
            on_page(response)
        for item in getattr(response, field):
            yield item
        if not response.next_page_token:
            return
        request.page_token = response.next_page_token


class _ExportState:
    """What an events export learned from its pages: where the server
    stopped because newer events may still be settling."""

    def __init__(self) -> None:
        self.settled_until: Optional[datetime.datetime] = None
        self.pages = 0

    def page(self, response: admin_pb2.ListEventsResponse) -> None:
        self.pages += 1
        # Every page reports it; the last page's is where the export stopped.
        self.settled_until = _convert.from_timestamp(response, "settled_until")


class EventExport(_ExportState):
    """An iterator over a namespace's audit events, oldest first, following
    the page tokens (``client.export_events(...)``).

    Attributes:
        settled_until: once iterated, where the listing stopped because newer
            events may still be settling (an aware UTC datetime), or None
            when nothing was left out for that reason (``include_unsettled``,
            an earlier ``end_time``). Start the next export there to miss
            nothing and repeat nothing.
        pages: the pages fetched so far.
    """

    def __init__(self, client: Any, request: admin_pb2.ListEventsRequest, timeout: _common.Timeout) -> None:
        super().__init__()
        self._client = client
        self._request = request
        self._timeout = timeout

    def __iter__(self) -> Iterator[ledger_pb2.Event]:
        request = admin_pb2.ListEventsRequest()
        request.CopyFrom(self._request)
        yield from _pages(self._client, "list_events", request, self._timeout, "events", self.page)


class AsyncEventExport(_ExportState):
    """:class:`EventExport` for the asyncio client: ``async for event in export``."""

    def __init__(self, client: Any, request: admin_pb2.ListEventsRequest, timeout: _common.Timeout) -> None:
        super().__init__()
        self._client = client
        self._request = request
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[ledger_pb2.Event]:
        request = admin_pb2.ListEventsRequest()
        request.CopyFrom(self._request)
        async for event in _async_pages(self._client, "list_events", request, self._timeout, "events", self.page):
            yield event


class AdminMethods:
    """The admin and audit methods of the synchronous :class:`ledgerd.Client`.

    Listings and reads retry while the server is unavailable, as every call
    does; ``force_release`` and ``reset_key`` retry only when given a
    ``fencing_token`` (without one, a retry could end a lease, or undo a
    run, that began in between), and make a single attempt otherwise.
    """

    def iter_entries(
        self,
        namespace: str,
        *,
        states: Sequence[StateLike] = (),
        owner: str = "",
        key_prefix: str = "",
        updated_after: Optional[datetime.datetime] = None,
        updated_before: Optional[datetime.datetime] = None,
        stuck: bool = False,
        page_size: Optional[int] = None,
        timeout: _common.Timeout = None,
    ) -> Iterator[ledger_pb2.Entry]:
        """Yields a namespace's entries in key order (without their results:
        :meth:`lookup` has them), following the pages.

        Args:
            states: keep entries in any of these states (``"leased"``,
                ``"completed"``, ``"failed"``, ``"released"``, ...); empty keeps all.
            owner: keep entries whose current or last holder is this owner.
            key_prefix: keep keys that start with it.
            updated_after, updated_before: keep entries last changed at or
                after / before these (aware datetimes).
            stuck: keep only leased entries whose lease ran out and that
                nobody reclaimed yet.
            page_size: entries per call (1 to 1000; default: the server's, 100).
            timeout: the timeout of each page's call.
        """
        request = _entries_request(
            namespace, states, owner, key_prefix, updated_after, updated_before, stuck, page_size
        )
        yield from _pages(self, "list_entries", request, timeout, "entries")

    def history(
        self, namespace: str, key: str, *, page_size: Optional[int] = None, timeout: _common.Timeout = None
    ) -> List[ledger_pb2.Event]:
        """Returns the audit events of one key, oldest first (every page)."""
        request = admin_pb2.GetHistoryRequest(namespace=namespace, key=key, page_size=_page_size(page_size))
        return list(_pages(self, "get_history", request, timeout, "events"))

    def export_events(
        self,
        namespace: str,
        *,
        start_time: Optional[datetime.datetime] = None,
        end_time: Optional[datetime.datetime] = None,
        kinds: Sequence[KindLike] = (),
        include_unsettled: bool = False,
        page_size: Optional[int] = None,
        timeout: _common.Timeout = None,
    ) -> EventExport:
        """Returns an :class:`EventExport`: an iterator over a namespace's
        audit events from ``start_time`` (inclusive) to ``end_time``
        (exclusive), oldest first, following the pages. Without
        ``include_unsettled`` the newest events (the server's settling delay,
        10s) are left out, so that an event committed late with an earlier
        time is never skipped; the export's ``settled_until`` says where it
        stopped: start the next export there. ``kinds`` keeps events of these
        kinds (``"completed"``, ``"failed"``, ``"force_released"``, ...).
        An empty ``namespace`` exports the platform's events (platform admins).
        """
        request = _events_request(namespace, start_time, end_time, kinds, include_unsettled, page_size)
        return EventExport(self, request, timeout)

    def force_release(
        self,
        namespace: str,
        key: str,
        *,
        reason: str,
        fencing_token: Optional[int] = None,
        timeout: _common.Timeout = None,
    ) -> admin_pb2.ForceReleaseResponse:
        """Ends the current lease of a key, whoever holds it (audited with
        ``reason``, required): the next Reserve takes it over, and the old
        holder's calls are refused with LEASE_LOST. With ``fencing_token``
        only that grant is released (LeaseLostError if another is current),
        and the call is retried while the server is unavailable; without it,
        a single attempt is made. Raises NotFoundError, or a LedgerError of
        reason NOT_LEASED when the key is not leased."""
        request = _force_release_request(namespace, key, reason, fencing_token)
        return self._call("force_release", request, self._deadline(timeout), **_once(fencing_token))  # type: ignore[attr-defined]

    def reset_key(
        self,
        namespace: str,
        key: str,
        *,
        reason: str,
        fencing_token: Optional[int] = None,
        timeout: _common.Timeout = None,
    ) -> admin_pb2.ResetKeyResponse:
        """Forgets a key's result or failure (or ends its lease) so that its
        work runs again (audited with ``reason``, required). With
        ``fencing_token`` (as :meth:`lookup` showed it) the reset happens
        only if that is the key's current token (LeaseLostError otherwise),
        and the call is retried while the server is unavailable; without
        it, a single attempt is made."""
        request = _reset_key_request(namespace, key, reason, fencing_token)
        return self._call("reset_key", request, self._deadline(timeout), **_once(fencing_token))  # type: ignore[attr-defined]

    def get_namespace(self, name: str, *, timeout: _common.Timeout = None) -> admin_pb2.GetNamespaceResponse:
        """Returns a namespace's settings (``.namespace``) and what it uses of
        its quotas (``.usage``). Raises NotFoundError."""
        request = admin_pb2.GetNamespaceRequest(name=name)
        return self._call("get_namespace", request, self._deadline(timeout))  # type: ignore[attr-defined]

    def iter_namespaces(
        self, *, page_size: Optional[int] = None, timeout: _common.Timeout = None
    ) -> Iterator[admin_pb2.Namespace]:
        """Yields every namespace and its settings, by name, following the pages."""
        request = admin_pb2.ListNamespacesRequest(page_size=_page_size(page_size))
        yield from _pages(self, "list_namespaces", request, timeout, "namespaces")


class AsyncAdminMethods:
    """The admin and audit methods of :class:`ledgerd.aio.Client` (see :class:`AdminMethods`)."""

    async def iter_entries(
        self,
        namespace: str,
        *,
        states: Sequence[StateLike] = (),
        owner: str = "",
        key_prefix: str = "",
        updated_after: Optional[datetime.datetime] = None,
        updated_before: Optional[datetime.datetime] = None,
        stuck: bool = False,
        page_size: Optional[int] = None,
        timeout: _common.Timeout = None,
    ) -> AsyncIterator[ledger_pb2.Entry]:
        """See :meth:`ledgerd.Client.iter_entries`: ``async for entry in client.iter_entries(ns)``."""
        request = _entries_request(
            namespace, states, owner, key_prefix, updated_after, updated_before, stuck, page_size
        )
        async for entry in _async_pages(self, "list_entries", request, timeout, "entries"):
            yield entry

    async def history(
        self, namespace: str, key: str, *, page_size: Optional[int] = None, timeout: _common.Timeout = None
    ) -> List[ledger_pb2.Event]:
        """See :meth:`ledgerd.Client.history`."""
        request = admin_pb2.GetHistoryRequest(namespace=namespace, key=key, page_size=_page_size(page_size))
        return [event async for event in _async_pages(self, "get_history", request, timeout, "events")]

    def export_events(
        self,
        namespace: str,
        *,
        start_time: Optional[datetime.datetime] = None,
        end_time: Optional[datetime.datetime] = None,
        kinds: Sequence[KindLike] = (),
        include_unsettled: bool = False,
        page_size: Optional[int] = None,
        timeout: _common.Timeout = None,
    ) -> AsyncEventExport:
        """See :meth:`ledgerd.Client.export_events`: ``async for event in export``."""
        request = _events_request(namespace, start_time, end_time, kinds, include_unsettled, page_size)
        return AsyncEventExport(self, request, timeout)

    async def force_release(
        self,
        namespace: str,
        key: str,
        *,
        reason: str,
        fencing_token: Optional[int] = None,
        timeout: _common.Timeout = None,
    ) -> admin_pb2.ForceReleaseResponse:
        """See :meth:`ledgerd.Client.force_release`."""
        request = _force_release_request(namespace, key, reason, fencing_token)
        return await self._call("force_release", request, self._deadline(timeout), **_once(fencing_token))  # type: ignore[attr-defined]

    async def reset_key(
        self,
        namespace: str,
        key: str,
        *,
        reason: str,
        fencing_token: Optional[int] = None,
        timeout: _common.Timeout = None,
    ) -> admin_pb2.ResetKeyResponse:
        """See :meth:`ledgerd.Client.reset_key`."""
        request = _reset_key_request(namespace, key, reason, fencing_token)
        return await self._call("reset_key", request, self._deadline(timeout), **_once(fencing_token))  # type: ignore[attr-defined]

    async def get_namespace(self, name: str, *, timeout: _common.Timeout = None) -> admin_pb2.GetNamespaceResponse:
        """See :meth:`ledgerd.Client.get_namespace`."""
        request = admin_pb2.GetNamespaceRequest(name=name)
        return await self._call("get_namespace", request, self._deadline(timeout))  # type: ignore[attr-defined]

    async def iter_namespaces(
        self, *, page_size: Optional[int] = None, timeout: _common.Timeout = None
    ) -> AsyncIterator[admin_pb2.Namespace]:
        """See :meth:`ledgerd.Client.iter_namespaces`."""
        request = admin_pb2.ListNamespacesRequest(page_size=_page_size(page_size))
        async for namespace in _async_pages(self, "list_namespaces", request, timeout, "namespaces"):
            yield namespace


def _once(fencing_token: Optional[int]) -> Dict[str, Any]:
    """The _call options of a call that is retry-safe only with a fencing token."""
    return {} if fencing_token else {"retry": False}
