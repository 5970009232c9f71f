"""The asyncio client (ledgerd.aio) against a live ledgerd (LEDGERD_ADDR).

As in test_live.py, every test has its own namespace, waits for conditions
bounded by support.PATIENCE (never for an interval assumed long enough),
and uses leases that outlast any stall unless the test ends them.
"""

from __future__ import annotations

import asyncio
import socket
import time
import unittest

import support

from ledgerd.pb import ledger_pb2

import ledgerd
import ledgerd.aio

ADDR = ""
TIMEOUT = 2 * support.PATIENCE
LONG_LEASE = 300


def setUpModule():
    global ADDR
    ADDR = support.ledgerd_addr()


def closed_port_addr() -> str:
    """An address where nothing listens: every call fails with UNAVAILABLE."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def wait_for(condition, what, timeout=support.PATIENCE):
    """support.wait_for for coroutine conditions."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not so after {timeout}s")
        await asyncio.sleep(0.02)


class AioTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.ns = support.unique_namespace("pyaio")
        self.client = ledgerd.aio.Client(ADDR, insecure=True, default_timeout=TIMEOUT)

    async def asyncTearDown(self):
        await self.client.close()
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("ledgerd-heartbeat")]
        self.assertEqual(tasks, [], "do() must stop its heartbeat task before returning")

    async def entry(self, key):
        return (await self.client.lookup(namespace=self.ns, key=key)).entry


