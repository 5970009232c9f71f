"""Retries, timeouts and do()'s waiting logic against a scripted in-process server.

These tests need no ledgerd: a fake LedgerService answers what each test
scripts (errors with ledgerd's status details, IN_PROGRESS without waiting,
a refused wait_timeout...), which a real server cannot be made to do on cue.

What the client waits between calls is read from the time.sleep calls it
makes (support.recorded_sleeps), not from a clock, so that a busy machine
cannot fail these tests; the timeouts of calls whose duration is not the
point are generous.
"""

from __future__ import annotations

import socket
import threading
import time
import unittest
from concurrent import futures

import support

import grpc
from ledgerd.pb import ledger_pb2, ledger_pb2_grpc

import ledgerd
from google.protobuf.duration_pb2 import Duration
from test_status import BadRequest, ErrorInfo, _status_bytes

#: The timeout of a call whose duration is not what the test is about.
TIMEOUT = support.PATIENCE


class _RetryInfo:
    """A google.rpc.RetryInfo{retry_delay}, serialized by hand (field 1: a Duration)."""

    def __init__(self, seconds):
        self.duration = Duration()
        self.duration.FromNanoseconds(int(seconds * 1e9))

    def SerializeToString(self):  # noqa: N802 - the protobuf method name
        body = self.duration.SerializeToString()
        return b"\x0a" + bytes([len(body)]) + body


def abort(context, code, reason, message="scripted error", field=None, retry_delay=None):
    """Ends the call like ledgerd does: a status with an ErrorInfo (and a
    BadRequest, and a RetryInfo when given a retry_delay)."""
    info = ErrorInfo(reason=reason, domain="ledgerd")
    details = [("type.googleapis.com/google.rpc.ErrorInfo", info)]
    if retry_delay is not None:
        details.append(("type.googleapis.com/google.rpc.RetryInfo", _RetryInfo(retry_delay)))
    if field:
        info.metadata["field"] = field
        bad = BadRequest()
        bad.field_violations.add(field=field, description=message)
        details.append(("type.googleapis.com/google.rpc.BadRequest", bad))
    context.set_trailing_metadata((("grpc-status-details-bin", _status_bytes(code.value[0], message, *details)),))
    context.abort(code, message)


def in_progress(retry_after=0.1, owner="someone-else"):
    response = ledger_pb2.ReserveResponse()
    response.in_progress.owner = owner
    response.in_progress.attempt = 1
    response.in_progress.retry_after.FromNanoseconds(int(retry_after * 1e9))
    return response


def completed(value=b"stored", token=7):
    response = ledger_pb2.ReserveResponse()
    response.completed.result = value
    response.completed.fencing_token = token
    response.completed.owner = "someone-else"
    response.completed.completed_at.FromSeconds(1_700_000_000)
    return response


def acquired(token=1, ttl=30.0):
    response = ledger_pb2.ReserveResponse()
    response.acquired.fencing_token = token
    response.acquired.attempt = 1
    response.acquired.lease_ttl.FromNanoseconds(int(ttl * 1e9))
    return response


