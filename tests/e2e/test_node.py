"""End to end, as root, with the real auditd and bpftrace: the acceptance of the skeleton."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from harness.builtin import BUILTIN
from harness.core import policy
from harness.core.node import unmet
from harness.core.scenario import Scenario, check_scenario, load_atomics, scenario_files
from harness.nodes.runner import RunnerSession, stage_runner_argv, start_runner
from harness.tools.catalogue import expected_cell
from tests.e2e.conftest import NOTHING_LEFT, Catalog, verdicts

pytestmark = pytest.mark.node

def bundled_scenarios() -> dict[str, Scenario]:
    atomics, errors = load_atomics([BUILTIN / "atomic"])
    assert errors == []
    out = {}
    for path in scenario_files([BUILTIN / "scenarios"]):
        errs, scenario = check_scenario(path, atomics)
        assert errs == [], errs
        assert scenario is not None
        out[scenario.id] = scenario
    return out


def check_row(scenario: Scenario, row: dict[str, Any]) -> str | None:
    """None when the row's verdict is what the scenario declares for its sensor on the row's
    node (the catalogue's cell, ``expected_cell``: harness.core.expectation; a known gap
    that closed, DETECTED, is accepted), else what differs. NOT_EXECUTED (harness.core.policy:
    not run) only through a precondition, a scenario requirement, or the sensor's own
    ``requires`` unmet by the row's facts."""
    sensor, verdict, reason = row["sensor"], row["verdict"], row["reason"]
    facts = row.get("facts") or {}
    outcome = policy.outcome_of_row(row)
    if policy.state(outcome) is policy.State.NOT_RUN:
        if reason.startswith(f"not runnable for {sensor}: "):  # its own requires
            exp = scenario.expectation(sensor, facts)
            declared = exp.requires is not None and bool(unmet(facts, *exp.requires))
        else:
            declared = reason.startswith(("precondition failed:", "not runnable:"))
        return None if declared else f"NOT_EXECUTED, not declared by the scenario: {reason}"
    want = expected_cell(scenario, sensor, facts)
    if not want.accepts(verdict, closed_gap=True):
        return f"expected {want.short()} ({want.text}), got {verdict}: {reason}"
    if verdict == "MISSED" and (row.get("known_gap") != want.gap
                                or not reason.startswith(f"known gap: {want.gap}")):
        return f"a miss without the declared gap {want.gap!r}: {row.get('known_gap')!r}, {reason}"
    if policy.fails(outcome):
        return f"{verdict} fails the run (harness.core.policy): {reason}"
    return None


@pytest.fixture
def bundled(catalog: Catalog) -> Catalog:
    shutil.rmtree(catalog.root / "scenarios")
    shutil.copytree(BUILTIN / "scenarios", catalog.root / "scenarios")
    return catalog


def test_bundled_scenarios_give_each_sensor_its_expected_verdict(bundled: Catalog, clean_node) -> None:
    """Every (scenario, context, sensor) of the bundled catalogue gets exactly what the scenario
    declares: DETECTED, CLEAN for a benign control, a known gap's MISSED (with its reason), or
    NOT_EXECUTED only through a declared precondition / kernel requirement."""
    scenarios = bundled_scenarios()
    attacks = [s for s in scenarios.values() if not s.benign]
    assert len(attacks) >= 25
    assert len(scenarios) - len(attacks) >= 8
    res = bundled.run("run", "--results", "results.jsonl")
    rows = bundled.rows()
    assert res.returncode == 0, res.stdout + res.stderr
    problems = [f"{r['scenario']}[{r['context']}] {r['sensor']}: {diff}" for r in rows
                if (diff := check_row(scenarios[r["scenario"]], r)) is not None]
    assert problems == [], "\n".join(problems)
    got = verdicts(rows)
    assert {(s, c) for s, c, _ in got} == {(s.id, c) for s in scenarios.values() for c in s.contexts}
    assert {sensor for _, _, sensor in got} == {"auditd", "bpftrace"}
    executed_attacks = {r["scenario"] for r in rows
                        if not r["benign"] and r["verdict"] != "NOT_EXECUTED"}
    assert len(executed_attacks) >= 23, sorted(executed_attacks)
    detected = [r for r in rows if r["verdict"] == "DETECTED"]
    assert all(r["latency_ms"] is not None and r["latency_ms"] >= 0 for r in detected)
    assert all(r["correlated_by"] for r in detected)
    assert all(r["kernel"] == os.uname().release for r in rows)
    assert {"btf", "bpf_lsm", "kprobes"} <= set(rows[0]["facts"])
    assert "shadowtest verdicts by kernel, then sensor" in res.stdout
    assert clean_node() == NOTHING_LEFT


