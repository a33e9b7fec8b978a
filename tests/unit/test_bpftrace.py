"""The bpftrace sensor's parsing, over real recorded ``bpftrace -B none -f json`` output.

The sensor is never started: each recorded line is fed to ``on_line`` as its stdout reader
would (newline stripped), then the stream is inspected.
session.jsonl = attach, ready, 2 ptrace-pid1, 3 etc-file-create, 1 container-setns-mnt,
heartbeat, 2 markers, 2 blank lines (bpftrace's exit).
lost.jsonl = a burst of etc-file-create with interleaved ``lost_events`` records.
truncated.jsonl = real lines + a line cut mid-object + bpftrace's RLIMIT_MEMLOCK error line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.core.detection import Detection
from harness.sensors.bpftrace import BpftraceSensor

DATA = Path(__file__).resolve().parent.parent / "data" / "bpftrace"


def _lines(name: str) -> list[str]:
    with (DATA / name).open(encoding="utf-8") as fh:
        return list(fh)


def _feed(lines: list[str]) -> BpftraceSensor:
    sensor = BpftraceSensor(name="bpftrace")
    for line in lines:
        sensor.on_line(line.rstrip("\n"))
    return sensor


def _detections(sensor: BpftraceSensor) -> list[Detection]:
    return sensor.stream._since(0)


def _printf(payload: dict[str, Any]) -> str:
    """One stdout line in bpftrace's -f json printf format (a compact object + "\\n")."""
    return json.dumps({"type": "printf", "data": json.dumps(payload, separators=(",", ":")) + "\n"})


def _marker(token: int, cpu: int) -> str:
    return _printf({"kind": "marker", "token": token, "cpu": cpu})


# ---------------------------------------------------------------- session.jsonl
@pytest.fixture(scope="module")
def session() -> BpftraceSensor:
    return _feed(_lines("session.jsonl"))


def test_on_line_session_yields_every_detection(session: BpftraceSensor) -> None:
    assert [(d.rule, d.technique, d.severity) for d in _detections(session)] == [
        ("ptrace-pid1", ("T1055.008",), "high"),
        ("ptrace-pid1", ("T1055.008",), "high"),
        ("etc-file-create", ("T1098",), "medium"),
        ("etc-file-create", ("T1098",), "medium"),
        ("etc-file-create", ("T1098",), "medium"),
        ("container-setns-mnt", ("T1611",), "high"),
    ]


def test_on_line_session_has_no_lost_or_malformed_lines(session: BpftraceSensor) -> None:
    assert (session.stream.lost, session.stream.malformed) == (0, 0)
    assert session.stream.malformed_samples == []


def test_on_line_ptrace_detection_keeps_process_tree_and_fields(session: BpftraceSensor) -> None:
    d = _detections(session)[0]
    assert (d.sensor, d.pid, d.ppid, d.comm, d.cgroup_id) == ("bpftrace", 6902, 6901, "python3", 1)
    assert d.ancestors == (6900, 6842, 6798, 6797, 2235, 2234)
    assert d.names == ()
    assert d.observed_at == 1795448384098474000 / 1e9
    assert (d.value("request"), d.value("target"), d.value("pidns")) == (16, 1, 4026532180)
    assert d.raw["tid"] == 6902


def test_on_line_etc_file_create_drops_zero_ancestors_and_names_the_path(
    session: BpftraceSensor,
) -> None:
    d = _detections(session)[2]
    assert (d.pid, d.ppid) == (6842, 6798)
    assert d.ancestors == (6797, 2235, 2234, 1)  # recorded [6797,2235,2234,1,0,0]
    assert d.names == ("/etc/shadowtest-bt-test-2ef506c54fe4",)
    assert d.value("path") == "/etc/shadowtest-bt-test-2ef506c54fe4"
    assert d.observed_at == 1795448384110174000 / 1e9


def test_on_line_setns_detection_keeps_rule_fields(session: BpftraceSensor) -> None:
    d = _detections(session)[5]
    assert (d.pid, d.ppid, d.ancestors) == (6905, 6904, (6842, 6798, 6797, 2235, 2234, 1))
    assert (d.value("nstype"), d.value("fd"), d.value("mntns")) == (131072, 4, 4026532177)
    assert d.names == ()


def test_on_line_core_payload_keys_are_not_fields(session: BpftraceSensor) -> None:
    for d in _detections(session):
        assert not {"kind", "rule", "pid", "ancestors", "cgroup", "ts_ns", "wall_ns"} & set(d.fields)


# ---------------------------------------------------------------- lost.jsonl
def test_on_line_lost_counts_every_lost_event() -> None:
    lines = _lines("lost.jsonl")
    recorded = sum(
        json.loads(x)["data"]["events"] for x in lines if '"type": "lost_events"' in x)
    sensor = _feed(lines)
    assert sensor.stream.lost == recorded == 87
    assert (len(_detections(sensor)), sensor.stream.malformed) == (18, 0)


