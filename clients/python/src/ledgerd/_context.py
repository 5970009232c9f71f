"""The lease of the work that is running, as a context variable (internal).

:func:`ledgerd.current_lease` reads it: a function wrapped by
``Client.idempotent`` (or any work of do()) finds its lease there without a
parameter for it. A context variable follows both threads (the sync client
runs the work in the caller's thread) and asyncio tasks (each task has its
own context), so concurrent works never see each other's lease.
"""

from __future__ import annotations

import contextvars
from typing import Callable, Optional, TypeVar

from .lease import Lease

__all__ = ["current_lease", "using_lease"]

_T = TypeVar("_T")

_lease: "contextvars.ContextVar[Optional[Lease]]" = contextvars.ContextVar("ledgerd_lease", default=None)


def current_lease() -> Lease:
    """Returns the lease of the do() work (or ``idempotent`` function) that is running.

    Its ``fencing_token`` is what downstream writes carry; its
    ``set_checkpoint`` stages a checkpoint for the next heartbeat; its
    ``cancelled`` says when the work should stop. A work that runs unguarded
    (the fail-open fallback) sees a lease with ``fencing_token`` 0 and
    ``unguarded`` True.

    Raises:
        LookupError: called outside such a work.
    """
    lease = _lease.get()
    if lease is None:
        raise LookupError("ledgerd.current_lease() is called outside the work of do() or of an idempotent function")
    return lease


def using_lease(lease: Lease, work: Callable[[Lease], _T]) -> _T:
    """Calls ``work(lease)`` with ``lease`` as the current lease. For an async
    work, the coroutine is made here and runs in the caller's task, whose
    context the caller resets with :func:`reset`."""
    token = _lease.set(lease)
    try:
        return work(lease)
    finally:
        _lease.reset(token)


def set_lease(lease: Lease) -> "contextvars.Token[Optional[Lease]]":
    """Makes ``lease`` the current lease of this context; undo with :func:`reset`."""
    return _lease.set(lease)


def reset(token: "contextvars.Token[Optional[Lease]]") -> None:
    """Restores the current lease that :func:`set_lease` replaced."""
    _lease.reset(token)
