"""Pre-enforcement validation end to end, as root, through the real CLI: the bundled
bpftrace KILL policy (enforce.bt, container-scoped) on this host's kernel (tracepoints
only: a SIGKILL at syscall entry lands after the effect -> RACED), a policy in monitor
mode (monitor-only MISSED), benign controls under the policy (never killed) and a
deliberately over-broad test policy (a benign control killed -> UNEXPECTED).

Caution: while a test here runs, the policy applies to every task in a shadowtest/ or
docker/ cgroup of this machine, including another shadowtest run's namespace contexts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.builtin import BUILTIN
from tests.e2e.conftest import REPO, Catalog, verdicts

pytestmark = pytest.mark.node

OVERBROAD = REPO / "tests" / "data" / "bpftrace" / "overbroad-enforce.bt"

ENFORCE_CONFIG = """
[tool.shadowtest]
scenarios = ["scenarios"]
atomics = ["atomic"]
allowed_nodes = ["local"]
window = "5s"

[tool.shadowtest.nodes.local]
url = "local://"

[tool.shadowtest.sensors.bpftrace-enforce]
type = "bpftrace"
enforce = true
{extra}
"""


def _run_module(catalog: Catalog, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=catalog.root,
                          capture_output=True, text=True, timeout=120, check=False)


def _copy(catalog: Catalog, *paths: str) -> None:
    for rel in paths:
        dst = catalog.root / "scenarios" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUILTIN / "scenarios" / rel, dst)


def test_etc_write_under_the_bpftrace_kill_policy_is_raced(
        catalog: Catalog, clean_node: Callable[[], dict[str, list[str]]]) -> None:
    """(a) + (e): SIGKILL at openat entry kills the writer, but the file exists: RACED, the
    test fails, nothing is left behind, and the enforcement report says not safe."""
    _copy(catalog, "enforcement/etc-write-enforced.yaml")
    catalog.config(ENFORCE_CONFIG.format(extra=""))
    res = catalog.run("run", "--results", "results.jsonl")
    rows = catalog.rows()
    assert res.returncode == 1, res.stdout + res.stderr
    assert verdicts(rows) == {("etc-write-enforced", "namespace", "bpftrace-enforce"): "RACED"}
    (row,) = rows
    assert (row["killed_by"], row["exit_code"], row["side_effect"]) == ("SIGKILL", -9, True)
    assert row["enforcement"] == {
        "expected": "sigkill", "reported": "sigkill", "observed": "killed", "side_effect": True,
        "effect": f"the file /etc/shadowtest-{row['run_id']}.conf"}
    assert row["rule"] == "etc-file-create"
    assert "detection passed, enforcement did not land before the effect" in row["reason"]
    assert "RACED" in res.stdout
    assert "detection passed" in res.stdout
    assert "safe to promote etc-file-create (bpftrace-enforce) on kernel" in res.stdout
    assert clean_node() == {"etc_files": [], "processes": [], "cgroups": [], "audit_rules": []}

    report = catalog.run("enforcement-report", "results.jsonl", "--json", "report.json")
    if "invalid choice: 'enforcement-report'" in report.stderr:  # until __main__ wires it
        report = _run_module(catalog, "harness.report.enforcement", "results.jsonl",
                             "--json", "report.json")
    assert report.returncode == 1, report.stdout + report.stderr
    kernel = row["kernel"]
    assert kernel.startswith("6.18")
    assert (f"safe to promote etc-file-create (bpftrace-enforce) on kernel {kernel}: no, "
            "because RACED: the kill landed after the side effect (the file "
            f"/etc/shadowtest-{row['run_id']}.conf exists)") in report.stdout


def test_ptrace_pid1_under_the_bpftrace_kill_policy_is_raced(
        catalog: Catalog, clean_node: Callable[[], dict[str, list[str]]]) -> None:
    """SIGKILL at ptrace entry: the attach completes first (the helper's init is left
    stopped), so the marker exists: RACED. The context's own PID 1 is never the target."""
    _copy(catalog, "enforcement/ptrace-pid1-enforced.yaml")
    catalog.config(ENFORCE_CONFIG.format(extra=""))
    res = catalog.run("run", "--results", "results.jsonl")
    (row,) = catalog.rows()
    assert res.returncode == 1, res.stdout + res.stderr
    assert (row["verdict"], row["killed_by"], row["side_effect"]) == ("RACED", "SIGKILL", True)
    assert row["enforcement"]["reported"] == "sigkill"
    assert not list(Path("/tmp").glob(f"shadowtest-{row['run_id']}*"))
    assert clean_node() == {"etc_files": [], "processes": [], "cgroups": [], "audit_rules": []}


