"""``shadowtest report`` arguments and exit codes (functions __main__ wires in)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.report.cli import add_report_arguments, run_report

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results" / "matrix.jsonl"


def report(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    return run_report(parser.parse_args(list(argv)))


def test_report_prints_grid_writes_html_and_fails_on_missed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    diff = tmp_path / "diff.json"
    diff.write_text('{"kind": "diff", "changed": []}')
    assert report(str(RESULTS), "--html", str(tmp_path / "r.html"), "--diff", str(diff)) == 1
    out = capsys.readouterr().out
    assert "scenario x" in out
    assert "HTML report written to" in out
    assert 'id="view-diff"' in (tmp_path / "r.html").read_text()


def test_report_passes_without_failing_verdicts(tmp_path: Path) -> None:
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(line + "\n" for line in RESULTS.read_text().splitlines()
                             if '"verdict": "DETECTED"' in line))
    assert report(str(clean), "--no-grid") == 0


@pytest.mark.parametrize(("content", "extra"), [
    (None, ()), ('{"kind": "parity"}', ("--no-html",)), ("[1, 2]", ()), ("{not json", ())])
def test_report_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             content: str | None, extra: tuple[str, ...]) -> None:
    parity = tmp_path / "parity.json"
    if content is not None:
        parity.write_text(content)
    html = () if extra else ("--html", str(tmp_path / "r.html"))
    assert report(str(RESULTS), "--parity", str(parity), *html) == 2
    assert "shadowtest: error: --parity" in capsys.readouterr().err


def test_report_missing_results_file(tmp_path: Path) -> None:
    assert report(str(tmp_path / "nope.jsonl")) == 2


def test_report_refuses_a_row_with_an_unknown_verdict(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The policy knows every verdict; a row with another one is not a shadowtest row."""
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"scenario": "s", "context": "host", "kernel": "6.1",
                                "sensor": "x", "verdict": "FINE", "node": "n",
                                "reason": "r"}) + "\n")
    args = argparse.Namespace(results=path, html=None, diff=None, parity=None, grid=False)
    assert run_report(args) == 2
    assert "verdict 'FINE': expected one of DETECTED" in capsys.readouterr().err
