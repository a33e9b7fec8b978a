"""Pre-enforcement validation: ``enforce`` expectations and ``side_effect`` probes (schema and
file:line errors), the action-stage classification, the bpftrace ``enforce`` option, and
``harness.report.enforcement`` (cells, sentences, CLI exit codes)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.builtin import BUILTIN
from harness.core.atomic import SideEffect, check_atomic
from harness.core.detection import Detection
from harness.core.health import Health
from harness.core.node import NodeFacts
from harness.core.run import Run, StageResult
from harness.core.scenario import check_scenario, load_atomics
from harness.core.verdict import Expectation, enforcement_claims, judge, with_claims
from harness.engine.execute import execute, stopped
from harness.report import enforcement
from harness.report.summary import render
from harness.sensors.bpftrace import BpftraceSensor, program_path
from harness.sensors.tetragon import TetragonSensor
from tests.helpers import FakeSession, FakeTarget

ROOT = Path(__file__).resolve().parents[2]

ATOMIC = """\
id: etc-file-create
name: Create a file under /etc
technique: T1098
touches:
  - {kind: file, what: "/etc/shadowtest-#{run_id}.conf"}
executor:
  name: sh
  command: "printf x > /etc/shadowtest-#{run_id}.conf"
  cleanup_command: "rm -f /etc/shadowtest-#{run_id}.conf"
proof:
  command: "test -s /etc/shadowtest-#{run_id}.conf"
"""
SIDE_EFFECT = """\
side_effect:
  description: "the file /etc/shadowtest-#{run_id}.conf"
  command: "test -e /etc/shadowtest-#{run_id}.conf"
"""
# Line numbers below are this text's.
SCENARIO = """\
id: etc-write-enforced
name: enforced etc write
technique: T1098
atomic: etc-file-create
contexts: [namespace]
expect:
  auditd: {rule: T1098}
  bpftrace-enforce:
    rule: etc-file-create
    enforce: {action: sigkill}
overrides:
  - kernel: ">=6.1"
    expect:
      lsm:
        enforce: {action: deny}
