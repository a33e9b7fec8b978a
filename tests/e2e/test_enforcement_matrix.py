"""Pre-enforcement validation across kernels, for real, through the CI jobs a user copies
(``ci/kernel-job.sh enforce-host | enforce-6.1 | enforce-6.12``):

- this machine's kernel (6.18, no BPF LSM) under the bundled bpftrace SIGKILL policy: the
  /etc write is RACED (the kill lands at syscall entry, after the create);
- Debian's 6.1 and 6.12 in QEMU VMs under the BPF LSM deny enforcer (``lsm``): the /etc
  write and the ptrace of a container's PID 1 are BLOCKED (denied before the effect);
- every benign control runs under the same enforcing policies and is never stopped;
- ``shadowtest enforcement-report`` says promote on the VM kernels, not on the host, and why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO

pytestmark = [pytest.mark.vm, pytest.mark.node]

JOBS = ("enforce-host", "enforce-6.1", "enforce-6.12")


@pytest.fixture(scope="module")
def enforcement(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("enforce")
    jobs: dict[str, Any] = {}
    for job in JOBS:
        res = subprocess.run(["bash", "ci/kernel-job.sh", job], cwd=REPO, capture_output=True,
                             text=True, timeout=1800, check=False,
                             env={**os.environ, "SHADOWTEST_RESULTS_DIR": str(out)})
        path = out / f"results-{job}.jsonl"
        rows = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
        jobs[job] = {"res": res, "rows": rows}
    merged = out / "results.jsonl"
    merged.write_text("".join(json.dumps(r) + "\n" for j in jobs.values() for r in j["rows"]))
    return {"jobs": jobs, "merged": merged}


def _log(job: dict[str, Any]) -> str:
    res = job["res"]
    return f"exit {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}"


def _verdicts(rows: list[dict[str, Any]], scenario: str, sensor: str) -> set[str]:
    return {r["verdict"] for r in rows if r["scenario"] == scenario and r["sensor"] == sensor}


def test_host_kill_policy_races_and_stops_no_benign_control(enforcement: dict[str, Any]) -> None:
    job = enforcement["jobs"]["enforce-host"]
    rows = job["rows"]
    assert job["res"].returncode == 1, _log(job)  # RACED fails the run: that is the finding
    assert _verdicts(rows, "etc-write-enforced", "bpftrace-enforce") == {"RACED"}, _log(job)
    raced = next(r for r in rows if r["scenario"] == "etc-write-enforced"
                 and r["sensor"] == "bpftrace-enforce")
    assert raced["side_effect"] is True
    assert raced["killed_by"] == "SIGKILL"
    benign = [r for r in rows if r["benign"]]
    assert benign
    assert {r["verdict"] for r in benign} == {"CLEAN"}, _log(job)
    assert not list(Path("/etc").glob("shadowtest-st*")), "a killed run's file was left behind"


@pytest.mark.parametrize("job", ["enforce-6.1", "enforce-6.12"])
def test_vm_lsm_enforcer_blocks_before_the_effect(enforcement: dict[str, Any], job: str) -> None:
    run = enforcement["jobs"][job]
    rows = run["rows"]
    assert run["res"].returncode == 0, _log(run)
    assert _verdicts(rows, "etc-write-enforced", "lsm") == {"BLOCKED"}, _log(run)
    assert _verdicts(rows, "ptrace-pid1-enforced", "lsm") == {"BLOCKED"}, _log(run)
    for r in rows:
        if r["scenario"] in ("etc-write-enforced", "ptrace-pid1-enforced"):
            assert r["side_effect"] is False, r
            assert r["detection"]["action"] == "deny", r
    benign = [r for r in rows if r["benign"]]
    assert benign
    assert {r["verdict"] for r in benign} == {"CLEAN"}, _log(run)


def test_report_says_promote_on_the_vm_kernels_not_on_the_host(
        enforcement: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    res = subprocess.run([sys.executable, "-m", "harness", "enforcement-report",
                          str(enforcement["merged"]), "--json", str(out)],
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "COLUMNS": "300"})
    assert res.returncode == 1, res.stdout + res.stderr  # the host is not safe
    text = " ".join(res.stdout.split())
    for kernel in ("6.1.0-56-amd64", "6.12.117+deb12-amd64"):
        assert f"safe to promote etc-file-create (lsm) on kernel {kernel}: yes" in text, res.stdout
        assert f"safe to promote ptrace-pid1 (lsm) on kernel {kernel}: yes" in text, res.stdout
    assert "safe to promote etc-file-create (bpftrace-enforce) on kernel 6.18" in text
    assert "no, because RACED" in text, res.stdout
    cells = json.loads(out.read_text())
    assert cells
