"""The lease a work function runs under, and the result of :meth:`ledgerd.Client.do`."""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from .errors import LeaseLostError

__all__ = ["Lease", "Result"]

BytesLike = Union[bytes, bytearray, memoryview]


@dataclass(frozen=True)
class Result:
    """The outcome of a :meth:`~ledgerd.Client.do` that recorded or replayed a result.

    Attributes:
        value: the work's result: returned by the work in this call, or
            stored by an earlier one and replayed.
        fencing_token: the token of the grant under which ``value`` was recorded.
        attempt: the number of the grant that ran the work in this call (1 for
            the first grant of the key); 0 when ``replayed`` (the ledger does
            not report it with a replay).
        replayed: True when the key was already completed: ``value`` is the
            stored result and the work did not run.
        completed_at: when the key was completed (aware UTC datetime, the
            database's clock), or None if the server did not say.
        unguarded: True when the ledger could not be reached and the
            ``fail_open`` fallback ran the work without a lease
            (``fencing_token`` is then 0, and the result is recorded later,
            in the background, if the key is still free).
    """

    value: bytes
    fencing_token: int
    attempt: int
    replayed: bool
    completed_at: Optional[datetime.datetime]
    unguarded: bool = False

    @property
    def outcome(self) -> str:
        """How do() ended: ``"ran"`` (the work ran under a lease and its result
        was recorded), ``"replayed"`` (a stored result; the work did not run)
        or ``"ran_unguarded"`` (fail-open: the work ran without a lease)."""
        if self.replayed:
            return "replayed"
        return "ran_unguarded" if self.unguarded else "ran"


class Lease:
    """The grant under which :meth:`~ledgerd.Client.do` runs the work; passed to it.

    Made by do(), never by the caller. Attributes (read-only):

    - ``namespace``, ``key``: the key being worked on.
    - ``owner``: the owner that holds the lease.
    - ``fencing_token``: identifies this grant; it strictly increases every
      time a lease on the key is granted. Pass it to downstream systems with
      every write, so that they can refuse writes from a worker that was taken
      over (one with an older token).
    - ``attempt``: counts the grants of the key: 1 for the first, one more for
      every takeover.
    - ``takeover``: True when the key had been held before and this grant took
      it over (the earlier worker failed, gave up, or its lease expired).
    - ``previous_owner``: the owner before a takeover; ``""`` otherwise.
    - ``checkpoint``: the last checkpoint an earlier holder stored (see
      :meth:`set_checkpoint`), so that the work can resume instead of starting
      over; ``b""`` if none.
    - ``ttl``: the granted lease duration in seconds; do() heartbeats well
      within it.
    - ``lease_expires_at``: when the lease granted by Reserve runs out without
      a heartbeat (aware UTC datetime, database clock), or None.
    - ``unguarded``: True when there is no lease at all: the ledger could
      not be reached and the ``fail_open`` fallback runs the work anyway
      (``fencing_token`` is 0, nothing heartbeats, and checkpoints are not
      stored). Another worker may run the same work at the same time.
    - ``cancelled``: a :class:`threading.Event` set when the work should stop:
      the lease was lost or could not be kept (:attr:`lost`: another worker
      took the key over, or no heartbeat was acknowledged before the lease
      ran out, e.g. because ledgerd is unreachable), a heartbeat was refused,
      or do()'s timeout ran out. :attr:`cancel_reason` says which. Long work should
      check it (``lease.cancelled.is_set()``, ``lease.cancelled.wait(t)``, or
      :meth:`raise_if_cancelled`) between steps.
    """

    def __init__(
        self,
        *,
        namespace: str,
        key: str,
        owner: str,
        fencing_token: int,
        attempt: int,
        takeover: bool,
        previous_owner: str,
        checkpoint: bytes,
        ttl: float,
        lease_expires_at: Optional[datetime.datetime],
        unguarded: bool = False,
    ) -> None:
        self.namespace = namespace
        self.key = key
        self.owner = owner
        self.fencing_token = fencing_token
        self.attempt = attempt
        self.takeover = takeover
        self.previous_owner = previous_owner
        self.checkpoint = checkpoint
        self.ttl = ttl
        self.lease_expires_at = lease_expires_at
        self.unguarded = unguarded
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._cancel_reason: Optional[BaseException] = None
        self._staged: Optional[bytes] = None
        self._staged_version = 0
        self._stored_version = 0

    def __repr__(self) -> str:
        return (
            f"Lease(namespace={self.namespace!r}, key={self.key!r}, owner={self.owner!r}, "
            f"fencing_token={self.fencing_token}, attempt={self.attempt}, takeover={self.takeover}, "
            f"unguarded={self.unguarded}, cancelled={self.cancelled.is_set()})"
        )

    @property
    def cancel_reason(self) -> Optional[BaseException]:
        """Why :attr:`cancelled` is set: a :class:`~ledgerd.LeaseLostError` (also
        when no heartbeat was acknowledged before the lease ran out), another
        :class:`~ledgerd.LedgerError` that refused a heartbeat, or a
        :class:`~ledgerd.DeadlineExceededError` for do()'s timeout; None while
        the lease is good."""
        with self._lock:
            return self._cancel_reason

    @property
    def lost(self) -> bool:
        """True once a heartbeat learned that another worker took the key over, or
        no heartbeat could be acknowledged before the lease ran out (another
        worker may take it over): :attr:`cancel_reason` is then a
        :class:`~ledgerd.LeaseLostError`."""
        return isinstance(self.cancel_reason, LeaseLostError)

    def raise_if_cancelled(self) -> None:
        """Raises :attr:`cancel_reason` if :attr:`cancelled` is set; returns otherwise."""
        reason = self.cancel_reason
        if reason is not None:
            raise reason

    def set_checkpoint(self, checkpoint: BytesLike) -> None:
        """Stages ``checkpoint`` to be stored with the lease's next heartbeat.

        A checkpoint is whatever lets a later worker resume: a cursor, an
        offset, a phase name. If this worker then fails, gives up or dies, the
        worker that takes the key over finds the last stored checkpoint in its
        :attr:`checkpoint`. do() also stores a staged checkpoint before it
        records a retryable failure or releases the lease. An empty
        checkpoint clears the stored one. The bytes are copied.

        Its size is limited by the server (64 KiB unless configured); a
        heartbeat that carries a larger one is refused with
        :class:`~ledgerd.InvalidArgumentError`, which cancels the work.
        """
        if not isinstance(checkpoint, (bytes, bytearray, memoryview)):
            raise TypeError(f"checkpoint must be bytes, got {type(checkpoint).__name__}")
        with self._lock:
            self._staged = bytes(checkpoint)
            self._staged_version += 1

    # Internal: used by the client.

    def _cancel(self, reason: BaseException) -> None:
        with self._lock:
            if self._cancel_reason is None:
                self._cancel_reason = reason
        self.cancelled.set()

    def _pending(self) -> Tuple[Optional[bytes], int]:
        """The staged checkpoint the ledger does not hold yet (None if none), and its version."""
        with self._lock:
            if self._staged_version == self._stored_version:
                return None, 0
            return self._staged, self._staged_version

    def _mark_stored(self, version: int) -> None:
        with self._lock:
            self._stored_version = max(self._stored_version, version)
