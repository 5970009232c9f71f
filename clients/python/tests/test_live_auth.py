"""The client against a live ledgerd that authenticates.

The environment names the server and two tokens:

- LEDGERD_AUTH_ADDR: a ledgerd with authentication.
- LEDGERD_AUTH_TOKEN: a token whose principal has the worker role on
  namespace pattern "auth-*".
- LEDGERD_AUTH_READER_TOKEN: a token whose principal has the reader role
  (and no worker role) on "auth-*".

Without LEDGERD_AUTH_ADDR these tests are skipped, and the skip is reported
with its reason; with it, a missing token fails the module.
"""

from __future__ import annotations

import os
import tempfile
import time
import unittest
import uuid

import support

import grpc
from ledgerd.pb import ledger_pb2

import ledgerd

#: Every test's keys are in this namespace (unique keys; runs share it).
NAMESPACE = "auth-x"

ADDR = os.environ.get("LEDGERD_AUTH_ADDR", "").strip()
WORKER_TOKEN = os.environ.get("LEDGERD_AUTH_TOKEN", "").strip()
READER_TOKEN = os.environ.get("LEDGERD_AUTH_READER_TOKEN", "").strip()

SKIP_REASON = (
    "LEDGERD_AUTH_ADDR is not set: the authentication tests need a ledgerd that authenticates, "
    "with LEDGERD_AUTH_TOKEN (worker on auth-*) and LEDGERD_AUTH_READER_TOKEN (reader on auth-*)"
)


def setUpModule():
    if not ADDR:
        return  # every test is reported as skipped, with SKIP_REASON
    missing = [name for name, value in (("LEDGERD_AUTH_TOKEN", WORKER_TOKEN), ("LEDGERD_AUTH_READER_TOKEN", READER_TOKEN)) if not value]
    if missing:
        raise RuntimeError(
            f"LEDGERD_AUTH_ADDR is set, but not {' nor '.join(missing)}: the authentication tests cannot run"
        )


#: The timeout of a call whose duration is not what the test is about.
TIMEOUT = support.PATIENCE


def unique_key() -> str:
    return f"py-{uuid.uuid4().hex[:16]}"


@unittest.skipUnless(ADDR, SKIP_REASON)
class LiveAuthTest(unittest.TestCase):
    def client(self, **kwargs) -> ledgerd.Client:
        client = ledgerd.Client(ADDR, insecure=True, default_timeout=TIMEOUT, **kwargs)
        self.addCleanup(client.close)
        return client

    def test_worker_token_completes_a_key(self):
        worker = self.client(token=WORKER_TOKEN)
        key = unique_key()
        result = worker.do(NAMESPACE, key, lambda lease: b"done with a token", timeout=TIMEOUT)
        self.assertEqual((result.value, result.replayed, result.fencing_token), (b"done with a token", False, 1))
        self.assertTrue(worker.do(NAMESPACE, key, lambda lease: self.fail("must not run"), timeout=TIMEOUT).replayed)
        # The reader may look it up.
        entry = self.client(token=READER_TOKEN).lookup(namespace=NAMESPACE, key=key, timeout=TIMEOUT).entry
        self.assertEqual((entry.state, entry.result), (ledger_pb2.STATE_COMPLETED, b"done with a token"))

    def test_token_file(self):
        with tempfile.NamedTemporaryFile("w", suffix=".token", delete=False) as f:
            f.write(WORKER_TOKEN + "\n")
        self.addCleanup(os.unlink, f.name)
        result = self.client(token_file=f.name).do(NAMESPACE, unique_key(), lambda lease: b"from a file", timeout=TIMEOUT)
        self.assertEqual(result.value, b"from a file")

    def test_reader_token_is_denied_work(self):
        reader = self.client(token=READER_TOKEN)
        key = unique_key()
        with self.assertRaises(ledgerd.PermissionDeniedError) as caught:
            reader.do(NAMESPACE, key, lambda lease: self.fail("the work must not run"), timeout=TIMEOUT)
        error = caught.exception
        self.assertEqual((error.reason, error.code, error.operation), ("PERMISSION_DENIED", grpc.StatusCode.PERMISSION_DENIED, "reserve"))
        with self.assertRaises(ledgerd.NotFoundError):
            reader.lookup(namespace=NAMESPACE, key=key, timeout=TIMEOUT)  # nothing was reserved

    def test_worker_token_is_denied_outside_its_namespaces(self):
        with self.assertRaises(ledgerd.PermissionDeniedError):
            self.client(token=WORKER_TOKEN).do("other-ns", unique_key(), lambda lease: b"", timeout=TIMEOUT)

    def test_no_token_is_unauthenticated(self):
        started = time.monotonic()
        with self.assertRaises(ledgerd.UnauthenticatedError) as caught:
            self.client().do(NAMESPACE, unique_key(), lambda lease: self.fail("the work must not run"), timeout=TIMEOUT)
        self.assertEqual((caught.exception.reason, caught.exception.code), ("UNAUTHENTICATED", grpc.StatusCode.UNAUTHENTICATED))
        # Retried, it would take the whole timeout.
        self.assertLess(time.monotonic() - started, TIMEOUT / 2, "UNAUTHENTICATED is not retried")

    def test_unknown_token_is_unauthenticated(self):
        client = self.client(token="ldg_0123456789abcdef_not-a-real-secret")
        with self.assertRaises(ledgerd.UnauthenticatedError):
            client.do(NAMESPACE, unique_key(), lambda lease: b"", timeout=TIMEOUT)


if __name__ == "__main__":
    unittest.main()
