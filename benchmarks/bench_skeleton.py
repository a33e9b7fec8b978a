#!/usr/bin/env python3
"""Skeleton benchmarks of shadowtest on this node, with speed floors measured in the same run.

    sudo .venv/bin/python benchmarks/bench_skeleton.py [--out benchmarks/RESULTS.md]

Needs root (it runs the bundled suite with both real sensors). Measures, in one run:

1. Harness overhead per scenario: the bundled suite via ``shadowtest run --results R``
   (subprocess); per run_id, act window (row ``ended_at - started_at``) minus the atomic's own
   ``action_ms``, and the whole per-run wall (pytest call phase) minus ``action_ms``.
   Floor: the same atomic command run bare with ``subprocess.run(["sh", "-c", cmd])``.
2. Sensor line -> verdict, in-process, for each sensor class (no daemon): a real recorded
   detection line is handed to the sensor (bpftrace: ``on_line``; auditd: appended to a file
   tailed by ``FileTail``) while the main thread waits in ``Subscription.wait`` with
   ``harness.engine.execute.decided``; time until ``harness.core.verdict.judge`` returns.
   Floors: a bare threading.Condition notify->wake and a bare inotify write->wake.
3. The full bundled suite end to end (3 repetitions), bpftrace ready / auditd register times
   (in the suite and in-process), floors ``python3 -c pass`` and ``pytest --collect-only``.

The same file is also a tiny pytest plugin (loaded with ``-p bench_skeleton`` through
PYTEST_ADDOPTS when BENCH_SKELETON_TRACE names a file): it times pytest phases and the
harness's own steps (open, stages, sync, wait, health, close) by wrapping them, so the
per-run harness time can be broken down. It changes nothing else.
Stdlib + the project's own dependencies only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import math
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _results  # benchmarks/_results.py (scripts run from this folder)
import pytest

from harness.builtin import BUILTIN

REPO = Path(__file__).resolve().parents[1]
TRACE_ENV = "BENCH_SKELETON_TRACE"
BEGIN = "<!-- bench_skeleton:begin -->"
END = "<!-- bench_skeleton:end -->"
TARGET_LINE_P99_MS = 50.0
TARGET_SUITE_S = 15.0
NO_HYPOTHESIS = "-p no:hypothesispytest"


# =============================================================================================
# pytest plugin half (active only in a `shadowtest run` started with BENCH_SKELETON_TRACE set)
# =============================================================================================
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


def _instrument() -> None:
    from harness.pytest import session as hs
    from harness.sensors.auditd import AuditdSensor
    from harness.sensors.base import Subscription
    from harness.sensors.bpftrace import BpftraceSensor
    from harness.targets import base, local

    _wrap(local.LocalTarget, "open", lambda self, context, *a, **k: f"open:{context}")
    _wrap(base.Session, "stage", lambda self, name, *a, **k: f"stage:{name}")
    _wrap(base.Session, "arm_cleanup", "arm_cleanup")
    _wrap(base.Session, "close", "close")
    for cls in (AuditdSensor, BpftraceSensor):
        for meth in ("start", "stop", "sync", "health"):
            _wrap(cls, meth, lambda self, *a, _m=meth, **k: f"{_m}:{self.name}")
    _wrap(AuditdSensor, "_start_daemon", "auditd_register")
    _wrap(AuditdSensor, "_load_rules", "auditd_rules")
    _wrap(Subscription, "wait", lambda self, *a, **k: f"wait:{self.stream.sensor}")
    _wrap(hs.ShadowtestSession, "facts", "facts")
    _wrap(hs, "execute", "execute")


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
    it = _T["items"][_CUR["item"]]
    it[f"{report.when}_ms"] = report.duration * 1000.0
    it[f"{report.when}_start"] = getattr(report, "start", None)
    if report.when == "call":
        it["outcome"] = report.outcome
        for name, value in report.user_properties:
            if name == "shadowtest_rows" and value:
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


# =============================================================================================
# statistics and formatting
# =============================================================================================
def pct(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def f(x: float, nd: int = 1) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:,.{nd}f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:,.1f}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def iso_to_epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# =============================================================================================
# 1 + 3: the suite as a subprocess
# =============================================================================================
def shadowtest_bin() -> str:
    cand = Path(sys.executable).parent / "shadowtest"
    return str(cand) if cand.exists() else (shutil.which("shadowtest") or "shadowtest")


def run_suite(workdir: Path, tag: str, traced: bool, addopts: str = "") -> dict[str, Any]:
    results = workdir / f"results-{tag}.jsonl"
    trace = workdir / f"trace-{tag}.json"
    env = dict(os.environ)
    if addopts:
        env["PYTEST_ADDOPTS"] = (env.get("PYTEST_ADDOPTS", "") + " " + addopts).strip()
    if traced:
        env[TRACE_ENV] = str(trace)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parent), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTEST_ADDOPTS"] = (env.get("PYTEST_ADDOPTS", "") + " -p bench_skeleton").strip()
    argv = [shadowtest_bin(), "run", "--results", str(results)]
    t0 = time.time()
    p0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - p0
    t_exit = time.time()
    rows = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    out: dict[str, Any] = {"tag": tag, "traced": traced, "addopts": addopts, "wall_s": wall,
                           "rc": proc.returncode,
                           "rows": rows, "t_launch": t0, "t_exit": t_exit}
    if traced and trace.exists():
        out["trace"] = json.loads(trace.read_text())
    if proc.returncode != 0:
        out["tail"] = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return out


def scenario_catalogue() -> list[Any]:
    from harness.core.scenario import check_scenario, load_atomics, scenario_files

    atomics, errors = load_atomics([BUILTIN / "atomic"])
    if errors:
        raise SystemExit(f"atomic errors: {errors}")
    out = []
    for path in scenario_files([BUILTIN / "scenarios"]):
        errs, sc = check_scenario(path, atomics)
        if errs or sc is None:
            raise SystemExit(f"scenario errors: {errs}")
        out.append(sc)
    return out


def bare_floor(scenarios: list[Any], n: int) -> dict[str, dict[str, Any]]:
    """Each scenario's atomic command run bare: ``subprocess.run(["sh", "-c", cmd])``.

    Safety: a ``pid`` argument (ptrace-attach: pid 1 of the run's private PID namespace)
    is replaced by a ``sleep`` this benchmark started, never the machine's PID 1; /etc
    files carry a fresh run id and the atomic's cleanup removes them after every run."""
    from harness.engine.execute import new_run_id

    out: dict[str, dict[str, Any]] = {}
    runner_path = runner_env_path()
    host_mnt_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        for sc in scenarios:
            atomic = sc.atomic
            times: list[float] = []
            rcs: set[int] = set()
            for _ in range(n):
                rid = new_run_id()
                values = {**sc.arguments, "run_id": rid, "bin": str(atomic.path.parent / "bin"),
                          "python": "python3", "host_pidns": os.readlink("/proc/self/ns/pid"),
                          "host_mntns": os.readlink("/proc/self/ns/mnt"),
                          "host_mntns_fd": host_mnt_fd, "ns_init_pid": 0}
                if "pid" in values:
                    values["pid"] = sleeper.pid
                    assert values["pid"] not in (0, 1)
                cmd = atomic.render(atomic.command, values)
                env = {**os.environ, "SHADOWTEST_RUN_ID": rid, "PATH": runner_path}
                try:
                    p0 = time.perf_counter()
                    res = subprocess.run([atomic.shell, "-c", cmd], capture_output=True,
                                         env=env, pass_fds=(host_mnt_fd,), check=False)
                    times.append((time.perf_counter() - p0) * 1000.0)
                    rcs.add(res.returncode)
                finally:
                    if atomic.cleanup:
                        subprocess.run([atomic.shell, "-c", atomic.render(atomic.cleanup, values)],
                                       capture_output=True, check=False)
            out[sc.id] = {"p50": med(times), "min": min(times), "rc": sorted(rcs),
                          "cmd": atomic.command}
    finally:
        sleeper.kill()
        sleeper.wait()
        os.close(host_mnt_fd)
    return out


def runner_env_path() -> str:
    """PATH as the harness's stage runner sees it (so ``python3`` in an atomic resolves to the
    same interpreter in the bare floor as in a run: a pyenv shim re-execs with its version's
    bin dir first on PATH)."""
    from harness.targets.base import Session, stage_runner_argv, start_runner

    proc, hello = start_runner(stage_runner_argv(), "host")
    session = Session("host", proc, frozenset({proc.pid}), hello)
    try:
        res = session.stage("probe", ["sh", "-c", 'printf %s "$PATH"'], {}, 10)
    finally:
        session.close()
    return res.stdout or os.environ.get("PATH", "")


def bench_runner_start(reps: int) -> dict[str, Any]:
    """Opening a host context = starting the stage runner: with the harness's argv
    (``shutil.which("python3")``, a pyenv shim on some machines) vs the resolved interpreter."""
    from harness.targets.base import Session, stage_runner_argv, start_runner

    argv = stage_runner_argv()
    real = subprocess.run([argv[0], "-c", "import sys; print(sys.executable)"],
                          capture_output=True, text=True, check=False).stdout.strip() or argv[0]
    out: dict[str, Any] = {"which": argv[0], "real": real}
    for label, av in (("which", argv), ("real", [real, *argv[1:]])):
        times = []
        for _ in range(reps):
            p0 = time.perf_counter()
            proc, hello = start_runner(av, "host")
            times.append((time.perf_counter() - p0) * 1000.0)
            Session("host", proc, frozenset({proc.pid}), hello).close()
        out[f"{label}_ms"] = times
    return out


# =============================================================================================
# 2: line -> verdict, in-process
# =============================================================================================
class _Writer:
    """A persistent writer thread: waits until the main thread is blocked on ``cond``, lets
    every thread settle (0.5 ms, outside the timed interval), stamps t0 and runs the action."""

    SETTLE = 0.0005

    def __init__(self) -> None:
        self.jobs: queue.Queue[tuple[threading.Condition, Callable[[], None]] | None] = queue.Queue()
        self.t0: float = 0.0
        self.thread = threading.Thread(target=self._loop, daemon=True, name="bench-writer")
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            cond, action = job
            deadline = time.monotonic() + 5
            while not cond._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.00005)
            time.sleep(self.SETTLE)
            self.t0 = time.perf_counter()
            action()

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(5)


