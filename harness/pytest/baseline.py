"""``--shadowtest-baseline FILE``: a test passes or fails on regressions against an earlier
run's results, not on its verdicts alone. The classification is ``harness.report.diff``'s
(``against_baseline``, through ``harness.core.policy.change``); this module reads the
baseline file and turns the classification into the test's outcome."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.core.policy import Change
from harness.pytest.session import rows_of
from harness.report.diff import Entry, Key, against_baseline, index
from harness.report.results import read_rows

#: what each classification says on a test's report
WORDS = {
    Change.REGRESSION: "REGRESSION against the baseline",
    Change.SENSOR_DOWN: "sensor down (not in the baseline): a regression cannot be ruled out",
    Change.KNOWN: "same verdict in the baseline: known, not failed",
    Change.IMPROVEMENT: "improved on the baseline",
    Change.OTHER: "changed from the baseline",
    Change.NEW: "not in the baseline",
}


def load_baseline(path: Path) -> dict[Key, Entry]:
    """A baseline results file, indexed; errors say how to fix."""
    if not path.is_file():
        raise FileNotFoundError(
            f"--shadowtest-baseline {path}: no such results file; pass a results.jsonl written "
            "by an earlier run (shadowtest run --results FILE)")
    try:
        return index(read_rows(path))
    except ValueError as exc:
        raise ValueError(f"--shadowtest-baseline {path}: {exc}; pass a results.jsonl written "
                         "by an earlier run (shadowtest run --results FILE)") from exc


def baseline_message(decisions: Sequence[tuple[Mapping[str, Any], str]]) -> tuple[bool, str]:
    """(fails, message) for one test under ``--shadowtest-baseline``: a line per row whose
    classification says something (not ``same``, not a passing ``new``)."""
    lines = []
    fails = False
    for row, kind in decisions:
        change = Change(kind)
        fails = fails or change.fails
        if change in (Change.SAME, Change.NEW):
            continue
        lines.append(f"  {row.get('sensor')!s:<10} {row.get('verdict')!s:<13} "
                     f"{WORDS[change]}")
    return fails, "shadowtest baseline:\n" + "\n".join(lines) if lines else ""


def apply_baseline(report: pytest.TestReport, verdict_failure: bool,
                   baseline: Mapping[Key, Entry]) -> None:
    """Make a test's call report pass or fail on regressions against ``baseline``.

    ``verdict_failure``: the test failed because of its verdicts (``pytest.fail`` from the
    session), not because of an error in the harness, which is never excused."""
    rows = rows_of(report)
    if not rows:
        return
    decisions = against_baseline(rows, baseline)
    for row, kind in decisions:
        report.user_properties.append((f"shadowtest.{row.get('sensor')}.baseline", kind))
    fails, message = baseline_message(decisions)
    if fails and report.passed:
        report.outcome = "failed"
        report.longrepr = message
    elif fails and report.failed and verdict_failure:
        report.longrepr = f"{report.longrepr}\n{message}"
    elif not fails and report.failed and verdict_failure:
        report.outcome = "passed"
        report.longrepr = None
        report.sections.append(("shadowtest baseline", message))
