"""bench_skeleton, parts 1 and 3: the bundled suite as a subprocess, the bare-atomic and
stage-runner floors, sensors started in-process, and the machine it ran on."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skeleton_common import REPO, TRACE_ENV, med

from harness.builtin import BUILTIN


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
        env["PYTEST_ADDOPTS"] = (env.get("PYTEST_ADDOPTS", "") + " -p skeleton_trace").strip()
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
    from harness.nodes.runner import RunnerSession as Session
    from harness.nodes.runner import stage_runner_argv, start_runner

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
    from harness.nodes.runner import RunnerSession as Session
    from harness.nodes.runner import stage_runner_argv, start_runner

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


