"""The client against a live ledgerd (address in LEDGERD_ADDR; started with --min-lease-ttl 50ms).

Every test uses its own namespace, and bounds every wait, so that a broken
server fails a test instead of hanging the run. The tests must hold on a
machine busy with other work: they wait for conditions (with the generous
bound support.PATIENCE), never for an interval assumed to be long enough;
their leases outlast any stall unless a test ends them itself; and the
timeouts of calls whose duration is not the point are generous.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
import unittest

import support

import grpc
from ledgerd.pb import admin_pb2, admin_pb2_grpc, ledger_pb2

import ledgerd

ADDR = ""

#: The timeout of a call whose duration is not what the test is about.
TIMEOUT = 2 * support.PATIENCE
#: A lease TTL, in seconds, that nothing in a test outlives: it ends only
#: when the test ends it.
LONG_LEASE = 300
#: The timeout of a do() whose timeout must run out while the work runs: long
#: enough for the Reserve before the work.
WORK_TIMEOUT = 5.0


def setUpModule():
    global ADDR
    ADDR = support.ledgerd_addr()  # raises (fails the module) when unset


def heartbeat_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ledgerd-heartbeat")]


class LiveTest(unittest.TestCase):
    client: ledgerd.Client

    @classmethod
    def setUpClass(cls):
        cls.client = ledgerd.Client(ADDR, insecure=True, default_timeout=TIMEOUT)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def setUp(self):
        self.ns = support.unique_namespace()

    def tearDown(self):
        deadline = time.monotonic() + support.PATIENCE
        while heartbeat_threads() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(heartbeat_threads(), [], "do() must stop its heartbeat thread before returning")

    def state(self, key):
        return self.client.lookup(namespace=self.ns, key=key, timeout=TIMEOUT).entry

    def watched_client(self):
        """A client whose calls a CallWatcher records (returned with it)."""
        watcher = support.CallWatcher()
        channel = grpc.intercept_channel(grpc.insecure_channel(ADDR), watcher)
        self.addCleanup(channel.close)
        return ledgerd.Client.from_channel(channel, default_timeout=TIMEOUT), watcher

    def force_release(self, key):
        """Ends the key's lease as an admin would: its holder's next call is refused with LEASE_LOST."""
        channel = grpc.insecure_channel(ADDR)
        self.addCleanup(channel.close)
        admin_pb2_grpc.LedgerAdminServiceStub(channel).ForceRelease(
            admin_pb2.ForceReleaseRequest(namespace=self.ns, key=key, reason="python client test"), timeout=TIMEOUT
        )


def lease_end(entry):
    """When the entry's lease runs out, in seconds since the epoch (database clock)."""
    return entry.lease_expires_at.ToNanoseconds() / 1e9


