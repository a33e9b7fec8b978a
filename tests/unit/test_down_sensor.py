"""A sensor that is down when a run ends is SENSOR_DOWN at once (issue 16): its token, if
it gave one, cannot arrive, so the run does not wait out its window; and a dead audit
daemon gives no sync token at all (the kernel takes the message either way)."""

from __future__ import annotations

import subprocess
from typing import Any, ClassVar

from harness.builtin import ATOMICS, SCENARIOS
from harness.core.detection import Detection
from harness.core.health import Health
from harness.core.node import NodeFacts
from harness.core.scenario import check_scenario, load_atomics
from harness.engine.execute import execute
from harness.sensors.auditd import AuditdSensor
from harness.sensors.base import DetectionStream, SensorBase
from tests.helpers import FakeTarget, hang_guard

#: the window the run is given; waiting it out would trip the hang guard
WINDOW = 600.0
GUARD_S = 60


class _DiesDuringTheRun(SensorBase):
    """Up when the run starts, down when it ends; it still hands out sync tokens."""

    NAME: ClassVar[str] = "dies"

    def __init__(self) -> None:
        self.stream = DetectionStream("dies")
        self.calls = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def health(self) -> Health:
        self.calls += 1
        return Health(True) if self.calls == 1 else Health(False, "dies: the daemon exited")

    def sync(self) -> str | None:
        return "token-that-never-comes"

    def normalise(self, raw: Any) -> Detection | None:
        return None


class _BlipsAtTheEnd(_DiesDuringTheRun):
    """Down exactly when the run ends, up again at every later reading."""

    def health(self) -> Health:
        self.calls += 1
        return Health(False, "blip: auditctl -s failed") if self.calls == 2 else Health(True)


def test_a_sensor_down_at_the_end_of_the_run_is_judged_without_waiting_the_window() -> None:
    atomics, _ = load_atomics([ATOMICS])
    errors, scenario = check_scenario(SCENARIOS / "persistence" / "etc-write.yaml", atomics)
    assert not errors
    assert scenario is not None
    sensor = _DiesDuringTheRun()
    with hang_guard(GUARD_S, "execute, its sensor down when the run ended"):
        outcome = execute(scenario, "host", FakeTarget(), NodeFacts(node="local", kernel="x"),
                          {"dies": sensor}, window=WINDOW)
    (judgement,) = outcome.judgements
    assert judgement.verdict.name == "SENSOR_DOWN"
    assert "the daemon exited" in judgement.reason


def test_a_row_judged_without_waiting_is_never_healthy() -> None:
    """The reading the (skipped) wait was decided on is the one judged: a sensor that reads
    'up' again later must not turn what was not waited for into MISSED."""
    atomics, _ = load_atomics([ATOMICS])
    _, scenario = check_scenario(SCENARIOS / "persistence" / "etc-write.yaml", atomics)
    assert scenario is not None
    with hang_guard(GUARD_S, "execute, its sensor down when the run ended"):
        outcome = execute(scenario, "host", FakeTarget(), NodeFacts(node="local", kernel="x"),
                          {"blips": _BlipsAtTheEnd()}, window=WINDOW)
    (judgement,) = outcome.judgements
    assert judgement.verdict.name == "SENSOR_DOWN"
    assert "blip" in judgement.reason


def test_a_dead_audit_daemon_gives_no_sync_token() -> None:
    sensor = AuditdSensor(attach=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    sensor._daemon_pid = dead.pid
    assert sensor.sync() is None
