"""The Python runner of the clients' conformance suite (clients/conformance).

Runs every scenario file (JSON) of ``$LEDGER_CONFORMANCE_SCENARIOS`` against
live ledgerd replicas, one after another, each with a fresh client built
from its ``client`` section, and prints one JSON line per scenario on
stdout: ``{"scenario": ..., "ok": true}`` or ``{..., "ok": false, "error":
"step 3 (do k1): ..."}``. Logs go to stderr. Exits 0 only if every scenario
passed. The harness (clients/conformance, Go) starts the replicas and the
control server and sets the environment (see clients/conformance/README.md).

One interpreter runs the steps over a small adapter: :class:`SyncAdapter`
drives ``ledgerd.Client``; with ``--aio``, :class:`AioAdapter` drives
``ledgerd.aio.Client`` on an event loop of its own, so that both clients
prove the same scenarios.

Usage: ``python3 tests/conformance_runner.py [--aio]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Sequence

_HERE = os.path.dirname(os.path.abspath(__file__))
_SRC = os.path.join(os.path.dirname(_HERE), "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

import ledgerd  # noqa: E402

#: The timeout of a do() whose step gives none: a bound, so that a broken
#: client fails its scenario instead of hanging the suite.
DEFAULT_DO_TIMEOUT = 60.0
#: The timeout of a control call, in seconds.
CONTROL_TIMEOUT = 60.0


class StepFailure(Exception):
    """A step's expectation did not hold (its message says how)."""


class ScenarioWorkError(Exception):
    """The retryable error a scenario's work raises (``{"error": ...}``)."""


class ScenarioPermanentError(ledgerd.PermanentError):
    """The permanent error a scenario's work raises (``"permanent": true``)."""


def error_kind(error: BaseException) -> str:
    """The neutral name of an error (the contract's KIND)."""
    if isinstance(error, (ScenarioWorkError, ScenarioPermanentError)):
        return "work_error"
    if isinstance(error, ledgerd.CircuitOpenError):
        return "circuit_open"
    if isinstance(error, ledgerd.FailedError):
        return "failed"
    if isinstance(error, ledgerd.LeaseLostError):
        return "lease_lost"
    if isinstance(error, ledgerd.DeadlineExceededError):
        return "deadline_exceeded"
    if isinstance(error, ledgerd.UnavailableError):
        return "unavailable"
    if isinstance(error, ledgerd.InvalidArgumentError):
        return "invalid_argument"
    if isinstance(error, ledgerd.FingerprintMismatchError):
        return "fingerprint_mismatch"
    if isinstance(error, ledgerd.PermissionDeniedError):
        return "permission_denied"
    if isinstance(error, ledgerd.ResourceExhaustedError) and error.reason == "QUOTA_EXCEEDED":
        return "quota_exceeded"
    if isinstance(error, ledgerd.InProgressError):
        return "in_progress"
    return type(error).__name__


# The control server.


class Control:
    """The harness's control server (HTTP, JSON)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def post(self, path: str, body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        return self._send(request, f"POST {path}")

    def get(self, path: str, allow_404: bool = False) -> Optional[Dict[str, Any]]:
        try:
            return self._send(urllib.request.Request(self.base + path), f"GET {path}")
        except _NotFound:
            if allow_404:
                return None
            raise StepFailure(f"GET {path}: 404")

    @staticmethod
    def _send(request: urllib.request.Request, what: str) -> Dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=CONTROL_TIMEOUT) as response:
                text = response.read().decode() or "{}"
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            if error.code == 404:
                raise _NotFound(body) from None
            raise StepFailure(f"{what}: HTTP {error.code}: {body.strip()}") from None
        try:
            return json.loads(text)
        except ValueError:
            return {}


class _NotFound(Exception):
    pass


# The work a step describes.


class WorkSpec:
    """A step's ``work``: builds the function do() runs, and says whether it ran."""

    def __init__(self, spec: Dict[str, Any], steal: Callable[[], None]) -> None:
        self.spec = spec
        self.steal = steal
        self.ran = False

    def value(self) -> bytes:
        if "result_bytes" in self.spec:
            return b"x" * int(self.spec["result_bytes"])
        return str(self.spec.get("result", "")).encode()

    def error(self) -> Optional[Exception]:
        if "error" not in self.spec:
            return None
        message = str(self.spec["error"])
        return ScenarioPermanentError(message) if self.spec.get("permanent") else ScenarioWorkError(message)

    def __call__(self, lease: Any) -> bytes:
        """The work (sync; the asyncio adapter runs it in a thread)."""
        self.ran = True
        if self.spec.get("steal"):
            self.steal()
        error = self.error()
        if error is not None:
            raise error
        return self.value()