def _recorded_bpftrace_line(rule: str) -> dict[str, Any]:
    for raw in (REPO / "tests/data/bpftrace/session.jsonl").read_text().splitlines():
        outer = json.loads(raw) if raw.strip() else {}
        if outer.get("type") == "printf":
            inner = json.loads(outer["data"])
            if inner.get("kind") == "detection" and inner.get("rule") == rule:
                return inner
    raise SystemExit(f"no recorded bpftrace {rule} line in tests/data/bpftrace/session.jsonl")


def _recorded_audit_event(serial: str) -> list[str]:
    lines = [x for x in (REPO / "tests/data/auditd/session.log").read_text().split("\n")
             if f":{serial}):" in x]
    if not lines or not lines[-1].startswith("type=PROCTITLE"):
        raise SystemExit(f"no recorded audit event {serial} in tests/data/auditd/session.log")
    return lines


def _run_for(pid: int, scenario: str) -> Any:
    from harness.core.run import Run, StageResult
    from harness.engine.execute import new_run_id

    now = time.time()
    return Run(run_id=new_run_id(), scenario=scenario, context="namespace", node="local",
               started_at=now - 0.01, ended_at=now, executed=True, pids=frozenset({pid}),
               stages=(StageResult("command", 0, started_at=now - 0.01, ended_at=now),))


