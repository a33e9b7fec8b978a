"""bench_skeleton, part 2: sensor line -> verdict in-process (no daemon), and its floors: a
bare threading.Condition notify -> wake and a bare inotify write -> wake."""

from __future__ import annotations

import functools
import json
import queue
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skeleton_common import REPO, med


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
            inner: dict[str, Any] = json.loads(outer["data"])
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
                    ) -> dict[str, Any]:
    from harness.core.health import Health
    from harness.core.verdict import Verdict, judge
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