# The adapters: one per client, the same methods.


def client_options(section: Dict[str, Any], env: Dict[str, str]) -> Dict[str, Any]:
    """The keyword arguments of the client a scenario's ``client`` section describes."""
    target_name = section.get("target", "proxy")
    targets = {
        "proxy": env.get("LEDGER_ADDR", ""),
        "direct": env.get("LEDGER_DIRECT_ADDR", ""),
        "replicas": [a for a in env.get("LEDGER_REPLICAS", "").split(",") if a],
    }
    if target_name not in targets:
        raise StepFailure(f"client: unknown target {target_name!r}")
    options: Dict[str, Any] = {"target": targets[target_name], "insecure": True}
    breaker = section.get("breaker")
    if breaker == "off":
        options["breaker"] = None
    elif isinstance(breaker, dict):
        config: Dict[str, Any] = {}
        for name in ("failure_threshold", "failure_ratio", "min_calls"):
            if name in breaker:
                config[name] = breaker[name]
        if "window_ms" in breaker:
            config["window"] = breaker["window_ms"] / 1000
        if "open_for_ms" in breaker:
            config["open_for"] = breaker["open_for_ms"] / 1000
        options["breaker"] = config
    if isinstance(section.get("retry_budget"), dict):
        options["retry_budget"] = dict(section["retry_budget"])
    if "max_attempts" in section:
        options["max_attempts"] = section["max_attempts"]
    if "fallback" in section:
        options["fallback"] = section["fallback"]
    return options


class SyncAdapter:
    """Runs the steps through ``ledgerd.Client``."""

    name = "python"

    def __init__(self, options: Dict[str, Any]) -> None:
        options = dict(options)
        self.client = ledgerd.Client(options.pop("target"), **options)

    def do(self, namespace: str, key: str, work: WorkSpec, **kwargs: Any) -> ledgerd.Result:
        return self.client.do(namespace, key, work, **kwargs)

    def do_batch(self, namespace: str, keys: List[str], work: Callable[[List[Any]], List[bytes]], **kwargs: Any) -> List[Any]:
        return self.client.do_batch(namespace, keys, work, **kwargs)

    def breaker_state(self) -> str:
        return self.client.breaker_state

    def stats(self) -> Dict[str, Any]:
        return self.client.stats().as_dict()

    def flush(self, timeout: float) -> int:
        return self.client.flush(timeout)

    def close(self) -> None:
        self.client.close()


