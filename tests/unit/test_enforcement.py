"""Pre-enforcement validation: ``enforce`` expectations and ``side_effect`` probes (schema and
file:line errors), the action-stage classification, the bpftrace ``enforce`` option, and
``harness.report.enforcement`` (cells, sentences, CLI exit codes)."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from harness.atomic import SideEffect, check_atomic
from harness.builtin import BUILTIN
from harness.execute import stopped
from harness.report import enforcement
from harness.report.summary import render
from harness.run import StageResult
from harness.scenario import check_scenario, load_atomics
from harness.sensors.bpftrace import BpftraceSensor, program_path

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