def test_a_scoped_loss_blinds_only_the_runs_of_that_scope() -> None:
    """The compiled sensor attributes a run tree's losses to its loss scope (issue 16:
    loss per run, not per window): a run of another scope, subscribed over the same
    window, has lost nothing; a scope-less loss blinds every run."""
    from harness.nodes.remote.stagerunner import loss_scope

    sensor = _feed([])
    sub = sensor.stream.subscribe()
    loud, quiet = loss_scope("run-loud"), loss_scope("run-quiet")
    sensor.on_line(json.dumps({"type": "lost_events", "data": {"events": 40, "scope": loud}}))
    assert (sub.lost(loud), sub.lost(quiet), sub.lost()) == (40, 0, 0)
    later = sensor.stream.subscribe()  # a later run of the same scope: only what came since
    sensor.on_line(json.dumps({"type": "lost_events", "data": {"events": 2, "scope": loud}}))
    assert (sub.lost(loud), later.lost(loud)) == (42, 2)
    sensor.on_line(json.dumps({"type": "lost_events", "data": {"events": 3}}))
    assert (sub.lost(loud), sub.lost(quiet), sub.lost()) == (45, 3, 3)
    assert sensor.stream.lost == 3
    assert sensor.stream.lost_in(loud) == 42


# ---------------------------------------------------------------- truncated.jsonl
def test_on_line_truncated_and_non_json_lines_are_malformed_not_raised() -> None:
    lines = _lines("truncated.jsonl")
    sensor = _feed(lines)
    assert [d.rule for d in _detections(sensor)] == ["ptrace-pid1", "etc-file-create"]
    assert sensor.stream.malformed == 2
    assert sensor.stream.malformed_samples == [x.rstrip("\n")[:200] for x in lines[6:8]]
    assert sensor.stream.malformed_samples[1].startswith("ERROR: Unknown error -1: couldn't set")


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("not json at all", id="text"),
        pytest.param('{"type": "printf", "data": "{\\"kind\\":\\"detection\\",\\"rule', id="cut"),
        pytest.param('{"type": "printf", "data": "{\\"kind\\":\\"x\\",\\"comm\\":\\"a\\"b\\"}\\n"}',
                     id="unescaped-quote-in-payload"),
        pytest.param('{"type": "printf", "data": "[1, 2]\\n"}', id="payload-not-an-object"),
        pytest.param('{"type": "printf"}', id="printf-without-data"),
        pytest.param('{"type": "lost_events", "data": {}}', id="lost-without-count"),
        pytest.param('{"type": "something_new", "data": 1}', id="unknown-type"),
        pytest.param("[1, 2, 3]", id="not-an-object"),
        pytest.param(_printf({"kind": "detection", "pid": 7}), id="detection-without-rule"),
        pytest.param(_printf({"kind": "detection", "rule": "ptrace-pid1", "technique": "T1055.008",
                              "pid": "x", "ppid": 1, "cgroup": 1, "ts_ns": 1}),
                     id="detection-with-bad-pid"),
    ],
)
def test_on_line_bad_line_is_counted_as_malformed(line: str) -> None:
    sensor = _feed([line])
    assert (sensor.stream.malformed, sensor.stream.malformed_samples) == (1, [line[:200]])
    assert _detections(sensor) == []


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "\t",
        '{"type": "attached_probes", "data": {"probes": 9}}',
        '{"type": "map", "data": {"@": {}}}',
        '{"type": "stats", "data": {}}',
        _printf({"kind": "ready", "version": "1"}),
        _printf({"kind": "heartbeat", "ts_ns": 508165471586}),
    ],
)
def test_on_line_ignores_blank_and_non_detection_lines(line: str) -> None:
    sensor = _feed([line])
    assert (sensor.stream.malformed, sensor.stream.lost, _detections(sensor)) == (0, 0, [])


# ---------------------------------------------------------------- normalise
@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "heartbeat", "ts_ns": 508165471586},
        {"kind": "marker", "token": 256, "cpu": 0},
        {"kind": "ready", "version": "1"},
        {"rule": "ptrace-pid1"},
        [{"kind": "detection"}],
        "detection",
        None,
    ],
)
def test_normalise_returns_none_for_non_detection_payloads(raw: Any) -> None:
    assert BpftraceSensor(name="bpftrace").normalise(raw) is None


def test_normalise_without_wall_clock_shifts_the_monotonic_time() -> None:
    sensor = BpftraceSensor(name="edge-bt", node="kvm-6-1")
    raw = {"kind": "detection", "rule": "ptrace-pid1", "technique": "T1055.008", "pid": 5,
           "ppid": 4, "ancestors": [3, 0], "cgroup": 9, "ts_ns": 2_000_000_000, "wall_ns": 0}
    d = sensor.normalise(raw)
    assert d is not None
    assert (d.sensor, d.node, d.observed_at) == ("edge-bt", "kvm-6-1", 2.0 + sensor._offset)
    assert (d.ancestors, d.severity, d.comm, d.names, d.fields) == ((3,), None, None, (), {})