class DoTest(LiveTest):
    def test_reserve_complete_and_replay(self):
        calls = support.Calls()

        def work(lease):
            calls.add(lease)
            self.assertEqual((lease.fencing_token, lease.attempt, lease.takeover), (1, 1, False))
            self.assertEqual((lease.namespace, lease.key, lease.previous_owner, lease.checkpoint), (self.ns, "k", "", b""))
            self.assertAlmostEqual(lease.ttl, LONG_LEASE)
            self.assertIsNotNone(lease.lease_expires_at)
            self.assertFalse(lease.cancelled.is_set())
            return b"result-1"

        first = self.client.do(self.ns, "k", work, lease_ttl=LONG_LEASE, metadata={"run": "r1"}, timeout=TIMEOUT)
        self.assertEqual((first.value, first.fencing_token, first.attempt, first.replayed), (b"result-1", 1, 1, False))
        self.assertIsNotNone(first.completed_at)
        second = self.client.do(self.ns, "k", work, timeout=TIMEOUT)
        self.assertEqual((second.value, second.fencing_token, second.replayed), (b"result-1", 1, True))
        self.assertEqual(second.completed_at, first.completed_at)
        self.assertEqual(len(calls), 1, "the work runs once")
        entry = self.state("k")
        self.assertEqual(entry.state, ledger_pb2.STATE_COMPLETED)
        self.assertEqual(entry.result, b"result-1")
        self.assertEqual(dict(entry.metadata), {"run": "r1"})
        self.assertEqual(entry.owner, calls.items[0].owner)

    def test_concurrent_do_runs_the_work_once(self):
        calls = support.Calls()

        def work(lease):
            calls.add(lease.owner)
            time.sleep(0.3)  # work that takes a while: the others arrive meanwhile, or replay after
            return f"by {lease.owner}".encode()

        workers = [
            support.Background(lambda i=i: self.client.do(self.ns, "k", work, owner=f"w{i}", timeout=TIMEOUT))
            for i in range(6)
        ]
        results = [w.join(TIMEOUT + support.PATIENCE) for w in workers]
        self.assertEqual(len(calls), 1)
        self.assertEqual({r.value for r in results}, {f"by {calls.items[0]}".encode()})
        self.assertEqual(sum(not r.replayed for r in results), 1)

    def test_waits_for_the_holder_and_replays_its_result(self):
        held = self.client.reserve(namespace=self.ns, key="k", owner="holder", lease_ttl=LONG_LEASE, timeout=TIMEOUT)
        token = held.acquired.fencing_token
        waiter, watcher = self.watched_client()
        calls = support.Calls()
        waiting = support.Background(lambda: waiter.do(self.ns, "k", lambda lease: calls.add(lease) or b"mine"))
        # The holder completes once the waiter has asked: the server holds
        # that Reserve until the completion wakes it (the holder's lease
        # outlasts the server's wait).
        watcher.wait_for_call("Reserve")
        self.client.complete(namespace=self.ns, key="k", fencing_token=token, result=b"from holder", timeout=TIMEOUT)
        result = waiting.join(TIMEOUT + support.PATIENCE)
        self.assertEqual((result.value, result.replayed, result.fencing_token), (b"from holder", True, token))
        self.assertEqual(len(calls), 0, "the work must not run")
        self.assertEqual(len(watcher.requests("Reserve")), 1, "one Reserve, answered when the holder completed")

    def test_takeover_after_the_worker_process_is_killed(self):
        child = subprocess.Popen(
            [support.PYTHON, "-c", KILLED_WORKER, ADDR, self.ns, "k"],
            stdout=subprocess.PIPE,
            env=support.child_env(),
        )
        try:
            ready, _, _ = select.select([child.stdout], [], [], support.PATIENCE)
            self.assertTrue(ready, "the child worker did not report its token")
            dead_token = int(child.stdout.readline())
            # The child's heartbeat stores its checkpoint; the child holds the key.
            stored = support.wait_for(
                lambda: (lambda entry: entry if entry.checkpoint == b"phase-1" else None)(self.state("k")),
                "a heartbeat of the child stored its checkpoint",
            )
            self.assertEqual((stored.state, stored.owner, stored.fencing_token), (ledger_pb2.STATE_LEASED, "doomed-worker", dead_token))
            os.kill(child.pid, signal.SIGKILL)
            child.wait(support.PATIENCE)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(support.PATIENCE)
            child.stdout.close()
        leases = []

        def work(lease):
            leases.append(lease)
            return b"done after takeover"

        # The dead worker's lease runs out (nobody heartbeats it any more) and
        # the survivor, waiting for it, takes the key over.
        result = self.client.do(self.ns, "k", work, owner="survivor", lease_ttl=LONG_LEASE, timeout=TIMEOUT)
        (lease,) = leases
        self.assertEqual(lease.fencing_token, dead_token + 1)
        self.assertEqual((lease.takeover, lease.previous_owner, lease.attempt), (True, "doomed-worker", 2))
        self.assertEqual(lease.checkpoint, b"phase-1", "the dead worker's checkpoint is handed over")
        self.assertEqual((result.value, result.fencing_token, result.replayed), (b"done after takeover", dead_token + 1, False))
        # The dead worker's late Complete (a zombie) is refused.
        with self.assertRaises(ledgerd.LeaseLostError) as caught:
            self.client.complete(namespace=self.ns, key="k", fencing_token=dead_token, result=b"zombie", timeout=TIMEOUT)
        self.assertEqual(caught.exception.code, grpc.StatusCode.ABORTED)
        entry = self.state("k")
        self.assertEqual(entry.state, ledger_pb2.STATE_COMPLETED)
        self.assertEqual((entry.result, entry.owner, entry.fencing_token), (b"done after takeover", "survivor", dead_token + 1))

    def test_fingerprint_mismatch(self):
        calls = support.Calls()
        self.client.do(self.ns, "k", lambda lease: b"one", fingerprint=b"\x01" * 32, timeout=TIMEOUT)
        with self.assertRaises(ledgerd.FingerprintMismatchError) as caught:
            self.client.do(self.ns, "k", lambda lease: calls.add(lease) or b"two", fingerprint=b"\x02" * 32, timeout=TIMEOUT)
        self.assertEqual(caught.exception.reason, "FINGERPRINT_MISMATCH")
        self.assertEqual(caught.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        # No fingerprint is a different request too; the same one replays.
        with self.assertRaises(ledgerd.FingerprintMismatchError):
            self.client.do(self.ns, "k", lambda lease: b"three", timeout=TIMEOUT)
        self.assertTrue(self.client.do(self.ns, "k", lambda lease: b"", fingerprint=b"\x01" * 32, timeout=TIMEOUT).replayed)
        self.assertEqual(len(calls), 0)

    def test_invalid_arguments_name_the_field(self):
        cases = [
            ("namespace", dict(namespace="bad ns", key="k")),
            ("key", dict(namespace=self.ns, key="k" * 513)),
            ("lease_ttl", dict(namespace=self.ns, key="k", lease_ttl=0.001)),
            ("fingerprint", dict(namespace=self.ns, key="k", fingerprint=b"x" * 257)),
        ]
        for field, kwargs in cases:
            with self.subTest(field=field):
                namespace, key = kwargs.pop("namespace"), kwargs.pop("key")
                with self.assertRaises(ledgerd.InvalidArgumentError) as caught:
                    self.client.do(namespace, key, lambda lease: self.fail("must not run"), timeout=TIMEOUT, **kwargs)
                error = caught.exception
                self.assertEqual(error.field, field)
                self.assertEqual(error.reason, "INVALID_ARGUMENT")
                self.assertEqual(error.code, grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn(field, error.message)
        with self.assertRaises(ledgerd.NotFoundError):
            self.state("k")  # nothing was stored

    def test_permanent_failure_then_failed_error(self):
        def work(lease):
            raise ledgerd.Permanent(ValueError("record 17 is malformed"), code="bad_input")

        with self.assertRaises(ledgerd.PermanentError) as caught:
            self.client.do(self.ns, "k", work, timeout=TIMEOUT)
        self.assertIsInstance(caught.exception.error, ValueError)
        calls = support.Calls()
        with self.assertRaises(ledgerd.FailedError) as failed:
            self.client.do(self.ns, "k", lambda lease: calls.add(lease) or b"", timeout=TIMEOUT)
        error = failed.exception
        self.assertEqual(len(calls), 0, "a failed key does not run the work again")
        self.assertEqual((error.error_code, error.message), ("bad_input", "ValueError: record 17 is malformed"))
        self.assertEqual((error.fencing_token, error.attempts, error.namespace, error.key), (1, 1, self.ns, "k"))
        self.assertIsNotNone(error.failed_at)
        self.assertIsInstance(error, ledgerd.LedgerError)
        self.assertEqual(self.state("k").state, ledger_pb2.STATE_FAILED)

    def test_permanent_error_subclass(self):
        class BadInput(ledgerd.PermanentError):
            pass

        def work(lease):
            raise BadInput("no header", code="no_header")

        with self.assertRaises(BadInput):
            self.client.do(self.ns, "k", work, timeout=TIMEOUT)
        with self.assertRaises(ledgerd.FailedError) as failed:
            self.client.do(self.ns, "k", lambda lease: b"", timeout=TIMEOUT)
        self.assertEqual((failed.exception.error_code, failed.exception.message), ("no_header", "BadInput: no header"))

    def test_retryable_failure_runs_again_as_attempt_2(self):
        def flaky(lease):
            lease.set_checkpoint(b"cursor-7")  # staged; stored before the failure is recorded
            raise RuntimeError("upstream timed out")

        with self.assertRaises(RuntimeError):
            self.client.do(self.ns, "k", flaky, heartbeat_interval=60, timeout=TIMEOUT)
        entry = self.state("k")
        self.assertEqual(entry.state, ledger_pb2.STATE_RELEASED)
        self.assertEqual(entry.error.message, "RuntimeError: upstream timed out")
        self.assertEqual(entry.checkpoint, b"cursor-7")
        leases = []
        result = self.client.do(self.ns, "k", lambda lease: leases.append(lease) or b"second time lucky", timeout=TIMEOUT)
        (lease,) = leases
        self.assertEqual((lease.attempt, lease.fencing_token, lease.takeover), (2, 2, True))
        self.assertEqual(lease.checkpoint, b"cursor-7")
        self.assertEqual((result.attempt, result.fencing_token, result.value), (2, 2, b"second time lucky"))

    def test_heartbeats_keep_the_lease_past_its_ttl(self):
        ttl = 3.0
        observed = []

        def work(lease):
            lease.set_checkpoint(b"halfway")
            granted_until = lease.lease_expires_at.timestamp()
            # Work until a heartbeat has moved the lease's end a whole TTL
            # past where the grant put it: the lease has outlived its TTL.
            support.wait_for(
                lambda: lease_end(self.state("k")) >= granted_until + ttl, "a heartbeat extended the lease past its first TTL"
            )
            response = self.client.reserve(namespace=self.ns, key="k", owner="contender", lease_ttl=1, timeout=TIMEOUT)
            observed.append(response.WhichOneof("outcome"))
            return b"kept"

        # A heartbeat every 0.5s: the lease would run out only if none got
        # through for 2.7s (its TTL less the client's margin).
        result = self.client.do(self.ns, "k", work, lease_ttl=ttl, heartbeat_interval=0.5, timeout=TIMEOUT)
        self.assertEqual(observed, ["in_progress"])
        self.assertEqual((result.value, result.fencing_token, result.attempt), (b"kept", 1, 1))
        entry = self.state("k")
        self.assertEqual((entry.attempts, entry.checkpoint), (1, b"halfway"))

    def test_lease_lost_mid_work(self):
        seen = {}

        def work(lease):
            # The lease ends while the work runs (an admin's ForceRelease: a
            # lease left to run out would race the heartbeat that extends
            # it), and a thief takes the key over.
            self.force_release("k")
            seen["thief"] = self.client.reserve(namespace=self.ns, key="k", owner="thief", lease_ttl=LONG_LEASE, timeout=TIMEOUT)
            seen["cancelled"] = lease.cancelled.wait(support.PATIENCE)
            seen["lost"], seen["reason"] = lease.lost, lease.cancel_reason
            return b"too late"

        with self.assertRaises(ledgerd.LeaseLostError):
            self.client.do(self.ns, "k", work, lease_ttl=LONG_LEASE, heartbeat_interval=0.2, timeout=TIMEOUT)
        self.assertEqual(seen["thief"].WhichOneof("outcome"), "acquired")
        thief_token = seen["thief"].acquired.fencing_token
        self.assertGreater(thief_token, 1)
        self.assertTrue(seen["cancelled"], "lease.cancelled is set when a heartbeat learns the loss")
        self.assertTrue(seen["lost"])
        self.assertIsInstance(seen["reason"], ledgerd.LeaseLostError)
        self.assertEqual(seen["reason"].code, grpc.StatusCode.ABORTED, "the ledger refused the heartbeat")
        entry = self.state("k")
        self.assertEqual((entry.state, entry.owner, entry.fencing_token), (ledger_pb2.STATE_LEASED, "thief", thief_token))
        self.assertEqual(entry.result, b"", "the superseded result is not recorded")

    def test_timeout_while_work_runs_releases_the_lease(self):
        seen = {}

        def work(lease):
            seen["cancelled"] = lease.cancelled.wait(support.PATIENCE)
            seen["reason"] = lease.cancel_reason
            lease.raise_if_cancelled()
            return b"unreachable"

        with self.assertRaises(ledgerd.DeadlineExceededError):
            self.client.do(self.ns, "k", work, lease_ttl=LONG_LEASE, timeout=WORK_TIMEOUT)
        self.assertIn("cancelled", seen, "the work ran before the timeout")
        self.assertTrue(seen["cancelled"])
        self.assertIsInstance(seen["reason"], ledgerd.DeadlineExceededError)
        self.assertEqual(self.state("k").state, ledger_pb2.STATE_RELEASED)

    def test_result_recorded_even_after_the_timeout(self):
        def work(lease):
            self.assertTrue(lease.cancelled.wait(support.PATIENCE), "the timeout ran out while the work ran")
            return b"finished anyway"

        result = self.client.do(self.ns, "k", work, lease_ttl=LONG_LEASE, timeout=WORK_TIMEOUT)
        self.assertEqual(result.value, b"finished anyway")
        self.assertEqual(self.state("k").state, ledger_pb2.STATE_COMPLETED)

    def test_keyboard_interrupt_releases_the_lease(self):
        def work(lease):
            raise KeyboardInterrupt

        with self.assertRaises(KeyboardInterrupt):
            self.client.do(self.ns, "k", work, lease_ttl=LONG_LEASE, timeout=TIMEOUT)
        self.assertEqual(self.state("k").state, ledger_pb2.STATE_RELEASED)

    def test_result_too_large_is_recorded_as_a_retryable_failure(self):
        with self.assertRaises(ledgerd.InvalidArgumentError) as caught:
            self.client.do(self.ns, "k", lambda lease: b"x" * (1 << 20 | 1), timeout=TIMEOUT)
        self.assertEqual(caught.exception.field, "result")
        entry = self.state("k")
        self.assertEqual(entry.state, ledger_pb2.STATE_RELEASED)
        self.assertIn("result", entry.error.message)

    def test_checkpoint_too_large_cancels_the_work(self):
        def work(lease):
            lease.set_checkpoint(b"c" * (64 * 1024 + 1))
            self.assertTrue(lease.cancelled.wait(support.PATIENCE), "the heartbeat's refusal cancels the work")
            raise RuntimeError("stopped")

        with self.assertRaises(ledgerd.InvalidArgumentError) as caught:
            self.client.do(self.ns, "k", work, lease_ttl=LONG_LEASE, heartbeat_interval=0.5, timeout=TIMEOUT)
        self.assertEqual(caught.exception.field, "checkpoint")
        self.assertEqual(self.state("k").state, ledger_pb2.STATE_RELEASED)


class UnreachableTest(LiveTest):
    """ledgerd becomes unreachable while the work runs: a proxy between the
    client and ledgerd is closed (or cut) mid-work."""

    def proxied_client(self, proxy):
        client = ledgerd.Client(proxy.addr, insecure=True)  # no timeout: do() is unbounded
        self.addCleanup(client.close)
        return client

    def assert_no_proxy_threads(self, proxy):
        proxy.close()
        self.assertEqual(proxy.threads(), [], "the proxy's threads are joined")

    def test_work_stops_when_the_lease_cannot_be_kept(self):
        proxy = support.TcpProxy(ADDR)
        self.addCleanup(self.assert_no_proxy_threads, proxy)
        client = self.proxied_client(proxy)
        started = threading.Event()
        seen = {}

        def work(lease):
            started.set()
            seen["cancelled"] = lease.cancelled.wait(support.PATIENCE)
            seen["reason"] = lease.cancel_reason
            lease.raise_if_cancelled()
            return b"must not be recorded"

        worker = support.Background(lambda: client.do(self.ns, "k", work, lease_ttl=1, heartbeat_interval=0.1))
        self.assertTrue(started.wait(support.PATIENCE), "the work started")
        proxy.close()
        with self.assertRaises(ledgerd.LeaseLostError) as caught:
            worker.join(support.PATIENCE)  # do() returns: the work did not go on without a lease
        self.assertTrue(seen["cancelled"], "lease.cancelled is set, though do() has no timeout")
        reason = seen["reason"]
        self.assertIsInstance(reason, ledgerd.LeaseLostError)
        self.assertIn("no heartbeat was acknowledged before the lease ran out", str(reason))
        self.assertIs(caught.exception, reason)
        self.assertNotEqual(reason.code, grpc.StatusCode.UNAVAILABLE)
        # The ledger still holds the lease (nobody answered for it): it runs out.
        entry = self.state("k")
        self.assertEqual((entry.state, entry.fencing_token, entry.result), (ledger_pb2.STATE_LEASED, 1, b""))

    def test_a_result_returned_after_is_still_recorded_when_nobody_took_over(self):
        proxy = support.TcpProxy(ADDR)
        self.addCleanup(self.assert_no_proxy_threads, proxy)
        client = self.proxied_client(proxy)
        started = threading.Event()
        seen = {}

        def work(lease):
            started.set()
            seen["cancelled"] = lease.cancelled.wait(support.PATIENCE)
            seen["reason"] = lease.cancel_reason
            proxy.restore()  # ledgerd is back; nobody took the key over
            return b"finished anyway"

        worker = support.Background(
            lambda: client.do(self.ns, "k", work, lease_ttl=1, heartbeat_interval=0.1, timeout=TIMEOUT)
        )
        self.assertTrue(started.wait(support.PATIENCE), "the work started")
        proxy.cut()
        result = worker.join(TIMEOUT + support.PATIENCE)
        self.assertTrue(seen["cancelled"])
        self.assertIsInstance(seen["reason"], ledgerd.LeaseLostError)
        self.assertEqual((result.value, result.fencing_token, result.replayed), (b"finished anyway", 1, False))
        entry = self.state("k")
        self.assertEqual((entry.state, entry.result), (ledger_pb2.STATE_COMPLETED, b"finished anyway"))


class LargeResultTest(LiveTest):
    """Results above gRPC's default receive limit (4 MiB) are replayed."""

    def create_namespace(self, max_result_bytes):
        channel = grpc.insecure_channel(ADDR)
        self.addCleanup(channel.close)
        admin = admin_pb2_grpc.LedgerAdminServiceStub(channel)
        admin.CreateNamespace(
            admin_pb2.CreateNamespaceRequest(
                name=self.ns,
                settings=admin_pb2.NamespaceSettings(max_result_bytes=max_result_bytes),
                reason="python client test: results above 4 MiB",
            ),
            timeout=TIMEOUT,
        )

    def test_a_5_mib_result_is_recorded_replayed_and_looked_up(self):
        self.create_namespace(6 << 20)  # the default namespace allows 1 MiB
        payload = bytes(range(256)) * (5 << 20 >> 8)
        self.assertEqual(len(payload), 5 << 20)
        first = self.client.do(self.ns, "big", lambda lease: payload, timeout=TIMEOUT)
        self.assertFalse(first.replayed)
        replay = self.client.do(self.ns, "big", lambda lease: self.fail("the work must not run"), timeout=TIMEOUT)
        self.assertTrue(replay.replayed)
        self.assertEqual(replay.value, payload)
        self.assertEqual(self.state("big").result, payload)

        # The limit is the client's to change.
        with ledgerd.Client(ADDR, insecure=True, default_timeout=TIMEOUT, max_receive_message_bytes=1 << 20) as small:
            with self.assertRaises(ledgerd.ResourceExhaustedError):
                small.do(self.ns, "big", lambda lease: self.fail("the work must not run"))


class ThinMethodsTest(LiveTest):
    def test_round_trip_and_idempotency(self):
        c, ns = self.client, self.ns
        first = c.reserve(namespace=ns, key="k", owner="o1", lease_ttl=LONG_LEASE, fingerprint=b"fp", metadata={"a": "b"})
        self.assertEqual(first.WhichOneof("outcome"), "acquired")
        again = c.reserve(namespace=ns, key="k", owner="o1", lease_ttl=LONG_LEASE, fingerprint=b"fp")
        self.assertEqual(again.acquired.fencing_token, first.acquired.fencing_token, "same owner, same token")
        other = c.reserve(namespace=ns, key="k", owner="o2", fingerprint=b"fp")
        self.assertEqual(other.WhichOneof("outcome"), "in_progress")
        self.assertEqual(other.in_progress.owner, "o1")
        token = first.acquired.fencing_token
        c.heartbeat(namespace=ns, key="k", fencing_token=token, lease_ttl=LONG_LEASE, checkpoint=b"cp")
        done = c.complete(namespace=ns, key="k", fencing_token=token, result=b"r")
        self.assertFalse(done.already_completed)
        self.assertTrue(c.complete(namespace=ns, key="k", fencing_token=token, result=b"r").already_completed)
        with self.assertRaises(ledgerd.ResultConflictError):
            c.complete(namespace=ns, key="k", fencing_token=token, result=b"other")
        with self.assertRaises(ledgerd.LeaseLostError):
            c.heartbeat(namespace=ns, key="k", fencing_token=token)
        entry = c.lookup(namespace=ns, key="k").entry
        self.assertEqual((entry.state, entry.result, entry.checkpoint, entry.fingerprint), (ledger_pb2.STATE_COMPLETED, b"r", b"cp", b"fp"))

    def test_release_and_fail(self):
        c, ns = self.client, self.ns
        token = c.reserve(namespace=ns, key="k", owner="o1", lease_ttl=LONG_LEASE).acquired.fencing_token
        self.assertFalse(c.release(namespace=ns, key="k", fencing_token=token).already_released)
        self.assertTrue(c.release(namespace=ns, key="k", fencing_token=token).already_released)
        second = c.reserve(namespace=ns, key="k", owner="o2", lease_ttl=LONG_LEASE).acquired
        self.assertEqual((second.fencing_token, second.takeover, second.previous_owner), (token + 1, True, "o1"))
        failed = c.fail(namespace=ns, key="k", fencing_token=second.fencing_token, message="boom", code="c", retryable=False)
        self.assertEqual(failed.state, ledger_pb2.STATE_FAILED)
        with self.assertRaises(ledgerd.ResultConflictError):
            c.fail(namespace=ns, key="k", fencing_token=second.fencing_token, message="other", retryable=False)
        self.assertEqual(c.reserve(namespace=ns, key="k", owner="o3").WhichOneof("outcome"), "failed")
        with self.assertRaises(ledgerd.NotFoundError) as caught:
            c.lookup(namespace=ns, key="missing")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_wait_timeout_is_woken_by_the_holders_completion(self):
        c, ns = self.client, self.ns
        token = c.reserve(namespace=ns, key="k", owner="holder", lease_ttl=LONG_LEASE).acquired.fencing_token
        waiter, watcher = self.watched_client()
        # The holder's lease outlasts the wait: only the completion can end
        # it with COMPLETED (its running out would answer IN_PROGRESS).
        waiting = support.Background(
            lambda: waiter.reserve(namespace=ns, key="k", owner="waiter", wait_timeout=50, timeout=TIMEOUT)
        )
        watcher.wait_for_call("Reserve")
        c.complete(namespace=ns, key="k", fencing_token=token, result=b"v")
        response = waiting.join(TIMEOUT + support.PATIENCE)
        self.assertEqual(response.WhichOneof("outcome"), "completed")
        self.assertEqual(response.completed.result, b"v")

    def test_wait_timeout_takes_over_an_expired_lease(self):
        c, ns = self.client, self.ns
        c.reserve(namespace=ns, key="k", owner="gone", lease_ttl=0.5)
        started = time.monotonic()
        response = c.reserve(namespace=ns, key="k", owner="waiter", wait_timeout=50, timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        self.assertEqual(response.WhichOneof("outcome"), "acquired")
        self.assertTrue(response.acquired.takeover)
        # The lease's end (0.5s) woke the wait; a server that only answered
        # when the 50s wait ran out would take the key over then.
        self.assertLess(elapsed, 25, "the lease's end, not the 50s wait, ended it")

    def test_wait_timeout_runs_out_with_in_progress(self):
        c, ns = self.client, self.ns
        c.reserve(namespace=ns, key="k", owner="holder", lease_ttl=LONG_LEASE)
        started = time.monotonic()
        response = c.reserve(namespace=ns, key="k", owner="waiter", wait_timeout=0.5, timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        # The holder's lease outlasts the test: IN_PROGRESS is the answer
        # when the wait ran out, which takes at least the wait.
        self.assertEqual(response.WhichOneof("outcome"), "in_progress")
        self.assertGreaterEqual(elapsed, 0.5)


# A worker process that is killed mid-work: it holds the key with do() (a
# 5s lease, heartbeated every second), stages a checkpoint for the next
# heartbeat to store, prints its token and sleeps until it is killed.
KILLED_WORKER = r"""
import sys, time
import ledgerd

addr, namespace, key = sys.argv[1:4]

def work(lease):
    lease.set_checkpoint(b"phase-1")
    print(lease.fencing_token, flush=True)
    time.sleep(600)
    return b"never"

with ledgerd.Client(addr, insecure=True) as client:
    client.do(namespace, key, work, owner="doomed-worker", lease_ttl=5, heartbeat_interval=1, timeout=900)
"""


if __name__ == "__main__":
    unittest.main()