def test_enforce_expectation_against_a_monitor_mode_sensor_fails_monitor_only(
        catalog: Catalog, clean_node: Callable[[], dict[str, list[str]]]) -> None:
    """(b) the plain bundled sensor detects but does not kill: MISSED, monitor-only."""
    catalog.scenario("enforcement", "etc-write-monitored", """
        id: etc-write-monitored
        name: an enforce expectation on the detection-only sensor
        technique: T1098
        atomic: etc-file-create
        contexts: [namespace]
        expect:
          bpftrace:
            rule: etc-file-create
            enforce: {action: sigkill}
        """)
    catalog.config(ENFORCE_CONFIG.replace(
        "[tool.shadowtest.sensors.bpftrace-enforce]\ntype = \"bpftrace\"\nenforce = true\n",
        "[tool.shadowtest.sensors.bpftrace]\ntype = \"bpftrace\"\n").format(extra=""))
    res = catalog.run("run", "--results", "results.jsonl")
    (row,) = catalog.rows()
    assert res.returncode == 1, res.stdout + res.stderr
    assert row["verdict"] == "MISSED"
    assert row["reason"] == ("monitor-only: etc-file-create fired without enforcing (policy in "
                             "monitor mode?)")
    assert row["enforcement"]["observed"] == "completed"
    assert "monitor-only: etc-file-create fired without enforcing" in res.stdout
    assert clean_node() == {"etc_files": [], "processes": [], "cgroups": [], "audit_rules": []}


def test_benign_controls_are_never_killed_by_the_policy(
        catalog: Catalog, clean_node: Callable[[], dict[str, list[str]]]) -> None:
    """(c) the controls in both contexts under the enforcing policy: all CLEAN."""
    _copy(catalog, "benign/read-etc-hostname.yaml", "benign/tmp-scratch-file.yaml",
          "benign/debugger-own-child.yaml")
    catalog.config(ENFORCE_CONFIG.format(extra=""))
    res = catalog.run("run", "--results", "results.jsonl")
    rows = catalog.rows()
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(rows) == 6
    assert {r["verdict"] for r in rows} == {"CLEAN"}, [(r["scenario"], r["reason"]) for r in rows]
    assert {r["killed_by"] for r in rows} == {None}
    assert clean_node() == {"etc_files": [], "processes": [], "cgroups": [], "audit_rules": []}


def test_an_over_broad_policy_killing_a_control_is_unexpected(
        catalog: Catalog, clean_node: Callable[[], dict[str, list[str]]]) -> None:
    """(d) a test policy killing any O_CREAT under /tmp in shadowtest cgroups kills the
    tmp-scratch-file control in its namespace context: UNEXPECTED naming the rule."""
    _copy(catalog, "benign/tmp-scratch-file.yaml")
    catalog.config(ENFORCE_CONFIG.replace("enforce = true", f'enforce = true\nprogram = "{OVERBROAD}"')
                   .format(extra=""))
    res = catalog.run("run", "--results", "results.jsonl")
    rows = catalog.rows()
    assert res.returncode == 1, res.stdout + res.stderr
    got = {r["context"]: r for r in rows}
    assert got["host"]["verdict"] == "CLEAN"  # not in a shadowtest/ cgroup: out of scope
    ns = got["namespace"]
    assert (ns["verdict"], ns["killed_by"], ns["rule"]) == ("UNEXPECTED", "SIGKILL",
                                                            "tmp-create-overbroad")
    assert ns["reason"].startswith("benign control killed by SIGKILL (exit -9) by "
                                   "bpftrace-enforce policy/rule 'tmp-create-overbroad'")
    assert not list(Path("/tmp").glob(f"shadowtest-{ns['run_id']}*"))
    assert clean_node() == {"etc_files": [], "processes": [], "cgroups": [], "audit_rules": []}
