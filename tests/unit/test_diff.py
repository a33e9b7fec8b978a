"""shadowtest diff: verdict transitions, rule / technique / rule-pack changes, latency, exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.report.diff import (
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_SENSOR_DOWN,
    EXIT_USAGE,
    add_diff_parser,
    against_baseline,
    classify,
    diff,
    index,
    parse_thresholds,
    run_diff,
)


def row(scenario: str, verdict: str, sensor: str = "bpftrace", context: str = "host",
        rule: str | None = None, technique: list[str] | None = None, latency: float | None = None,
        sha: str = "aa", kernel: str = "6.1") -> dict:
    rule = rule if rule is not None else (f"{scenario}-rule" if verdict == "DETECTED" else None)
    return {"scenario": scenario, "context": context, "kernel": kernel, "sensor": sensor,
            "verdict": verdict, "rule": rule, "latency_ms": latency, "reason": "why",
            "detection": {"rule": rule, "technique": technique or ["T1"]} if rule else None,
            "rulepack": {"kind": "file-digest", "name": "sensor.bt", "version": None, "sha256": sha}}


@pytest.mark.parametrize(("base", "cur", "want"), [
    ("DETECTED", "MISSED", "regression"), ("BLOCKED", "MISSED", "regression"),
    ("BLOCKED", "RACED", "regression"), ("CLEAN", "UNEXPECTED", "regression"),
    ("NOT_EXECUTED", "MISSED", "regression"), (None, "MISSED", "regression"),
    ("DETECTED", "SENSOR_DOWN", "sensor_down"), ("CLEAN", "SENSOR_DOWN", "sensor_down"),
    ("MISSED", "DETECTED", "improvement"), ("UNEXPECTED", "CLEAN", "improvement"),
    ("RACED", "BLOCKED", "improvement"), ("DETECTED", "NOT_EXECUTED", "other"),
    ("SENSOR_DOWN", "DETECTED", "other"), ("MISSED", "MISSED", "known"),
    ("SENSOR_DOWN", "SENSOR_DOWN", "known"), ("DETECTED", "DETECTED", "same"), (None, "DETECTED", "new"),
    # RACED fails for enforcement, passes for detection (harness.core.policy)
    (None, "RACED", "regression"), ("DETECTED", "RACED", "regression"),
    ("MISSED", "RACED", "improvement"), ("RACED", "RACED", "known"),
])
def test_classify_transitions(base: str | None, cur: str, want: str) -> None:
    assert classify(base, cur) == want


def test_diff_reports_each_kind_of_change() -> None:
    base = [row("a", "DETECTED", latency=1.0), row("b", "DETECTED", rule="old", technique=["T1"]),
            row("c", "MISSED"), row("d", "DETECTED"), row("gone", "CLEAN"),
            row("e", "DETECTED", latency=1.0)]
    cur = [row("a", "MISSED", sha="bb"), row("b", "DETECTED", rule="new", technique=["T2"], sha="bb"),
           row("c", "MISSED", sha="bb"), row("d", "SENSOR_DOWN", sha="bb"),
           row("fresh", "DETECTED", sha="bb"), row("e", "DETECTED", latency=100.0, sha="bb")]
    out = diff(base, cur)
    assert [(r["scenario"], r["kind"]) for r in out["regressions"]] == [("a", "DETECTED->MISSED")]
    assert [r["scenario"] for r in out["sensor_down"]] == ["d"]
    assert [r["scenario"] for r in out["known_failing"]] == ["c"]
    assert out["rule_changes"] == [{"scenario": "b", "context": "host", "kernel": "6.1",
                                    "sensor": "bpftrace", "baseline": "old", "current": "new"}]
    assert out["technique_changes"][0]["current"] == ["T2"]
    assert [r["scenario"] for r in out["latency_shifts"]] == ["e"]
    assert out["rulepack_changes"][0]["baseline_sha256"] == ["aa"]
    assert out["rulepack_changes"][0]["current_sha256"] == ["bb"]
    assert [r["scenario"] for r in out["only_baseline"]] == ["gone"]
    assert [r["scenario"] for r in out["only_current"]] == ["fresh"]
    assert out["exit_code"] == EXIT_REGRESSION


def test_diff_reads_known_gap() -> None:
    """A key only in CURRENT whose MISSED is a declared known gap (a kernel added to the
    matrix) is new, not a regression; removing the gap makes the same MISSED one."""
    gap = {**row("a", "MISSED", kernel="6.12"), "known_gap": "no rule"}
    out = diff([row("a", "MISSED", kernel="6.1")], [row("a", "MISSED", kernel="6.1"), gap])
    assert (out["regressions"], out["exit_code"]) == ([], EXIT_OK)
    out = diff([{**row("a", "MISSED"), "known_gap": "no rule"}], [row("a", "MISSED")])
    assert [r["kind"] for r in out["regressions"]] == ["MISSED->MISSED"]


def test_diff_worst_verdict_represents_repeated_runs() -> None:
    out = diff([row("a", "DETECTED"), row("a", "DETECTED")], [row("a", "DETECTED"), row("a", "MISSED")])
    assert out["regressions"][0]["current_runs"] == 2


def test_diff_exit_codes() -> None:
    assert diff([row("a", "DETECTED")], [row("a", "DETECTED")])["exit_code"] == EXIT_OK
    assert diff([row("a", "DETECTED")], [row("a", "SENSOR_DOWN")])["exit_code"] == EXIT_SENSOR_DOWN
    assert diff([row("a", "DETECTED")], [row("new", "MISSED")])["exit_code"] == EXIT_REGRESSION


def test_latency_thresholds() -> None:
    both = parse_thresholds(["50%", "10ms"])
    assert not both.exceeded(1.0, 5.0)  # +400 % but only 4 ms
    assert both.exceeded(20.0, 40.0)
    assert not parse_thresholds(["200ms"]).exceeded(100.0, 250.0)
    assert parse_thresholds(["0.1s"]).exceeded(100.0, 250.0)
    with pytest.raises(ValueError, match="expected a percentage like 50%"):
        parse_thresholds(["fast"])


def test_against_baseline_known_failure_is_not_failing() -> None:
    baseline = index([row("a", "MISSED"), row("b", "DETECTED")])
    got = {r["scenario"]: k for r, k in against_baseline(
        [row("a", "MISSED"), row("b", "MISSED"), row("c", "MISSED")], baseline)}
    assert got == {"a": "known", "b": "regression", "c": "regression"}


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_diff_parser(parser.add_subparsers(dest="command"))
    return run_diff(parser.parse_args(["diff", *argv]))


def test_run_diff_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b.jsonl").write_text(json.dumps(row("a", "DETECTED")) + "\n")
    (tmp_path / "c.jsonl").write_text(json.dumps(row("a", "MISSED")) + "\n")
    code = _cli(str(tmp_path / "b.jsonl"), str(tmp_path / "c.jsonl"), "--json", str(tmp_path / "d.json"),
                "--markdown", str(tmp_path / "d.md"), "--latency-threshold", "200ms")
    assert code == EXIT_REGRESSION
    assert "REGRESSION   a[host] kernel 6.1 bpftrace: DETECTED->MISSED" in capsys.readouterr().out
    assert json.loads((tmp_path / "d.json").read_text())["summary"]["regressions"] == 1
    assert "## Regressions (1)" in (tmp_path / "d.md").read_text()
    assert _cli(str(tmp_path / "missing.jsonl"), str(tmp_path / "c.jsonl")) == EXIT_USAGE