def test_sensor_not_running_is_sensor_down_not_missed(catalog: Catalog, clean_node) -> None:
    catalog.config("""
        [tool.shadowtest]
        allowed_nodes = ["local"]
        [tool.shadowtest.sensors.auditd]
        type = "auditd"
        attach = true
        log = "audit-that-nobody-writes.log"
        [tool.shadowtest.sensors.bpftrace]
        type = "bpftrace"
    """)
    shutil.copy(BUILTIN / "scenarios/persistence/etc-write.yaml", catalog.root / "x.yaml")
    catalog.scenario("persistence", "etc-write", (catalog.root / "x.yaml").read_text())
    res = catalog.run("run", "--results", "results.jsonl")
    got = verdicts(catalog.rows())
    assert res.returncode == 1, res.stdout
    assert got[("etc-write", "host", "auditd")] == "SENSOR_DOWN"
    assert got[("etc-write", "host", "bpftrace")] == "DETECTED"
    down = [r for r in catalog.rows() if r["sensor"] == "auditd"]
    assert all("no audit daemon is running" in r["reason"] for r in down)
    assert clean_node() == NOTHING_LEFT


def test_expectation_the_sensor_does_not_emit_is_missed_with_near_misses(catalog: Catalog) -> None:
    catalog.scenario("persistence", "etc-write-wrong-rule", """
        id: etc-write-wrong-rule
        name: etc write, expecting a rule bpftrace does not have
        technique: T1098
        atomic: etc-file-create
        contexts: [host]
        expect:
          bpftrace: {technique: T1098, rule: no-such-rule}
          auditd: {technique: T1003.008}
    """)
    res = catalog.run("run", "--results", "results.jsonl")
    rows = {r["sensor"]: r for r in catalog.rows()}
    assert res.returncode == 1
    assert rows["bpftrace"]["verdict"] == "MISSED"
    assert rows["auditd"]["verdict"] == "MISSED"
    near = rows["bpftrace"]["near_misses"][0]
    assert near["mismatches"] == [{"field": "rule", "expected": "no-such-rule",
                                   "got": "etc-file-create"}]
    assert near["correlated_by"] == "run_id"
    assert rows["auditd"]["near_misses"][0]["mismatches"][0]["field"] == "technique"
    assert "nearest detections:" in res.stdout
    assert "no-such-rule" in res.stdout


def test_failed_precondition_is_not_executed(catalog: Catalog) -> None:
    catalog.atomic("needs-missing-tool", """
        id: needs-missing-tool
        name: needs a tool this node does not have
        technique: T1098
        touches: [{kind: file, what: nothing}]
        precondition:
          - description: the tool /nonexistent/shadowtest-tool is installed
            command: test -x /nonexistent/shadowtest-tool
        executor: {name: sh, command: /nonexistent/shadowtest-tool}
        proof: {command: "true"}
    """)
    catalog.scenario("persistence", "missing-tool", """
        id: missing-tool
        name: precondition fails
        technique: T1098
        atomic: needs-missing-tool
        contexts: [host, namespace]
    """)
    res = catalog.run("run", "--results", "results.jsonl")
    rows = catalog.rows()
    assert res.returncode == 0, res.stdout
    assert {r["verdict"] for r in rows} == {"NOT_EXECUTED"}
    assert len(rows) == 4
    assert all("/nonexistent/shadowtest-tool is installed" in r["reason"] for r in rows)
    assert "NOT_EXECUTED" in res.stdout


def test_benign_control_that_triggers_is_unexpected(catalog: Catalog, clean_node) -> None:
    catalog.scenario("benign", "not-so-benign", """
        id: not-so-benign
        name: a "benign" control that writes to /etc
        benign: true
        atomic: etc-file-create
        contexts: [namespace]
    """)
    res = catalog.run("run", "--results", "results.jsonl")
    got = verdicts(catalog.rows())
    assert res.returncode == 1
    assert got == {("not-so-benign", "namespace", "auditd"): "UNEXPECTED",
                   ("not-so-benign", "namespace", "bpftrace"): "UNEXPECTED"}
    assert clean_node() == NOTHING_LEFT