# ---------------------------------------------------------------- markers
def test_marker_line_format_is_bpftraces() -> None:
    assert _marker(256, 0) + "\n" == _lines("session.jsonl")[9]


def test_on_line_marker_on_every_cpu_marks_the_stream() -> None:
    sensor = BpftraceSensor(name="bpftrace")
    token = 4242
    for cpu in range(sensor._ncpu - 1):
        sensor.on_line(_marker(token, cpu))
    assert str(token) not in sensor.stream._s.markers
    sensor.on_line(_marker(token, sensor._ncpu - 1))
    assert str(token) in sensor.stream._s.markers
    assert sensor.stream.watermark == 0  # a marker is not a time watermark
    assert sensor.stream.malformed == 0


def test_on_line_marker_repeated_on_one_cpu_does_not_mark() -> None:
    sensor = BpftraceSensor(name="bpftrace")
    if sensor._ncpu < 2:
        pytest.skip("one CPU: a single marker line is every CPU")
    for _ in range(sensor._ncpu):
        sensor.on_line(_marker(7, 0))
    assert sensor.stream._s.markers == set()


def test_on_line_markers_of_different_tokens_do_not_mark() -> None:
    sensor = BpftraceSensor(name="bpftrace")
    if sensor._ncpu < 2:
        pytest.skip("one CPU: a single marker line is every CPU")
    sensor.on_line(_marker(99, 0))
    for cpu in range(1, sensor._ncpu):
        sensor.on_line(_marker(100, cpu))
    assert sensor.stream._s.markers == set()


# ---------------------------------------------------------------- cgroup -> container map
class _RemoteShell:
    """A 'remote' node shell that runs the commands here: what a VM's shell would run."""

    remote = True
    node = "fake-remote"

    def run(self, argv: list[str], timeout: float = 60.0) -> Any:
        import subprocess
        import sys

        return subprocess.run([sys.executable if argv[0] == "python3" else argv[0], *argv[1:]],
                              capture_output=True, text=True, timeout=timeout, check=False)


def test_remote_scan_uses_the_node_probe_s_root_and_the_shared_map() -> None:
    """Over the node shell the sensor runs the node probe's cgroup2_root() and
    harness.nodes.cgroups.scan() there: the same answer as on this machine."""
    from harness.nodes.cgroups import node_cgroup2_root
    from harness.nodes.remote.nodeprobe import cgroup2_root
    from harness.sensors.bpftrace import scan_cgroups

    sensor = BpftraceSensor(node="n")
    sensor.use_shell(_RemoteShell())  # type: ignore[arg-type]
    assert sensor._scan() == scan_cgroups()
    assert node_cgroup2_root(_RemoteShell()) == cgroup2_root()


def test_enrich_maps_a_container_cgroup_to_its_id(monkeypatch: pytest.MonkeyPatch) -> None:
    cid = "9b98bb265ea4c149d9a786380dd07716d341c3e925f2616040c6cd9ac8c4b75c"
    sensor = BpftraceSensor(node="n")
    monkeypatch.setattr(sensor, "_scan", lambda: {4242: cid})
    det = Detection(sensor="bpftrace", rule="r", technique=("T1",), node="n", cgroup_id=4242)
    assert sensor._enrich(det).container_id == cid
    other = Detection(sensor="bpftrace", rule="r", technique=("T1",), node="n", cgroup_id=1)
    assert sensor._enrich(other).container_id is None


def test_ready_heartbeat_and_marker_lines_give_the_span_a_recording_shows_alive(
        tmp_path: Path) -> None:
    """What bpftrace printed, detections or not, is a sign of life: a recording replayed by
    rejudge covers a benign run's window from the READY line on (not from its first
    detection, which may come much later)."""
    from harness.sensors.replay import ReplaySensor

    def line(payload: dict[str, Any]) -> str:
        return json.dumps({"type": "printf", "data": json.dumps(payload) + "\n"})

    recording = tmp_path / "bpftrace.jsonl"
    recording.write_text("\n".join([
        json.dumps({"type": "attached_probes", "data": {"probes": 34}}),
        line({"kind": "ready", "version": "2", "ts_ns": 100_000_000_000}),
        line({"kind": "marker", "token": 1, "cpu": 0, "ts_ns": 101_000_000_000}),
        line({"kind": "heartbeat", "ts_ns": 102_000_000_000}),
    ]) + "\n")
    replay = ReplaySensor(name="bpftrace", path=str(recording), format="bpftrace")
    replay.start()
    adapter = replay.adapter
    assert isinstance(adapter, BpftraceSensor)
    offset = adapter.first_seen - 100.0  # the monotonic clock's offset, whatever it is
    assert adapter.last_seen - adapter.first_seen == pytest.approx(2.0)
    assert replay.silence(offset + 100.5, offset + 101.5) is None  # a benign run's window
    assert "ends" in (replay.silence(offset + 150, offset + 151) or "")
    assert "starts" in (replay.silence(offset + 50, offset + 51) or "")
