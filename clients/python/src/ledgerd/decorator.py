"""``Client.idempotent``: do() as a decorator (both clients).

::

    @client.idempotent(namespace="billing", key=lambda invoice: invoice.id)
    def send_invoice(invoice):
        lease = ledgerd.current_lease()
        return mailer.send(invoice, fence=lease.fencing_token)

    send_invoice(inv)  # runs once across every worker that shares the ledger
    send_invoice(inv)  # returns the first call's return value, replayed

The function's return value is stored as the key's result (JSON by default;
``serializer``/``deserializer`` for anything else), and every call returns
the deserialized stored value, the first one included, so that a replay
returns exactly what the run returned. The lease (fencing token,
``set_checkpoint``, ``cancelled``) is available inside the function through
:func:`ledgerd.current_lease`, so the function keeps its own signature.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any, Callable, Optional, TypeVar

from ._context import reset, set_lease
from .lease import BytesLike, Lease

__all__ = ["json_serializer", "json_deserializer"]

_F = TypeVar("_F", bound=Callable[..., Any])


def json_serializer(value: Any) -> bytes:
    """The default serializer: compact JSON, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_deserializer(data: bytes) -> Any:
    """The default deserializer: JSON; an empty result is None."""
    return None if not data else json.loads(data.decode("utf-8"))


class _Options:
    """What ``idempotent`` was given, checked once, when decorating."""

    def __init__(
        self,
        namespace: str,
        key: Callable[..., str],
        serializer: Callable[[Any], BytesLike],
        deserializer: Callable[[bytes], Any],
        fingerprint: Optional[Callable[..., BytesLike]],
        do_options: dict,
    ) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise ValueError("idempotent: namespace must be a non-empty str")
        for name, fn in (("key", key), ("serializer", serializer), ("deserializer", deserializer)):
            if not callable(fn):
                raise TypeError(f"idempotent: {name} must be callable, got {type(fn).__name__}")
        if fingerprint is not None and not callable(fingerprint):
            raise TypeError(f"idempotent: fingerprint must be callable (same arguments as the function), got {type(fingerprint).__name__}")
        if "fingerprint" in do_options or "work" in do_options:
            raise TypeError("idempotent: fingerprint is a function of the arguments; work is the decorated function")
        self.namespace = namespace
        self.key = key
        self.serializer = serializer
        self.deserializer = deserializer
        self.fingerprint = fingerprint
        self.do_options = do_options

    def key_of(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> str:
        key = self.key(*args, **kwargs)
        if not isinstance(key, str):
            raise TypeError(f"idempotent {fn.__qualname__}: key returned {type(key).__name__}; it must return a str")
        return key

    def call_options(self, args: tuple, kwargs: dict) -> dict:
        options = dict(self.do_options)
        if self.fingerprint is not None:
            options["fingerprint"] = bytes(self.fingerprint(*args, **kwargs))
        return options

    def serialize(self, fn: Callable[..., Any], value: Any) -> bytes:
        data = self.serializer(value)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"idempotent {fn.__qualname__}: serializer returned {type(data).__name__}; it must return bytes")
        return bytes(data)


class IdempotentMethod:
    """``idempotent`` of the synchronous :class:`ledgerd.Client`."""

    def idempotent(
        self,
        *,
        namespace: str,
        key: Callable[..., str],
        serializer: Callable[[Any], BytesLike] = json_serializer,
        deserializer: Callable[[bytes], Any] = json_deserializer,
        fingerprint: Optional[Callable[..., BytesLike]] = None,
        **do_options: Any,
    ) -> Callable[[_F], _F]:
        """Returns a decorator that runs a function through :meth:`do`, once per key.

        Args:
            namespace: the namespace of the keys.
            key: called with the function's arguments; returns the key (str).
            serializer: turns the return value into the stored result
                (default: JSON); deserializer turns it back (default: JSON).
                Every call returns ``deserializer(stored)``, the first one
                included, so a replay returns what the run returned.
            fingerprint: called with the function's arguments; returns bytes
                identifying the request (e.g. a hash of the payload): a
                second call with the same key and another fingerprint raises
                :class:`~ledgerd.FingerprintMismatchError`.
            **do_options: do()'s other options (``lease_ttl``, ``timeout``,
                ``owner``, ``metadata``, ``heartbeat_interval``, ``wait``,
                ``fallback``...), for every call.

        The function runs with its own arguments; its lease is
        :func:`ledgerd.current_lease`. It raises what do() raises (the
        function's own exceptions included: a
        :class:`~ledgerd.PermanentError` makes the key fail permanently).
        The decorated function must not be a coroutine function: use
        :class:`ledgerd.aio.Client` for those.
        """
        options = _Options(namespace, key, serializer, deserializer, fingerprint, do_options)

        def decorate(fn: _F) -> _F:
            if inspect.iscoroutinefunction(fn):
                raise TypeError(f"idempotent: {fn.__qualname__} is async: decorate it with a ledgerd.aio.Client")

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                def work(lease: Lease) -> bytes:
                    token = set_lease(lease)
                    try:
                        return options.serialize(fn, fn(*args, **kwargs))
                    finally:
                        reset(token)

                result = self.do(  # type: ignore[attr-defined]
                    options.namespace, options.key_of(fn, args, kwargs), work, **options.call_options(args, kwargs)
                )
                return options.deserializer(result.value)

            return wrapper  # type: ignore[return-value]

        return decorate


class AsyncIdempotentMethod:
    """``idempotent`` of :class:`ledgerd.aio.Client`: decorates async functions."""

    def idempotent(
        self,
        *,
        namespace: str,
        key: Callable[..., str],
        serializer: Callable[[Any], BytesLike] = json_serializer,
        deserializer: Callable[[bytes], Any] = json_deserializer,
        fingerprint: Optional[Callable[..., BytesLike]] = None,
        **do_options: Any,
    ) -> Callable[[_F], _F]:
        """:meth:`ledgerd.Client.idempotent` for async functions: the
        decorated coroutine function runs through ``await client.do(...)``;
        its lease is :func:`ledgerd.current_lease` (a context variable: each
        task sees its own)."""
        options = _Options(namespace, key, serializer, deserializer, fingerprint, do_options)

        def decorate(fn: _F) -> _F:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"idempotent: {fn.__qualname__} is not async: decorate it with a ledgerd.Client")

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                async def work(lease: Lease) -> bytes:
                    # do() made this lease current for the task running the work.
                    return options.serialize(fn, await fn(*args, **kwargs))

                result = await self.do(  # type: ignore[attr-defined]
                    options.namespace, options.key_of(fn, args, kwargs), work, **options.call_options(args, kwargs)
                )
                return options.deserializer(result.value)

            return wrapper  # type: ignore[return-value]

        return decorate
