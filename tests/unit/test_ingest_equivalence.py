"""The ingest fast paths decide exactly as the generic path and the pure ``normalise(dict)``.

- ``TetragonSensor.on_line`` reads exec/exit lines through typed Structs and hands every other
  line to ``JsonLinesSensor.on_line`` (decode to a dict, ``on_record``): for every recorded line
  (and edge cases written here) the stream, the lost/malformed counts and the remembered exit
  signals must equal those of the generic path, and each detection must equal
  ``normalise(json.loads(line))`` field by field (``received_at`` and ``raw`` aside).
- ``FalcoSensor``: the same, against ``normalise`` of the decoded line.
- ``make_detection`` builds the same Detection as ``Detection(...)``.
- Falco's ``parse_time`` gives what ``calendar.timegm`` over the regex groups gives, whether
  or not its cached path is taken.
- ``DetectionStream.wait`` returns what ``_since(index)`` holds, while another thread pushes and
  older detections are dropped.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.core.detection import Detection, make_detection
from harness.sensors.base import DetectionStream
from harness.sensors.falco import FalcoSensor
from harness.sensors.falco_alerts import parse_time
from harness.sensors.jsonlines import JsonLinesSensor
from harness.sensors.tetragon import TetragonSensor

DATA = Path(__file__).resolve().parent.parent / "data"
TETRAGON_FILES = sorted((DATA / "tetragon").glob("*.jsonl"))
FALCO_FILES = sorted((DATA / "falco").glob("*.jsonl"))
COMPARED = [f.name for f in dataclasses.fields(Detection) if f.name not in ("received_at", "raw")]

#: lines whose shape the recorded files do not have: several event kinds, nulls, bad types
TETRAGON_EXTRA = [
    '{"process_kprobe": null, "process_tracepoint": {"policy_name": "p"}}',
    '{"process_tracepoint": {"policy_name": "p"}, "process_kprobe": null}',
    '{"process_exit": {"process": {"exec_id": "e1"}, "signal": "SIGKILL"}, '
    '"process_kprobe": {"policy_name": "p"}}',
    '{"process_exit": 5, "process_kprobe": {"policy_name": "p"}}',
    '{"process_exit": null, "process_kprobe": {"policy_name": "p"}}',
    '{"process_exit": {"process": {"exec_id": "e2"}, "signal": "SIGKILL"}, "process_exit": null}',
    '{"process_exit": null, "process_exit": {"process": {"exec_id": "e3"}, "signal": "SIGKILL"}}',
    '{"rate_limit_info": null, "process_exit": {"process": {"exec_id": "e4"}, "signal": "SIGKILL"}}',
    '{"rate_limit_info": 5, "process_kprobe": {"policy_name": "p"}}',
    '{"rate_limit_info": {"number_of_dropped_process_events": 2}, '
    '"process_exit": {"process": {"exec_id": "e5"}, "signal": "SIGKILL"}}',
    '{"process_exit": {"process": {"exec_id": 5}, "signal": "SIGKILL"}}',
    '{"process_exit": {"process": {"exec_id": "e6"}, "signal": 9}}',
    '{"process_exit": {"process": null, "signal": "SIGKILL"}}',
    '{"process_exit": {"process": {"exec_id": ""}, "signal": "SIGKILL"}}',
    '{"process_exit": {"process": {"exec_id": "e7"}, "signal": ""}}',
    '{"process_exit": {"process": {"exec_id": "e8", "pid": "x"}, "signal": "SIGTERM", "x": [1,]}}',
    '{"process_exec": {"process": {"pid": 1}}, "process_lsm": {"policy_name": "lsm"}}',
    '{"process_usdt": {"policy_name": "u", "name": "probe"}}',
    '{"process_kprobe": {"policy_name": "p", "process": {"pid": true}}}',
    '{"process_kprobe": {"policy_name": "p", "process": {"pid": "12", "uid": {"value": 3}}}}',
    '{"process_kprobe": {"policy_name": "p", "tags": [5, null, "T1611"]}}',
    '{"process_kprobe": {"policy_name": "p", "args": [{"string_arg": 5}, 7, {"x": {"path": 1}}]}}',
    '{"process_kprobe": {"policy_name": "p", "process": {"binary": ""}, "parent": {}}}',
    '{"process_kprobe": {"policy_name": "p"}, "node_name": 5}',
    '{"process_kprobe": {"policy_name": "p"}, "cluster_name": null, "time": 7}',
    '{"process_exec": {"x": tru}}',
    '{"process_exec": [1,]}',
    '[1, 2]',
    '"x"',
    " ",
    "",
]
FALCO_EXTRA = [
    '{"rule": "r", "tags": ["T1611", 5, null, "mitre_execution"], '
    '"output_fields": {"proc.apid[2]": "7", "proc.apid[3]": 0, "proc.apid[4]": true}}',
    '{"rule": "r", "tags": [["T1611"]]}',
    '{"rule": "r", "time": "2025-13-03T14:02:11Z"}',
    '{"rule": "r", "time": "2025-02-30T14:02:11.5+01:00"}',
    '{"rule": "r", "time": "2025-11-03 14:02:11,123"}',
    '{"rule": "r", "time": "2025-11-03T14:02:11.1234567891234Z"}',
    '{"rule": "r", "time": "2025-11-03T14:02:11.123456789Z"}',
    '{"rule": "r", "time": "2025-11-03T14:02:11.12345678xZ"}',
    '{"rule": "r", "time": "2025-11-03T14:02:11.123456789z"}',
    '{"rule": "r", "tags": "T1611"}',
    '{"rule": "r", "tags": {}}',
    '{"rule": "Falco internal: syscall event drop", "output_fields": {"n_drops": "-3"}}',
    '{"rule": "Test rule", "source": "internal"}',
    '{"rule": "Test rule", "source": "syscall"}',
    '{"rule": "r", "output_fields": {"container.id": "host", "container.full_id": "", '
    '"container.name": "n"}}',
    '{"rule": "r", "output_fields": {"proc.pid": " 12", "proc.ppid": "-4", '
    '"evt.time": "1603449257618305443"}}',
    '{"rule": "r", "output_fields": {"proc.pid": 1.0, "proc.ppid": false, "proc.apid[1]": 9}}',
    '{"rule": "", "output_fields": {}}',
    '{"rule": 5}',
]


def _lines(path: Path) -> list[str]:
    """As FileTail/LineReader hand them over (UTF-8 with errors replaced, newline stripped)."""
    return path.read_bytes().decode("utf-8", errors="replace").split("\n")[:-1]


def _all_lines(files: list[Path], extra: list[str]) -> list[str]:
    return [line for path in files for line in _lines(path)] + extra


def _same(a: Detection, b: Detection) -> None:
    for name in COMPARED:
        assert getattr(a, name) == getattr(b, name), name
    assert a.fields == b.fields
    assert a.raw == b.raw


def _state(sensor: Any) -> tuple[Any, ...]:
    s = sensor.stream
    return (s.lost, s.malformed, s.malformed_samples, getattr(sensor, "_exits", None))


@pytest.mark.parametrize(("make", "files", "extra"), [
    pytest.param(lambda: TetragonSensor(path="/x/tetragon.log"), TETRAGON_FILES, TETRAGON_EXTRA,
                 id="tetragon"),
    pytest.param(lambda: TetragonSensor(path="/x/tetragon.log", events=["kprobe", "lsm"],
                                        node="configured", techniques={"p": "T1059"}),
                 TETRAGON_FILES, TETRAGON_EXTRA, id="tetragon-options"),
    pytest.param(lambda: FalcoSensor(path="/x/falco.json"), FALCO_FILES, FALCO_EXTRA, id="falco"),
])
def test_on_line_decides_as_the_generic_path_line_by_line(make: Any, files: list[Path],
                                                          extra: list[str]) -> None:
    fast, generic = make(), make()
    for line in _all_lines(files, extra):
        fast.on_line(line)
        JsonLinesSensor.on_line(generic, line)
        got, want = fast.stream._since(0), generic.stream._since(0)
        assert len(got) == len(want), line
        if got:
            _same(got[-1], want[-1])
        assert _state(fast) == _state(generic), line
    assert fast.stream._since(0), "the files hold detections"


@pytest.mark.parametrize(("make", "files", "extra"), [
    pytest.param(lambda: TetragonSensor(path="/x/tetragon.log"), TETRAGON_FILES, TETRAGON_EXTRA,
                 id="tetragon"),
    pytest.param(lambda: FalcoSensor(path="/x/falco.json"), FALCO_FILES, FALCO_EXTRA, id="falco"),
])
def test_on_line_detection_equals_normalise_of_the_decoded_line(make: Any, files: list[Path],
                                                                extra: list[str]) -> None:
    compared = 0
    for line in _all_lines(files, extra):
        sensor = make()
        sensor.on_line(line)
        pushed = sensor.stream._since(0)
        if not pushed:
            continue
        (det,) = pushed
        expected = make().normalise(json.loads(line))
        assert expected is not None
        for name in COMPARED:
            assert getattr(det, name) == getattr(expected, name), (name, line)
        assert det.fields == expected.fields, line
        assert det.received_at > 0
        compared += 1
    assert compared >= 10


def test_make_detection_equals_the_dataclass_constructor() -> None:
    values: dict[str, Any] = {
        "sensor": "s", "rule": "r", "technique": ("T1611",), "severity": "error",
        "action": "KPROBE_ACTION_POST", "node": "n", "container_id": "c" * 64, "cgroup_id": 7,
        "pid": 1, "ppid": 2, "ancestors": (3, 4), "comm": "sh", "names": ("a", "b"),
        "observed_at": 1.5, "received_at": 2.5, "fields": {"k": [1]}, "raw": {"x": 1},
    }
    assert list(values) == [f.name for f in dataclasses.fields(Detection)]
    made = make_detection(*values.values())
    built = Detection(**values)
    assert made == built
    assert hash(made) == hash(built)
    assert repr(made) == repr(built)
    for name, value in values.items():
        assert getattr(made, name) is value
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.pid = 5  # type: ignore[misc]
    assert dataclasses.replace(made, pid=9).pid == 9


def _timegm_reference(text: str) -> float | None:
    """parse_time as it was: calendar.timegm over the regex groups."""
    from harness.sensors.falco_alerts import _TIME

    m = _TIME.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    secs = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute),
                            int(second), 0, 0, 0))
    if sign:
        offset = int(oh) * 3600 + int(om) * 60
        secs += -offset if sign == "+" else offset
    return secs + int(frac[:9].ljust(9, "0")) / 1e9 if frac else float(secs)


@pytest.mark.parametrize("text", [
    "2025-11-03T14:02:11.123456789Z", "2025-11-03T14:02:11.000000001Z",
    "2025-11-03T14:02:11.999999999Z", "2025-11-03T14:02:11Z", "2025-11-03T14:02:11.5Z",
    "2025-11-03T14:02:11.123456789+02:00", "2025-11-03 14:02:11,25", "2025-11-03t14:02:11.1z",
    "2025-11-03T14:02:11.1234567891Z", "2025-11-03T14:02:11.12345678xZ", "2025-02-31T00:00:00Z",
    "2025-11-03T14:02:11.\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669Z",
    "1969-12-31T23:59:59.999999999Z", "garbage", "",
])
def test_parse_time_matches_the_timegm_arithmetic_cached_or_not(text: str) -> None:
    want = _timegm_reference(text)
    assert parse_time(text) == want
    assert parse_time(text) == want  # the second time through the cache


@pytest.mark.parametrize("text", ["2025-13-03T14:02:11Z", "0000-01-01T00:00:00Z"])
def test_parse_time_month_or_year_that_does_not_exist_raises_as_timegm(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - calendar's own message
        _timegm_reference(text)
    with pytest.raises(ValueError):  # noqa: PT011
        parse_time(text)


def test_stream_wait_returns_what_since_holds_while_pushed_and_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DetectionStream, "MAX_KEPT", 50)
    stream = DetectionStream("s")
    for pid in range(10):
        stream.push(Detection(sensor="s", rule="r", pid=pid))
    sub = stream.subscribe()
    checks: list[bool] = []

    def pusher() -> None:
        for pid in range(10, 400):
            stream.push(Detection(sensor="s", rule="r", pid=pid))
            if pid % 7 == 0:
                time.sleep(0)

    def done(seen: list[Detection]) -> bool:
        checks.append(seen == stream._since(sub.index))
        return any(d.pid == 399 for d in seen)

    thread = threading.Thread(target=pusher)
    thread.start()
    seen, _ = sub.wait(done, None, time.time() + 10)
    thread.join()
    assert all(checks)
    assert seen == stream._since(sub.index)
    assert seen[-1].pid == 399
    assert sub.lost() > 0  # older ones were dropped past the subscription
