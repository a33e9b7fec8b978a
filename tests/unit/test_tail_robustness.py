"""Readers that never skip and never die (issue 16): a tail that falls behind across two
rotations reads every rotated file in order; a rotated file it cannot read is counted
lost; a line whose callback raises is counted and the next line read; a reader whose
source fails says why (the sensor's stream closes: SENSOR_DOWN, never MISSED)."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from pathlib import Path

import msgspec
import pytest

from harness.sensors.base import DetectionStream
from harness.sensors.falco import FalcoSensor
from harness.sensors.jsonlines import decode_json
from harness.sensors.streams import FileTail, LineReader
from tests.helpers import until


class _Stalled:
    """An on_line that blocks on its first line until released: a tail that fell behind."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, line: str) -> None:
        if not self.lines:
            self.entered.set()
            assert self.release.wait(10)
        self.lines.append(line)


def _write(path: Path, *lines: str) -> None:
    with path.open("a") as fh:
        fh.write("".join(f"{ln}\n" for ln in lines))


def test_a_tail_behind_two_auditd_style_rotations_reads_every_line_in_order(tmp_path: Path) -> None:
    """The issue's reproduction: A1 A2 | rotate | B1 event B2 | rotate | C1 marker used to
    read A1 A2 C1 marker (the middle file skipped: a MISSED with lost_events 0)."""
    log = tmp_path / "audit.log"
    _write(log, "A1", "A2")
    got = _Stalled()
    tail = FileTail(log, got, "t", from_start=True)
    try:
        assert got.entered.wait(10)
        log.rename(tmp_path / "audit.log.1")  # auditd: num_logs rotation, shifting .N
        _write(log, "B1", "event", "B2")
        time.sleep(0.05)  # distinct modification times
        (tmp_path / "audit.log.1").rename(tmp_path / "audit.log.2")
        log.rename(tmp_path / "audit.log.1")
        _write(log, "C1", "marker")
        got.release.set()
        until(lambda: "marker" in got.lines, "the marker")
    finally:
        tail.stop()
    assert got.lines == ["A1", "A2", "B1", "event", "B2", "C1", "marker"]
    assert tail.caught_up == [str(tmp_path / "audit.log.1")]


def test_a_generation_removed_before_the_tail_read_it_is_counted_lost(tmp_path: Path) -> None:
    """auditd keeps num_logs files: a tail lagging by more of them than that finds one
    generation gone (B here, removed by the third rotation before the tail got to it).
    Its lines cannot be read; they are counted lost, never skipped silently."""
    log = tmp_path / "audit.log"
    _write(log, "A1", "A2")
    got = _Stalled()
    lost: list[int] = []
    tail = FileTail(log, got, "t", from_start=True, on_lost=lost.append)
    try:
        assert got.entered.wait(10)
        for gen in ("B", "C", "D"):  # num_logs = 2: audit.log -> audit.log.1, the old .1 gone
            time.sleep(0.05)  # distinct modification times
            log.rename(tmp_path / "audit.log.1")
            _write(log, f"{gen}1", f"{gen}2")
        got.release.set()
        until(lambda: "D2" in got.lines, "D2")
        until(lambda: bool(lost), "the lost generation counted")
    finally:
        tail.stop()
    assert got.lines == ["A1", "A2", "C1", "C2", "D1", "D2"]  # B was removed unread
    assert lost == [1]
    assert "1 generation(s)" in tail.unreadable[0]