class AioDoTest(AioTest):
    async def test_reserve_complete_and_replay(self):
        runs = []

        async def work(lease):
            runs.append(lease.fencing_token)
            self.assertIs(ledgerd.current_lease(), lease)
            await asyncio.sleep(0)
            return b"r1"

        first = await self.client.do(self.ns, "k", work)
        second = await self.client.do(self.ns, "k", work)
        self.assertEqual((first.value, first.replayed, first.attempt), (b"r1", False, 1))
        self.assertEqual((second.value, second.replayed), (b"r1", True))
        self.assertEqual(runs, [first.fencing_token])
        self.assertEqual((await self.entry("k")).state, ledger_pb2.STATE_COMPLETED)
        with self.assertRaises(LookupError):
            ledgerd.current_lease()

    async def test_concurrent_tasks_run_the_work_once(self):
        runs = []

        async def work(lease):
            runs.append(lease.owner)
            await asyncio.sleep(0.05)
            return b"once"

        results = await asyncio.gather(*(self.client.do(self.ns, "k", work, lease_ttl=LONG_LEASE) for _ in range(5)))
        self.assertEqual(len(runs), 1)
        self.assertEqual({r.value for r in results}, {b"once"})
        self.assertEqual(sum(not r.replayed for r in results), 1)

    async def test_retryable_failure_then_attempt_2_with_the_checkpoint(self):
        async def flaky(lease):
            lease.set_checkpoint(b"half")
            raise RuntimeError("transient")

        with self.assertRaises(RuntimeError):
            await self.client.do(self.ns, "k", flaky)
        entry = await self.entry("k")
        self.assertEqual(entry.state, ledger_pb2.STATE_RELEASED)
        self.assertEqual(entry.error.message, "RuntimeError: transient")

        async def good(lease):
            self.assertEqual((lease.attempt, lease.checkpoint), (2, b"half"))
            return b"ok"

        self.assertEqual((await self.client.do(self.ns, "k", good)).attempt, 2)

    async def test_permanent_failure_then_failed_error(self):
        async def bad(lease):
            raise ledgerd.PermanentError("malformed", code="bad_input")

        with self.assertRaises(ledgerd.PermanentError):
            await self.client.do(self.ns, "k", bad)
        with self.assertRaises(ledgerd.FailedError) as caught:
            await self.client.do(self.ns, "k", bad)
        self.assertEqual(caught.exception.error_code, "bad_input")

    async def test_lease_lost_mid_work(self):
        async def work(lease):
            await self.client.force_release(self.ns, "k", reason="aio test", fencing_token=lease.fencing_token)
            self.assertTrue(await lease.wait_cancelled(support.PATIENCE), "a heartbeat must learn the lease was lost")
            self.assertTrue(lease.lost)
            return b"late"

        with self.assertRaises(ledgerd.LeaseLostError):
            await self.client.do(self.ns, "k", work, lease_ttl=1, heartbeat_interval=0.05)
        self.assertEqual((await self.entry("k")).state, ledger_pb2.STATE_RELEASED)

    async def test_heartbeats_keep_the_lease_past_its_ttl(self):
        async def work(lease):
            first = (await self.entry("k")).lease_expires_at.ToNanoseconds()
            await wait_for(
                lambda: self._later(first), "a heartbeat moves the lease's end"
            )
            return b"kept"

        result = await self.client.do(self.ns, "k", work, lease_ttl=0.5, heartbeat_interval=0.05)
        self.assertEqual(result.value, b"kept")

    async def _later(self, first):
        return (await self.entry("k")).lease_expires_at.ToNanoseconds() > first

    async def test_cancelling_do_releases_the_lease(self):
        started = asyncio.Event()

        async def work(lease):
            started.set()
            await asyncio.sleep(3600)
            return b"never"

        task = asyncio.ensure_future(self.client.do(self.ns, "k", work, lease_ttl=LONG_LEASE))
        await asyncio.wait_for(started.wait(), support.PATIENCE)
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertEqual((await self.entry("k")).state, ledger_pb2.STATE_RELEASED)
        result = await self.client.do(self.ns, "k", lambda lease: b"next")
        self.assertEqual((result.value, result.attempt), (b"next", 2))

    async def test_waits_for_the_holder_and_replays_its_result(self):
        holder = await self.client.reserve(namespace=self.ns, key="k", owner="holder", lease_ttl=LONG_LEASE)
        token = holder.acquired.fencing_token
        ran = []
        waiting = asyncio.ensure_future(self.client.do(self.ns, "k", lambda lease: ran.append(1) or b"mine"))
        # The waiter is parked in a Reserve; the holder completes meanwhile.
        await asyncio.sleep(0)
        await self.client.complete(namespace=self.ns, key="k", fencing_token=token, result=b"theirs")
        result = await asyncio.wait_for(waiting, support.PATIENCE)
        self.assertEqual((result.value, result.replayed, ran), (b"theirs", True, []))

    async def test_wait_false_raises_in_progress(self):
        await self.client.reserve(namespace=self.ns, key="k", owner="holder", lease_ttl=LONG_LEASE)
        with self.assertRaises(ledgerd.InProgressError) as caught:
            await self.client.do(self.ns, "k", lambda lease: b"x", wait=False)
        self.assertEqual(caught.exception.owner, "holder")

    async def test_a_sync_work_function_is_accepted(self):
        result = await self.client.do(self.ns, "k", lambda lease: b"plain")
        self.assertEqual(result.value, b"plain")

    async def test_non_bytes_result_is_a_retryable_failure(self):
        with self.assertRaises(TypeError):
            await self.client.do(self.ns, "k", lambda lease: "text")
        self.assertEqual((await self.entry("k")).state, ledger_pb2.STATE_RELEASED)

    async def test_invalid_argument_names_the_field(self):
        with self.assertRaises(ledgerd.InvalidArgumentError) as caught:
            await self.client.do(self.ns, "", lambda lease: b"x")
        self.assertEqual(caught.exception.field, "key")


