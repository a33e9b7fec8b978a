"""``ReplaySensor`` reads its adapter through declared members only: ``LineFed`` (on_line,
end_of_input), ``Recorded`` (first_seen, last_seen), ``Sensor.loss_silence``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from harness.core.detection import Detection
from harness.sensors import base
from harness.sensors.base import DetectionStream, LineFed, Recorded, SensorBase
from harness.sensors.replay import ReplaySensor


class _Held(SensorBase):
    """Holds every line back until the end of its input; keeps the span of its times."""

    NAME: ClassVar[str] = "held"

    def __init__(self, name: str = "held", path: str | None = None) -> None:
        self.stream = DetectionStream(name)
        self.pending: list[str] = []
        self.first_seen = 0.0
        self.last_seen = 0.0

    def on_line(self, line: str) -> None:
        if line:
            at = float(line)
            self.first_seen = min(self.first_seen or at, at)
            self.last_seen = max(self.last_seen, at)
            self.pending.append(line)

    def end_of_input(self) -> None:
        for line in self.pending:
            self.stream.push(Detection("held", f"r{line}", observed_at=float(line)))
        self.pending.clear()

    def loss_silence(self, since: float, until: float) -> str | None:
        return "held: lost events" if since <= 150.0 <= until else None

    def normalise(self, raw: Any) -> Detection | None:
        return None


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(base.BUILTIN, "held", f"{__name__}:_Held")


def test_line_fed_adapter_is_ended_and_its_span_and_loss_are_read(held: None, tmp_path: Path) -> None:
    recording = tmp_path / "held.log"
    recording.write_text("100.0\n200.0\n")
    replay = ReplaySensor(path=str(recording), format="held")
    assert isinstance(replay.adapter, LineFed)
    assert isinstance(replay.adapter, Recorded)
    replay.start()
    assert [d.rule for d in replay.stream.snapshot()] == ["r100.0", "r200.0"]
    assert replay.silence(110.0, 120.0) is None
    assert replay.silence(140.0, 160.0) == "held: lost events"
    assert "ends 10.0 s before" in (replay.silence(210.0, 220.0) or "")
    assert "starts 10.0 s after" in (replay.silence(80.0, 90.0) or "")


def test_sensors_without_lines_or_span_are_neither() -> None:
    class Polled(SensorBase):
        NAME: ClassVar[str] = "polled"

    assert not isinstance(Polled(), LineFed)
    assert not isinstance(Polled(), Recorded)
    assert Polled().loss_silence(0.0, 1.0) is None
