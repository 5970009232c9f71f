#!/usr/bin/env python3
"""A worker for cross-language contests on one key.

Runs ``client.do(NAMESPACE, KEY, work)`` where the work appends one line
``<owner>`` to the work log (flushed and fsynced, so that a count of the
lines is a count of the runs of the work, even if the process is killed),
then sleeps ``--work-ms`` milliseconds and returns ``b"done by <owner>"``.

On success it prints exactly one JSON line to stdout::

    {"owner": "...", "value": "...", "replayed": false, "fencing_token": 1}

and exits 0; on error it prints the error to stderr and exits 1.

    PYTHONPATH=clients/python/src:clients/python/gen /usr/bin/python3 \\
        clients/python/examples/contest_worker.py --addr 127.0.0.1:7070 \\
        --namespace contest --key k1 --owner py-1 --work-log /tmp/work.log --work-ms 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

try:
    import ledgerd
except ImportError:  # run from a checkout: use the source tree
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [os.path.join(_here, "..", "src")]
    import ledgerd


def parse_args(argv: list) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addr", required=True, help="ledgerd address, e.g. 127.0.0.1:7070 (plaintext)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--owner", required=True, help="this worker's owner name in the ledger")
    parser.add_argument("--work-log", required=True, help="file the work appends '<owner>\\n' to")
    parser.add_argument("--work-ms", type=int, required=True, help="how long the work sleeps, in milliseconds")
    parser.add_argument("--lease-ttl-ms", type=int, default=None, help="lease TTL in milliseconds (default: the namespace's)")
    parser.add_argument(
        "--timeout-ms", type=int, default=120_000, help="bound of the whole do() call in milliseconds (default 120000)"
    )
    return parser.parse_args(argv)


def main(argv: list) -> int:
    """Runs the worker; returns the exit status."""
    args = parse_args(argv)

    def work(lease: ledgerd.Lease) -> bytes:
        with open(args.work_log, "a", encoding="utf-8") as log:
            log.write(f"{args.owner}\n")
            log.flush()
            os.fsync(log.fileno())
        time.sleep(args.work_ms / 1000)
        return f"done by {args.owner}".encode()

    try:
        with ledgerd.Client(args.addr, insecure=True) as client:
            result = client.do(
                args.namespace,
                args.key,
                work,
                owner=args.owner,
                lease_ttl=None if args.lease_ttl_ms is None else args.lease_ttl_ms / 1000,
                timeout=args.timeout_ms / 1000,
            )
    except Exception as error:  # noqa: BLE001 - report any failure and exit 1
        print(f"contest_worker {args.owner}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    line = {
        "owner": args.owner,
        "value": result.value.decode("utf-8", errors="replace"),
        "replayed": result.replayed,
        "fencing_token": result.fencing_token,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