def test_rotations_the_tail_kept_up_with_lose_nothing(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    lost: list[int] = []
    lines: list[str] = []
    tail = FileTail(log, lines.append, "t", from_start=True, on_lost=lost.append)
    try:
        for gen in ("A", "B", "C", "D"):
            _write(log, f"{gen}1")
            until(lambda g=gen: f"{g}1" in lines, f"{gen}1")  # type: ignore[misc]
            log.rename(tmp_path / "audit.log.1")
        _write(log, "E1")
        until(lambda: "E1" in lines, "E1")
        time.sleep(1.2)  # a few idle turns of the loop, each counting generations
    finally:
        tail.stop()
    assert lines == ["A1", "B1", "C1", "D1", "E1"]
    assert lost == []
    assert tail.unreadable == []


def test_a_tail_behind_lumberjack_style_rotations_reads_plain_and_gzipped_files(
        tmp_path: Path) -> None:
    """Tetragon's export (lumberjack): tetragon.log -> tetragon-<time>.log, maybe .gz."""
    log = tmp_path / "tetragon.log"
    _write(log, "A1")
    got = _Stalled()
    tail = FileTail(log, got, "t", from_start=True)
    try:
        assert got.entered.wait(10)
        log.rename(tmp_path / "tetragon-2026-12-07T20-00-00.000.log")
        _write(log, "B1")
        time.sleep(0.05)
        log.rename(tmp_path / "tetragon-2026-12-07T20-00-01.000.log")
        with gzip.open(tmp_path / "tetragon-2026-12-07T20-00-01.000.log.gz", "wt") as gz:
            gz.write("B1\n")  # lumberjack compressed it and removed the plain one
        (tmp_path / "tetragon-2026-12-07T20-00-01.000.log").unlink()
        time.sleep(0.05)
        _write(log, "C1")
        (tmp_path / "tetragon-config.yaml").write_text("not: a log\n")  # not a sibling
        got.release.set()
        until(lambda: "C1" in got.lines, "C1")
    finally:
        tail.stop()
    assert got.lines == ["A1", "B1", "C1"]


def test_a_rotated_file_that_cannot_be_read_is_counted_lost(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    _write(log, "A1")
    got = _Stalled()
    lost: list[int] = []
    tail = FileTail(log, got, "t", from_start=True, on_lost=lost.append)
    try:
        assert got.entered.wait(10)
        log.rename(tmp_path / "app.log.1")
        (tmp_path / "app.log.2.gz").write_bytes(b"\x1f\x8b not really gzip")
        _write(log, "C1")
        got.release.set()
        until(lambda: "C1" in got.lines, "C1")
    finally:
        tail.stop()
    assert got.lines == ["A1", "C1"]
    assert lost == [1]
    assert tail.unreadable
    assert "app.log.2.gz" in tail.unreadable[0]


def test_old_rotated_files_are_not_read_again(tmp_path: Path) -> None:
    (tmp_path / "audit.log.1").write_text("OLD\n")
    old = time.time() - 3600
    os.utime(tmp_path / "audit.log.1", (old, old))
    log = tmp_path / "audit.log"
    _write(log, "A1")
    got: list[str] = []
    tail = FileTail(log, got.append, "t", from_start=True)
    try:
        until(lambda: got == ["A1"], "A1")
        log.rename(tmp_path / "audit.log.2")
        _write(log, "B1")
        until(lambda: "B1" in got, "B1")
    finally:
        tail.stop()
    assert got == ["A1", "B1"]


def test_a_line_whose_callback_raises_is_counted_and_the_next_line_read(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("")
    got: list[str] = []
    bad: list[str] = []

    def on_line(line: str) -> None:
        if line == "boom":
            raise RecursionError("maximum recursion depth exceeded")
        got.append(line)

    tail = FileTail(log, on_line, "t", on_bad_line=bad.append)
    try:
        _write(log, "boom", "next")
        until(lambda: got == ["next"], "the next line")
    finally:
        tail.stop()
    assert bad == ["boom"]
    assert tail.delivery.bad_lines == 1
    assert "RecursionError" in (tail.delivery.last_error or "")


def test_a_reader_whose_source_fails_closes_the_stream_with_the_reason() -> None:
    class Broken:
        def __iter__(self) -> Broken:
            return self

        def __next__(self) -> str:
            raise OSError(5, "Input/output error")

    stream = DetectionStream("s")
    ended = threading.Event()
    reader = LineReader(Broken(), lambda _l: None, ended.set, "r",  # type: ignore[arg-type]
                        on_failure=stream.close)
    assert ended.wait(5)
    reader.join(5)
    assert stream.closed is not None
    assert "r: the reader stopped: OSError" in stream.closed


@pytest.mark.parametrize("depth", [100, 3000, 100_000])
def test_decode_json_turns_deep_nesting_into_a_decode_error(depth: int) -> None:
    line = "[" * depth + "]" * depth
    if depth <= 1000:
        assert decode_json(line) is not None
        return
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        decode_json(line)


def test_a_live_falco_tail_reads_on_after_a_hostile_line(tmp_path: Path) -> None:
    """3,000 levels of nesting used to raise RecursionError in the reader thread: the
    sensor stayed 'healthy' and every later run was MISSED."""
    log = tmp_path / "falco.jsonl"
    log.write_text("")
    sensor = FalcoSensor(path=str(log))
    sensor.start()
    try:
        alert = {"time": "2026-12-07T20:00:00.000000000Z", "rule": "Write below etc",
                 "priority": "Error", "output": "x", "tags": ["T1098"],
                 "output_fields": {"proc.pid": 4242, "proc.name": "sh"}}
        _write(log, '{"a":' * 3000 + "1" + "}" * 3000, json.dumps(alert))
        until(lambda: len(sensor.stream.snapshot()) == 1, "the alert after the hostile line")
        assert sensor.health().up
        assert sensor.stream.malformed == 1
    finally:
        sensor.stop()