def test_node_not_in_allow_list_is_refused_before_any_atomic(catalog: Catalog, clean_node) -> None:
    catalog.config("""
        [tool.shadowtest]
        allowed_nodes = ["staging-node-7"]
        [tool.shadowtest.sensors.bpftrace]
        type = "bpftrace"
    """)
    catalog.scenario("persistence", "etc-write",
                     (BUILTIN / "scenarios/persistence/etc-write.yaml").read_text())
    res = catalog.run("run", "--results", "results.jsonl")
    assert res.returncode == 4
    assert "refusing to run atomics on node(s) local" in res.stderr + res.stdout
    assert catalog.rows() == []
    assert clean_node() == NOTHING_LEFT


def test_malformed_files_fail_collection_with_file_line_key(catalog: Catalog) -> None:
    bad = catalog.scenario("persistence", "bad", """
        id: bad
        name: bad scenario
        technique: T1098
        atomic: etc-file-create
        contexts: [host]
        expect:
          bpftrace:
            rulez: etc-file-create
    """)
    res = catalog.run("run", "--results", "results.jsonl")
    assert res.returncode == 2  # pytest: interrupted by collection errors
    assert f"{bad}:8: expect.bpftrace.rulez: unknown key 'rulez'" in res.stdout
    val = catalog.run("validate")
    assert val.returncode == 1
    assert f"{bad}:8: expect.bpftrace.rulez" in val.stderr
    assert catalog.rows() == []


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _slow_etc_write(catalog: Catalog) -> str:
    """A quick scenario, then a slow one that writes /etc/shadowtest-<run id>-<tag>.conf and
    lingers; returns the file's glob (the tag tells this test's file from another run's)."""
    tag = catalog.owner[:12]
    catalog.atomic("etc-write-slow", """
        id: etc-write-slow
        name: write under /etc, then linger
        technique: T1098
        touches: [{kind: file, what: "/etc/shadowtest-#{run_id}-TAG.conf"}]
        executor:
          name: sh
          command: "echo x > /etc/shadowtest-#{run_id}-TAG.conf && sleep 60"
          cleanup_command: "rm -f /etc/shadowtest-#{run_id}-TAG.conf"
          timeout: 90s
        proof: {command: "test -e /etc/shadowtest-#{run_id}-TAG.conf"}
    """.replace("TAG", tag))
    catalog.scenario("persistence", "a-quick", """
        id: a-quick
        name: a quick scenario that finishes before the interrupt
        benign: true
        atomic: read-hostname
        contexts: [host]
    """)
    catalog.scenario("persistence", "b-slow", """
        id: b-slow
        name: interrupted mid-action
        technique: T1098
        atomic: etc-write-slow
        contexts: [namespace]
    """)
    return f"shadowtest-st*-{tag}.conf"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupt_mid_scenario_leaves_nothing_behind(
        catalog: Catalog, clean_node, cpu_hog: list[int], sig: signal.Signals) -> None:
    """On a busy machine (a CPU hog beside the run), Ctrl-C, SIGTERM or SIGKILL of the
    harness mid-action leaves nothing: no process, audit rule or changed audit setting, no
    cgroup in any hierarchy, mount, file or network namespace; rows written so far stay.
    SIGKILL runs no cleanup in the harness: the context (parent-death signal) runs the
    atomic's cleanup itself, the auditd watchdog releases the daemon, its rules and the
    kernel's audit settings, bpftrace exits when its reader is gone and the run's reaper
    removes its cgroup."""
    pattern = _slow_etc_write(catalog)
    proc = catalog.popen("run", "--results", "results.jsonl")
    try:
        _wait_for(lambda: list(Path("/etc").glob(pattern)), 180, "the slow atomic's file")
        rows_before = catalog.rows()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:  # never leave the harness running, even on failure
            proc.kill()
            proc.communicate(timeout=60)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 120  # the watchdog and reaper act once it is gone
        while clean_node() != NOTHING_LEFT and time.monotonic() < deadline:
            time.sleep(0.2)
    else:
        assert proc.returncode == 2, out  # pytest: interrupted; cleanup ran
    assert [r["scenario"] for r in rows_before] == ["a-quick", "a-quick"]
    assert catalog.rows() == rows_before  # intact, nothing torn
    json.dumps(catalog.rows())
    assert clean_node() == NOTHING_LEFT


def test_xdist_gives_the_same_verdicts_as_serial(bundled: Catalog) -> None:
    serial = bundled.run("run", "--results", "serial.jsonl")
    parallel = bundled.run("run", "-n", "2", "--results", "parallel.jsonl")
    assert serial.returncode == 0, serial.stdout
    assert parallel.returncode == 0, parallel.stdout
    assert verdicts(bundled.rows("parallel.jsonl")) == verdicts(bundled.rows("serial.jsonl"))
    pairs = sum(len(s.contexts) for s in bundled_scenarios().values())
    assert len(bundled.rows("parallel.jsonl")) == 2 * pairs