def _measure_sensor(sensor: Any, expectation: Any, scenario: str, n: int,
                    make_line: Callable[[int], Any], deliver: Callable[[Any], None]
                    ) -> dict[str, list[float]]:
    from harness.core.verdict import Health, Verdict, judge
    from harness.engine.execute import decided

    writer = _Writer()
    wake: list[float] = []
    verdict: list[float] = []
    bad = 0
    try:
        for i in range(n):
            pid = 3_000_000 + i
            payload = make_line(pid)
            run = _run_for(pid, scenario)
            sub = sensor.stream.subscribe()
            writer.jobs.put((sensor.stream._cond, functools.partial(deliver, payload)))
            seen, _synced = sub.wait(lambda ds, r=run: decided(r, expectation, ds), None,
                                     time.time() + 5)
            t_wake = time.perf_counter()
            j = judge(run, seen, expectation, Health(True), sensor.name)
            t_verdict = time.perf_counter()
            if j.verdict is not Verdict.DETECTED:
                bad += 1
            wake.append((t_wake - writer.t0) * 1000.0)
            verdict.append((t_verdict - writer.t0) * 1000.0)
    finally:
        writer.close()
    return {"wake": wake, "verdict": verdict, "not_detected": [float(bad)]}


def bench_bpftrace_line(n: int, expectation: Any) -> dict[str, Any]:
    from harness.sensors.bpftrace import BpftraceSensor, scan_cgroups

    sensor = BpftraceSensor()  # constructed only: no bpftrace process
    template = _recorded_bpftrace_line("ptrace-pid1")

    def make_line(pid: int) -> str:
        inner = {**template, "pid": pid, "tid": pid, "ts_ns": time.monotonic_ns(),
                 "wall_ns": time.time_ns() // 1000 * 1000}
        return json.dumps({"type": "printf", "data": json.dumps(inner) + "\n"})

    res = _measure_sensor(sensor, expectation, "ptrace-pid1", n, make_line, sensor.on_line)
    # where the CPU goes: on_line alone (no waiter) and the cgroup rescan it does per line
    lines = [make_line(3_900_000 + i) for i in range(min(n, 2000))]
    p0 = time.perf_counter()
    for ln in lines:
        sensor.on_line(ln)
    res["on_line_us"] = (time.perf_counter() - p0) / len(lines) * 1e6
    scans = []
    for _ in range(200):
        p0 = time.perf_counter()
        scan_cgroups()
        scans.append((time.perf_counter() - p0) * 1e6)
    res["scan_cgroups_us"] = med(scans)
    res["cgroup_of_line"] = template.get("cgroup")
    return res


def bench_auditd_line(n: int, expectation: Any) -> dict[str, Any]:
    from harness.sensors.auditd import AuditdSensor
    from harness.sensors.streams import FileTail

    tmp = Path(tempfile.mkdtemp(prefix="bench-auditd-"))
    sensor = AuditdSensor(name="auditd", state_dir=str(tmp))  # constructed only: no start()
    log_path = tmp / "audit.log"
    log_path.touch()
    lines = _recorded_audit_event("1523")  # SYSCALL (ptrace key=T1055.008), OBJ_PID, PROCTITLE
    tail = FileTail(log_path, sensor.on_line, "bench-auditd-tail")
    fh = log_path.open("a", encoding="utf-8")
    header = re.compile(r"msg=audit\(\d+\.\d+:\d+\)")

    def make_event(pid: int) -> str:
        stamp = f"msg=audit({time.time():.3f}:{10_000_000 + pid})"
        text = "\n".join(header.sub(stamp, x) for x in lines) + "\n"
        return text.replace(" pid=7158 ", f" pid={pid} ")

    def deliver(text: str) -> None:
        fh.write(text)
        fh.flush()

    try:
        res = _measure_sensor(sensor, expectation, "ptrace-pid1", n, make_event, deliver)
        events = [make_event(3_900_000 + i) for i in range(min(n, 2000))]
        p0 = time.perf_counter()
        for ev in events:
            for ln in ev.rstrip("\n").split("\n"):
                sensor.on_line(ln)
        res["on_line_us"] = (time.perf_counter() - p0) / len(events) * 1e6
    finally:
        tail.stop()
        fh.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def floor_condition(n: int) -> list[float]:
    """Bare threading.Condition notify -> wake, measured like the sensors."""
    cond = threading.Condition()
    state = {"n": 0}
    writer = _Writer()
    out = []

    def bump() -> None:
        with cond:
            state["n"] += 1
            cond.notify_all()

    try:
        for i in range(n):
            writer.jobs.put((cond, bump))
            with cond:
                while state["n"] <= i:
                    cond.wait(5)
            out.append((time.perf_counter() - writer.t0) * 1000.0)
    finally:
        writer.close()
    return out


def floor_inotify(n: int) -> dict[str, list[float]]:
    """Bare inotify: write a line to a file; an inotify_simple watcher thread wakes and reads
    it ("watcher"); it then notifies the main thread through a Condition ("+cond", the same
    two hops as FileTail -> DetectionStream -> Subscription.wait)."""
    from inotify_simple import INotify, flags

    tmp = Path(tempfile.mkdtemp(prefix="bench-inotify-"))
    path = tmp / "f.log"
    path.touch()
    ino = INotify()
    ino.add_watch(str(path), flags.MODIFY)
    rd = path.open(encoding="utf-8")
    wr = path.open("a", encoding="utf-8")
    cond = threading.Condition()
    state = {"n": 0, "t_watch": 0.0}
    stop = threading.Event()
    watched: list[float] = []
    line = "type=SYSCALL msg=audit(0.000:1): " + "x" * 400 + "\n"

    def watcher() -> None:
        while not stop.is_set():
            if not ino.read(timeout=1000):
                continue
            if rd.read():
                t = time.perf_counter()
                with cond:
                    state["t_watch"] = t
                    state["n"] += 1
                    cond.notify_all()

    def write() -> None:
        wr.write(line)
        wr.flush()

    th = threading.Thread(target=watcher, daemon=True)
    th.start()
    writer = _Writer()
    both: list[float] = []
    try:
        for i in range(n):
            writer.jobs.put((cond, write))
            with cond:
                while state["n"] <= i:
                    cond.wait(5)
            t1 = time.perf_counter()
            both.append((t1 - writer.t0) * 1000.0)
            watched.append((state["t_watch"] - writer.t0) * 1000.0)
    finally:
        writer.close()
        stop.set()
        write()
        th.join(5)
        ino.close()
        rd.close()
        wr.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"watcher": watched, "cond": both}