class FakeLedger(ledger_pb2_grpc.LedgerServiceServicer):
    """Answers each RPC with the handler a test set, and records the requests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {name: [] for name in ("reserve", "heartbeat", "complete", "fail", "release", "lookup")}
        self.handlers = {}

    def _handle(self, name, request, context):
        with self.lock:
            self.requests[name].append(request)
            n = len(self.requests[name])
        handler = self.handlers.get(name)
        if handler is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"no handler for {name}")
        return handler(n, request, context)

    def Reserve(self, request, context):
        return self._handle("reserve", request, context)

    def Heartbeat(self, request, context):
        return self._handle("heartbeat", request, context)

    def Complete(self, request, context):
        return self._handle("complete", request, context)

    def Fail(self, request, context):
        return self._handle("fail", request, context)

    def Release(self, request, context):
        return self._handle("release", request, context)

    def Lookup(self, request, context):
        return self._handle("lookup", request, context)


class FakeServerTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeLedger()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        ledger_pb2_grpc.add_LedgerServiceServicer_to_server(self.fake, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.client = ledgerd.Client(f"127.0.0.1:{port}", insecure=True)

    def tearDown(self):
        self.client.close()
        self.server.stop(0).wait(5)

    def test_retries_unavailable_until_success(self):
        def lookup(n, request, context):
            if n <= 2:
                abort(context, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
            return ledger_pb2.LookupResponse(entry=ledger_pb2.Entry(key=request.key))

        self.fake.handlers["lookup"] = lookup
        with support.recorded_sleeps() as sleeps:
            response = self.client.lookup(namespace="ns", key="k", timeout=TIMEOUT)
        self.assertEqual(response.entry.key, "k")
        self.assertEqual(len(self.fake.requests["lookup"]), 3)
        # Backoff with jitter: [50ms/2, 50ms), then [100ms/2, 100ms).
        self.assertEqual(len(sleeps), 2, sleeps)
        self.assertTrue(0.025 <= sleeps[0] < 0.05, sleeps)
        self.assertTrue(0.05 <= sleeps[1] < 0.1, sleeps)

    def test_server_deadline_exceeded_is_retried(self):
        def lookup(n, request, context):
            if n == 1:
                abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
            return ledger_pb2.LookupResponse(entry=ledger_pb2.Entry(key=request.key))

        self.fake.handlers["lookup"] = lookup
        self.assertEqual(self.client.lookup(namespace="ns", key="k", timeout=TIMEOUT).entry.key, "k")
        self.assertEqual(len(self.fake.requests["lookup"]), 2)

    def test_gives_up_when_the_timeout_runs_out(self):
        self.fake.handlers["lookup"] = lambda n, r, c: abort(c, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "db down")
        # Without the breaker and the budget, which would end it sooner.
        self.client = ledgerd.Client.from_channel(self.client._channel, breaker=None, retry_budget=None)
        started = time.monotonic()
        with self.assertRaises(ledgerd.UnavailableError) as caught:
            self.client.lookup(namespace="ns", key="k", timeout=2)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 2)
        self.assertLess(elapsed, 2 + TIMEOUT, "it gave up when its timeout ran out")
        self.assertGreaterEqual(len(self.fake.requests["lookup"]), 3)  # 50ms, 100ms, 200ms... backoff
        self.assertIn("db down", str(caught.exception))
        self.assertIn("gave up", str(caught.exception))
        self.assertEqual(caught.exception.operation, "lookup")

    def test_retries_wait_for_the_servers_retry_info(self):
        def lookup(n, request, context):
            if n == 1:
                abort(context, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "draining", retry_delay=1.0)
            return ledger_pb2.LookupResponse(entry=ledger_pb2.Entry(key=request.key))

        self.fake.handlers["lookup"] = lookup
        started = time.monotonic()
        self.assertEqual(self.client.lookup(namespace="ns", key="k", timeout=TIMEOUT).entry.key, "k")
        # The backoff alone would have waited 50ms at most.
        self.assertGreaterEqual(time.monotonic() - started, 1.0, "the retry waited for the RetryInfo delay")
        self.assertEqual(len(self.fake.requests["lookup"]), 2)
        self.assertEqual(self.client.stats().retries, 1)

    def test_budget_and_max_attempts_bound_retries(self):
        self.fake.handlers["lookup"] = lambda n, r, c: abort(c, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "db down")
        client = ledgerd.Client.from_channel(
            self.client._channel, breaker=None, retry_budget={"max_tokens": 3, "ratio": 0}, max_attempts=3
        )
        with self.assertRaisesRegex(ledgerd.UnavailableError, r"max_attempts"):
            client.lookup(namespace="ns", key="k", timeout=TIMEOUT)
        with self.assertRaisesRegex(ledgerd.UnavailableError, r"retry budget exhausted") as caught:
            client.lookup(namespace="ns", key="k", timeout=TIMEOUT)
        self.assertIn("db down", str(caught.exception))
        stats = client.stats()
        self.assertEqual((stats.calls, stats.retries, stats.retries_refused), (2, 3, 1))
        self.assertEqual(len(self.fake.requests["lookup"]), 5)

    def test_open_breaker_refuses_guarded_calls_only(self):
        self.fake.handlers["lookup"] = lambda n, r, c: abort(c, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "db down")
        self.fake.handlers["release"] = lambda n, r, c: ledger_pb2.ReleaseResponse()
        changes = []
        client = ledgerd.Client.from_channel(
            self.client._channel,
            breaker={"failure_threshold": 2, "open_for": 600},
            on_breaker_change=lambda old, new, error: changes.append((old, new)),
        )
        with self.assertRaises(ledgerd.CircuitOpenError):
            client.lookup(namespace="ns", key="k", timeout=TIMEOUT)
        self.assertEqual(len(self.fake.requests["lookup"]), 2)
        with self.assertRaises(ledgerd.CircuitOpenError):
            client.lookup(namespace="ns", key="k", timeout=TIMEOUT)
        self.assertEqual(len(self.fake.requests["lookup"]), 2, "no attempt while open")
        client.release(namespace="ns", key="k", fencing_token=1, timeout=TIMEOUT)  # not guarded
        self.assertEqual(len(self.fake.requests["release"]), 1)
        self.assertEqual(changes, [("closed", "open")])
        self.assertEqual(client.stats().breaker_opens, 1)

    def test_default_timeout_bounds_calls(self):
        self.fake.handlers["lookup"] = lambda n, r, c: abort(c, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
        client = ledgerd.Client.from_channel(self.client._channel, default_timeout=1, breaker=None)
        started = time.monotonic()
        with self.assertRaises(ledgerd.UnavailableError):
            client.lookup(namespace="ns", key="k")  # without a timeout, it would retry for ever
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 1)
        self.assertLess(elapsed, 1 + TIMEOUT)
        client.close()  # does not close the channel it was given
        self.fake.handlers["lookup"] = lambda n, r, c: ledger_pb2.LookupResponse()
        self.client.lookup(namespace="ns", key="k", timeout=TIMEOUT)

    def test_other_errors_are_raised_at_once(self):
        self.fake.handlers["complete"] = lambda n, r, c: abort(c, grpc.StatusCode.ABORTED, "LEASE_LOST", "token 1 is stale")
        with self.assertRaises(ledgerd.LeaseLostError) as caught:
            self.client.complete(namespace="ns", key="k", fencing_token=1, result=b"x", timeout=TIMEOUT)
        self.assertEqual(len(self.fake.requests["complete"]), 1)
        self.assertEqual(caught.exception.code, grpc.StatusCode.ABORTED)
        self.assertEqual(str(caught.exception), "complete: LEASE_LOST: token 1 is stale")
        self.assertIsInstance(caught.exception.__cause__, grpc.RpcError)

    def test_a_stuck_attempt_is_abandoned_and_retried(self):
        unstuck = threading.Event()

        def lookup(n, request, context):
            if n == 1:
                unstuck.wait(TIMEOUT)  # stuck until the test has its answer
                return ledger_pb2.LookupResponse(entry=ledger_pb2.Entry(key="first"))
            return ledger_pb2.LookupResponse(entry=ledger_pb2.Entry(key="retry"))

        self.fake.handlers["lookup"] = lookup
        client = ledgerd.Client.from_channel(self.client._channel, attempt_timeout=0.5)
        try:
            # The answer comes from a later attempt, while the first is still stuck.
            self.assertEqual(client.lookup(namespace="ns", key="k", timeout=TIMEOUT).entry.key, "retry")
        finally:
            unstuck.set()
        self.assertGreaterEqual(len(self.fake.requests["lookup"]), 2)

    def test_do_polls_with_the_hint_when_the_server_answers_at_once(self):
        def reserve(n, request, context):
            return in_progress(retry_after=0.1) if n <= 2 else completed(b"theirs")

        self.fake.handlers["reserve"] = reserve
        with support.recorded_sleeps() as sleeps:
            result = self.client.do("ns", "k", lambda lease: self.fail("work must not run"), timeout=20)
        self.assertEqual((result.value, result.replayed, result.fencing_token, result.attempt), (b"theirs", True, 7, 0))
        self.assertEqual(result.completed_at.timestamp(), 1_700_000_000)
        # Two hints of 100ms, each with up to 25% of jitter.
        self.assertEqual(len(sleeps), 2, sleeps)
        for pause in sleeps:
            self.assertTrue(0.1 <= pause <= 0.125, sleeps)
        requests = self.fake.requests["reserve"]
        self.assertEqual(len(requests), 3)
        for request in requests:
            self.assertTrue(request.HasField("wait_timeout"), "do() asks the server to wait")
            wait = request.wait_timeout.ToNanoseconds() / 1e9
            self.assertGreater(wait, 10)
            self.assertLessEqual(wait, 19)  # within the 20s timeout, less a margin of 1s

    def test_do_does_not_sleep_after_a_full_server_wait(self):
        def reserve(n, request, context):
            if n == 1:
                # A server whose own maximum wait (1s) is shorter than the
                # one asked for: it waited all of it, then answered.
                time.sleep(1.0)
                return in_progress(retry_after=5.0)
            return completed()

        self.fake.handlers["reserve"] = reserve
        with support.recorded_sleeps() as sleeps:
            self.assertTrue(self.client.do("ns", "k", lambda lease: b"", timeout=TIMEOUT).replayed)
        self.assertEqual(sleeps, [], "no sleep for the hint after the server waited")
        self.assertEqual(len(self.fake.requests["reserve"]), 2)

    def test_do_falls_back_to_polling_when_wait_timeout_is_refused(self):
        def reserve(n, request, context):
            if request.HasField("wait_timeout"):
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "wait too long", field="wait_timeout")
            return completed()

        self.fake.handlers["reserve"] = reserve
        self.assertTrue(self.client.do("ns", "k", lambda lease: b"", timeout=TIMEOUT).replayed)
        self.assertEqual([r.HasField("wait_timeout") for r in self.fake.requests["reserve"]], [True, False])

    def test_do_without_wait_raises_in_progress(self):
        self.fake.handlers["reserve"] = lambda n, r, c: in_progress(retry_after=2.0, owner="holder-1")
        with self.assertRaises(ledgerd.InProgressError) as caught:
            self.client.do("ns", "k", lambda lease: b"", wait=False, timeout=TIMEOUT)
        self.assertEqual(caught.exception.owner, "holder-1")
        self.assertEqual(caught.exception.retry_after, 2.0)
        self.assertEqual(caught.exception.reason, "IN_PROGRESS")
        self.assertEqual(len(self.fake.requests["reserve"]), 1)
        self.assertFalse(self.fake.requests["reserve"][0].HasField("wait_timeout"))

    def test_do_timeout_while_the_key_is_held(self):
        # Answered at once, with a hint longer than the whole timeout: do()
        # sleeps on the hint until its timeout runs out, and no Reserve is
        # left in flight to run into it.
        self.fake.handlers["reserve"] = lambda n, r, c: in_progress(retry_after=5.0)
        started = time.monotonic()
        with self.assertRaises(ledgerd.InProgressError) as caught:
            self.client.do("ns", "k", lambda lease: b"", timeout=0.9)
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        self.assertIn("timeout ran out", str(caught.exception))

    def test_work_must_return_bytes(self):
        self.fake.handlers["reserve"] = lambda n, r, c: acquired()
        self.fake.handlers["fail"] = lambda n, r, c: ledger_pb2.FailResponse(state=ledger_pb2.STATE_RELEASED)
        with self.assertRaises(TypeError):
            self.client.do("ns", "k", lambda lease: "a str", timeout=TIMEOUT)
        (fail,) = self.fake.requests["fail"]
        self.assertTrue(fail.retryable)
        self.assertIn("returned str", fail.error.message)
        self.assertEqual(self.fake.requests["complete"], [])

    def test_unknown_work_error_message_is_bounded(self):
        self.fake.handlers["reserve"] = lambda n, r, c: acquired()
        self.fake.handlers["fail"] = lambda n, r, c: ledger_pb2.FailResponse(state=ledger_pb2.STATE_RELEASED)

        def work(lease):
            raise RuntimeError("\x00é" * 5000)

        with self.assertRaises(RuntimeError):
            self.client.do("ns", "k", work, timeout=TIMEOUT)
        (fail,) = self.fake.requests["fail"]
        message = fail.error.message
        self.assertTrue(message.startswith("RuntimeError: é"))
        self.assertNotIn("\x00", message)
        self.assertLessEqual(len(message.encode()), 4096)

    def test_a_failed_fail_is_noted_on_the_work_error(self):
        self.fake.handlers["reserve"] = lambda n, r, c: acquired()
        self.fake.handlers["fail"] = lambda n, r, c: abort(c, grpc.StatusCode.ABORTED, "LEASE_LOST")

        def work(lease):
            raise KeyError("x")

        with self.assertRaises(KeyError) as caught:
            self.client.do("ns", "k", work, timeout=TIMEOUT)
        notes = getattr(caught.exception, "__notes__", [])
        if hasattr(caught.exception, "add_note"):
            self.assertTrue(any("LEASE_LOST" in note for note in notes), notes)


class ConstructionTest(unittest.TestCase):
    def test_transport_security_must_be_chosen(self):
        with self.assertRaises(ValueError):
            ledgerd.Client("127.0.0.1:1")
        with self.assertRaises(ValueError):
            ledgerd.Client("127.0.0.1:1", insecure=True, credentials=grpc.ssl_channel_credentials())
        ledgerd.Client("127.0.0.1:1", credentials=grpc.ssl_channel_credentials()).close()
        with ledgerd.Client("127.0.0.1:1", insecure=True) as client:
            self.assertIsInstance(client, ledgerd.Client)

    def test_timeouts_must_be_positive(self):
        with self.assertRaises(ValueError):
            ledgerd.Client("127.0.0.1:1", insecure=True, default_timeout=0)
        with ledgerd.Client("127.0.0.1:1", insecure=True) as client:
            with self.assertRaises(ValueError):
                client.lookup(namespace="ns", key="k", timeout=-1)
            with self.assertRaises(TypeError):
                client.do("ns", "k", b"not callable")  # type: ignore[arg-type]

    def test_max_receive_message_bytes(self):
        from ledgerd.client import _channel_options

        self.assertEqual(_channel_options(None, 64 << 20), [("grpc.max_receive_message_length", 64 << 20)])
        self.assertEqual(
            _channel_options([("grpc.keepalive_time_ms", 1000)], 1 << 20),
            [("grpc.max_receive_message_length", 1 << 20), ("grpc.keepalive_time_ms", 1000)],
        )
        # An explicit channel option wins.
        self.assertEqual(
            _channel_options([("grpc.max_receive_message_length", 5)], 1 << 20),
            [("grpc.max_receive_message_length", 5)],
        )
        for bad in (0, -2):
            with self.assertRaises(ValueError):
                ledgerd.Client("127.0.0.1:1", insecure=True, max_receive_message_bytes=bad)
        with self.assertRaises(TypeError):
            ledgerd.Client("127.0.0.1:1", insecure=True, max_receive_message_bytes=1.5)  # type: ignore[arg-type]
        ledgerd.Client("127.0.0.1:1", insecure=True, max_receive_message_bytes=-1).close()  # no limit

    def test_calls_after_close_are_cancelled(self):
        client = ledgerd.Client("127.0.0.1:1", insecure=True)
        client.close()
        client.close()
        with self.assertRaises(ledgerd.CancelledError) as caught:
            client.lookup(namespace="ns", key="k", timeout=1)
        self.assertEqual(caught.exception.reason, "CANCELED")

    def test_unreachable_server_is_retried_then_unavailable(self):
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with ledgerd.Client(f"127.0.0.1:{port}", insecure=True, breaker=None) as client:
            started = time.monotonic()
            with self.assertRaises(ledgerd.UnavailableError) as caught:
                client.lookup(namespace="ns", key="k", timeout=2)
            elapsed = time.monotonic() - started
            self.assertGreaterEqual(elapsed, 2, "retried until the timeout ran out")
            self.assertLess(elapsed, 2 + TIMEOUT)
            self.assertEqual(caught.exception.reason, "UNAVAILABLE")
        # With the default breaker, five refused connections open it: the
        # call then fails at once, before its timeout, without a new attempt.
        with ledgerd.Client(f"127.0.0.1:{port}", insecure=True) as client:
            with self.assertRaises(ledgerd.CircuitOpenError) as caught:
                client.lookup(namespace="ns", key="k", timeout=TIMEOUT)
            self.assertIn("circuit open since", str(caught.exception))
            self.assertIsInstance(caught.exception.last_error, ledgerd.UnavailableError)
            self.assertEqual(client.breaker_state, "open")
            self.assertEqual(client.stats().calls, 1)
            self.assertEqual(client.stats().retries, 4)

    def test_default_owner(self):
        a, b = ledgerd.default_owner(), ledgerd.default_owner()
        self.assertNotEqual(a, b)
        host, pid, suffix = a.split("/")
        self.assertEqual(int(pid), __import__("os").getpid())
        self.assertEqual(len(suffix), 8)


if __name__ == "__main__":
    unittest.main()
