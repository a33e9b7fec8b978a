"""The kernel matrix, for real: the bundled scenarios with auditd and the reference rule
table on three kernels — this machine's (under bpftrace), and Debian's 6.1 and 6.12 booted
under QEMU from the project's image (compiled: sensor type libbpf, judged by the bpftrace
expectations) — each through the very job a user copies into CI (``ci/kernel-job.sh
KERNEL``, ``ci/pipelines/``), then merged into one grid. The sensors of each job are read
from its ci/kernels/<kernel>.toml.

The harness must find the real per-kernel difference: the reference rule for
setuid-root-gain is a kprobe on commit_creds (its expect block requires kprobes); on a
kernel without kprobes (read from the run's node facts) the reference sensor's row is
NOT_EXECUTED ("not runnable for <sensor>") while auditd's is judged, and on both VM
kernels the compiled sensor's kprobe program detects it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.core.node import unmet
from harness.engine.config import load_settings
from harness.sensors.base import build_sensor, expect_key
from harness.tools.catalogue import expected_cell, load_catalogue
from tests.e2e.conftest import REPO

pytestmark = [pytest.mark.vm, pytest.mark.node]

KERNELS = {"host": None, "6.1": "6.1.0-56-amd64", "6.12": "6.12.117+deb12-amd64"}


def job_sensors(kernel: str) -> dict[str, str]:
    """The sensors of a kernel job (its ci/kernels/<kernel>.toml) -> the sensor whose
    expectations judge each (``expect_as``)."""
    config = REPO / "ci" / "kernels" / f"{kernel}.toml"
    settings = load_settings(config.parent, config)
    return {name: expect_key(name, build_sensor(name, settings.sensor_options.get(name, {})))
            for name in settings.sensors}


def _qemus() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system-x86_64"], capture_output=True, text=True,
                         check=False).stdout
    return {int(x) for x in out.split()}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each kernel image's CI job, one after the other (TCG VMs use both cores)."""
    out = tmp_path_factory.mktemp("matrix")
    qemus_before = _qemus()
    jobs: dict[str, Any] = {}
    for kernel in KERNELS:
        started = time.perf_counter()
        res = subprocess.run(["bash", "ci/kernel-job.sh", kernel], cwd=REPO, capture_output=True,
                             text=True, timeout=1800, check=False,
                             env={**os.environ, "SHADOWTEST_RESULTS_DIR": str(out)})
        path = out / f"results-{kernel}.jsonl"
        rows = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
        jobs[kernel] = {"res": res, "rows": rows, "seconds": time.perf_counter() - started,
                        "path": path}
    merged = out / "results.jsonl"
    merged.write_text("".join(j["path"].read_text() for j in jobs.values() if j["path"].exists()))
    return {"jobs": jobs, "merged": merged, "qemus_before": qemus_before, "dir": out}


def _log(job: dict[str, Any]) -> str:
    res = job["res"]
    return f"exit {res.returncode} in {job['seconds']:.0f} s\n{res.stdout[-5000:]}\n{res.stderr[-3000:]}"


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_each_kernel_gives_the_documented_verdicts(matrix: dict[str, Any], kernel: str) -> None:
    job = matrix["jobs"][kernel]
    rows = job["rows"]
    assert job["res"].returncode == 0, _log(job)
    if KERNELS[kernel]:
        assert {r["kernel"] for r in rows} == {KERNELS[kernel]}, _log(job)
    cat = load_catalogue(REPO)
    got = {(r["scenario"], r["context"], r["sensor"]): r for r in rows}
    problems = []
    sensors = job_sensors(kernel)
    config = REPO / "ci" / "kernels" / f"{kernel}.toml"
    budget = load_settings(config.parent, config).not_executed
    assert set(sensors.values()) == {"auditd", "bpftrace"}  # the two embedded rule packs
    assert {r["sensor"] for r in rows} == set(sensors)
    for s in cat.scenarios:
        for context in s.contexts:
            for sensor, judged_as in sensors.items():
                row = got.get((s.id, context, sensor))
                if row is None:
                    problems.append(f"{s.id}[{context}] {sensor}: no row")
                    continue
                verdict, want = row["verdict"], expected_cell(s, judged_as, row.get("facts"))
                if verdict == "NOT_EXECUTED":
                    # the sensor's own requires unmet by the run's node facts, or a run the
                    # job's allowed_not_executed names; nothing else
                    exp = s.expectation(judged_as, row.get("facts"))
                    own = bool(exp.requires) and bool(unmet(row["facts"], *exp.requires)) \
                        and row["reason"].startswith(f"not runnable for {sensor}: ")
                    if not own and not budget.allows(s.id, context):
                        problems.append(f"{s.id}[{context}] {sensor}: NOT_EXECUTED, neither its "
                                        f"own requires nor the job's allowed_not_executed: "
                                        f"{row['reason']!r}")
                    continue
                if not want.accepts(verdict):
                    problems.append(f"{s.id}[{context}] {sensor}: expected {want.short()}, got "
                                    f"{verdict}: {row['reason']}")
    assert problems == [], "\n".join(problems) + "\n" + _log(job)


