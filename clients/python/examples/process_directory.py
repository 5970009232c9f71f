#!/usr/bin/env python3
"""Process a directory of records exactly once, with ledgerd.

Every file of the input directory is a batch of records (one per line). Each
file is processed under its own ledger key (its path relative to the input
directory), with the SHA-256 of its content as the fingerprint: running the
pipeline again, from any number of machines at once, processes each file
once; a file whose content changed under the same name is refused
(FINGERPRINT_MISMATCH) instead of being silently skipped or redone.

The work writes its output through a *fenced sink*: next to each output file
the sink keeps the newest fencing token that wrote it (``<output>.token``) and
refuses a write with an older token. So a worker that was paused, lost its
lease and was taken over cannot overwrite the newer worker's output: the
pipeline's side effects are exactly-once, not just its ledger entries.

    PYTHONPATH=clients/python/src:clients/python/gen /usr/bin/python3 \\
        clients/python/examples/process_directory.py --addr 127.0.0.1:7070 \\
        --input ./records --output ./out
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import sys
from typing import Iterator, Tuple

try:
    import ledgerd
except ImportError:  # run from a checkout: use the source tree
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [os.path.join(_here, "..", "src")]
    import ledgerd

import grpc


class StaleWriteError(Exception):
    """The sink refused a write whose fencing token is older than the newest it saw."""


class FencedSink:
    """Writes output files, refusing writes older than the newest fencing token.

    For each output path it keeps ``<path>.token``, the newest token that
    wrote it; a write with an older token raises :class:`StaleWriteError`. The
    same token may write again (a retry of the same grant). Writes to one path
    are serialized across processes with a lock file, and are atomic (a
    temporary file renamed into place) and durable (fsync).
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def write(self, relative_path: str, data: bytes, fencing_token: int) -> str:
        """Writes ``data`` to ``root/relative_path`` under ``fencing_token``; returns the path."""
        path = os.path.join(self.root, relative_path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            newest = self.token(relative_path)
            if fencing_token < newest:
                raise StaleWriteError(
                    f"{relative_path}: token {fencing_token} is older than {newest}, which already wrote it"
                )
            _write_atomically(path + ".token", f"{fencing_token}\n".encode())
            _write_atomically(path, data)
        return path

    def token(self, relative_path: str) -> int:
        """The newest token that wrote ``relative_path``; 0 if none."""
        try:
            with open(os.path.join(self.root, relative_path) + ".token", encoding="ascii") as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def input_files(root: str) -> Iterator[Tuple[str, str]]:
    """Yields (key, path) for every regular file under ``root``, in a stable order."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                yield os.path.relpath(path, root).replace(os.sep, "/"), path


def transform(records: bytes) -> Tuple[bytes, int]:
    """The processing of one file (a stand-in): normalizes each non-empty record."""
    lines = [line.strip().upper() for line in records.decode("utf-8", errors="replace").splitlines()]
    kept = [line for line in lines if line]
    return ("\n".join(kept) + ("\n" if kept else "")).encode(), len(kept)


def process_file(client: ledgerd.Client, sink: FencedSink, namespace: str, key: str, path: str, args: argparse.Namespace) -> ledgerd.Result:
    """Processes one input file exactly once; returns the ledger's result."""
    with open(path, "rb") as f:
        content = f.read()
    fingerprint = hashlib.sha256(content).digest()

    def work(lease: ledgerd.Lease) -> bytes:
        output, count = transform(content)
        lease.raise_if_cancelled()  # do not write if the lease is already gone
        written = sink.write(key + ".out", output, lease.fencing_token)
        summary = {"records": count, "output": written, "sha256": fingerprint.hex(), "token": lease.fencing_token}
        return json.dumps(summary, sort_keys=True).encode()

    return client.do(
        namespace,
        key,
        work,
        fingerprint=fingerprint,
        metadata={"pipeline": "process_directory", "input": os.path.abspath(path)[:512]},
        lease_ttl=args.lease_ttl,
        timeout=args.timeout,
    )


def parse_args(argv: list) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addr", required=True, help="ledgerd address, e.g. 127.0.0.1:7070")
    parser.add_argument("--input", required=True, help="directory of input files (one record per line)")
    parser.add_argument("--output", required=True, help="directory for the output files")
    parser.add_argument("--namespace", default="process-directory", help="ledger namespace (default: process-directory)")
    parser.add_argument("--lease-ttl", type=float, default=None, help="lease TTL in seconds (default: the namespace's)")
    parser.add_argument("--timeout", type=float, default=60.0, help="bound of each file's processing, seconds (default 60)")
    parser.add_argument("--tls", action="store_true", help="use TLS (system roots, or --ca)")
    parser.add_argument("--ca", help="PEM file of the CA that signed the server's certificate (implies --tls)")
    return parser.parse_args(argv)


def main(argv: list) -> int:
    """Runs the pipeline; returns the exit status (1 if any file failed)."""
    args = parse_args(argv)
    if args.tls or args.ca:
        root_certificates = None
        if args.ca:
            with open(args.ca, "rb") as f:
                root_certificates = f.read()
        client = ledgerd.Client(args.addr, credentials=grpc.ssl_channel_credentials(root_certificates))
    else:
        client = ledgerd.Client(args.addr, insecure=True)
    sink = FencedSink(args.output)
    processed = replayed = failed = 0
    with client:
        for key, path in input_files(args.input):
            try:
                result = process_file(client, sink, args.namespace, key, path, args)
            except ledgerd.FingerprintMismatchError:
                failed += 1
                print(f"{key}: changed since it was processed (fingerprint mismatch); use a new key", file=sys.stderr)
            except ledgerd.FailedError as error:
                failed += 1
                print(f"{key}: failed permanently earlier: {error}", file=sys.stderr)
            except Exception as error:  # noqa: BLE001 - report and go on with the other files
                failed += 1
                print(f"{key}: {type(error).__name__}: {error}", file=sys.stderr)
            else:
                summary = json.loads(result.value)
                if result.replayed:
                    replayed += 1
                    print(f"{key}: already processed (token {result.fencing_token}), {summary['records']} records")
                else:
                    processed += 1
                    print(
                        f"{key}: processed (token {result.fencing_token}, attempt {result.attempt}), "
                        f"{summary['records']} records -> {summary['output']}"
                    )
    print(f"{processed} processed, {replayed} already done, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
