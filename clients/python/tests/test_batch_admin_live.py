"""Batches, admin calls and the decorator, of both clients, against a live
ledgerd (LEDGERD_ADDR). Every test has its own namespace; waits are bounded
by support.PATIENCE; leases outlast any stall unless a test ends them.
"""

from __future__ import annotations

import asyncio
import datetime
import unittest

import support

import grpc

import ledgerd
import ledgerd.aio
from ledgerd.pb import admin_pb2, admin_pb2_grpc, ledger_pb2

ADDR = ""
TIMEOUT = 2 * support.PATIENCE
LONG_LEASE = 300


def setUpModule():
    global ADDR
    ADDR = support.ledgerd_addr()


def create_namespace(test, ns, **settings):
    channel = grpc.insecure_channel(ADDR)
    test.addCleanup(channel.close)
    admin_pb2_grpc.LedgerAdminServiceStub(channel).CreateNamespace(
        admin_pb2.CreateNamespaceRequest(
            name=ns, settings=admin_pb2.NamespaceSettings(**settings), reason="python batch test"
        ),
        timeout=TIMEOUT,
    )


class SyncTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = ledgerd.Client(ADDR, insecure=True, default_timeout=TIMEOUT)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def setUp(self):
        self.ns = support.unique_namespace("pybatch")

    def entry(self, key):
        return self.client.lookup(namespace=self.ns, key=key).entry

    def prepare_mixed(self):
        """done: completed; held: leased by another owner; broken: failed permanently."""
        self.client.do(self.ns, "done", lambda lease: b"old")
        self.client.reserve(namespace=self.ns, key="held", owner="other", lease_ttl=LONG_LEASE)

        def broken(lease):
            raise ledgerd.PermanentError("bad input")

        with self.assertRaises(ledgerd.PermanentError):
            self.client.do(self.ns, "broken", broken)