"""


def _catalog(tmp_path: Path, atomic: str, scenario: str) -> tuple[Path, dict[str, Any]]:
    (tmp_path / "atomic").mkdir()
    (tmp_path / "atomic" / "etc-file-create.yaml").write_text(atomic)
    path = tmp_path / "scenarios" / "enforcement" / "etc-write-enforced.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(scenario)
    atomics, errors = load_atomics([tmp_path / "atomic"])
    assert errors == []
    return path, atomics


# ---------------------------------------------------------------- schema and validation
def test_enforce_expectation_loads_with_a_side_effect(tmp_path: Path) -> None:
    path, atomics = _catalog(tmp_path, ATOMIC + SIDE_EFFECT, SCENARIO)
    errors, scenario = check_scenario(path, atomics)
    assert errors == []
    assert scenario is not None
    assert scenario.enforced
    assert scenario.expectation("bpftrace-enforce").enforce == "sigkill"
    assert scenario.expectation("auditd").enforce is None
    assert scenario.expectation("lsm", {"kernel": "6.12.0"}).enforce == "deny"
    assert scenario.atomic.side_effect == SideEffect(
        "the file /etc/shadowtest-#{run_id}.conf", "test -e /etc/shadowtest-#{run_id}.conf")


def test_enforce_without_side_effect_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    path, atomics = _catalog(tmp_path, ATOMIC, SCENARIO)
    errors, scenario = check_scenario(path, atomics)
    assert scenario is None
    assert [str(e).split(": ", 2)[:2] for e in errors] == [
        [f"{path}:10", "expect.bpftrace-enforce.enforce"],
        [f"{path}:15", "overrides[0].expect.lsm.enforce"],
    ]
    assert "atomic 'etc-file-create' (etc-file-create.yaml) has no side_effect" in str(errors[0])


@pytest.mark.parametrize(
    ("line", "new", "key", "message"),
    [
        (10, "    enforce: {action: block}", "expect.bpftrace-enforce.enforce.action",
         "'block'"),
        (10, "    enforce: {}", "expect.bpftrace-enforce.enforce", "'action' is a required"),
        (10, "    enforce: {action: sigkill, when: always}",
         "expect.bpftrace-enforce.enforce.when", "unknown key 'when'"),
        (7, "  auditd: {gap: not a kill sensor, enforce: {action: sigkill}}", "expect.auditd",
         "'gap' declares a known gap"),
    ],
)
def test_enforce_schema_errors_name_file_line_and_key(tmp_path: Path, line: int, new: str,
                                                      key: str, message: str) -> None:
    lines = SCENARIO.split("\n")
    lines[line - 1] = new
    path, atomics = _catalog(tmp_path, ATOMIC + SIDE_EFFECT, "\n".join(lines))
    errors, _ = check_scenario(path, atomics)
    assert len(errors) == 1, errors
    assert str(errors[0]).startswith(f"{path}:{line}: {key}: ")
    assert message in str(errors[0])


def test_side_effect_placeholders_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "etc-file-create.yaml"
    path.write_text(ATOMIC + SIDE_EFFECT.replace("test -e", "test -e #{nope}"))
    errors, atomic = check_atomic(path)
    assert atomic is None
    assert str(errors[0]).startswith(f"{path}:14: side_effect.command: placeholder #{{nope}}")


def test_bundled_enforcement_scenarios_have_side_effects() -> None:
    atomics, errors = load_atomics([BUILTIN / "atomic"])
    assert errors == []
    for name in ("etc-write-enforced", "ptrace-pid1-enforced"):
        errs, scenario = check_scenario(BUILTIN / "scenarios" / "enforcement" / f"{name}.yaml",
                                        atomics)
        assert errs == []
        assert scenario is not None
        assert scenario.atomic.side_effect is not None
        assert scenario.expectation("bpftrace-enforce").enforce == "sigkill"
        assert scenario.expectation("lsm").enforce == "deny"
        assert scenario.expectation("bpftrace").enforce is None  # plain sensors: detection


# ---------------------------------------------------------------- the action stage
@pytest.mark.parametrize(
    ("exit_code", "stderr", "expected"),
    [
        (-9, "", ("SIGKILL", False)),
        (137, "", ("SIGKILL", False)),
        (1, "sh: 1: cannot create /etc/x: Operation not permitted", (None, True)),
        (1, "ptrace(PTRACE_ATTACH, 1) failed: Permission denied", (None, True)),
        (2, "python3: can't open file", (None, False)),
        (1, "", (None, False)),
        (0, "", (None, False)),
    ],
)
def test_stopped_classifies_the_action(exit_code: int, stderr: str,
                                       expected: tuple[str | None, bool]) -> None:
    assert stopped(StageResult("command", exit_code, stderr=stderr)) == expected


# ---------------------------------------------------------------- bpftrace enforce option
def test_bpftrace_enforce_option_picks_the_enforce_program() -> None:
    assert BpftraceSensor(enforce=True).program == program_path("enforce.bt")
    assert BpftraceSensor(enforce=True).enforces
    assert BpftraceSensor(enforce=True, program="x.bt").program == Path("x.bt")
    assert not BpftraceSensor().enforces
    assert BpftraceSensor().program == program_path()


def test_enforce_program_is_container_scoped_and_reports_sigkill() -> None:
    text = program_path("enforce.bt").read_text()
    assert text.count('signal("KILL");') == 5  # 4 etc-file-create probes + ptrace-pid1
    assert text.count("if ($scoped") == 5
    assert text.count('\\"action\\":\\"sigkill\\"') == 5
    for comm in ("dpkg", "apt", "apt-get", "ucf"):
        assert f'comm != "{comm}"' in text
    assert '$name == "shadowtest" || $name == "docker"' in text


# ---------------------------------------------------------------- the report
def _row(verdict: str, kernel: str = "6.18.44", **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scenario": "etc-write-enforced", "context": "namespace", "node": "local",
        "kernel": kernel, "sensor": "bpftrace-enforce", "verdict": verdict, "benign": False,
        "reason": "r", "rule": "etc-file-create",
        "expected": {"technique": "T1098", "rule": "etc-file-create", "enforce": "sigkill"},
        "enforcement": {"expected": "sigkill", "reported": "sigkill", "observed": "killed",
                        "side_effect": verdict == "RACED",
                        "effect": "the file /etc/shadowtest-st1.conf"},
    }
    row.update(kw)
    return row


def _control(verdict: str = "CLEAN", **kw: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "scenario": "tmp-scratch-file", "benign": True, "rule": None, "enforcement": None,
        "expected": {"technique": None, "rule": None, "enforce": None}}
    return _row(verdict, **{**values, **kw})


def test_report_sentences_per_kernel() -> None:
    rows = [
        _row("RACED"),
        _row("BLOCKED", kernel="6.12.0"), _control(kernel="6.12.0"),
        _row("MISSED", kernel="6.1.0", reason="monitor-only: etc-file-create fired without "
             "enforcing (policy in monitor mode?)"),
        _row("NOT_EXECUTED", kernel="5.15.0", reason="not runnable: bpf_lsm not usable"),
    ]
    assert enforcement.sentences(enforcement.cells_of(rows)) == [
        "safe to promote etc-file-create (bpftrace-enforce) on kernel 5.15.0: no, because "
        "not runnable: NOT_EXECUTED not runnable: bpf_lsm not usable",
        "safe to promote etc-file-create (bpftrace-enforce) on kernel 6.1.0: no, because "
        "MISSED: monitor-only (the rule fired without enforcing)",
        "safe to promote etc-file-create (bpftrace-enforce) on kernel 6.12.0: yes",
        "safe to promote etc-file-create (bpftrace-enforce) on kernel 6.18.44: no, because "
        "RACED: the kill landed after the side effect (the file /etc/shadowtest-st1.conf "
        "exists)",
    ]


def test_report_a_killed_control_makes_the_rule_unsafe() -> None:
    killed = _control("UNEXPECTED", rule="etc-file-create",
                      enforcement={"expected": None, "reported": "sigkill",
                                   "observed": "killed", "side_effect": None,
                                   "rule": "etc-file-create"})
    cells = enforcement.cells_of([_row("BLOCKED"), killed])
    assert [(c.rule, c.counts["BLOCKED"], c.counts["benign stopped"], c.safe) for c in cells] \
        == [("etc-file-create", 1, 1, False)]
    assert cells[0].because == ["a benign control (tmp-scratch-file[namespace]) was killed by "
                                "etc-file-create of bpftrace-enforce"]


def test_report_an_unclaimed_control_kill_counts_against_every_rule_of_the_sensor() -> None:
    killed = _control("UNEXPECTED", enforcement={"expected": None, "reported": None,
                                                 "observed": "killed", "side_effect": None})
    other = _row("BLOCKED", rule="ptrace-pid1",
                 expected={"technique": "T1055.008", "rule": "ptrace-pid1", "enforce": "sigkill"})
    cells = enforcement.cells_of([_row("BLOCKED"), other, killed])
    assert [(c.rule, c.safe) for c in cells] == [("etc-file-create", False),
                                                 ("ptrace-pid1", False)]


def test_report_counts_table_and_summary_section() -> None:
    rows = [_row("RACED"), _row("RACED"), _control()]
    text = enforcement.render(rows)
    assert text.splitlines()[1].split() == ["kernel", "rule", "sensor", "BLOCKED", "RACED",
                                            "MISSED", "not", "runnable", "benign", "stopped"]
    assert text.splitlines()[2].split() == ["6.18.44", "etc-file-create", "bpftrace-enforce",
                                            "0", "2", "0", "0", "0"]
    assert "safe to promote etc-file-create (bpftrace-enforce) on kernel 6.18.44: no" \
        in render(rows)
    assert "pre-enforcement" not in render([_control()])  # no enforcement rows: no section


def _cli(tmp_path: Path, rows: list[dict[str, Any]], *extra: str) -> tuple[int, Path]:
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parser = argparse.ArgumentParser(prog="shadowtest")
    sub = parser.add_subparsers(dest="command")
    enforcement.add_parser(sub)
    args = parser.parse_args(["enforcement-report", str(results), *extra])
    return enforcement.run(args), results


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        ([_row("BLOCKED"), _control()], 0),
        ([_row("BLOCKED"), _row("RACED", kernel="6.1.0")], 1),
        ([_control()], 1),  # nothing proven
    ],
)
def test_report_cli_exit_codes(tmp_path: Path, rows: list[dict[str, Any]], code: int) -> None:
    assert _cli(tmp_path, rows)[0] == code


def test_report_cli_json_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    code, _ = _cli(tmp_path, [_row("RACED")], "--json", str(out))
    doc = json.loads(out.read_text())
    assert (code, doc["safe"], doc["kernels"]["6.18.44"]["safe"]) == (1, False, False)
    assert doc["kernels"]["6.18.44"]["rules"][0]["counts"]["RACED"] == 1
    args = argparse.Namespace(results=tmp_path / "missing.jsonl", json_out=None)
    assert enforcement.run(args) == 2
    assert "no such results file" in capsys.readouterr().err


def test_row_contract_documents_the_enforcement_keys() -> None:
    from harness.report.results import ROW_KEYS

    for key in ("enforcement", "killed_by", "exit_code", "side_effect"):
        assert key in ROW_KEYS
    assert textwrap.dedent(ROW_KEYS["side_effect"]).startswith("the atomic's side-effect probe")


# ---------------------------------------------------------------- enforcement by any sensor
# A sensor without the static ``enforces`` flag (Tetragon with a Sigkill policy) kills the
# action: the run is an enforcement run because the sensor's detection claims the kill.
# The lines are REAL Tetragon export lines of the bundled etc-write-enforced run in
# tests/data/real/tetragon/enforce/ (POST hook, SIGKILL hook, exit by SIGKILL, pid 24417);
# only their ``time`` is moved to now for the live path.
REAL_ENFORCE = ROOT / "tests" / "data" / "real" / "tetragon"
KILLED_RUN = "st69742657c29c"
KILLED_PID = 24417


def _real_kill_lines() -> list[str]:
    """The three lines of pid 24417 (file-monitoring POST, etc-write-enforce SIGKILL, exit)."""
    lines = (REAL_ENFORCE / "enforce" / "export.jsonl").read_text("utf-8").splitlines()
    return [line for line in lines if f'"pid":{KILLED_PID},' in line.split('"parent"')[0]
            and ('"process_tracepoint"' in line or '"signal":"SIGKILL"' in line)]


def _kill_detections() -> tuple[TetragonSensor, list[Detection]]:
    sensor = TetragonSensor(path="/nonexistent/tetragon.log")
    for line in _real_kill_lines():
        sensor.on_line(line)
    return sensor, sensor.stream._since(0)


def _stopped_run(**kw: Any) -> Run:
    """As ``shadowtest run`` recorded it: NOT_EXECUTED 'the action failed: exit -9'."""
    values: dict[str, Any] = {
        "run_id": KILLED_RUN, "scenario": "etc-write-enforced", "context": "namespace",
        "node": "local", "started_at": 1796652673.885, "ended_at": 1796652673.902,
        "executed": False, "reason": "the action failed: exit -9", "exit_code": -9,
        "pids": frozenset({24406, KILLED_PID}),
    }
    values.update(kw)
    return Run(**values)


def test_real_kill_lines_are_a_post_a_sigkill_and_an_exit() -> None:
    sensor, dets = _kill_detections()
    assert [(d.rule, d.action) for d in dets] == [
        ("file-monitoring", "KPROBE_ACTION_POST"), ("etc-write-enforce", "KPROBE_ACTION_SIGKILL")]
    assert sensor.exit_record(dets[1]) == "SIGKILL"


@pytest.mark.parametrize(("side_effect", "verdict"), [(True, "RACED"), (False, "BLOCKED")])
def test_sigkill_claimed_by_a_non_bpftrace_sensor_is_raced_or_blocked_never_not_executed(
        side_effect: bool, verdict: str) -> None:
    sensor, dets = _kill_detections()
    run = _stopped_run(side_effect=side_effect)
    claims = enforcement_claims(run, {"tetragon": dets}, run.ended_at + 5,
                                {"tetragon": sensor.exit_record})
    judged = with_claims(run, claims)
    assert (judged.executed, judged.killed_by, judged.observed) == (True, "SIGKILL", "killed")
    assert "tetragon claims it (etc-write-enforce: sigkill)" in judged.reason
    assert "its exit record says SIGKILL" in judged.reason
    enforce = Expectation(technique="T1098", rule="etc-write-enforce", enforce="sigkill")
    j = judge(judged, dets, enforce, Health(True), "tetragon")
    assert j.verdict.value == verdict
    # a sensor without an enforce block still gets its detection verdict
    plain = judge(judged, dets, Expectation(technique="T1098"), Health(True), "tetragon")
    assert plain.verdict.value == "DETECTED"
    silent = judge(judged, [], Expectation(technique="T1098"), Health(True), "auditd")
    assert silent.verdict.value == "MISSED"


def test_unclaimed_or_contradicted_kill_stays_not_executed() -> None:
    _, dets = _kill_detections()
    run = _stopped_run()
    monitor = [d for d in dets if d.action == "KPROBE_ACTION_POST"]
    assert with_claims(run, enforcement_claims(run, {"t": monitor}, run.ended_at + 5)) == run
    other_run = _stopped_run(pids=frozenset({999999}), run_id="st000000000000")
    assert enforcement_claims(other_run, {"t": dets}, run.ended_at + 5) == ()
    late = enforcement_claims(run, {"t": dets}, run.started_at - 5)  # outside the window
    assert late == ()
    contradicted = enforcement_claims(run, {"t": dets}, run.ended_at + 5,
                                      {"t": lambda d: "SIGTERM"})
    assert with_claims(run, contradicted).executed is False
    completed = _stopped_run(exit_code=1)  # not stopped by a signal: nothing to claim
    claims = enforcement_claims(completed, {"t": dets}, run.ended_at + 5)
    assert with_claims(completed, claims).executed is False


# ---------------------------------------------------------------- live path (execute)
def _killed(on_command: Callable[[], None], side_effect_exit: int) -> FakeSession:
    """The action (pids 24406 and the real export's killed pid) ends by SIGKILL (exit -9)
    after ``on_command``; the side-effect probe exits ``side_effect_exit``."""
    return FakeSession(frozenset({24406, KILLED_PID}),
                       {"command": -9, "side_effect": side_effect_exit}, on_command)


def _scenario(path: Path) -> Any:
    atomics, _ = load_atomics([BUILTIN / "atomic"])
    errors, scenario = check_scenario(path, atomics)
    assert not errors
    return scenario


@pytest.mark.parametrize(("path", "verdict"), [
    (BUILTIN / "scenarios" / "enforcement" / "etc-write-enforced.yaml", "DETECTED"),
    (REAL_ENFORCE / "configs" / "scenarios-enforce" / "etc-write-enforced-tg.yaml", "RACED"),
])
def test_execute_a_tetragon_sigkill_makes_an_enforcement_run(tmp_path: Path, path: Path,
                                                             verdict: str) -> None:
    """Live path: Tetragon (no ``enforces`` flag) kills the action; its export says so.
    The bundled scenario has no Tetragon enforce block: DETECTED; the -tg copy: RACED
    (the side-effect probe finds the file). Never NOT_EXECUTED."""
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log))
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def kill() -> None:
        with log.open("a", encoding="utf-8") as fh:
            for line in _real_kill_lines():
                head, _, _ = line.rpartition('"time":"')
                fh.write(f'{head}"time":"{stamp}"}}\n')

    session = _killed(kill, side_effect_exit=0)
    sensor.start()
    try:
        outcome = execute(_scenario(path), "namespace", FakeTarget(session),  # type: ignore[arg-type]
                          NodeFacts(node="local", kernel="6.18.44"), {"tetragon": sensor},
                          window=5.0, run_id="st0000000000aa")
    finally:
        sensor.stop()
    (j,) = outcome.judgements
    assert (j.verdict.value, outcome.run.executed, outcome.run.killed_by) == (
        verdict, True, "SIGKILL"), j.reason
    assert outcome.run.side_effect is True
    assert "side_effect" in session.stages


def test_execute_an_unclaimed_kill_stays_not_executed(tmp_path: Path) -> None:
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log))
    session = _killed(lambda: None, side_effect_exit=1)
    sensor.start()
    try:
        outcome = execute(
            _scenario(BUILTIN / "scenarios" / "enforcement" / "etc-write-enforced.yaml"),
            "namespace", FakeTarget(session), NodeFacts(node="local", kernel="6.18.44"),  # type: ignore[arg-type]
            {"tetragon": sensor}, window=0.3, run_id="st0000000000ab")
    finally:
        sensor.stop()
    (j,) = outcome.judgements
    assert j.verdict.value == "NOT_EXECUTED"
    assert j.reason.startswith("the action failed: exit -9")
    assert outcome.run.killed_by == "SIGKILL"