def test_the_grid_shows_the_kprobe_difference_between_kernels(matrix: dict[str, Any]) -> None:
    rows = [json.loads(ln) for ln in matrix["merged"].read_text().splitlines()]
    kernels = {r["kernel"] for r in rows}
    assert {"6.1.0-56-amd64", "6.12.117+deb12-amd64"} < kernels
    assert len(kernels) == 3
    setuid = [r for r in rows if r["scenario"] == "setuid-root-gain"]
    host = [r for r in setuid if r["node"] == "local"]
    vms = [r for r in setuid if r["node"] != "local"]
    assert host
    host_ref = [r for r in host if job_sensors("host").get(r["sensor"]) == "bpftrace"]
    assert len(host_ref) == 2, host
    if not host[0]["facts"].get("kprobes"):  # read from the run's node facts
        # the reference rule is a kprobe: its row only is not runnable; auditd's is judged
        assert {r["verdict"] for r in host_ref} == {"NOT_EXECUTED"}, host
        assert all(r["reason"].startswith(f"not runnable for {r['sensor']}: kprobes not usable")
                   for r in host_ref), host
    else:
        assert {r["verdict"] for r in host_ref} == {"DETECTED"}, host
    assert {r["verdict"] for r in host if r not in host_ref} == {"DETECTED"}, host
    bpf = [r for r in vms if job_sensors("6.1").get(r["sensor"]) == "bpftrace"]
    assert len(bpf) == 4, bpf
    assert {r["verdict"] for r in bpf} == {"DETECTED"}, bpf
    assert {r["rule"] for r in bpf} == {"setuid-root-gain"}
    report = subprocess.run([sys.executable, "-m", "harness", "report", str(matrix["merged"])],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "COLUMNS": "400"})
    assert report.returncode == 0, report.stdout + report.stderr
    line = next(ln for ln in report.stdout.splitlines() if "setuid-root-gain" in ln)
    assert line.count("DET") >= 2, report.stdout
    if not host[0]["facts"].get("kprobes"):
        assert line.count("N/E") >= 1, report.stdout


def test_no_vm_or_port_forward_is_left_behind(matrix: dict[str, Any]) -> None:
    deadline = time.monotonic() + 30
    while _qemus() - matrix["qemus_before"] and time.monotonic() < deadline:
        time.sleep(0.5)  # qemu is stopped by pid at the end of each job: let it exit
    assert _qemus() - matrix["qemus_before"] == set()
    if shutil.which("ss"):
        listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True,
                                   check=False).stdout
        assert "qemu" not in listening, listening  # no port forward left listening
    for job in matrix["jobs"].values():
        assert job["seconds"] > 0
    times = {k: round(j["seconds"]) for k, j in matrix["jobs"].items()}
    Path(matrix["dir"], "timings.json").write_text(json.dumps(times))
    print(f"kernel matrix job wall times (s): {times}")