class AioPolicyTest(unittest.IsolatedAsyncioTestCase):
    """The breaker and the retry budget of the asyncio client, against an
    address where nothing listens (connection refused: UNAVAILABLE)."""

    async def test_breaker_opens_and_fails_fast_without_touching_the_network(self):
        changes = []
        client = ledgerd.aio.Client(
            closed_port_addr(),
            insecure=True,
            default_timeout=TIMEOUT,
            max_attempts=1,
            breaker=ledgerd.BreakerConfig(failure_threshold=2, open_for=3600),
            on_breaker_change=lambda old, new, error: changes.append((old, new)),
        )
        async with client:
            for _ in range(2):
                with self.assertRaises(ledgerd.UnavailableError) as caught:
                    await client.lookup(namespace="ns", key="k")
                self.assertNotIsInstance(caught.exception, ledgerd.CircuitOpenError)
            self.assertEqual(client.breaker_state, "open")
            calls = client.stats().calls
            with self.assertRaises(ledgerd.CircuitOpenError) as caught:
                await client.do("ns", "k", lambda lease: b"x")
            self.assertIn("circuit open since", str(caught.exception))
            self.assertIsInstance(caught.exception.last_error, ledgerd.UnavailableError)
            self.assertEqual(changes, [("closed", "open")])
            stats = client.stats()
            self.assertEqual((stats.breaker_state, stats.breaker_opens, stats.retries), ("open", 1, 0))
            self.assertEqual(stats.calls, calls + 1)

    async def test_breaker_off(self):
        client = ledgerd.aio.Client(closed_port_addr(), insecure=True, max_attempts=1, breaker=None)
        async with client:
            for _ in range(8):
                with self.assertRaises(ledgerd.UnavailableError) as caught:
                    await client.lookup(namespace="ns", key="k", timeout=TIMEOUT)
                self.assertNotIsInstance(caught.exception, ledgerd.CircuitOpenError)
            self.assertEqual(client.breaker_state, "disabled")

    async def test_retry_budget_bounds_the_retries(self):
        client = ledgerd.aio.Client(
            closed_port_addr(),
            insecure=True,
            breaker=None,
            retry_budget=ledgerd.RetryBudgetConfig(max_tokens=3, ratio=0.1),
        )
        async with client:
            with self.assertRaises(ledgerd.UnavailableError) as caught:
                await client.lookup(namespace="ns", key="k", timeout=TIMEOUT)
            self.assertIn("retry budget exhausted", str(caught.exception))
            stats = client.stats()
            # 3 tokens, plus 0.1 for the call's first attempt: 3 retries.
            self.assertEqual((stats.calls, stats.retries, stats.retries_refused), (1, 3, 1))


class AioDecoratorTest(AioTest):
    async def test_runs_once_and_replays_the_same_value(self):
        runs = []

        @self.client.idempotent(namespace=self.ns, key=lambda invoice: f"invoice/{invoice['id']}", lease_ttl=LONG_LEASE)
        async def send(invoice):
            lease = ledgerd.current_lease()
            runs.append(lease.fencing_token)
            return {"sent": invoice["id"], "token": lease.fencing_token}

        first = await send({"id": 7})
        second = await send({"id": 7})
        self.assertEqual(first, {"sent": 7, "token": 1})
        self.assertEqual(second, first)
        self.assertEqual(runs, [1])
        self.assertEqual(send.__name__, "send")

    async def test_concurrent_tasks_see_their_own_lease(self):
        @self.client.idempotent(namespace=self.ns, key=lambda n: f"k{n}")
        async def job(n):
            await asyncio.sleep(0.01)
            return ledgerd.current_lease().key

        self.assertEqual(await asyncio.gather(*(job(n) for n in range(5))), [f"k{n}" for n in range(5)])

    async def test_fingerprint_and_custom_serializer(self):
        @self.client.idempotent(
            namespace=self.ns,
            key=lambda payload: "k",
            fingerprint=lambda payload: payload,
            serializer=lambda value: value[::-1],
            deserializer=lambda data: data[::-1],
        )
        async def echo(payload):
            return payload

        self.assertEqual(await echo(b"abc"), b"abc")
        self.assertEqual((await self.entry("k")).result, b"cba")
        with self.assertRaises(ledgerd.FingerprintMismatchError):
            await echo(b"other")

    async def test_refuses_a_sync_function(self):
        with self.assertRaises(TypeError):
            self.client.idempotent(namespace=self.ns, key=str)(lambda x: x)


if __name__ == "__main__":
    unittest.main()
