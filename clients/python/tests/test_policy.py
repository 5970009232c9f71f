"""The breaker, the retry budget and the fail-open queue, on a fake clock (no server needed)."""

from __future__ import annotations

import datetime
import pickle
import unittest

import support  # noqa: F401 - sets sys.path

import grpc

import ledgerd
import ledgerd._status
import ledgerd.errors
from ledgerd import _policy
from ledgerd._policy import CLOSED, FAILURE, HALF_OPEN, IGNORED, OPEN, SUCCESS


class FakeClock:
    """A monotonic clock that moves only when told, and the matching wall clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.epoch = datetime.datetime(2026, 12, 7, 10, 31, 2, tzinfo=datetime.timezone.utc)

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime.datetime:
        return self.epoch + datetime.timedelta(seconds=self.now - 1000.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def unavailable(text: str = "connection refused") -> ledgerd.UnavailableError:
    return ledgerd.UnavailableError(text, code=grpc.StatusCode.UNAVAILABLE, operation="reserve")


class BreakerTest(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.changes = []
        self.config = _policy.BreakerConfig(failure_threshold=3, failure_ratio=0.5, window=10, min_calls=6, open_for=5)
        self.breaker = _policy.CircuitBreaker(
            self.config,
            on_change=lambda old, new, err: self.changes.append((old, new, str(err) if err else None)),
            clock=self.clock,
            wall_clock=self.clock.wall,
        )

    def attempt(self, outcome: str, error=None, *, guarded: bool = True) -> None:
        ticket = self.breaker.allow(guarded=guarded)
        self.breaker.record(ticket, outcome, error)

    def test_consecutive_failures_open_it(self) -> None:
        self.attempt(FAILURE, unavailable())
        self.attempt(FAILURE, unavailable())
        self.assertEqual(self.breaker.state, CLOSED)
        self.attempt(FAILURE, unavailable("last one"))
        self.assertEqual(self.breaker.state, OPEN)
        self.assertEqual(self.breaker.opens, 1)
        self.assertEqual(self.changes, [(CLOSED, OPEN, "reserve: UNAVAILABLE: last one")])

    def test_a_success_resets_the_consecutive_count(self) -> None:
        for _ in range(4):
            self.attempt(FAILURE, unavailable())
            self.attempt(FAILURE, unavailable())
            self.attempt(SUCCESS)
            self.clock.advance(20)  # keep the window below min_calls
        self.assertEqual(self.breaker.state, CLOSED)

    def test_ratio_over_the_window_opens_it(self) -> None:
        # Alternating failures never make 3 in a row, but 3 of 6 is the ratio.
        for outcome in (FAILURE, SUCCESS, FAILURE, SUCCESS, FAILURE):
            self.attempt(outcome, unavailable())
        self.assertEqual(self.breaker.state, CLOSED)  # 5 calls: under min_calls
        self.attempt(SUCCESS)
        self.assertEqual(self.breaker.state, OPEN)

    def test_old_attempts_leave_the_window(self) -> None:
        for outcome in (FAILURE, SUCCESS, FAILURE, SUCCESS, FAILURE):
            self.attempt(outcome, unavailable())
        self.clock.advance(10.5)
        self.attempt(SUCCESS)
        self.assertEqual(self.breaker.state, CLOSED)

    def test_open_refuses_guarded_calls_with_since_and_last_error(self) -> None:
        for _ in range(3):
            self.attempt(FAILURE, unavailable("refused by 10.0.0.1"))
        self.clock.advance(3.2)
        with self.assertRaises(ledgerd.CircuitOpenError) as caught:
            self.breaker.allow()
        error = caught.exception
        self.assertIsInstance(error, ledgerd.UnavailableError)
        self.assertEqual(error.since, self.clock.epoch)
        self.assertIn("refused by 10.0.0.1", str(error.last_error))
        self.assertEqual(
            str(error),
            "ledgerd: circuit open since 2026-12-07T10:31:02Z (3.2s ago), "
            "last error: reserve: UNAVAILABLE: refused by 10.0.0.1",
        )
        self.assertEqual(error.reason, "CIRCUIT_OPEN")
        copy = pickle.loads(pickle.dumps(error))
        self.assertEqual(str(copy), str(error))

    def test_unguarded_calls_pass_while_open(self) -> None:
        for _ in range(3):
            self.attempt(FAILURE, unavailable())
        ticket = self.breaker.allow(guarded=False)
        self.assertFalse(ticket.probe)
        self.breaker.record(ticket, SUCCESS)
        self.assertEqual(self.breaker.state, OPEN)  # only the probe decides

    def test_half_open_lets_one_probe_through_and_its_success_closes(self) -> None:
        for _ in range(3):
            self.attempt(FAILURE, unavailable())
        self.clock.advance(5)
        self.assertEqual(self.breaker.state, HALF_OPEN)
        probe = self.breaker.allow()
        self.assertTrue(probe.probe)
        with self.assertRaises(ledgerd.CircuitOpenError):
            self.breaker.allow()
        self.breaker.record(probe, SUCCESS)
        self.assertEqual(self.breaker.state, CLOSED)
        self.assertEqual([c[:2] for c in self.changes], [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)])
        # Closed anew: the counts start over.
        self.attempt(FAILURE, unavailable())
        self.attempt(FAILURE, unavailable())
        self.assertEqual(self.breaker.state, CLOSED)

    def test_a_failed_probe_reopens_for_another_period(self) -> None:
        for _ in range(3):
            self.attempt(FAILURE, unavailable())
        self.clock.advance(5)
        self.attempt(FAILURE, unavailable("still down"))
        self.assertEqual(self.breaker.state, OPEN)
        self.assertEqual(self.breaker.opens, 2)
        self.clock.advance(4.9)
        self.assertEqual(self.breaker.state, OPEN)
        self.clock.advance(0.1)
        self.assertEqual(self.breaker.state, HALF_OPEN)

    def test_a_cancelled_probe_frees_the_slot(self) -> None:
        for _ in range(3):
            self.attempt(FAILURE, unavailable())
        self.clock.advance(5)
        self.attempt(IGNORED)
        self.assertEqual(self.breaker.state, HALF_OPEN)
        self.assertTrue(self.breaker.allow().probe)

    def test_late_outcomes_of_an_older_state_do_not_count(self) -> None:
        early = [self.breaker.allow() for _ in range(5)]
        for _ in range(3):
            self.attempt(FAILURE, unavailable())
        self.clock.advance(5)
        probe = self.breaker.allow()
        self.breaker.record(probe, SUCCESS)
        for ticket in early:  # began before the breaker opened
            self.breaker.record(ticket, FAILURE, unavailable())
        self.assertEqual(self.breaker.state, CLOSED)

    def test_outcome_of_a_status_code(self) -> None:
        self.assertEqual(_policy.attempt_outcome(grpc.StatusCode.UNAVAILABLE), FAILURE)
        self.assertEqual(_policy.attempt_outcome(grpc.StatusCode.DEADLINE_EXCEEDED), FAILURE)
        self.assertEqual(_policy.attempt_outcome(grpc.StatusCode.CANCELLED), IGNORED)
        for code in (None, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL):
            self.assertEqual(_policy.attempt_outcome(code), SUCCESS)

    def test_a_failing_hook_does_not_break_calls(self) -> None:
        def hook(*_):
            raise RuntimeError("metrics down")

        breaker = _policy.CircuitBreaker(_policy.BreakerConfig(failure_threshold=1), on_change=hook)
        breaker.record(breaker.allow(), FAILURE, unavailable())
        self.assertEqual(breaker.state, OPEN)

    def test_bad_configuration_names_the_field(self) -> None:
        cases = [
            (dict(failure_threshold=0), "failure_threshold must be positive"),
            (dict(failure_ratio=1.5), "failure_ratio must be at most 1"),
            (dict(window=-1), "window must be positive"),
            (dict(min_calls=2.5), "min_calls must be an int"),
            (dict(open_for=0), "open_for must be positive"),
        ]
        for kwargs, message in cases:
            with self.subTest(kwargs=kwargs), self.assertRaisesRegex((ValueError, TypeError), message):
                _policy.BreakerConfig(**kwargs)


class RetryBudgetTest(unittest.TestCase):
    def test_retries_stay_within_max_tokens_plus_ratio_times_calls(self) -> None:
        budget = _policy.RetryBudget(_policy.RetryBudgetConfig(max_tokens=10, ratio=0.1))
        retries = 0
        for _ in range(100):  # 100 calls, each wanting 3 retries
            budget.on_call()
            for _ in range(3):
                if budget.try_retry():
                    retries += 1
        self.assertLessEqual(retries, 10 + 0.1 * 100)
        self.assertGreaterEqual(retries, 19)  # the ratio does refill it

    def test_starts_full_and_refuses_when_empty(self) -> None:
        budget = _policy.RetryBudget(_policy.RetryBudgetConfig(max_tokens=2, ratio=0.5))
        self.assertTrue(budget.try_retry())
        self.assertTrue(budget.try_retry())
        self.assertFalse(budget.try_retry())
        budget.on_call()
        self.assertFalse(budget.try_retry())  # half a token is not a retry
        budget.on_call()
        self.assertTrue(budget.try_retry())
        for _ in range(10):
            budget.on_call()
        self.assertEqual(budget.tokens, 2)  # capped

    def test_ten_tenths_make_a_token(self) -> None:
        budget = _policy.RetryBudget(_policy.RetryBudgetConfig(max_tokens=1, ratio=0.1))
        self.assertTrue(budget.try_retry())
        for _ in range(10):
            budget.on_call()
        self.assertTrue(budget.try_retry())

    def test_bad_configuration_names_the_field(self) -> None:
        with self.assertRaisesRegex(ValueError, "retry_budget ratio must be 0 or more"):
            _policy.RetryBudgetConfig(ratio=-0.1)
        with self.assertRaisesRegex(ValueError, "retry_budget max_tokens must be positive"):
            _policy.RetryBudgetConfig(max_tokens=0)


class FailOpenQueueTest(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.queue = _policy.FailOpenQueue(2, clock=self.clock)

    def record(self, key: str) -> _policy.FailOpenRecord:
        return _policy.FailOpenRecord(namespace="ns", key=key, result=b"r", owner="me")

    def test_bounded_and_counted(self) -> None:
        self.assertTrue(self.queue.reserve_slot())
        self.assertTrue(self.queue.reserve_slot())
        self.assertFalse(self.queue.reserve_slot())  # full: fail closed
        self.assertEqual(self.queue.runs, 2)
        self.queue.cancel_slot()  # that work raised
        self.assertEqual(self.queue.pending, 1)
        self.queue.put(self.record("a"))
        self.assertEqual(self.queue.pending, 1)
        self.assertTrue(self.queue.reserve_slot())

    def test_due_records_retry_later_and_finish(self) -> None:
        for key in ("a", "b"):
            self.assertTrue(self.queue.reserve_slot())
            self.queue.put(self.record(key))
        first, _ = self.queue.next_due()
        assert first is not None
        self.assertEqual(first.key, "a")
        self.queue.retry_later(first, 2.0)
        second, _ = self.queue.next_due()
        assert second is not None
        self.assertEqual(second.key, "b")
        self.queue.finish(second, _policy.DISCARDED_COMPLETED)
        none, wait = self.queue.next_due()
        self.assertIsNone(none)
        self.assertAlmostEqual(wait or 0, 2.0)
        self.clock.advance(2)
        again, _ = self.queue.next_due()
        assert again is not None
        self.assertEqual((again.key, again.tries), ("a", 1))
        self.queue.finish(again, _policy.RECORDED)
        self.assertEqual(self.queue.next_due(), (None, None))
        self.assertEqual((self.queue.pending, self.queue.recorded, self.queue.discarded), (0, 1, 1))

    def test_abandon_returns_the_waiting_records(self) -> None:
        self.assertTrue(self.queue.reserve_slot())
        self.queue.put(self.record("a"))
        self.assertEqual([r.key for r in self.queue.abandon()], ["a"])
        self.assertEqual(self.queue.pending, 0)

    def test_fallback_names(self) -> None:
        self.assertEqual(_policy.check_fallback("fail_open"), "fail_open")
        with self.assertRaisesRegex(ValueError, "fallback must be 'fail_closed' or 'fail_open', got 'open'"):
            _policy.check_fallback("open")


class RetryInfoTest(unittest.TestCase):
    def test_retry_delay_is_decoded(self) -> None:
        # google.rpc.Status{code: 8, details: [RetryInfo{retry_delay: 1.5s}]}
        duration = b"\x08\x01\x10" + _varint(500_000_000)
        retry_info = b"\x0a" + bytes([len(duration)]) + duration
        url = ledgerd._status.RETRY_INFO_TYPE.encode()
        any_msg = b"\x0a" + bytes([len(url)]) + url + b"\x12" + bytes([len(retry_info)]) + retry_info
        status = b"\x08\x08\x1a" + bytes([len(any_msg)]) + any_msg
        error = ledgerd.errors.error_from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", status)
        self.assertAlmostEqual(error.retry_delay, 1.5)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


if __name__ == "__main__":
    unittest.main()
