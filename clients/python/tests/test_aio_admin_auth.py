"""The asyncio client and the admin calls against a ledgerd that
authenticates (the environment of test_live_auth.py: LEDGERD_AUTH_ADDR,
LEDGERD_AUTH_TOKEN, a worker on auth-*, and LEDGERD_AUTH_READER_TOKEN, a
reader on auth-*). Without LEDGERD_AUTH_ADDR the tests are reported as
skipped, with the reason.
"""

from __future__ import annotations

import unittest

import test_live_auth
from test_live_auth import ADDR, NAMESPACE, READER_TOKEN, SKIP_REASON, TIMEOUT, WORKER_TOKEN, unique_key

import ledgerd
import ledgerd.aio


def setUpModule():
    test_live_auth.setUpModule()  # fails the module when the tokens are missing


@unittest.skipUnless(ADDR, SKIP_REASON)
class AioAuthTest(unittest.IsolatedAsyncioTestCase):
    async def test_the_token_goes_with_every_call(self):
        key = unique_key()
        async with ledgerd.aio.Client(ADDR, insecure=True, token=WORKER_TOKEN, default_timeout=TIMEOUT) as worker:
            result = await worker.do(NAMESPACE, key, lambda lease: b"done")
            self.assertEqual(result.value, b"done")
        async with ledgerd.aio.Client(ADDR, insecure=True, token=READER_TOKEN, default_timeout=TIMEOUT) as reader:
            history = await reader.history(NAMESPACE, key)
            self.assertEqual(len(history), 2)
            with self.assertRaises(ledgerd.PermissionDeniedError):
                await reader.do(NAMESPACE, unique_key(), lambda lease: self.fail("the work must not run"))

    async def test_no_token_is_unauthenticated(self):
        async with ledgerd.aio.Client(ADDR, insecure=True, default_timeout=TIMEOUT) as anonymous:
            with self.assertRaises(ledgerd.UnauthenticatedError):
                await anonymous.lookup(namespace=NAMESPACE, key=unique_key())


@unittest.skipUnless(ADDR, SKIP_REASON)
class AdminAuthTest(unittest.TestCase):
    def test_a_reader_lists_but_may_not_force_release(self):
        key = unique_key()
        with ledgerd.Client(ADDR, insecure=True, token=WORKER_TOKEN, default_timeout=TIMEOUT) as worker:
            worker.reserve(namespace=NAMESPACE, key=key, owner="held", lease_ttl=300)
        with ledgerd.Client(ADDR, insecure=True, token=READER_TOKEN, default_timeout=TIMEOUT) as reader:
            listed = [e.key for e in reader.iter_entries(NAMESPACE, key_prefix=key)]
            self.assertEqual(listed, [key])
            with self.assertRaises(ledgerd.PermissionDeniedError):
                reader.force_release(NAMESPACE, key, reason="a reader may not")


if __name__ == "__main__":
    unittest.main()
