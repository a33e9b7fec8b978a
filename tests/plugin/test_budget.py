"""A NOT_EXECUTED budget (``max_not_executed``, ``allowed_not_executed``): runs that could
not run beyond it fail the session, so coverage that erodes in a user's CI is a failure,
not a row of skips. The not-runnable scenario here requires a kernel no machine has."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import ConfigError
from harness.core.policy import NotExecutedBudget
from harness.engine.config import load_settings
from tests.plugin.test_reports import QUIET, make_catalog

FUTURE = """
id: fake-future
name: fake-future
description: needs a kernel that does not exist yet
technique: T1611
atomic: append-event
contexts: [host]
requires: {kernel: ">=99.0"}
arguments: {out: "OUT"}
expect:
  filefake: {rule: escape}
"""


def _catalog(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, budget: str) -> Path:
    root = make_catalog(pytester, monkeypatch)
    (root / "scenarios" / "privilege-escalation" / "fake-future.yaml").write_text(
        FUTURE.lstrip().replace("OUT", str(root / "events.txt")))
    config = (root / "shadowtest.toml").read_text()
    head, sep, rest = config.partition("[tool.shadowtest]\n")
    (root / "shadowtest.toml").write_text(head + sep + budget + rest)
    return root


def test_without_a_budget_a_not_runnable_run_is_a_skip(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _catalog(pytester, monkeypatch, "")
    result = pytester.runpytest("scenarios", *QUIET)
    result.assert_outcomes(passed=1, failed=1, skipped=1)  # fake-escape-missed fails as ever
    assert "max_not_executed" not in result.stdout.str()


def test_over_the_budget_the_session_fails_naming_the_runs(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _catalog(pytester, monkeypatch, "max_not_executed = 0\n")
    (pytester.path / "scenarios" / "privilege-escalation" / "fake-escape-missed.yaml").unlink()
    result = pytester.runpytest("scenarios", *QUIET)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*FAILED: 1 runs NOT_EXECUTED, more than max_not_executed = 0*",
        "  fake-future?host-local?: not runnable: *99.0*"])  # ? : fnmatch [] is a class


@pytest.mark.parametrize(("budget", "ret"), [
    ("max_not_executed = 1\n", pytest.ExitCode.OK),
    ('allowed_not_executed = ["fake-future"]\n', pytest.ExitCode.OK),
    ('allowed_not_executed = ["fake-*[host]"]\n', pytest.ExitCode.OK),
    ('allowed_not_executed = ["fake-future[namespace]"]\n', pytest.ExitCode.TESTS_FAILED),
    ('allowed_not_executed = ["other"]\nmax_not_executed = 0\n', pytest.ExitCode.TESTS_FAILED),
])
def test_allowed_runs_do_not_count(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                   budget: str, ret: pytest.ExitCode) -> None:
    _catalog(pytester, monkeypatch, budget)
    (pytester.path / "scenarios" / "privilege-escalation" / "fake-escape-missed.yaml").unlink()
    result = pytester.runpytest("scenarios", *QUIET)
    assert result.ret == ret, result.stdout.str()[-2000:]


@pytest.mark.parametrize(("line", "key"), [
    ("max_not_executed = -1", "max_not_executed"),
    ("max_not_executed = true", "max_not_executed"),
    ('max_not_executed = "2"', "max_not_executed"),
    ('allowed_not_executed = "fake-future"', "allowed_not_executed"),
    ('allowed_not_executed = ["fake[host"]', "allowed_not_executed"),
])
def test_a_bad_budget_is_a_configuration_error_at_its_line(tmp_path: Path, line: str,
                                                            key: str) -> None:
    config = tmp_path / "shadowtest.toml"
    config.write_text(f"[tool.shadowtest]\nwindow = '5s'\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path, config)
    assert err.value.key == key
    assert str(err.value).startswith(f"{config}:3: {key}: expected")


def test_budget_counts_runs_not_rows() -> None:
    rows = [{"scenario": "a", "context": "host", "node": "n", "sensor": s,
             "verdict": "NOT_EXECUTED", "reason": "precondition failed: x"}
            for s in ("auditd", "bpftrace")]
    rows += [{"scenario": "b", "context": "host", "node": "n", "sensor": "auditd",
              "verdict": "DETECTED"}]
    budget = NotExecutedBudget(limit=0)
    assert budget.spent(rows) == ["a[host-n]: precondition failed: x"]
    assert budget.exceeded(rows) == ["a[host-n]: precondition failed: x"]
    assert NotExecutedBudget(limit=1).exceeded(rows) == []
    assert NotExecutedBudget().exceeded(rows) == []  # no budget: as before
    assert NotExecutedBudget(0, ("a[host]",)).exceeded(rows) == []
