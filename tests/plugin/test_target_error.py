"""A target that fails to open a run gives a row per sensor with the reason (reports see
it) and fails the test; the session goes on with the next scenario."""

from __future__ import annotations

import json

import pytest

from harness.targets import base as targets_base
from tests.plugin.test_reports import QUIET, make_catalog

BROKEN_TARGET = '''
from harness.core.errors import TargetError
from harness.targets.local import LocalTarget


class BrokenTarget(LocalTarget):
    """The local node, whose stage runner never starts."""

    NAME = "broken"

    def open(self, context, run_id):
        raise TargetError(f"{self.node}: the stage runner did not start for run {run_id}: boom")
'''


def test_target_error_gives_a_row_per_sensor_and_fails(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_catalog(pytester, monkeypatch)
    pytester.makepyfile(brokentarget=BROKEN_TARGET)
    monkeypatch.setitem(targets_base.BUILTIN, "broken", "brokentarget:BrokenTarget")
    config = (root / "shadowtest.toml").read_text().replace('url = "local://"', 'url = "broken://"')
    (root / "shadowtest.toml").write_text(config)
    result = pytester.runpytest("scenarios", "--shadowtest-results=r.jsonl", *QUIET)
    result.assert_outcomes(failed=2)  # both scenarios ran into it; the session went on
    result.stdout.fnmatch_lines(["*target error: local: the stage runner did not start*boom*"])
    rows = [json.loads(line) for line in (root / "r.jsonl").read_text().splitlines()]
    assert sorted((r["scenario"], r["sensor"], r["verdict"]) for r in rows) == [
        ("fake-escape", "filefake", "NOT_EXECUTED"),
        ("fake-escape-missed", "filefake", "NOT_EXECUTED"),
    ]
    assert all(r["reason"].startswith("target error on local: local: the stage runner did not")
               for r in rows)
