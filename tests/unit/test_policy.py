"""``harness.core.policy``: one table, and every decision made through it agrees.

The table test runs, for every verdict x known gap x (new key | unchanged key | key whose
baseline passed), the decision of ``run`` (a scenario test's outcome), ``report``
(``summary.failing``), ``rejudge`` (the rows it writes, judged by its exit rule), ``diff``
(exit code) and ``--shadowtest-baseline`` (a test's report after ``apply_baseline``), and
asserts they agree. It fails when any one of them diverges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.core import policy
from harness.core.atomic import Atomic
from harness.core.policy import Change, Outcome
from harness.core.run import Run
from harness.core.scenario import Scenario
from harness.core.verdict import Judgement, Verdict
from harness.engine.execute import Outcome as RunOutcome
from harness.pytest.baseline import apply_baseline
from harness.pytest.session import ROWS_PROPERTY, scenario_outcome
from harness.report import rejudge, summary
from harness.report.diff import EXIT_OK, EXIT_SENSOR_DOWN, diff, index
from harness.report.results import rows_for

T0 = 1_700_000_000.0
ATOMIC = Atomic(id="a", name="a", technique="T1098", path=Path("atomic/a.yaml"), command="true")


def _scenario(gap: bool, benign: bool = False) -> Scenario:
    expect = {} if benign else {"s": {"gap": "no rule"} if gap else {"rule": "r"}}
    return Scenario(id="sc", name="sc", path=Path("scenarios/x/sc.yaml"), atomic=ATOMIC,
                    contexts=("host",), technique=None if benign else "T1098", tactic="x",
                    benign=benign, expect=expect)


def _judged(verdict: Verdict, gap: bool) -> tuple[Judgement, dict[str, Any], dict[str, Any]]:
    """(judgement, the row ``run`` writes, the row ``rejudge`` writes without the file)."""
    j = Judgement("s", verdict, "why", gap="no rule" if gap else None)
    run = Run(run_id="st0123456789ab", scenario="sc", context="host", node="local",
              started_at=T0, ended_at=T0 + 1, executed=verdict is not Verdict.NOT_EXECUTED,
              facts={"kernel": "6.1.0"})
    outcome = RunOutcome(run, (j,), {})
    (row,) = rows_for(outcome, _scenario(gap, benign=verdict in (Verdict.CLEAN,
                                                                 Verdict.UNEXPECTED)))
    recorded = {**row, "verdict": "DETECTED", "known_gap": None}  # an earlier verdict
    (again,) = rejudge.recorded_rows(outcome, recorded)
    return j, row, again


def _baseline_outcome(row: dict[str, Any], fails: bool, base: list[dict[str, Any]]) -> str:
    report = pytest.TestReport(
        nodeid="t::sc", location=("t", 0, "sc"), keywords={}, when="call",
        outcome="failed" if fails else "passed", longrepr="verdict failed" if fails else None,
        user_properties=[(ROWS_PROPERTY, [row])])
    apply_baseline(report, verdict_failure=fails, baseline=index(base))
    return report.outcome


CASES = [(v, gap, base) for v in Verdict for gap in (False, True)
         for base in ("new", "same", "passing")]


@pytest.mark.parametrize(("verdict", "gap", "base"), CASES,
                         ids=[f"{v.value}-{'gap' if g else 'nogap'}-{b}" for v, g, b in CASES])
def test_run_report_rejudge_diff_and_baseline_agree(verdict: Verdict, gap: bool, base: str) -> None:
    j, row, again = _judged(verdict, gap)
    run_fails = scenario_outcome([j]) == "failed"
    assert summary.failing([row]) is run_fails, "report disagrees with run"
    assert policy.row_failed(again) is run_fails, "rejudge disagrees with run"
    if base == "same":  # the baseline had this very row: known (or same), never failing
        baseline = [row]
        want_diff_fails = want_baseline_fails = False
    elif base == "passing":  # the baseline passed: a failing verdict now is a regression
        baseline = [{**row, "verdict": "BLOCKED" if verdict is Verdict.RACED else
                     "CLEAN" if row["benign"] else "DETECTED", "known_gap": None}]
        want_diff_fails = want_baseline_fails = run_fails
    else:  # a key only in the current run (a new kernel): judged as without a baseline
        baseline = []
        want_diff_fails = want_baseline_fails = run_fails
    result = diff(baseline, [row])
    assert (result["exit_code"] != EXIT_OK) is want_diff_fails, f"diff disagrees: {result}"
    if verdict is Verdict.SENSOR_DOWN and want_diff_fails:
        assert result["exit_code"] == EXIT_SENSOR_DOWN  # not a rule regression
    got = _baseline_outcome(row, run_fails, baseline)
    assert (got == "failed") is want_baseline_fails, "--shadowtest-baseline disagrees"


def test_a_new_kernel_with_a_declared_gap_is_not_a_regression() -> None:
    """The issue's case: a kernel added to the matrix, where the sensor has a known gap."""
    _, row, _ = _judged(Verdict.MISSED, gap=True)
    old = {**row, "kernel": "6.1.0", "verdict": "MISSED"}
    new = {**row, "kernel": "6.12.0"}
    result = diff([old], [old, new])
    assert result["exit_code"] == EXIT_OK
    assert result["regressions"] == []
    assert [r["kernel"] for r in result["only_current"]] == ["6.12.0"]


