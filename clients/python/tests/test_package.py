"""The client as a team installs it: a wheel and an sdist built offline, the
wheel installed into a fresh virtual environment, and an example run from it
against the live ledgerd (address in LEDGERD_ADDR).

The build uses setuptools' PEP 517 hooks directly (what ``python3 -m build
--no-isolation`` and ``pip wheel --no-build-isolation`` call), from Debian's
python3-setuptools and python3-wheel: no package index is needed. The venv
sees the distribution's grpcio and protobuf (``--system-site-packages``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import unittest
import zipfile

import support

import ledgerd

ADDR = ""


def setUpModule():
    global ADDR
    ADDR = support.ledgerd_addr()


def run(args, cwd, env=None, timeout=2 * support.PATIENCE):
    """Runs a command; fails the test with its output unless it exits 0."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return done


def clean_env():
    """The environment without PYTHONPATH, so that only installed packages import."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class PackageTest(unittest.TestCase):
    def test_wheel_and_sdist_build_install_and_run_an_example(self):
        with tempfile.TemporaryDirectory() as tmp:
            # Build from a copy, so that the build leaves nothing in the checkout.
            project = os.path.join(tmp, "project")
            shutil.copytree(
                support.ROOT,
                project,
                ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "tests"),
            )
            dist = os.path.join(tmp, "dist")
            os.makedirs(dist)
            names = []
            for hook in ("build_sdist", "build_wheel"):  # one process each: setuptools keeps state between them
                built = run(
                    [
                        support.PYTHON,
                        "-c",
                        f"import sys, setuptools.build_meta as b; print('BUILT', b.{hook}(sys.argv[1]))",
                        dist,
                    ],
                    cwd=project,
                    env=clean_env(),
                )
                # The hooks log to stdout too: the name is on the last line.
                marker, name = built.stdout.splitlines()[-1].split()
                self.assertEqual(marker, "BUILT")
                names.append(name)
            sdist_name, wheel_name = names
            self.assertEqual(wheel_name, f"ledgerd-{ledgerd.__version__}-py3-none-any.whl")
            self.assertEqual(sdist_name, f"ledgerd-{ledgerd.__version__}.tar.gz")

            # The wheel holds one top-level package, ledgerd, with the generated code inside.
            with zipfile.ZipFile(os.path.join(dist, wheel_name)) as wheel:
                names = wheel.namelist()
            tops = {name.split("/")[0] for name in names}
            self.assertEqual(tops, {"ledgerd", f"ledgerd-{ledgerd.__version__}.dist-info"})
            for needed in ("ledgerd/_gen/ledger/v1/ledger_pb2.py", "ledgerd/_gen/ledger/v1/ledger_pb2.pyi",
                           "ledgerd/py.typed", "ledgerd/aio.py"):
                self.assertIn(needed, names)
            with tarfile.open(os.path.join(dist, sdist_name)) as sdist:
                members = sdist.getnames()
            prefix = f"ledgerd-{ledgerd.__version__}/"
            for needed in ("pyproject.toml", "README.md", "src/ledgerd/_gen/ledger/v1/ledger_pb2.py"):
                self.assertIn(prefix + needed, members)

            # A fresh venv that sees Debian's grpcio and protobuf; the wheel
            # installed from the file, without an index.
            venv = os.path.join(tmp, "venv")
            run([support.PYTHON, "-m", "venv", "--system-site-packages", venv], cwd=tmp, env=clean_env())
            python = os.path.join(venv, "bin", "python")
            run([python, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                 os.path.join(dist, wheel_name)], cwd=tmp, env=clean_env())
            where = run([python, "-c", "import ledgerd, ledgerd.aio; print(ledgerd.__file__); print(ledgerd.__version__)"],
                        cwd=tmp, env=clean_env()).stdout.split()
            self.assertTrue(where[0].startswith(venv), f"ledgerd imported from {where[0]}, not the venv")
            self.assertEqual(where[1], ledgerd.__version__)
            no_top_level = subprocess.run([python, "-c", "import ledger"], cwd=tmp, env=clean_env(),
                                          capture_output=True, text=True)
            self.assertNotEqual(no_top_level.returncode, 0, "the wheel must not install a top-level 'ledger'")

            # The example, run by the venv's interpreter from outside the checkout.
            example = shutil.copy(os.path.join(support.EXAMPLES, "process_directory.py"), tmp)
            records, out = os.path.join(tmp, "in"), os.path.join(tmp, "out")
            os.makedirs(records)
            with open(os.path.join(records, "a.txt"), "w") as f:
                f.write("alpha\nbeta\n")
            args = [python, example, "--addr", ADDR, "--namespace", support.unique_namespace("wheel"),
                    "--input", records, "--output", out]
            first = run(args, cwd=tmp, env=clean_env())
            self.assertIn("1 processed, 0 already done, 0 failed", first.stdout)
            with open(os.path.join(out, "a.txt.out")) as f:
                self.assertEqual(f.read(), "ALPHA\nBETA\n")
            second = run(args, cwd=tmp, env=clean_env())
            self.assertIn("0 processed, 1 already done, 0 failed", second.stdout)


if __name__ == "__main__":
    unittest.main()
