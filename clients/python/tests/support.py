"""Helpers shared by the tests (not a test module)."""

from __future__ import annotations

import os
import sys
import threading
import uuid
from typing import Callable, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)  # clients/python
SRC = os.path.join(ROOT, "src")
GEN = os.path.join(ROOT, "gen")
EXAMPLES = os.path.join(ROOT, "examples")
#: The interpreter that has grpcio and protobuf (Debian's), for child processes.
PYTHON = sys.executable or "/usr/bin/python3"

for path in (SRC, GEN):
    if path not in sys.path:
        sys.path.insert(0, path)


def ledgerd_addr() -> str:
    """The address of the live ledgerd under test, from LEDGERD_ADDR.

    Fails loudly when it is unset: these tests must not pass by skipping.
    """
    addr = os.environ.get("LEDGERD_ADDR", "").strip()
    if not addr:
        raise RuntimeError(
            "LEDGERD_ADDR is not set: the live tests need a running ledgerd "
            "(started with --min-lease-ttl 50ms), e.g. LEDGERD_ADDR=127.0.0.1:7441"
        )
    return addr


def unique_namespace(prefix: str = "pytest") -> str:
    """A namespace no other test (or run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def child_env() -> dict:
    """The environment of a child Python that imports ledgerd from the source tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, GEN] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


class Background:
    """Runs a function in a thread and keeps its result or exception."""

    def __init__(self, target: Callable[[], object]) -> None:
        self.result: object = None
        self.error: Optional[BaseException] = None
        self._target = target
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._target()
        except BaseException as error:  # noqa: BLE001 - reported by join()
            self.error = error

    def join(self, timeout: float) -> object:
        """Waits up to timeout seconds; re-raises the thread's exception; returns its result."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"background thread still running after {timeout}s")
        if self.error is not None:
            raise self.error
        return self.result


class Calls:
    """A thread-safe list of calls, for counting runs of work."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: List[object] = []

    def add(self, item: object) -> None:
        with self._lock:
            self.items.append(item)

    def __len__(self) -> int:
        with self._lock:
            return len(self.items)
