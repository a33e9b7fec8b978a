"""DetectionStream: subscribe before acting, wake on push/marker/watermark, bounded memory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from harness.core.detection import Detection
from harness.sensors.base import DetectionStream


def _det(pid: int) -> Detection:
    return Detection(sensor="s", rule="r", pid=pid)


def test_stream_subscription_sees_only_what_came_after_it() -> None:
    stream = DetectionStream("s")
    stream.push(_det(1))
    sub = stream.subscribe()
    stream.push(_det(2))
    seen, synced = sub.wait(lambda ds: len(ds) >= 1, None, time.time() + 1)
    assert [d.pid for d in seen] == [2]
    assert synced is False


def test_stream_wait_wakes_on_push_from_another_thread() -> None:
    stream = DetectionStream("s")
    sub = stream.subscribe()
    threading.Timer(0.05, stream.push, args=(_det(7),)).start()
    seen, _ = sub.wait(bool, None, time.time() + 30)
    assert [d.pid for d in seen] == [7]


def test_stream_wait_ends_when_marker_arrives() -> None:
    stream = DetectionStream("s")
    sub = stream.subscribe()
    threading.Timer(0.05, stream.mark, args=("42",)).start()
    seen, synced = sub.wait(lambda ds: False, "42", time.time() + 5)
    assert seen == []
    assert synced is True


def test_stream_wait_ends_when_watermark_passes_until() -> None:
    stream = DetectionStream("s")
    sub = stream.subscribe()
    stream.advance(99.0)
    assert sub.wait(lambda ds: False, None, time.time() + 0.2, until=100.0) == ([], False)
    stream.advance(100.5)
    assert sub.wait(lambda ds: False, None, time.time() + 5, until=100.0) == ([], True)


def test_stream_watermark_never_goes_back() -> None:
    stream = DetectionStream("s")
    stream.advance(10.0)
    stream.advance(5.0)
    assert stream.watermark == 10.0


def test_stream_wait_ends_when_closed() -> None:
    stream = DetectionStream("s")
    sub = stream.subscribe()
    stream.close("sensor exited")
    assert sub.wait(lambda ds: False, "m", time.time() + 5) == ([], False)
    assert stream.closed == "sensor exited"


def test_stream_memory_is_bounded_and_dropped_detections_count_as_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DetectionStream, "MAX_KEPT", 10)
    stream = DetectionStream("s")
    early = stream.subscribe()
    for pid in range(25):
        stream.push(_det(pid))
    late = stream.subscribe()
    stream.push(_det(99))
    assert len(stream.snapshot()) <= 10
    assert early.lost() > 0
    assert late.lost() == 0
    assert [d.pid for d in late.wait(lambda ds: True, None, time.time())[0]] == [99]


def test_subscription_records_when_the_window_opened() -> None:
    before = time.time()
    sub = DetectionStream("s").subscribe()
    assert before <= sub.opened_at <= time.time()


def test_filetail_last_line_is_when_a_line_was_last_read(tmp_path: Path) -> None:
    from harness.sensors.streams import FileTail

    path = tmp_path / "out.jsonl"
    path.write_text('{"old": 1}\n')
    got: list[str] = []
    tail = FileTail(path, got.append, "t")
    try:
        assert (tail.last_line, tail.started_at > 0) == (0.0, True)  # the old line is not read
        written = time.time()
        with path.open("a") as fh:
            fh.write('{"new": 1}\n')
        deadline = time.time() + 5
        while not got:
            assert time.time() < deadline
            time.sleep(0.01)
    finally:
        tail.stop()
    assert got == ['{"new": 1}']
    assert tail.last_line >= written


def test_linereader_last_line_and_end() -> None:
    import subprocess

    from harness.sensors.streams import LineReader

    proc = subprocess.Popen(["echo", "hello"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    got: list[str] = []
    reader = LineReader(proc.stdout, got.append, lambda: None, "r")
    reader.join(5)
    proc.wait()
    proc.stdout.close()
    assert got == ["hello"]
    assert 0 < reader.last_line <= reader.ended_at
