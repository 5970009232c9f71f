"""The example programs, run as a user would, against the live ledgerd (LEDGERD_ADDR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest

import support

ADDR = ""


def setUpModule():
    global ADDR
    ADDR = support.ledgerd_addr()  # raises (fails the module) when unset


def run(args, timeout=2 * support.PATIENCE):
    return subprocess.run(
        [support.PYTHON] + args, capture_output=True, text=True, timeout=timeout, env=support.child_env()
    )


class ContestWorkerTest(unittest.TestCase):
    SCRIPT = os.path.join(support.EXAMPLES, "contest_worker.py")

    def test_contest_runs_the_work_once(self):
        ns = support.unique_namespace("contest")
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "work.log")
            workers = [
                subprocess.Popen(
                    [support.PYTHON, self.SCRIPT, "--addr", ADDR, "--namespace", ns, "--key", "k",
                     # A lease no load can make run out while the work runs:
                     # the work is done once, and the others replay it.
                     "--owner", f"py-{i}", "--work-log", log, "--work-ms", "300", "--lease-ttl-ms", "300000"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=support.child_env(),
                )
                for i in range(4)
            ]
            outputs = []
            for worker in workers:
                try:
                    stdout, stderr = worker.communicate(timeout=2 * support.PATIENCE)
                finally:
                    if worker.poll() is None:
                        worker.kill()
                        worker.wait(support.PATIENCE)
                self.assertEqual(worker.returncode, 0, stderr)
                lines = stdout.splitlines()
                self.assertEqual(len(lines), 1, stdout)
                outputs.append(json.loads(lines[0]))
            with open(log, encoding="utf-8") as f:
                runs = f.read().splitlines()
        self.assertEqual(len(runs), 1, "exactly one worker ran the work")
        winner = runs[0]
        for i, line in enumerate(outputs):
            self.assertEqual(list(line), ["owner", "value", "replayed", "fencing_token"])
            self.assertEqual(line["owner"], f"py-{i}")
            self.assertEqual(line["value"], f"done by {winner}")
            self.assertEqual(line["fencing_token"], 1)
            self.assertEqual(line["replayed"], line["owner"] != winner)

    def test_error_exits_1(self):
        with tempfile.TemporaryDirectory() as tmp:
            done = run([self.SCRIPT, "--addr", ADDR, "--namespace", "bad ns", "--key", "k", "--owner", "o",
                        "--work-log", os.path.join(tmp, "log"), "--work-ms", "0"])
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stdout, "")
        self.assertIn("INVALID_ARGUMENT", done.stderr)


class ProcessDirectoryTest(unittest.TestCase):
    SCRIPT = os.path.join(support.EXAMPLES, "process_directory.py")

    def test_processes_each_file_once(self):
        ns = support.unique_namespace("pipeline")
        with tempfile.TemporaryDirectory() as tmp:
            src, out = os.path.join(tmp, "in"), os.path.join(tmp, "out")
            os.makedirs(os.path.join(src, "sub"))
            files = {"a.txt": "alpha\nbeta\n", "b.txt": "gamma\n\n", "sub/c.txt": "delta\n"}
            for name, text in files.items():
                with open(os.path.join(src, name), "w") as f:
                    f.write(text)
            args = [self.SCRIPT, "--addr", ADDR, "--namespace", ns, "--input", src, "--output", out]
            first = run(args)
            self.assertEqual(first.returncode, 0, first.stderr)
            self.assertIn("3 processed, 0 already done, 0 failed", first.stdout)
            with open(os.path.join(out, "a.txt.out")) as f:
                self.assertEqual(f.read(), "ALPHA\nBETA\n")
            with open(os.path.join(out, "sub", "c.txt.out.token")) as f:
                self.assertEqual(f.read().strip(), "1")
            second = run(args)
            self.assertEqual(second.returncode, 0, second.stderr)
            self.assertIn("0 processed, 3 already done, 0 failed", second.stdout)
            # A changed file under the same key is refused, not redone.
            with open(os.path.join(src, "b.txt"), "a") as f:
                f.write("epsilon\n")
            third = run(args)
            self.assertEqual(third.returncode, 1)
            self.assertIn("b.txt: changed since it was processed", third.stderr)

    def test_fenced_sink_refuses_older_tokens(self):
        sys.path.insert(0, support.EXAMPLES)
        try:
            import process_directory
        finally:
            sys.path.remove(support.EXAMPLES)
        with tempfile.TemporaryDirectory() as tmp:
            sink = process_directory.FencedSink(tmp)
            sink.write("x.out", b"from 2", 2)
            sink.write("x.out", b"from 2 again", 2)  # the same grant may write again
            with self.assertRaises(process_directory.StaleWriteError):
                sink.write("x.out", b"from 1", 1)
            with open(os.path.join(tmp, "x.out"), "rb") as f:
                self.assertEqual(f.read(), b"from 2 again")
            sink.write("x.out", b"from 3", 3)
            self.assertEqual(sink.token("x.out"), 3)


if __name__ == "__main__":
    unittest.main()