class SyncBatchTest(SyncTest):
    def test_mixed_outcomes_in_order(self):
        self.prepare_mixed()
        seen = []

        def work(leases):
            seen.extend(lease.key for lease in leases)
            self.assertTrue(all(lease.fencing_token > 0 for lease in leases))
            return [lease.key.upper().encode() for lease in leases]

        results = self.client.do_batch(
            self.ns, ["new1", "done", "held", "broken", "new2", ""], work, lease_ttl=LONG_LEASE
        )
        self.assertEqual([r.key for r in results], ["new1", "done", "held", "broken", "new2", ""])
        self.assertEqual(seen, ["new1", "new2"])
        self.assertEqual((results[0].result.value, results[0].result.replayed), (b"NEW1", False))
        self.assertEqual((results[1].result.value, results[1].result.replayed), (b"old", True))
        self.assertIsInstance(results[2].error, ledgerd.InProgressError)
        self.assertEqual(results[2].error.owner, "other")
        self.assertIsInstance(results[3].error, ledgerd.FailedError)
        self.assertEqual(results[4].result.value, b"NEW2")
        self.assertIsInstance(results[5].error, ledgerd.InvalidArgumentError)
        self.assertEqual(results[5].error.field, "items[5].key")
        self.assertEqual(self.entry("new2").state, ledger_pb2.STATE_COMPLETED)

    def test_work_error_is_recorded_for_every_acquired_key(self):
        def work(leases):
            raise ledgerd.PermanentError("poison batch", code="poison")

        results = self.client.do_batch(self.ns, ["a", "b"], work)
        self.assertTrue(all(isinstance(r.error, ledgerd.PermanentError) for r in results))
        self.assertEqual({self.entry(k).state for k in "ab"}, {ledger_pb2.STATE_FAILED})

        def retryable(leases):
            raise RuntimeError("flaky")

        results = self.client.do_batch(self.ns, ["c"], retryable)
        self.assertIsInstance(results[0].error, RuntimeError)
        self.assertEqual(self.entry("c").state, ledger_pb2.STATE_RELEASED)

    def test_a_refused_result_fails_alone(self):
        create_namespace(self, self.ns, max_result_bytes=8)
        results = self.client.do_batch(self.ns, ["small", "large"], lambda leases: [b"ok", b"x" * 100])
        self.assertEqual(results[0].result.value, b"ok")
        self.assertIsInstance(results[1].error, ledgerd.InvalidArgumentError)
        large = self.entry("large")
        self.assertEqual(large.state, ledger_pb2.STATE_RELEASED)
        self.assertIn("result", large.error.message)

    def test_wrong_number_of_results(self):
        results = self.client.do_batch(self.ns, ["a", "b"], lambda leases: [b"one"])
        self.assertTrue(all(isinstance(r.error, ValueError) for r in results))
        self.assertEqual(self.entry("a").state, ledger_pb2.STATE_RELEASED)

    def test_lease_lost_mid_batch(self):
        def work(leases):
            self.client.force_release(self.ns, "b", reason="test", fencing_token=leases[1].fencing_token)
            support.wait_for(leases[1].cancelled.is_set, "a heartbeat learns the lease of b was lost")
            return [b"A", b"B"]

        results = self.client.do_batch(self.ns, ["a", "b"], work, lease_ttl=1, heartbeat_interval=0.05)
        self.assertEqual(results[0].result.value, b"A")
        self.assertIsInstance(results[1].error, ledgerd.LeaseLostError)

    def test_thin_wrappers_and_item_error(self):
        reserved = self.client.reserve_batch(namespace=self.ns, owner="me", items=["a", "b"], lease_ttl=LONG_LEASE)
        tokens = [r.reserved.acquired.fencing_token for r in reserved.results]
        completed = self.client.complete_batch(
            namespace=self.ns, items=[("a", tokens[0], b"ra"), ("b", tokens[1] + 7, b"rb")]
        )
        self.assertEqual(completed.results[0].WhichOneof("result"), "completed")
        self.assertIsInstance(ledgerd.item_error(completed.results[1].error), ledgerd.LeaseLostError)
        looked = self.client.lookup_batch(namespace=self.ns, keys=["a", "nope"])
        self.assertEqual(looked.results[0].entry.result, b"ra")
        self.assertIsInstance(ledgerd.item_error(looked.results[1].error), ledgerd.NotFoundError)
        with self.assertRaises(TypeError):
            self.client.lookup_batch(namespace=self.ns, keys="a")


