"""A sensor that fails to start stays in the set: every row it would judge is SENSOR_DOWN
with the reason it did not start (never MISSED, never dropped), while the other sensors
judge on (README "Errors before the first attack")."""

from __future__ import annotations

import json

import pytest

from harness.sensors import base
from tests.plugin.test_reports import QUIET, make_catalog

NO_START = '''
from harness.core.errors import SensorError
from fakesensor import FileSensor


class NoStartSensor(FileSensor):
    """A sensor whose start fails and whose health() knows nothing of that (it answers
    "up", as a third-party sensor's may); it cannot be synced."""

    NAME = "nostart"

    def start(self):
        raise SensorError("nostart: cannot reach its backend: boom")

    def sync(self):
        return None
'''


def test_a_sensor_that_fails_to_start_is_sensor_down_in_every_row(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_catalog(pytester, monkeypatch)
    pytester.makepyfile(nostartsensor=NO_START)
    monkeypatch.setitem(base.BUILTIN, "nostart", "nostartsensor:NoStartSensor")
    config = (root / "shadowtest.toml").read_text()
    events = config.split('path = "', 1)[1].split('"', 1)[0]
    (root / "shadowtest.toml").write_text(
        config.rstrip() + f'\n[tool.shadowtest.sensors.nostart]\ntype = "nostart"\npath = "{events}"\n')
    result = pytester.runpytest("scenarios", "--shadowtest-results=r.jsonl", *QUIET)
    rows = [json.loads(line) for line in (root / "r.jsonl").read_text().splitlines()]
    assert sorted((r["scenario"], r["sensor"], r["verdict"]) for r in rows) == [
        ("fake-escape", "filefake", "DETECTED"),
        ("fake-escape", "nostart", "SENSOR_DOWN"),
        ("fake-escape-missed", "filefake", "MISSED"),
        ("fake-escape-missed", "nostart", "SENSOR_DOWN"),
    ], result.stdout.str()
    assert all(r["reason"] == "nostart did not start on node local: SensorError: nostart: cannot "
               "reach its backend: boom" for r in rows if r["sensor"] == "nostart"), rows
    result.assert_outcomes(failed=2)