def test_the_table_names_every_verdict() -> None:
    assert set(policy.TABLE) == set(Verdict)
    assert set(policy.WORST) == set(Verdict)


@pytest.mark.parametrize(("verdict", "fails"), [
    (Verdict.DETECTED, False), (Verdict.CLEAN, False), (Verdict.BLOCKED, False),
    (Verdict.RACED, True), (Verdict.NOT_EXECUTED, False), (Verdict.SENSOR_DOWN, True),
    (Verdict.MISSED, True), (Verdict.UNEXPECTED, True),
])
def test_fails_per_verdict(verdict: Verdict, fails: bool) -> None:
    assert policy.fails(Outcome(verdict)) is fails
    # a declared known gap excuses a MISSED only
    assert policy.fails(Outcome(verdict, known_gap=True)) is (fails and verdict is not Verdict.MISSED)


def test_raced_passes_for_detection_and_fails_for_enforcement() -> None:
    rule = policy.TABLE[Verdict.RACED]
    assert (rule.detection, rule.enforcement) == (policy.State.OK, policy.State.FAIL)
    assert policy.change(Outcome(Verdict.MISSED), Outcome(Verdict.RACED)) is Change.IMPROVEMENT
    assert policy.change(Outcome(Verdict.BLOCKED), Outcome(Verdict.RACED)) is Change.REGRESSION
    assert policy.change(None, Outcome(Verdict.RACED)) is Change.REGRESSION


@pytest.mark.parametrize(("base", "cur", "want"), [
    (Outcome(Verdict.DETECTED), Outcome(Verdict.MISSED, known_gap=True), Change.OTHER),
    (Outcome(Verdict.MISSED, known_gap=True), Outcome(Verdict.MISSED), Change.REGRESSION),
    (Outcome(Verdict.MISSED, known_gap=True), Outcome(Verdict.DETECTED), Change.IMPROVEMENT),
    (Outcome(Verdict.MISSED, known_gap=True), Outcome(Verdict.MISSED, known_gap=True), Change.SAME),
    (None, Outcome(Verdict.MISSED, known_gap=True), Change.NEW),
    (None, Outcome(Verdict.NOT_EXECUTED), Change.NEW),
    (None, Outcome(Verdict.SENSOR_DOWN), Change.SENSOR_DOWN),
    (Outcome(Verdict.SENSOR_DOWN), Outcome(Verdict.MISSED), Change.REGRESSION),
])
def test_change_reads_the_known_gap(base: Outcome | None, cur: Outcome, want: Change) -> None:
    assert policy.change(base, cur) is want


def test_worst_is_the_last_of_the_worst_verdict() -> None:
    rows = [{"verdict": "DETECTED", "n": 1}, {"verdict": "MISSED", "n": 2},
            {"verdict": "MISSED", "n": 3}, {"verdict": "CLEAN", "n": 4}]
    assert policy.worst(rows)["n"] == 3
    with pytest.raises(ValueError, match="no rows"):
        policy.worst([])


def test_an_unknown_verdict_is_an_error() -> None:
    with pytest.raises(ValueError, match="verdict 'FINE': expected one of DETECTED"):
        policy.row_failed({"verdict": "FINE"})
