"""Buffers sized from the measured rate (issue 16): the audit log's rotation and the
compiled sensor's ring buffer come from the peak rate the last session measured on the
node (harness/sensors/rates.py); unmeasured, the old defaults."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.sensors import auditd
from harness.sensors.auditd import AuditdSensor, log_mb_for, render_conf
from harness.sensors.rates import PeakRate, load_rate, size_for
from harness.sensors.streams import FileTail


def test_peak_rate_takes_the_highest_interval_of_at_least_the_minimum() -> None:
    meter = PeakRate(min_interval=0.5)
    assert meter.due(10.0)
    meter.observe(10.0, 0)
    assert not meter.due(10.1)
    meter.observe(10.1, 10_000)  # too short an interval: not a rate yet
    assert meter.peak is None
    assert meter.due(10.5)
    meter.observe(10.5, 1000)
    meter.observe(11.5, 4000)
    meter.observe(12.5, 4500)
    assert meter.peak == pytest.approx(3000.0)


@pytest.mark.parametrize(("rate", "mb"), [(None, 16), (0.0, 16), (1_000_000.0, 16),
                                          (2_000_000.0, 32), (5e6, 64), (1e9, 64)])
def test_the_audit_log_rotates_at_ten_seconds_of_the_measured_peak(rate: float | None,
                                                                   mb: int) -> None:
    assert log_mb_for(rate) == mb
    assert size_for(rate, 1, 10.0, 16, 64) == mb


def test_the_audit_logs_take_at_most_half_the_free_space() -> None:
    gib = 1 << 30
    assert log_mb_for(1e9, free_bytes=8 * gib) == 64  # 4 x 64 MiB: far below half
    assert log_mb_for(1e9, free_bytes=300 << 20) == 32  # 4 x 32 MiB = 128 <= 150
    assert log_mb_for(1e9, free_bytes=10 << 20) == 16  # never below the old default


def test_render_conf_sizes_the_rotation_and_keeps_the_rest(tmp_path: Path) -> None:
    default = render_conf(tmp_path / "audit.log").splitlines()
    sized = render_conf(tmp_path / "audit.log", 64).splitlines()
    assert f"log_file = {tmp_path / 'audit.log'}" in sized
    assert "max_log_file = 64" in sized
    assert "max_log_file = 16" in default
    assert "num_logs = 4" in sized
    assert len(sized) == len(default)
    assert [ln for ln in sized if not ln.startswith("max_log_file ")] == [
        ln for ln in default if not ln.startswith("max_log_file ")]


def test_a_tail_measures_the_rate_it_reads_and_the_sensor_keeps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "audit.log"
    log.write_text("")
    lines: list[str] = []
    tail = FileTail(log, lines.append, "t")
    sensor = AuditdSensor(log=str(log))
    sensor._tail = tail
    monkeypatch.setattr(auditd, "RATES", tmp_path / "rates")
    try:
        for _ in range(8):
            with log.open("a") as fh:
                fh.write("x" * 999 + "\n")
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while len(lines) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tail.written == 8000
    finally:
        sensor.stop()  # stops the tail and keeps what it measured
    assert tail.rate.peak is not None
    assert 2000 < tail.rate.peak < 10_000  # ~5 kB/s written
    assert load_rate(tmp_path / "rates" / "rate-local.json") == pytest.approx(tail.rate.peak,
                                                                            abs=0.1)