class AioAdapter:
    """Runs the steps through ``ledgerd.aio.Client``, on an event loop in a
    thread of its own; the work runs in a worker thread (it may block on the
    control server)."""

    name = "python-aio"

    def __init__(self, options: Dict[str, Any]) -> None:
        from ledgerd import aio  # only this mode needs it

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="conformance-aio-loop", daemon=True)
        self._thread.start()
        options = dict(options)
        target = options.pop("target")

        async def make() -> Any:
            return aio.Client(target, **options)

        self.client = self._run(make())

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def do(self, namespace: str, key: str, work: WorkSpec, **kwargs: Any) -> ledgerd.Result:
        async def run(lease: Any) -> bytes:
            return await asyncio.to_thread(work, lease)

        return self._run(self.client.do(namespace, key, run, **kwargs))

    def do_batch(self, namespace: str, keys: List[str], work: Callable[[List[Any]], List[bytes]], **kwargs: Any) -> List[Any]:
        async def run(leases: List[Any]) -> List[bytes]:
            return await asyncio.to_thread(work, leases)

        return self._run(self.client.do_batch(namespace, keys, run, **kwargs))

    def breaker_state(self) -> str:
        return self.client.breaker_state

    def stats(self) -> Dict[str, Any]:
        return self.client.stats().as_dict()

    def flush(self, timeout: float) -> int:
        return self._run(self.client.flush(timeout))

    def close(self) -> None:
        try:
            self._run(self.client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


# The interpreter.


class Scenario:
    """Runs one scenario's steps over an adapter."""

    def __init__(self, data: Dict[str, Any], adapter: Any, control: Control, namespace: str) -> None:
        self.data = data
        self.adapter = adapter
        self.control = control
        self.namespace = namespace

    def run(self) -> None:
        for number, step in enumerate(self.data.get("steps", []), start=1):
            try:
                self.step(step)
            except StepFailure as failure:
                raise StepFailure(f"step {number} ({describe(step)}): {failure}") from None
            except Exception as error:  # noqa: BLE001 - any surprise fails the scenario, with its step
                raise StepFailure(f"step {number} ({describe(step)}): {type(error).__name__}: {error}") from error

    def step(self, step: Dict[str, Any]) -> None:
        operations = [k for k in step if k not in ("expect", "within_ms")]
        if len(operations) != 1:
            raise StepFailure(f"a step needs exactly one operation, found {operations}")
        operation = operations[0]
        handler = getattr(self, "op_" + operation, None)
        if handler is None:
            raise StepFailure(f"unknown operation {operation!r}")
        handler(step[operation], step)

    # Operations.

    def op_do(self, spec: Dict[str, Any], step: Dict[str, Any]) -> None:
        key = spec["key"]
        work = WorkSpec(spec.get("work", {}), lambda: self.steal(key))
        kwargs: Dict[str, Any] = {"timeout": spec.get("timeout_ms", DEFAULT_DO_TIMEOUT * 1000) / 1000}
        if "lease_ttl_ms" in spec:
            kwargs["lease_ttl"] = spec["lease_ttl_ms"] / 1000
        if "fallback" in spec:
            kwargs["fallback"] = spec["fallback"]
        result: Optional[ledgerd.Result] = None
        error: Optional[BaseException] = None
        try:
            result = self.adapter.do(self.namespace, key, work, **kwargs)
        except Exception as exc:  # noqa: BLE001 - compared with the expectation
            error = exc
        if "expect" not in step:
            return
        expect = step["expect"]
        check_outcome(expect, result, error)
        if "work_ran" in expect and bool(expect["work_ran"]) != work.ran:
            raise StepFailure(f"expected work_ran {expect['work_ran']}, got {work.ran}")

    def op_do_batch(self, spec: Dict[str, Any], step: Dict[str, Any]) -> None:
        items = spec["items"]
        keys = [item["key"] for item in items]
        works = {item["key"]: WorkSpec(item.get("work", {}), lambda: None) for item in items}

        def work(leases: List[Any]) -> List[bytes]:
            # One call for the acquired keys: the first error among them, else each one's result.
            for lease in leases:
                works[lease.key].ran = True
                failure = works[lease.key].error()
                if failure is not None:
                    raise failure
            return [works[lease.key].value() for lease in leases]

        timeout = spec.get("timeout_ms", DEFAULT_DO_TIMEOUT * 1000) / 1000
        results = self.adapter.do_batch(self.namespace, keys, work, timeout=timeout)
        if "expect" not in step:
            return
        expected = step["expect"]
        if len(results) != len(expected):
            raise StepFailure(f"expected {len(expected)} results, got {len(results)}")
        for index, (want, got) in enumerate(zip(expected, results)):
            try:
                check_outcome(want, got.result, got.error)
            except StepFailure as failure:
                raise StepFailure(f"item {index} ({keys[index]}): {failure}") from None

    def op_repeat(self, spec: Dict[str, Any], step: Dict[str, Any]) -> None:
        for i in range(int(spec["times"])):
            self.step(substitute(spec["step"], str(i)))

    def op_control(self, spec: Dict[str, Any], step: Dict[str, Any]) -> None:
        self.control.post(spec["path"], spec.get("body"))

    def op_sleep_ms(self, spec: Any, step: Dict[str, Any]) -> None:
        time.sleep(float(spec) / 1000)

    def op_expect_breaker(self, spec: Any, step: Dict[str, Any]) -> None:
        within = step.get("within_ms", 10000) / 1000
        end = time.monotonic() + within
        while True:
            state = self.adapter.breaker_state()
            if state == spec:
                return
            if time.monotonic() >= end:
                raise StepFailure(f"expected breaker {spec} within {within}s, it is {state}")
            time.sleep(0.02)

    def op_expect_stats(self, spec: Dict[str, Any], step: Dict[str, Any]) -> None:
        stats = self.adapter.stats()
        for name, want in spec.items():
            if name not in stats:
                raise StepFailure(f"stats have no {name!r}")
            got = stats[name]
            if isinstance(want, dict):
                if "min" in want and got < want["min"]:
                    raise StepFailure(f"expected stats {name} >= {want['min']}, got {got} (stats {stats})")
                if "max" in want and got > want["max"]:
                    raise StepFailure(f"expected stats {name} <= {want['max']}, got {got} (stats {stats})")
            elif got != want:
                raise StepFailure(f"expected stats {name} = {want!r}, got {got!r} (stats {stats})")

    def op_flush(self, spec: Dict[str, Any], step: Dict[str, Any]) -> None:
        left = self.adapter.flush(spec.get("timeout_ms", 20000) / 1000)
        want = step.get("expect", {}).get("pending")
        if want is not None and left != want:
            raise StepFailure(f"expected pending {want} after flush, got {left}")

    def op_expect_entry(self, spec: Dict[str, Any], step: Dict[str, Any]) -> None:
        query = urllib.parse.urlencode({"namespace": self.namespace, "key": spec["key"]})
        entry = self.control.get("/entry?" + query, allow_404=True)
        if spec.get("absent"):
            if entry is not None:
                raise StepFailure(f"expected no entry, found {entry}")
            return
        if entry is None:
            raise StepFailure("expected an entry, found none")
        for name in ("state", "result", "attempts"):
            if name in spec and entry.get(name) != spec[name]:
                raise StepFailure(f"expected entry {name} {spec[name]!r}, got {entry.get(name)!r} (entry {entry})")
        prefix = spec.get("owner_prefix")
        if prefix is not None and not str(entry.get("owner", "")).startswith(prefix):
            raise StepFailure(f"expected an owner starting with {prefix!r}, got {entry.get('owner')!r}")

    # Helpers.

    def steal(self, key: str) -> None:
        self.control.post("/steal", {"namespace": self.namespace, "key": key})


def check_outcome(expect: Dict[str, Any], result: Optional[ledgerd.Result], error: Optional[BaseException]) -> None:
    """Compares a do's (or a batch item's) outcome with its expectation."""
    outcome = "error" if error is not None else (result.outcome if result is not None else "none")
    want = expect.get("outcome")
    if want is not None and want != outcome:
        detail = f" ({error_kind(error)}: {error})" if error is not None else ""
        raise StepFailure(f"expected outcome {want}, got {outcome}{detail}")
    if "error" in expect:
        kind = error_kind(error) if error is not None else "none"
        if kind != expect["error"]:
            raise StepFailure(f"expected error {expect['error']}, got {kind}" + (f": {error}" if error else ""))
    if "result" in expect:
        got = result.value.decode(errors="replace") if result is not None else None
        if got != expect["result"]:
            raise StepFailure(f"expected result {expect['result']!r}, got {got!r}")


def substitute(value: Any, i: str) -> Any:
    """``value`` with ``${i}`` replaced in every string."""
    if isinstance(value, str):
        return value.replace("${i}", i)
    if isinstance(value, list):
        return [substitute(v, i) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, i) for k, v in value.items()}
    return value


