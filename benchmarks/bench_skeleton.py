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

The parts: ``skeleton_suite`` (1 + 3: the suite, floors, sensors in-process),
``skeleton_latency`` (2), ``skeleton_trace`` (the pytest plugin the traced suite runs load
with ``-p skeleton_trace``: it times pytest phases and the harness's own steps),
``skeleton_analysis`` and ``skeleton_render`` (the RESULTS.md section), ``skeleton_common``.
Stdlib + the project's own dependencies only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import _results  # benchmarks/_results.py (scripts run from this folder)
from skeleton_common import NO_HYPOTHESIS, log
from skeleton_latency import bench_auditd_line, bench_bpftrace_line, floor_condition, floor_inotify
from skeleton_render import BEGIN, END, render
from skeleton_suite import (
    bare_floor,
    bench_runner_start,
    bench_sensor_start,
    leftover_daemons,
    run_suite,
    scenario_catalogue,
    time_cmd,
)

from harness.builtin import BUILTIN


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
