"""bench_skeleton's pytest plugin, loaded with ``-p skeleton_trace`` through PYTEST_ADDOPTS
in the traced ``shadowtest run``s (active only when BENCH_SKELETON_TRACE names a file): it
times pytest phases and the harness's own steps (open, stages, sync, wait, health, close)
by wrapping them, so the per-run harness time can be broken down. It changes nothing else.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from skeleton_common import TRACE_ENV

_T: dict[str, Any] = {"items": [], "events": [], "marks": {}}
_CUR: dict[str, Any] = {"item": None, "phase": None}


def _active() -> bool:
    return bool(os.environ.get(TRACE_ENV))


def _event(key: str, t0: float, seconds: float) -> None:
    _T["events"].append({"item": _CUR["item"], "phase": _CUR["phase"], "key": key,
                         "t": t0, "ms": seconds * 1000.0})


def _wrap(owner: Any, attr: str, key: str | Callable[..., str]) -> None:
    orig = getattr(owner, attr)

    @functools.wraps(orig)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0, p0 = time.time(), time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            name = key(*args, **kwargs) if callable(key) else key
            _event(name, t0, time.perf_counter() - p0)

    setattr(owner, attr, timed)


def instrumented() -> list[tuple[Any, str, str | Callable[..., str]]]:
    """(owner, attribute, event key) of every harness step the traced runs time."""
    from harness.nodes.runner import RunnerSession
    from harness.pytest import fleet
    from harness.pytest import session as hs
    from harness.sensors.auditd import AuditdSensor
    from harness.sensors.base import Subscription
    from harness.sensors.bpftrace import BpftraceSensor
    from harness.targets import local

    steps: list[tuple[Any, str, str | Callable[..., str]]] = [
        (local.LocalTarget, "open", lambda self, context, *a, **k: f"open:{context}"),
        (RunnerSession, "stage", lambda self, name, *a, **k: f"stage:{name}"),
        (RunnerSession, "arm_cleanup", "arm_cleanup"),
        (RunnerSession, "close", "close"),
    ]
    for cls in (AuditdSensor, BpftraceSensor):
        for meth in ("start", "stop", "sync", "health"):
            steps.append((cls, meth, lambda self, *a, _m=meth, **k: f"{_m}:{self.name}"))
    steps += [
        (AuditdSensor, "_start_daemon", "auditd_register"),
        (AuditdSensor, "_load_rules", "auditd_rules"),
        (Subscription, "wait", lambda self, *a, **k: f"wait:{self.stream.sensor}"),
        (fleet.NodeFleet, "facts", "facts"),
        (hs, "execute", "execute"),
    ]
    return steps


def _instrument() -> None:
    for owner, attr, key in instrumented():
        _wrap(owner, attr, key)


def pytest_configure(config: pytest.Config) -> None:
    if _active():
        _T["marks"]["configure"] = time.time()
        _instrument()


def pytest_collection_finish(session: pytest.Session) -> None:
    if _active():
        _T["marks"]["collected"] = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: Any) -> Any:
    if not _active() or fixturedef.argname != "shadowtest_sensors":
        yield
        return
    t0, p0 = time.time(), time.perf_counter()
    yield
    _event("fixture:shadowtest_sensors", t0, time.perf_counter() - p0)


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    if _active():
        _T["marks"].setdefault("first_item", time.time())
        _CUR["item"] = len(_T["items"])
        _T["items"].append({"nodeid": nodeid})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _CUR["phase"] = "setup"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _CUR["phase"] = "call"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Any) -> None:
    _CUR["phase"] = "teardown"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _active() or _CUR["item"] is None:
        return
    it: dict[str, Any] = _T["items"][_CUR["item"]]
    it[f"{report.when}_ms"] = report.duration * 1000.0
    it[f"{report.when}_start"] = getattr(report, "start", None)
    if report.when == "call":
        it["outcome"] = report.outcome
        for name, value in report.user_properties:
            if name == "shadowtest_rows" and isinstance(value, list) and value:
                row = value[0]
                it.update(run_id=row["run_id"], scenario=row["scenario"],
                          context=row["context"], action_ms=row["action_ms"],
                          verdicts={r["sensor"]: r["verdict"] for r in value})


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    _CUR["item"] = None
    _CUR["phase"] = None
    if _active():
        _T["marks"]["last_item"] = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> Any:
    """Times every plugin's terminal summary (shadowtest's rich table, hypothesis's plugin,
    which imports hypothesis here) and notes whether hypothesis got imported by it."""
    if not _active():
        yield
        return
    had = "hypothesis" in sys.modules
    t0, p0 = time.time(), time.perf_counter()
    yield
    _event("terminal_summary", t0, time.perf_counter() - p0)
    _T["marks"]["hypothesis_imported_in_summary"] = (not had) and "hypothesis" in sys.modules


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _active():
        _T["marks"]["sessionfinish"] = time.time()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _active():
        _T["marks"]["unconfigure"] = time.time()
        Path(os.environ[TRACE_ENV]).write_text(json.dumps(_T))

