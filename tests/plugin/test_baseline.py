"""--shadowtest-baseline through pytester: a test passes or fails on regressions only."""

from __future__ import annotations

import json

import pytest

QUIET = ("--shadowtest", "-W", "ignore::pytest.PytestAssertRewriteWarning")
CONFIG = """
[tool.shadowtest]
allowed_nodes = ["local"]
[tool.shadowtest.sensors.bpftrace]
type = "bpftrace"
"""
# Tests that behave as scenario items do: rows in user_properties, pytest.fail on a
# failing verdict (harness/pytest/session.py run_item).
TESTS = """
import pytest

from harness.core.policy import row_failed

def _run(request, scenario, verdict, kernel="6.1", known_gap=None):
    row = {"scenario": scenario, "context": "host", "kernel": kernel, "sensor": "bpftrace",
           "verdict": verdict, "rule": None, "reason": "r", "node": "local", "run_id": "st0",
           "latency_ms": None, "technique": "T1098", "benign": False, "known_gap": known_gap}
    request.node.user_properties.append(("shadowtest_rows", [row]))
    if row_failed(row):
        pytest.fail(f"{scenario}: bpftrace {verdict}", pytrace=False)

def test_known_miss(request):
    _run(request, "known", "MISSED")

def test_regression(request):
    _run(request, "regressed", "MISSED")

def test_enforcement_regression(request):
    _run(request, "raced", "RACED")

def test_still_detected(request):
    _run(request, "fine", "DETECTED")

def test_new_scenario_missed(request):
    _run(request, "brand-new", "MISSED")

def test_new_kernel_with_a_known_gap(request):
    _run(request, "known", "MISSED", kernel="6.12", known_gap="no rule")

def test_sensor_went_down(request):
    _run(request, "down", "SENSOR_DOWN")

def test_harness_error_is_never_excused(request):
    request.node.user_properties.append(("shadowtest_rows", [{"scenario": "known",
        "context": "host", "kernel": "6.1", "sensor": "bpftrace", "verdict": "MISSED",
        "node": "local", "run_id": "st1", "latency_ms": None, "reason": "r"}]))
    raise RuntimeError("harness bug")
"""


def _baseline(pytester: pytest.Pytester) -> None:
    rows = [("known", "MISSED"), ("regressed", "DETECTED"), ("raced", "BLOCKED"),
            ("fine", "DETECTED"), ("down", "DETECTED")]
    pytester.path.joinpath("baseline.jsonl").write_text("".join(
        json.dumps({"scenario": s, "context": "host", "kernel": "6.1", "sensor": "bpftrace",
                    "verdict": v}) + "\n" for s, v in rows))


def test_baseline_fails_only_regressions(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", shadowtest=CONFIG)
    _baseline(pytester)
    pytester.makepyfile(test_runs=TESTS)
    result = pytester.runpytest("--shadowtest-baseline", "baseline.jsonl", "-rA", *QUIET)
    result.assert_outcomes(passed=3, failed=5)
    outcomes = {r.nodeid.split("::")[-1]: r.outcome
                for r in result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
                if r.when == "call"}
    assert outcomes == {
        "test_known_miss": "passed", "test_still_detected": "passed",
        "test_new_kernel_with_a_known_gap": "passed",
        "test_regression": "failed", "test_enforcement_regression": "failed",
        "test_new_scenario_missed": "failed", "test_sensor_went_down": "failed",
        "test_harness_error_is_never_excused": "failed",
    }
    result.stdout.fnmatch_lines(["*bpftrace*MISSED*REGRESSION against the baseline*",
                                 "*bpftrace*RACED*REGRESSION against the baseline*"])


def test_baseline_missing_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", shadowtest=CONFIG)
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("--shadowtest-baseline", "nope.jsonl", *QUIET)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shadowtest-baseline nope.jsonl: no such results file*"])


def test_without_baseline_verdicts_fail_as_usual(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", shadowtest=CONFIG)
    pytester.makepyfile(test_runs=TESTS)
    pytester.runpytest(*QUIET).assert_outcomes(passed=2, failed=6)  # RACED fails too
