"""Faults keep the truth (issue 16): the run's audit daemon and its bpftrace are killed
(SIGKILL) in the middle of a bundled-catalogue run. Every row of a killed sensor for a run
that started after the kill is SENSOR_DOWN (or NOT_EXECUTED: the action did not run) —
never MISSED, DETECTED or CLEAN on evidence the sensor could not have had; the kernel's
audit settings are back as they were and nothing is left behind."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.builtin import SCENARIOS
from tests.e2e.conftest import NOTHING_LEFT, OWNER, Catalog

pytestmark = [pytest.mark.node]


def _rows(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _audit_pid() -> int:
    out = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key == "pid" and value.split():
            return int(value.split()[0])
    return 0


def _bpftrace_of(owner: str) -> list[int]:
    mark = f"{OWNER}={owner}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"bpftrace") and mark in env:
            pids.append(int(proc.name))
    return pids


def test_killed_sensors_give_sensor_down_never_a_verdict(catalog: Catalog, clean_node) -> None:
    shutil.rmtree(catalog.root / "scenarios")
    shutil.copytree(SCENARIOS, catalog.root / "scenarios")
    results = catalog.root / "results.jsonl"
    killed: dict[str, float] = {}
    problems: list[str] = []

    def killer() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(killed) < 2:
            n = len(_rows(results))
            if "auditd" not in killed and n >= 10 and (pid := _audit_pid()):
                os.kill(pid, signal.SIGKILL)
                killed["auditd"] = time.time()
            if "bpftrace" not in killed and n >= 40:
                pids = _bpftrace_of(catalog.owner)
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                if pids:
                    killed["bpftrace"] = time.time()
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    res = catalog.run("run", "--results", results.name, timeout=900)
    thread.join(10)
    assert set(killed) == {"auditd", "bpftrace"}, (killed, res.stdout[-2000:])
    assert res.returncode == 1, res.stdout[-2000:]  # SENSOR_DOWN rows fail the run
    rows = _rows(results)
    after: dict[str, int] = {"auditd": 0, "bpftrace": 0}
    for row in rows:
        sensor = str(row["sensor"])
        started = dt.datetime.fromisoformat(str(row["started_at"])).timestamp()
        if sensor in killed and started > killed[sensor] + 0.5:
            after[sensor] += 1
            if row["verdict"] not in ("SENSOR_DOWN", "NOT_EXECUTED"):
                problems.append(f"{row['scenario']}[{row['context']}] {sensor}: "
                                f"{row['verdict']} after the kill ({row['reason']})")
    assert after["auditd"] >= 10
    assert after["bpftrace"] >= 5
    assert not problems, "\n".join(problems)
    assert clean_node() == NOTHING_LEFT