# =============================================================================================
# 3: sensors started in-process (real daemons, stopped by pid), floors
# =============================================================================================
def bench_sensor_start(reps: int) -> dict[str, Any]:
    from harness.sensors.auditd import AuditdSensor
    from harness.sensors.bpftrace import BpftraceSensor

    out: dict[str, Any] = defaultdict(list)
    for _ in range(reps):
        s = BpftraceSensor()
        p0 = time.perf_counter()
        try:
            s.start()
            out["bpftrace_ready_s"].append(time.perf_counter() - p0)
        finally:
            p1 = time.perf_counter()
            s.stop()
            out["bpftrace_stop_s"].append(time.perf_counter() - p1)
    for _ in range(reps):
        a = AuditdSensor()
        parts: dict[str, float] = {}
        for meth in ("_start_daemon", "_load_rules"):
            orig = getattr(a, meth)

            def timed(*args: Any, _o: Callable[..., Any] = orig, _m: str = meth,
                      _parts: dict[str, float] = parts, **kw: Any) -> Any:
                p = time.perf_counter()
                try:
                    return _o(*args, **kw)
                finally:
                    _parts[_m] = time.perf_counter() - p

            setattr(a, meth, timed)
        p0 = time.perf_counter()
        try:
            a.start()
            out["auditd_start_s"].append(time.perf_counter() - p0)
            out["auditd_register_s"].append(parts.get("_start_daemon", float("nan")))
            out["auditd_rules_s"].append(parts.get("_load_rules", float("nan")))
            out["auditd_shared"].append("_start_daemon" not in parts)
        finally:
            p1 = time.perf_counter()
            a.stop()
            out["auditd_stop_s"].append(time.perf_counter() - p1)
    return dict(out)


def time_cmd(argv: list[str], reps: int, cwd: Path = REPO) -> list[float]:
    out = []
    for _ in range(reps):
        p0 = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
        out.append(time.perf_counter() - p0)
    return out