class SyncAdminTest(SyncTest):
    def test_listings_page_through_every_entry(self):
        keys = [f"k{i}" for i in range(5)]
        self.client.do_batch(self.ns, keys, lambda leases: [b"r"] * len(leases))
        self.client.reserve(namespace=self.ns, key="k9", owner="holder", lease_ttl=LONG_LEASE)
        self.assertEqual([e.key for e in self.client.iter_entries(self.ns, page_size=2)], keys + ["k9"])
        self.assertEqual([e.key for e in self.client.iter_entries(self.ns, states=["leased"])], ["k9"])
        self.assertEqual([e.key for e in self.client.iter_entries(self.ns, owner="holder")], ["k9"])
        self.assertEqual(len(list(self.client.iter_entries(self.ns, key_prefix="k1"))), 1)
        with self.assertRaises(ValueError) as caught:
            list(self.client.iter_entries(self.ns, states=["done"]))
        self.assertIn("states", str(caught.exception))
        with self.assertRaises(ValueError):
            list(self.client.iter_entries(self.ns, updated_after=datetime.datetime(2026, 1, 1)))
        names = [n.name for n in self.client.iter_namespaces(page_size=1000)]
        self.assertIn(self.ns, names)
        self.assertEqual(self.client.get_namespace(self.ns).namespace.name, self.ns)

    def test_history_and_events_export(self):
        self.client.do(self.ns, "k", lambda lease: b"r")
        kinds = [ledger_pb2.EventKind.Name(e.kind) for e in self.client.history(self.ns, "k", page_size=1)]
        self.assertEqual(kinds, ["EVENT_KIND_RESERVED", "EVENT_KIND_COMPLETED"])
        export = self.client.export_events(self.ns, include_unsettled=True, page_size=1)
        # The namespace's creation (key "") comes first: development mode
        # creates it on first use.
        self.assertEqual([e.key for e in export], ["", "k", "k"])
        self.assertEqual(export.pages, 3)
        self.assertIsNone(export.settled_until)
        completed = self.client.export_events(self.ns, include_unsettled=True, kinds=["completed"])
        self.assertEqual(len(list(completed)), 1)
        # Without include_unsettled, the newest events are left out and the
        # export says where it stopped; the next export starts there, and
        # together they list every event once. (A server without a settling
        # delay, as in the cross-language harness, leaves nothing out and
        # reports no settled_until.)
        everything = [e.id for e in self.client.export_events(self.ns, include_unsettled=True)]
        settled = self.client.export_events(self.ns)
        ids = [e.id for e in settled]
        if settled.settled_until is not None:
            self.assertIsInstance(settled.settled_until, datetime.datetime)
            rest = self.client.export_events(self.ns, start_time=settled.settled_until, include_unsettled=True)
            ids += [e.id for e in rest]
        self.assertEqual(ids, everything)

    def test_force_release_and_reset_key(self):
        reserved = self.client.reserve(namespace=self.ns, key="k", owner="stuck", lease_ttl=LONG_LEASE)
        with self.assertRaises(ValueError):
            self.client.force_release(self.ns, "k", reason=" ")
        released = self.client.force_release(self.ns, "k", reason="on-call: stuck worker")
        self.assertEqual(released.entry.state, ledger_pb2.STATE_RELEASED)
        with self.assertRaises(ledgerd.LeaseLostError):
            self.client.complete(namespace=self.ns, key="k", fencing_token=reserved.acquired.fencing_token, result=b"x")
        done = self.client.do(self.ns, "k", lambda lease: b"first")
        with self.assertRaises(ledgerd.LeaseLostError):
            self.client.reset_key(self.ns, "k", reason="bad deploy", fencing_token=done.fencing_token + 5)
        reset = self.client.reset_key(self.ns, "k", reason="bad deploy", fencing_token=done.fencing_token)
        self.assertEqual(reset.entry.state, ledger_pb2.STATE_RELEASED)
        self.assertEqual(self.client.do(self.ns, "k", lambda lease: b"again").value, b"again")
        events = [ledger_pb2.EventKind.Name(e.kind) for e in self.client.history(self.ns, "k")]
        self.assertIn("EVENT_KIND_FORCE_RELEASED", events)


class SyncDecoratorTest(SyncTest):
    def test_runs_once_and_replays_the_same_value(self):
        runs = []

        @self.client.idempotent(namespace=self.ns, key=lambda invoice: f"invoice/{invoice['id']}")
        def send(invoice):
            lease = ledgerd.current_lease()
            runs.append(lease.fencing_token)
            return ("sent", invoice["id"], lease.fencing_token)

        first = send({"id": 1})
        self.assertEqual(first, ["sent", 1, 1])  # JSON: what a replay returns too
        self.assertEqual(send({"id": 1}), first)
        self.assertEqual(runs, [1])
        self.assertEqual(self.entry("invoice/1").result, b'["sent",1,1]')

    def test_errors_and_options(self):
        @self.client.idempotent(namespace=self.ns, key=lambda n: str(n), fingerprint=lambda n: str(n).encode())
        def fails(n):
            raise ledgerd.PermanentError("no")

        with self.assertRaises(ledgerd.PermanentError):
            fails(1)
        with self.assertRaises(ledgerd.FailedError):
            fails(1)
        with self.assertRaises(TypeError):
            self.client.idempotent(namespace=self.ns, key=lambda: 1)(lambda: 2)()
        with self.assertRaises(TypeError):

            @self.client.idempotent(namespace=self.ns, key=str)
            async def coroutine(x):
                return x

    def test_do_work_sees_its_lease_too(self):
        result = self.client.do(self.ns, "k", lambda lease: str(ledgerd.current_lease() is lease).encode())
        self.assertEqual(result.value, b"True")
        with self.assertRaises(LookupError):
            ledgerd.current_lease()

    def test_fail_open_function_sees_an_unguarded_lease(self):
        proxy = support.TcpProxy(ADDR)
        self.addCleanup(proxy.close)
        # The recorder's failures while the proxy is cut may open the
        # breaker: a short open_for lets it record soon after the restore.
        client = ledgerd.Client(
            proxy.addr, insecure=True, max_attempts=1, fallback="fail_open", breaker={"open_for": 0.2}
        )
        self.addCleanup(client.close)
        proxy.cut()

        @client.idempotent(namespace=self.ns, key=lambda n: f"k{n}")
        def job(n):
            lease = ledgerd.current_lease()
            return [n, lease.fencing_token, lease.unguarded]

        self.assertEqual(job(1), [1, 0, True])
        proxy.restore()
        self.assertEqual(client.flush(support.PATIENCE), 0)
        self.assertEqual(self.entry("k1").result, b"[1,0,true]")


class AioBatchAdminTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.ns = support.unique_namespace("pyaiobatch")
        self.client = ledgerd.aio.Client(ADDR, insecure=True, default_timeout=TIMEOUT)

    async def asyncTearDown(self):
        await self.client.close()

    async def test_more_keys_than_one_batch_takes(self):
        keys = [f"k{i:04d}" for i in range(ledgerd.MAX_BATCH_ITEMS + 5)]
        calls = []

        async def work(leases):
            calls.append(len(leases))
            return [lease.key.encode() for lease in leases]

        results = await self.client.do_batch(self.ns, keys, work, lease_ttl=LONG_LEASE)
        self.assertEqual(calls, [ledgerd.MAX_BATCH_ITEMS, 5])
        self.assertEqual([r.result.value for r in results], [k.encode() for k in keys])
        again = await self.client.do_batch(self.ns, keys[-3:], work)
        self.assertTrue(all(r.result.replayed for r in again))
        listed = [e.key async for e in self.client.iter_entries(self.ns, page_size=1000)]
        self.assertEqual(listed, keys)

    async def test_mixed_outcomes_and_cancellation(self):
        await self.client.reserve(namespace=self.ns, key="held", owner="other", lease_ttl=LONG_LEASE)
        results = await self.client.do_batch(self.ns, ["a", "held"], lambda leases: [b"A"])
        self.assertEqual(results[0].result.value, b"A")
        self.assertIsInstance(results[1].error, ledgerd.InProgressError)

        started = asyncio.Event()

        async def forever(leases):
            started.set()
            await asyncio.sleep(3600)

        task = asyncio.ensure_future(self.client.do_batch(self.ns, ["c1", "c2"], forever, lease_ttl=LONG_LEASE))
        await asyncio.wait_for(started.wait(), support.PATIENCE)
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        looked = await self.client.lookup_batch(namespace=self.ns, keys=["c1", "c2"])
        self.assertEqual([r.entry.state for r in looked.results], [ledger_pb2.STATE_RELEASED] * 2)

    async def test_admin_calls(self):
        await self.client.do(self.ns, "k", lambda lease: b"r")
        history = await self.client.history(self.ns, "k")
        self.assertEqual(len(history), 2)
        export = self.client.export_events(self.ns, include_unsettled=True)
        self.assertEqual([e.key async for e in export], ["", "k", "k"])
        reset = await self.client.reset_key(self.ns, "k", reason="aio test")
        self.assertEqual(reset.entry.state, ledger_pb2.STATE_RELEASED)
        namespaces = [n.name async for n in self.client.iter_namespaces()]
        self.assertIn(self.ns, namespaces)
        self.assertEqual((await self.client.get_namespace(self.ns)).namespace.name, self.ns)


if __name__ == "__main__":
    unittest.main()
