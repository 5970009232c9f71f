"""The API token: how the Client takes it and that every call carries it (no ledgerd needed).

A scripted in-process server records the metadata of each call: over
plaintext (insecure=True) and over a secure channel, where the token is a
call credential. gRPC's local credentials stand in for TLS: they count as
secure for call credentials, without certificates.
"""

from __future__ import annotations

import os
import tempfile
import threading
import unittest
from concurrent import futures

import support

import grpc
from ledgerd.pb import ledger_pb2, ledger_pb2_grpc

import ledgerd
from test_fake_server import FakeLedger, acquired

TOKEN = "ldg_0123456789abcdef_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"


def authorization(context):
    """The authorization headers of a call."""
    return [value for key, value in context.invocation_metadata() if key == "authorization"]


class TokenArgumentsTest(unittest.TestCase):
    def test_token_and_token_file_exclude_each_other(self):
        with self.assertRaisesRegex(ValueError, "either token or token_file"):
            ledgerd.Client("127.0.0.1:1", insecure=True, token=TOKEN, token_file="/nonexistent")

    def test_a_token_needs_a_chosen_transport(self):
        with self.assertRaisesRegex(ValueError, "insecure=True \\(which sends the token in plaintext\\)"):
            ledgerd.Client("127.0.0.1:1", token=TOKEN)

    def test_malformed_tokens_are_refused_without_being_shown(self):
        for bad in ["", "   ", "Bearer " + TOKEN, TOKEN + "\nx-evil: 1", "secret-without-prefix"]:
            with self.subTest(bad=bad):
                with self.assertRaises(ValueError) as caught:
                    ledgerd.Client("127.0.0.1:1", insecure=True, token=bad)
                self.assertIn("not a ledgerd API token", str(caught.exception))
                self.assertNotIn("c2VjcmV0", str(caught.exception))
        with self.assertRaises(TypeError):
            ledgerd.Client("127.0.0.1:1", insecure=True, token=TOKEN.encode())

    def test_token_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            empty = os.path.join(tmp, "empty")
            open(empty, "w").close()
            with self.assertRaisesRegex(ValueError, "is empty"):
                ledgerd.Client("127.0.0.1:1", insecure=True, token_file=empty)
            with self.assertRaises(FileNotFoundError):
                ledgerd.Client("127.0.0.1:1", insecure=True, token_file=os.path.join(tmp, "missing"))


class TokenOnTheWireTest(unittest.TestCase):
    def serve(self, server_credentials=None):
        self.fake = FakeLedger()
        self.seen = []
        self.heartbeat_seen = threading.Event()

        def lookup(n, request, context):
            self.seen.append(authorization(context))
            return ledger_pb2.LookupResponse()

        def reserve(n, request, context):
            self.seen.append(authorization(context))
            return acquired(token=1)

        def complete(n, request, context):
            self.seen.append(authorization(context))
            return ledger_pb2.CompleteResponse()

        def heartbeat(n, request, context):
            self.seen.append(authorization(context))
            self.heartbeat_seen.set()
            return ledger_pb2.HeartbeatResponse()

        self.fake.handlers.update(lookup=lookup, reserve=reserve, complete=complete, heartbeat=heartbeat)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        ledger_pb2_grpc.add_LedgerServiceServicer_to_server(self.fake, server)
        if server_credentials is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", server_credentials)
        server.start()
        self.addCleanup(lambda: server.stop(0).wait(5))
        return f"127.0.0.1:{port}"

    def client(self, addr, **kwargs):
        client = ledgerd.Client(addr, default_timeout=support.PATIENCE, **kwargs)
        self.addCleanup(client.close)
        return client

    def test_every_call_carries_the_token_over_plaintext_when_insecure(self):
        client = self.client(self.serve(), insecure=True, token=TOKEN)
        client.lookup(namespace="ns", key="k")
        # do(): a Reserve, heartbeats from the background thread, a Complete.
        # The work lasts until the server has seen a heartbeat.
        result = client.do(
            "ns", "k", lambda lease: self.heartbeat_seen.wait(support.PATIENCE) and b"ok", heartbeat_interval=0.05
        )
        self.assertEqual(result.value, b"ok")
        self.assertGreaterEqual(len(self.seen), 4, "lookup, reserve, at least one heartbeat, complete")
        self.assertEqual(self.seen, [["Bearer " + TOKEN]] * len(self.seen))

    def test_every_call_carries_the_token_over_a_secure_channel(self):
        addr = self.serve(grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP))
        client = self.client(addr, credentials=grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP), token=TOKEN)
        client.lookup(namespace="ns", key="k")
        client.do("ns", "k", lambda lease: b"ok")
        self.assertEqual(self.seen, [["Bearer " + TOKEN]] * 3)

    def test_token_file(self):
        with tempfile.NamedTemporaryFile("w", suffix=".token", delete=False) as f:
            f.write(TOKEN + "\n")
        self.addCleanup(os.unlink, f.name)
        client = self.client(self.serve(), insecure=True, token_file=f.name)
        client.lookup(namespace="ns", key="k")
        self.assertEqual(self.seen, [["Bearer " + TOKEN]])

    def test_no_token_sends_no_header(self):
        client = self.client(self.serve(), insecure=True)
        client.lookup(namespace="ns", key="k")
        self.assertEqual(self.seen, [[]])


if __name__ == "__main__":
    unittest.main()