def describe(step: Dict[str, Any]) -> str:
    """A short name of a step for messages, e.g. ``do k1``."""
    for name, value in step.items():
        if name in ("expect", "within_ms"):
            continue
        if isinstance(value, dict):
            detail = value.get("key") or value.get("path") or ""
            return f"{name} {detail}".strip()
        return f"{name} {value}"
    return "empty step"


def load_scenarios(directory: str, only: Sequence[str]) -> List[Dict[str, Any]]:
    """The scenarios of the directory, by name, restricted to ``only`` if given."""
    scenarios = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            data = json.load(f)
        data.setdefault("name", name[: -len(".json")])
        if only and data["name"] not in only:
            continue
        scenarios.append(data)
    return scenarios


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aio", action="store_true", help="run the scenarios through the asyncio client")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    directory = env.get("LEDGER_CONFORMANCE_SCENARIOS")
    control_url = env.get("LEDGER_CONFORMANCE_CONTROL")
    if not directory or not control_url:
        print("conformance_runner: LEDGER_CONFORMANCE_SCENARIOS and LEDGER_CONFORMANCE_CONTROL must be set", file=sys.stderr)
        return 2
    only = [n.strip() for n in env.get("LEDGER_CONFORMANCE_ONLY", "").split(",") if n.strip()]
    prefix = env.get("LEDGER_CONFORMANCE_PREFIX", "conf-python-")
    control = Control(control_url)
    adapter_class = AioAdapter if args.aio else SyncAdapter
    failed = 0
    for scenario in load_scenarios(directory, only):
        name = scenario["name"]
        started = time.monotonic()
        report: Dict[str, Any] = {"scenario": name, "ok": True}
        adapter = None
        try:
            adapter = adapter_class(client_options(scenario.get("client", {}), env))
            Scenario(scenario, adapter, control, prefix + name).run()
        except Exception as error:  # noqa: BLE001 - reported, and the next scenario runs
            report = {"scenario": name, "ok": False, "error": str(error) if isinstance(error, StepFailure) else repr(error)}
            traceback.print_exc(file=sys.stderr)
        finally:
            if adapter is not None:
                try:
                    adapter.close()
                except Exception as error:  # noqa: BLE001
                    print(f"{name}: closing the client: {error!r}", file=sys.stderr)
        if not report["ok"]:
            failed += 1
        print(f"{adapter_class.name} {name}: {'ok' if report['ok'] else 'FAILED'} in {time.monotonic() - started:.1f}s", file=sys.stderr)
        print(json.dumps(report), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