# =============================================================================================
# analysis
# =============================================================================================
def analyse_overhead(suites: list[dict[str, Any]], bare: dict[str, dict[str, Any]]
                     ) -> tuple[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for s in suites:
        for r in s["rows"]:
            runs.setdefault(r["run_id"], {
                "key": f"{r['scenario']}[{r['context']}]", "scenario": r["scenario"],
                "window_ms": (iso_to_epoch(r["ended_at"]) - iso_to_epoch(r["started_at"])) * 1000,
                "action_ms": r["action_ms"]})
        for it in s.get("trace", {}).get("items", []):
            if it.get("run_id") in runs:
                runs[it["run_id"]]["call_ms"] = it.get("call_ms")
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs.values():
        groups[r["key"]].append(r)
    rows = []
    all_win_oh: list[float] = []
    all_call_oh: list[float] = []
    for key, g in groups.items():
        action = [r["action_ms"] for r in g]
        win = [r["window_ms"] for r in g]
        win_oh = [r["window_ms"] - r["action_ms"] for r in g]
        call = [r["call_ms"] for r in g if r.get("call_ms") is not None]
        call_oh = [r["call_ms"] - r["action_ms"] for r in g if r.get("call_ms") is not None]
        all_win_oh += win_oh
        all_call_oh += call_oh
        b = bare.get(g[0]["scenario"], {}).get("p50", float("nan"))
        rows.append([
            key, str(len(g)), f(med(action)), f(b), f(med(win)),
            f"{f(med(win_oh))} / {f(pct(win_oh, 95))} / {f(max(win_oh))}",
            ratio(med(win), b),
            f"{f(med(call))} (n={len(call)})",
            f"{f(med(call_oh))} / {f(pct(call_oh, 95))} / {f(max(call_oh) if call_oh else float('nan'))}",
            ratio(med(call), b),
        ])
    header = ["scenario[context]", "runs", "action ms p50", "bare sh -c ms p50",
              "act window ms p50", "window overhead ms p50/p95/max", "window / bare",
              "run wall ms p50 (pytest call)", "run overhead ms p50/p95/max", "run wall / bare"]
    summary = {"win_oh_p50": med(all_win_oh), "win_oh_p95": pct(all_win_oh, 95),
               "call_oh_p50": med(all_call_oh), "call_oh_p95": pct(all_call_oh, 95),
               "call_oh_max": max(all_call_oh) if all_call_oh else float("nan"),
               "bare_p50": med([v["p50"] for v in bare.values()])}
    return table(header, rows), summary


def analyse_breakdown(suites: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """Mean ms per run of each harness step inside the pytest call phase."""
    per_run: list[dict[str, float]] = []
    tags: list[set[str]] = []
    for s in suites:
        tr = s.get("trace")
        if not tr:
            continue
        for idx, it in enumerate(tr["items"]):
            if "call_ms" not in it or "run_id" not in it:
                continue
            steps: dict[str, float] = defaultdict(float)
            for ev in tr["events"]:
                if ev["item"] == idx and ev["phase"] == "call":
                    key = ev["key"].split(":")[0] if ev["key"].startswith("open:") else ev["key"]
                    steps[key] += ev["ms"]
            steps["_call"] = it["call_ms"]
            per_run.append(steps)
            benign = all(v in ("CLEAN", "UNEXPECTED") for v in it.get("verdicts", {}).values())
            tags.append({"all", it.get("context", "?"), "benign" if benign else "attack"})
    if not per_run:
        return "(no traced runs)", {}
    cols = ["all", "host", "namespace", "attack", "benign"]
    sel = {c: [r for r, t in zip(per_run, tags, strict=True) if c in t] for c in cols}
    keys = sorted({k for r in per_run for k in r
                   if not k.startswith("_") and k not in {"execute", "facts"}})

    def mean_of(k: str, rs: list[dict[str, float]]) -> float:
        return statistics.fmean([r.get(k, 0.0) for r in rs]) if rs else float("nan")

    inside = ("open", "close", "arm_cleanup", "stage:", "sync:", "wait:", "health:")
    rows = []
    for k in keys:
        rows.append([k, *(f(mean_of(k, sel[c])) for c in cols)])
    other_exec, other_pytest = [], []
    for c in cols:
        explained = sum(mean_of(k, sel[c]) for k in keys if k.startswith(inside))
        other_exec.append(f(mean_of("execute", sel[c]) - explained))
        other_pytest.append(f(mean_of("_call", sel[c]) - mean_of("execute", sel[c])
                              - mean_of("facts", sel[c])))
    rows.append(["execute() rest (subscribe, render, judge, Python)", *other_exec])
    rows.append(["node facts probe (1st run only)", *(f(mean_of("facts", sel[c])) for c in cols)])
    rows.append(["pytest + run_item rest", *other_pytest])
    rows.append(["**pytest call phase total**",
                 *(f"**{f(mean_of('_call', sel[c]))}**" for c in cols)])
    header = ["step: mean ms per run", *(f"{c} (n={len(sel[c])})" for c in cols)]
    top = {k: mean_of(k, per_run) for k in keys}
    top["_call"] = mean_of("_call", per_run)
    return table(header, rows), top


def analyse_timeline(suites: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    phases: dict[str, list[float]] = defaultdict(list)
    for s in suites:
        tr = s.get("trace")
        if not tr:
            continue
        m = tr["marks"]
        ev: dict[str, float] = defaultdict(float)
        for e in tr["events"]:
            ev[e["key"]] += e["ms"] / 1000.0
        calls = sum(it.get("call_ms", 0.0) for it in tr["items"]) / 1000.0
        fixture = ev.get("fixture:shadowtest_sensors", 0.0)
        stops = ev.get("stop:auditd", 0.0) + ev.get("stop:bpftrace", 0.0)
        span = m["last_item"] - m["first_item"]
        summary = ev.get("terminal_summary", 0.0)
        hyp = " (imports hypothesis)" if m.get("hypothesis_imported_in_summary") else ""
        phases["python start + imports + pytest configure"].append(m["configure"] - s["t_launch"])
        phases["collection"].append(m["collected"] - m["configure"])
        phases["collected -> first test"].append(m["first_item"] - m["collected"])
        phases["tests (first start -> last end)"].append(span)
        phases["  sensors start (session fixture)"].append(fixture)
        phases["    bpftrace start -> READY"].append(ev.get("start:bpftrace", 0.0))
        phases["    auditd start (total)"].append(ev.get("start:auditd", 0.0))
        phases["      auditd spawn -> registered"].append(ev.get("auditd_register", 0.0))
        phases["      auditd rules (auditctl x N)"].append(ev.get("auditd_rules", 0.0))
        phases["  scenario runs (sum of pytest call phases)"].append(calls)
        phases["    of which node facts probe (1st run)"].append(ev.get("facts", 0.0))
        phases["  sensors stop"].append(stops)
        phases["    bpftrace stop (SIGINT -> exit)"].append(ev.get("stop:bpftrace", 0.0))
        phases["    auditd stop"].append(ev.get("stop:auditd", 0.0))
        phases["  pytest between/around tests"].append(span - fixture - calls - stops)
        phases["last test -> session finish"].append(m["sessionfinish"] - m["last_item"])
        phases[f"terminal summary, all plugins{hyp}"].append(summary)
        phases["session finish -> unconfigure, other"].append(
            m["unconfigure"] - m["sessionfinish"] - summary)
        phases["unconfigure -> process exit"].append(s["t_exit"] - m["unconfigure"])
        phases["**total wall**"].append(s["wall_s"])
    rows = [[k, f(med(v), 3), _each(v)] for k, v in phases.items()]
    return (table(["suite phase (traced runs)", "median s", "each run s"], rows),
            {k.strip(): med(v) for k, v in phases.items()})


# =============================================================================================
# main
# =============================================================================================
def machine() -> dict[str, str]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": str(os.cpu_count()), "kernel": platform.release(),
            "python": f"{platform.python_implementation()} {platform.python_version()} "
                      f"({sys.executable})", "cpu": cpu}


def leftover_daemons() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,ppid,comm"], capture_output=True, text=True,
                         check=False).stdout
    return [x.strip() for x in out.splitlines()[1:] if re.search(r"\b(bpftrace|auditd)$", x)]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one benchmark run, raw."""
    d: dict[str, Any] = {"started": dt.datetime.now(dt.UTC)}
    scenarios = scenario_catalogue()
    by_id = {s.id: s for s in scenarios}

    # ---- 2: line -> verdict, in-process (quiet machine first)
    log(f"line -> verdict, N={args.n} each")
    d["lat_b"] = bench_bpftrace_line(args.n, by_id["ptrace-pid1"].expectation("bpftrace"))
    d["lat_a"] = bench_auditd_line(args.n, by_id["ptrace-pid1"].expectation("auditd"))
    d["fl_cond"] = floor_condition(args.n)
    d["fl_ino"] = floor_inotify(args.n)

    # ---- 1 + 3: the suite (plain runs as users run it; traced runs for the breakdown)
    work = Path(tempfile.mkdtemp(prefix="bench-suite-"))
    try:
        suites: list[dict[str, Any]] = []
        for i in range(args.reps):
            log(f"shadowtest run (plain) {i + 1}/{args.reps}")
            suites.append(run_suite(work, f"plain{i}", traced=False))
        for i in range(args.reps):
            log(f"shadowtest run (traced) {i + 1}/{args.reps}")
            suites.append(run_suite(work, f"traced{i}", traced=True))
        for i in range(args.reps):
            log(f"shadowtest run (-p no:hypothesispytest) {i + 1}/{args.reps}")
            suites.append(run_suite(work, f"nohyp{i}", traced=False, addopts=NO_HYPOTHESIS))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    d["suites"] = suites
    log(f"bare atomics x{args.bare_reps}, stage-runner start x{args.bare_reps}")
    d["bare"] = bare_floor(scenarios, args.bare_reps)
    d["runner"] = bench_runner_start(args.bare_reps)

    # ---- 3: sensors in-process (real daemons, stopped by pid), floors
    log("sensor start/stop in-process")
    d["starts"] = bench_sensor_start(args.reps)
    log("floors: python3 -c pass, pytest --collect-only")
    d["py3"] = shutil.which("python3") or "/usr/bin/python3"
    d["fl_py"] = time_cmd([d["py3"], "-c", "pass"], 10)
    d["fl_py_real"] = time_cmd([d["runner"]["real"], "-c", "pass"], 10)
    d["fl_venv_py"] = time_cmd([sys.executable, "-c", "pass"], 10)
    d["fl_collect"] = time_cmd([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                "-p", "no:cacheprovider", "--shadowtest",
                                str(BUILTIN / "scenarios")], args.reps)
    d["fl_collect_nohyp"] = time_cmd([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                      "-p", "no:cacheprovider", *NO_HYPOTHESIS.split(),
                                      "--shadowtest", str(BUILTIN / "scenarios")], args.reps)
    return d


def render_latency(d: dict[str, Any]) -> str:
    fl_cond, fl_ino = d["fl_cond"], d["fl_ino"]
    cond_p50, cond_p99 = pct(fl_cond, 50), pct(fl_cond, 99)
    ino_p50, ino_p99 = pct(fl_ino["watcher"], 50), pct(fl_ino["watcher"], 99)
    ic_p50, ic_p99 = pct(fl_ino["cond"], 50), pct(fl_ino["cond"], 99)
    rows = []
    for name, res, fp50, fp99, fname in (
        ("bpftrace (on_line in writer thread)", d["lat_b"], cond_p50, cond_p99, "Condition hop"),
        ("auditd (write+flush -> FileTail -> on_line)", d["lat_a"], ic_p50, ic_p99,
         "inotify+Condition"),
    ):
        v, w = res["verdict"], res["wake"]
        rows.append([
            name, str(len(v)), f(pct(w, 50), 3), f(pct(v, 50), 3), f(pct(v, 99), 3), f(max(v), 3),
            "yes" if pct(v, 99) < TARGET_LINE_P99_MS else "**no**",
            f"{ratio(pct(v, 50), fp50)} / {ratio(pct(v, 99), fp99)} ({fname})",
            f"{res['on_line_us']:.1f}", str(int(res["not_detected"][0])),
        ])
    rows.append(["floor: Condition notify -> wake", str(len(fl_cond)), "-", f(cond_p50, 3),
                 f(cond_p99, 3), f(max(fl_cond), 3), "", "1.0x", "", ""])
    rows.append(["floor: inotify write -> watcher wakes", str(len(fl_ino["watcher"])), "-",
                 f(ino_p50, 3), f(ino_p99, 3), f(max(fl_ino["watcher"]), 3), "", "", "", ""])
    rows.append(["floor: inotify -> watcher -> Condition -> main", str(len(fl_ino["cond"])),
                 "-", f(ic_p50, 3), f(ic_p99, 3), f(max(fl_ino["cond"]), 3), "", "1.0x", "", ""])
    return table(["path", "N", "wake ms p50", "verdict ms p50", "verdict ms p99", "max ms",
                  f"p99 < {TARGET_LINE_P99_MS:.0f} ms", "ratio to floor p50 / p99",
                  "on_line CPU us/event", "not DETECTED"], rows)


def _plain(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in d["suites"] if not s["traced"] and not s["addopts"]]


def _vcount(s: dict[str, Any]) -> str:
    c: dict[str, int] = defaultdict(int)
    for r in s["rows"]:
        c[r["verdict"]] += 1
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


def _each(xs: list[float], nd: int = 3) -> str:
    return " / ".join(f(x, nd) for x in xs)


def render_suite(d: dict[str, Any]) -> str:
    plain = _plain(d)
    traced = [s for s in d["suites"] if s["traced"]]
    nohyp = [s for s in d["suites"] if s["addopts"] == NO_HYPOTHESIS]
    suite_med = med([s["wall_s"] for s in plain])
    rows = [[f"shadowtest run #{i + 1}", f(s["wall_s"], 2), f"rc {s['rc']}: {_vcount(s)}"]
            for i, s in enumerate(plain)]
    rows.append([f"**median of {len(plain)} runs**", f"**{f(suite_med, 2)}**",
                 f"target < {TARGET_SUITE_S:.0f} s: "
                 + ("yes" if suite_med < TARGET_SUITE_S else "**no**")])
    rows.append([f"traced runs (`-p bench_skeleton`), median of {len(traced)}",
                 f(med([s["wall_s"] for s in traced]), 2),
                 _each([s["wall_s"] for s in traced], 2) + "; rc "
                 + ",".join(str(s["rc"]) for s in traced)])
    rows.append([f"variant `PYTEST_ADDOPTS='{NO_HYPOTHESIS}'`, median of {len(nohyp)}",
                 f(med([s["wall_s"] for s in nohyp]), 2),
                 _each([s["wall_s"] for s in nohyp], 2) + "; rc "
                 + ",".join(str(s["rc"]) for s in nohyp)])
    st = d["starts"]
    shared = any(st.get("auditd_shared", []))
    fl_collect, fl_py, fl_py_real = d["fl_collect"], d["fl_py"], d["fl_py_real"]
    rows += [
        ["in-process BpftraceSensor().start() -> READY", f(med(st["bpftrace_ready_s"]), 3),
         _each(st["bpftrace_ready_s"])],
        ["in-process BpftraceSensor.stop()", f(med(st["bpftrace_stop_s"]), 3),
         _each(st["bpftrace_stop_s"])],
        ["in-process AuditdSensor().start() total", f(med(st["auditd_start_s"]), 3),
         _each(st["auditd_start_s"]) + (" (joined a running shared daemon)" if shared else "")],
        ["  auditd spawn -> registered (auditctl -s)", f(med(st["auditd_register_s"]), 3),
         _each(st["auditd_register_s"])],
        ["  auditd rules load", f(med(st["auditd_rules_s"]), 3), _each(st["auditd_rules_s"])],
        ["in-process AuditdSensor.stop()", f(med(st["auditd_stop_s"]), 3),
         _each(st["auditd_stop_s"])],
        [f"floor: `python3 -c pass` (PATH: {d['py3']})", f(med(fl_py), 3),
         f"x10; suite = {ratio(suite_med, med(fl_py))}"],
        [f"floor: `python3 -c pass` (resolved: {d['runner']['real']})", f(med(fl_py_real), 3),
         f"x10; suite = {ratio(suite_med, med(fl_py_real))}"],
        ["floor: venv `python -c pass`", f(med(d["fl_venv_py"]), 3), "x10"],
        ["floor: `pytest --collect-only -q scenarios`", f(med(fl_collect), 3),
         _each(fl_collect) + f"; suite = {ratio(suite_med, med(fl_collect))}"],
        [f"floor variant: same with `{NO_HYPOTHESIS}`", f(med(d["fl_collect_nohyp"]), 3),
         _each(d["fl_collect_nohyp"])],
    ]
    return table(["what", "s", "notes"], rows)


def render(d: dict[str, Any], args: argparse.Namespace) -> str:
    ov_table, ov = analyse_overhead(d["suites"], d["bare"])
    bd_table, bd = analyse_breakdown(d["suites"])
    tl_table, tl = analyse_timeline(d["suites"])
    plain = _plain(d)
    suite_med = med([s["wall_s"] for s in plain])
    lat_b, lat_a, runner = d["lat_b"], d["lat_a"], d["runner"]
    m = machine()
    n_runs = len({r["run_id"] for s in plain for r in s["rows"]}) // max(1, len(plain))
    biggest = sorted(((k, v) for k, v in bd.items() if not k.startswith("_")),
                     key=lambda kv: -kv[1])[:4]
    auto = [
        f"- Suite: median {f(suite_med, 2)} s for {n_runs} runs x 2 sensors "
        f"({ratio(suite_med, med(d['fl_collect']))} the `pytest --collect-only` floor). "
        f"Traced-run phases (median): startup "
        f"{f(tl.get('python start + imports + pytest configure', 0), 2)} s, sensors start "
        f"{f(tl.get('sensors start (session fixture)', 0), 2)} s, scenario runs "
        f"{f(tl.get('scenario runs (sum of pytest call phases)', 0), 2)} s, sensors stop "
        f"{f(tl.get('sensors stop', 0), 2)} s, terminal summary "
        f"{f(next((v for k, v in tl.items() if k.startswith('terminal summary')), 0), 2)} s.",
        f"- Per run, the harness adds p50 {f(ov['call_oh_p50'])} ms (p95 {f(ov['call_oh_p95'])}, "
        f"max {f(ov['call_oh_max'])}) around the atomic; inside the act window alone "
        f"p50 {f(ov['win_oh_p50'])} ms. Largest mean steps per run: "
        + ", ".join(f"{k} {f(v)} ms" for k, v in biggest) + ".",
        f"- Line -> verdict p99: bpftrace {f(pct(lat_b['verdict'], 99), 3)} ms, auditd "
        f"{f(pct(lat_a['verdict'], 99), 3)} ms (target < {TARGET_LINE_P99_MS:.0f} ms).",
    ]
    exe = Path(sys.executable)
    exe_txt = str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else str(exe)
    return "\n".join([
        BEGIN,
        "## Results",
        "",
        f"- Date: {d['started'].strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, {m['python']}; "
        f"`python3` on PATH: {d['py3']}; PYTHONDONTWRITEBYTECODE="
        f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}",
        f"- Command: `{exe_txt} benchmarks/bench_skeleton.py"
        f"{' --out ' + str(args.out) if args.out else ''}` (as root, from {REPO}); "
        f"N={args.n}, {args.reps} plain + {args.reps} traced suite runs, "
        f"{args.bare_reps} bare runs per atomic",
        "",
        "### 1. Harness overhead per scenario",
        "",
        "`window` = a results row's `ended_at - started_at` (preconditions + command + proof, "
        "ms-resolution ISO stamps), `action` = row `action_ms` (the command stage), "
        "`run wall` = the pytest call phase of that run (open context, subscribe, act, sync, "
        "wait, judge, cleanup, close; traced runs only). Overhead = wall - action. Floor: the "
        "rendered atomic command via `subprocess.run([\"sh\", \"-c\", cmd])` with the stage "
        "runner's PATH (ptrace target replaced by a `sleep` the benchmark owns).",
        "",
        ov_table,
        "",
        f"Opening a host context = starting the stage runner (`start_runner`), x{args.bare_reps}:",
        "",
        table(["stage-runner interpreter", "start ms p50", "min ms"], [
            [f"`stage_runner_argv()` = {runner['which']}", f(med(runner['which_ms'])),
             f(min(runner['which_ms']))],
            [f"resolved interpreter {runner['real']}", f(med(runner['real_ms'])),
             f(min(runner['real_ms']))],
        ]),
        "",
        "Where a run's harness time goes (traced runs, pytest call phase):",
        "",
        bd_table,
        "",
        "### 2. Sensor line -> verdict (in-process, no daemon)",
        "",
        "t0 = just before `on_line()` (bpftrace) or the `write()+flush()` of the event's 3 "
        "recorded lines (auditd, file tailed by `FileTail`); `wake` = `Subscription.wait("
        "decided)` returns; `verdict` = `judge()` returns (DETECTED). The writer starts once "
        "the main thread is blocked in the wait, after a 0.5 ms settle outside the interval.",
        "",
        render_latency(d),
        "",
        f"bpftrace's recorded line carries cgroup {lat_b['cgroup_of_line']} (not a container "
        f"cgroup): every such line re-runs `scan_cgroups()` ({f(lat_b['scan_cgroups_us'])} us "
        "on this node) inside `on_line`.",
        "",
        "### 3. Full bundled suite (`shadowtest run --results R`)",
        "",
        render_suite(d),
        "",
        tl_table,
        "",
        "### Summary (generated)",
        "",
        *auto,
        END,
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="rewrite the results section of this markdown file")
    ap.add_argument("-n", type=int, default=2000, help="line->verdict samples per sensor/floor")
    ap.add_argument("--reps", type=int, default=3, help="suite repetitions (plain and traced each)")
    ap.add_argument("--bare-reps", type=int, default=10, help="bare atomic runs per scenario")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_skeleton: needs root (real sensors)", file=sys.stderr)
        return 2
    before = set(leftover_daemons())
    section = render(measure(args), args)
    print(section)
    left = [x for x in leftover_daemons() if x not in before]
    if left:
        print(f"\nWARNING: bpftrace/auditd processes appeared during the benchmark and remain: "
              f"{left}", file=sys.stderr)
    if args.out:
        write_section(args.out, section)
        log(f"wrote {args.out}")
    return 0


def write_section(path: Path, section: str) -> None:
    _results.write_section(path, section, BEGIN, END)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
