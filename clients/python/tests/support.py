"""Helpers shared by the tests (not a test module)."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import sys
import threading
import time
import uuid
from typing import Callable, Iterator, List, Optional, Tuple

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)  # clients/python
SRC = os.path.join(ROOT, "src")
EXAMPLES = os.path.join(ROOT, "examples")
#: The interpreter that has grpcio and protobuf (Debian's), for child processes.
PYTHON = sys.executable or "/usr/bin/python3"

if SRC not in sys.path:
    sys.path.insert(0, SRC)


#: The bound, in seconds, of every wait in these tests for something that
#: should happen (a call to return, a heartbeat to land, a lease to run
#: out): far longer than it ever takes, even on a machine busy with other
#: work, so that it only ends a test that is broken. Tests wait for
#: conditions, never for an interval that is assumed to be long enough.
PATIENCE = 60.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = PATIENCE, interval: float = 0.02) -> object:
    """Polls ``condition`` until it returns something truthy, and returns it.

    Fails the test (AssertionError naming ``what``) when ``timeout`` seconds
    pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not so after {timeout}s")
        time.sleep(interval)


@contextlib.contextmanager
def recorded_sleeps() -> Iterator[List[float]]:
    """Records the durations of the time.sleep calls that the calling thread
    makes inside the block (they still sleep), in a list it yields: what a
    client waits between calls, measured without a clock."""
    sleeps: List[float] = []
    caller = threading.get_ident()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        if threading.get_ident() == caller:
            sleeps.append(seconds)
        real_sleep(seconds)

    time.sleep = sleep  # type: ignore[assignment]
    try:
        yield sleeps
    finally:
        time.sleep = real_sleep  # type: ignore[assignment]


class CallWatcher(grpc.UnaryUnaryClientInterceptor):
    """A client interceptor that records the calls made through it, as
    (method name, request), when they are sent; a test waits for one with
    :meth:`wait_for_call`. Use it with grpc.intercept_channel."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.calls: List[Tuple[str, object]] = []

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        with self._cond:
            self.calls.append((client_call_details.method.rsplit("/", 1)[-1], request))
            self._cond.notify_all()
        return continuation(client_call_details, request)

    def requests(self, method: str) -> List[object]:
        """The requests of the calls of method (e.g. "Reserve") sent so far."""
        with self._cond:
            return [request for name, request in self.calls if name == method]

    def wait_for_call(self, method: str, count: int = 1, timeout: float = PATIENCE) -> None:
        """Waits until count calls of method have been sent."""
        with self._cond:
            if not self._cond.wait_for(lambda: len([n for n, _ in self.calls if n == method]) >= count, timeout):
                raise AssertionError(f"{count} {method} call(s) not sent after {timeout}s")


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
    env["PYTHONPATH"] = os.pathsep.join([SRC] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
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


class TcpProxy:
    """Forwards TCP connections from 127.0.0.1:<port> (:attr:`addr`) to target
    ("host:port"), so that a test can make a live ledgerd unreachable.

    :meth:`cut` destroys the open connections and refuses new ones (they are
    accepted and closed at once) until :meth:`restore`; :meth:`close` also
    closes the listening socket (new connections are then refused by the
    kernel) and joins every thread it started. Use it as a context manager,
    or close it (closing twice is harmless).
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host.strip("[]") or "127.0.0.1", int(port))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.addr = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: List[socket.socket] = []
        self._pumps: List[threading.Thread] = []
        self._cut = False
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="test-proxy-accept", daemon=True)
        self._acceptor.start()

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.05)
            if not ready:
                continue
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                refuse = self._cut or self._closed.is_set()
            if refuse:
                _hang_up(conn)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _hang_up(conn)
                continue
            with self._lock:
                if self._cut or self._closed.is_set():
                    _hang_up(conn)
                    _hang_up(upstream)
                    continue
                self._sockets += [conn, upstream]
                for src, dst in ((conn, upstream), (upstream, conn)):
                    pump = threading.Thread(target=_pump, args=(src, dst), name="test-proxy-pump", daemon=True)
                    self._pumps.append(pump)
                    pump.start()

    def cut(self) -> None:
        """Destroys the open connections (with a reset) and refuses new ones."""
        with self._lock:
            self._cut = True
            sockets, self._sockets = self._sockets, []
            pumps, self._pumps = self._pumps, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pumps blocked in recv
            except OSError:
                pass
        for pump in pumps:
            pump.join(5)
        for sock in sockets:
            _hang_up(sock)

    def restore(self) -> None:
        """Forwards new connections again (after :meth:`cut`)."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        """Closes the listening socket and destroys the open connections."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._acceptor.join(5)
        self._listener.close()
        self.cut()

    def threads(self) -> List[threading.Thread]:
        """The proxy's threads that are still alive (none after close)."""
        with self._lock:
            pumps = list(self._pumps)
        return [t for t in [self._acceptor] + pumps if t.is_alive()]


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _hang_up(sock: socket.socket) -> None:
    """Closes sock with a reset (SO_LINGER 0), as a vanished peer would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