def test_rejudge_from_recorded_output_gives_the_same_verdicts(bundled: Catalog) -> None:
    """Record bpftrace's raw output and auditd's log during a run, then judge again offline."""
    audit_log = bundled.root / "audit" / "audit.log"
    audit_log.parent.mkdir()
    bundled.config(f"""
        [tool.shadowtest]
        allowed_nodes = ["local"]
        [tool.shadowtest.sensors.auditd]
        type = "auditd"
        log = "{audit_log}"
        [tool.shadowtest.sensors.bpftrace]
        type = "bpftrace"
        record = "bpftrace.jsonl"
    """)
    live = bundled.run("run", "--results", "results.jsonl")
    assert live.returncode == 0, live.stdout
    again = bundled.run("rejudge", "results.jsonl", "--out", "rejudged.jsonl",
                        "--sensor", "bpftrace=bpftrace:bpftrace.jsonl",
                        "--sensor", f"auditd=auditd:{audit_log}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert verdicts(bundled.rows("rejudged.jsonl")) == verdicts(bundled.rows())


def test_audit_daemon_killed_mid_run_is_sensor_down_and_the_kernel_is_restored(
        catalog: Catalog, clean_node, cpu_hog: list[int]) -> None:
    """The run's auditd dies mid-run (SIGKILL, by the pid the harness recorded), before the
    action: that row is SENSOR_DOWN (never MISSED), the run goes on, and at the end the
    rules are gone and the kernel's audit settings (enabled, backlog limit, failure mode,
    rate limit) are what they were."""
    tag = catalog.owner[:12]
    go = catalog.root / "go"  # the action waits for it: it happens after the kill
    catalog.atomic("etc-write-lingering", f"""
        id: etc-write-lingering
        name: write under /etc, then linger a few seconds
        technique: T1098
        touches: [{{kind: file, what: "/etc/shadowtest-#{{run_id}}-{tag}.conf"}}]
        executor:
          name: sh
          command: "touch {go}.ready; while [ ! -e {go} ]; do sleep 0.05; done;
            echo x > /etc/shadowtest-#{{run_id}}-{tag}.conf && sleep 2"
          cleanup_command: "rm -f /etc/shadowtest-#{{run_id}}-{tag}.conf"
          timeout: 60s
        proof: {{command: "test -e /etc/shadowtest-#{{run_id}}-{tag}.conf"}}
    """)
    catalog.scenario("persistence", "lingering", """
        id: lingering
        name: auditd is killed while this runs
        technique: T1098
        atomic: etc-write-lingering
        contexts: [namespace]
    """)
    state_file = Path("/run/shadowtest/auditd/state.json")
    proc = catalog.popen("run", "--results", "results.jsonl")
    try:
        _wait_for(lambda: Path(f"{go}.ready").exists(), 180, "the atomic to start")
        state = json.loads(state_file.read_text())
        users = [int(p.name) for p in Path("/run/shadowtest/auditd/users").iterdir()]
        daemon = int(state["pid"])
        parent = int(Path(f"/proc/{daemon}/stat").read_text().rpartition(")")[2].split()[1])
        if users != [proc.pid] or parent != proc.pid:
            proc.kill()
            pytest.skip("another shadowtest run shares the audit daemon: not ours to kill")
        os.kill(daemon, signal.SIGKILL)  # the daemon this test's harness started
        _wait_for(lambda: not Path(f"/proc/{daemon}").exists() or
                  Path(f"/proc/{daemon}/stat").read_text().rpartition(")")[2].split()[0] == "Z",
                  60, "auditd to die")
        go.touch()
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
    got = verdicts(catalog.rows())
    assert got[("lingering", "namespace", "auditd")] == "SENSOR_DOWN", out
    assert got[("lingering", "namespace", "bpftrace")] == "DETECTED", out
    assert proc.returncode == 1, out
    assert clean_node() == NOTHING_LEFT


def test_stage_runner_cleanup_survives_a_second_sigterm(tmp_path: Path) -> None:
    """The parent-death SIGTERM and the harness's abort can both reach a stage runner: the
    second must not re-enter its exit path and kill the armed cleanup the first started."""
    done = tmp_path / "cleaned"
    proc, hello = start_runner(stage_runner_argv(), "host")
    session = RunnerSession(context="host", proc=proc, pids=frozenset({proc.pid}), hello=hello)
    session.arm_cleanup(["sh", "-c", f"sleep 1; touch {done}"], {})
    try:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the armed cleanup runs now
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        session.close()
    assert done.exists()
