"""Retries, backoff and cancellation of calls (internal)."""

from __future__ import annotations

import random
import threading
from typing import Callable, List, Optional

import grpc

#: The wait before the first retry, in seconds.
RETRY_INITIAL_BACKOFF = 0.05
#: The longest wait between two attempts, in seconds.
RETRY_MAX_BACKOFF = 5.0
#: The longest wait between two Reserves while another owner holds the key
#: and the server answered at once, so that the holder's result is replayed
#: soon after it completes even when its lease is long.
MAX_POLL_INTERVAL = 1.0

#: The status codes worth another attempt: every ledgerd RPC is retry-safe.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def jitter(delay: float) -> float:
    """Returns a random duration in [delay/2, delay), so that clients that
    failed together do not retry together."""
    return delay / 2 + random.uniform(0, delay / 2)


def poll_interval(retry_after: float) -> float:
    """Turns the server's retry-after hint into the wait before the next
    Reserve: at most MAX_POLL_INTERVAL, plus up to a quarter of jitter."""
    wait = min(max(retry_after, 0.001), MAX_POLL_INTERVAL)
    return wait + random.uniform(0, wait / 4)


class Stopped(Exception):
    """Raised by a call whose Stopper was stopped (internal)."""


class Stopper:
    """A one-shot stop signal that also cancels the RPC in flight."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: List[Callable[[], object]] = []

    def stop(self) -> None:
        """Sets the signal and runs the registered callbacks (once)."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def is_set(self) -> bool:
        """Whether stop was called."""
        return self._event.is_set()

    def wait(self, timeout: Optional[float]) -> bool:
        """Waits up to timeout seconds for stop; returns whether it was called."""
        return self._event.wait(timeout)

    def register(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Runs callback on stop (at once if stopped already); returns the
        function that unregisters it."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)

                def unregister() -> None:
                    with self._lock:
                        try:
                            self._callbacks.remove(callback)
                        except ValueError:
                            pass

                return unregister
        callback()
        return lambda: None
