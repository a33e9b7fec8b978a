"""The Tetragon sensor's contract: export lines (``GetEventsResponse`` JSON) to Detections.

export.jsonl = REAL Tetragon export lines (unedited): exec, exit, 6 ``harness-observe``
tracepoints (ptrace, openat, setns, unshare, mount, openat), 1 ``harness-enforce-canary``
tracepoint with KPROBE_ACTION_SIGKILL and the exit of that process by SIGKILL.
edge.jsonl = written from the documented schema (api/v1/tetragon, SENSORS.md 3), one case
a line: 1 kprobe with a full pod (``containerd://`` id) and ``mitre.T1611`` tag;
2 kprobe KPROBE_ACTION_SIGKILL of a host process (no pod, null parent); 3 its exit by
SIGKILL; 4 tracepoint with a null container, null tags/args; 5 tracepoint with the 15-char
``docker`` id only; 6 LSM hook without tags; 7 uprobe with a non-ATT&CK tag; 8 kprobe
without policy_name; 9 exec; 10 unknown kind ``process_foo``; 11 ``process_throttle``;
12-13 ``rate_limit_info`` (42 as a number, "7" as protojson's string); 14 kprobe without
node_name/time; 15 a line cut mid-object; 16 invalid UTF-8 bytes where JSON structure is
expected; 17 line 1 with invalid UTF-8 bytes inside a file name.

Lines are decoded as the transports decode them (UTF-8, errors replaced) and fed to
``on_line``; the rotation and 10 MB tests run the real FileTail on tmp files.
"""

from __future__ import annotations

import calendar
import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.core.correlate import correlate
from harness.core.detection import Detection
from harness.core.errors import ConfigError
from harness.core.run import Run
from harness.sensors import tetragon, tetragon_tree
from harness.sensors.tetragon import TetragonSensor, parse_rfc3339

DATA = Path(__file__).resolve().parent.parent / "data" / "tetragon"
CID = "50231b1d286349530411bbd7a95993daa6c8a642fe6c5bc05052b71f51665ad5"
TECHNIQUES = {"exec-from-tmp": "T1059", "bash-readline:readline": "T1059.004",
              "bash-readline": "T1204", "namespace-changes:sys_enter_unshare": "T1611"}


def _lines(name: str) -> list[str]:
    """The file's lines as FileTail/LineReader hand them over (UTF-8, errors replaced)."""
    data = (DATA / name).read_bytes().decode("utf-8", errors="replace")
    return data.split("\n")[:-1]


def _feed(lines: list[str], **kw: Any) -> TetragonSensor:
    sensor = TetragonSensor(name="tetragon", path="/nonexistent/tetragon.log", **kw)
    for line in lines:
        sensor.on_line(line)
    return sensor


def _detections(sensor: TetragonSensor) -> list[Detection]:
    return sensor.stream._since(0)


def _run(**kw: Any) -> Run:
    values: dict[str, Any] = {
        "run_id": "st000000000000", "scenario": "s", "context": "namespace", "node": "n",
        "started_at": 0, "ended_at": 1, "executed": True, "container_id": CID,
    }
    values.update(kw)
    return Run(**values)


def _epoch(stamp: str, nanos: int) -> float:
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + nanos / 1e9


@pytest.fixture(scope="module")
def export() -> TetragonSensor:
    return _feed(_lines("export.jsonl"))


@pytest.fixture(scope="module")
def edge() -> TetragonSensor:
    return _feed(_lines("edge.jsonl"), techniques=TECHNIQUES, node="configured-node")


def _edge(edge: TetragonSensor, rule: str, index: int = 0) -> Detection:
    return [d for d in _detections(edge) if d.rule == rule][index]


# ---------------------------------------------------------------- real export lines
def test_on_line_export_yields_every_policy_event_in_order(export: TetragonSensor) -> None:
    assert [(d.rule, d.fields["function_name"], d.action) for d in _detections(export)] == [
        ("harness-observe", "sys_enter_ptrace", "KPROBE_ACTION_POST"),
        ("harness-observe", "sys_enter_openat", "KPROBE_ACTION_POST"),
        ("harness-observe", "sys_enter_setns", "KPROBE_ACTION_POST"),
        ("harness-observe", "sys_enter_unshare", "KPROBE_ACTION_POST"),
        ("harness-observe", "sys_enter_mount", "KPROBE_ACTION_POST"),
        ("harness-observe", "sys_enter_openat", "KPROBE_ACTION_POST"),
        ("harness-enforce-canary", "sys_enter_openat", "KPROBE_ACTION_SIGKILL"),
    ]


def test_on_line_export_has_no_lost_or_malformed_lines(export: TetragonSensor) -> None:
    assert (export.stream.lost, export.stream.malformed) == (0, 0)


def test_normalise_export_tracepoint_maps_every_field(export: TetragonSensor) -> None:
    d = _detections(export)[0]
    assert (d.sensor, d.rule, d.technique, d.severity, d.action, d.node) == (
        "tetragon", "harness-observe", (), None, "KPROBE_ACTION_POST", "vm")
    assert (d.container_id, d.cgroup_id, d.pid, d.ppid, d.ancestors, d.comm) == (
        None, None, 31971, 31929, (), "python3")
    assert d.names == ("python3",
                       "$PEERS/tetragon-trigger.py $PEERS_OUT/tetragon.json $PEERS_OUT/samples-tp.jsonl")
    assert d.observed_at == _epoch("2026-11-23T02:01:35", 738796110)
    assert d.received_at > 0
    assert d.fields["function_name"] == "sys_enter_ptrace"
    assert d.fields["subsys"] == "syscalls"
    assert d.fields["policy_name"] == "harness-observe"
    assert d.fields["return_action"] is None
    assert d.fields["message"] == "ptrace attach/seize"
    assert d.fields["tags"] == ["harness", "ptrace"]
    assert d.fields["pod"] == {"name": None, "namespace": None}
    assert d.fields["args"] == [{"long_arg": "16"}, {"long_arg": "1"}]
    assert d.fields["exec_id"] == "dm06NTUxNTMyNTY2Mzc5OTozMTk3MQ=="
    assert d.value("pod.name") is None
    assert json.loads(d.raw)["node_name"] == "vm"  # raw is the line as the product wrote it


def test_normalise_export_string_args_name_the_opened_file(export: TetragonSensor) -> None:
    opened = [d for d in _detections(export) if d.fields["function_name"] == "sys_enter_openat"]
    assert [d.names[-1] for d in opened] == [
        "/etc/harness-test-write", "/etc/harness-canary", "/etc/harness-canary"]


def test_normalise_export_exec_and_exit_are_not_detections() -> None:
    raws = [json.loads(line) for line in _lines("export.jsonl")]
    sensor = TetragonSensor(path="/nonexistent/tetragon.log")
    assert [sensor.normalise(r) is not None for r in raws] == [
        False, False, True, True, True, True, True, True, True, False]


def test_exit_signal_export_keeps_the_enforced_kill(export: TetragonSensor) -> None:
    enforced = _detections(export)[-1]
    assert enforced.action == "KPROBE_ACTION_SIGKILL"
    assert export.exit_signal(enforced.fields["exec_id"]) == "SIGKILL"


def test_exit_signal_export_exit_without_signal_and_unknown_exec_are_none(
        export: TetragonSensor) -> None:
    assert export.exit_signal("dm06NTQ3Nzk3NDc0ODA0OTozMTEwMQ==") is None  # cat exited normally
    assert export.exit_signal("bm90LXNlZW4=") is None


def test_normalise_is_pure(export: TetragonSensor) -> None:
    raw = json.loads(_lines("export.jsonl")[-2])
    before = json.dumps(raw, sort_keys=True)
    sensor = TetragonSensor(path="/nonexistent/tetragon.log")
    first, second = sensor.normalise(raw), sensor.normalise(raw)
    assert first is not None
    assert second is not None
    # received_at is when the harness read the line: the only input besides the record
    assert replace(first, received_at=0.0) == replace(second, received_at=0.0)
    assert first.fields == second.fields
    assert json.dumps(raw, sort_keys=True) == before
    assert (sensor.stream.lost, sensor.stream.malformed, sensor.exit_signal("x")) == (0, 0, None)
    assert sensor.stream._since(0) == []


# ---------------------------------------------------------------- edge.jsonl
def test_on_line_edge_counts_detections_lost_and_malformed(edge: TetragonSensor) -> None:
    assert [d.rule for d in _detections(edge)] == [
        "cgroup-release-agent", "block-ptrace-attach", "namespace-changes", "namespace-changes",
        "exec-from-tmp", "bash-readline", "mounts", "cgroup-release-agent"]
    assert edge.stream.lost == 42 + 7
    assert edge.stream.malformed == 2
    assert edge.stream.malformed_samples[0].startswith('{"process_kprobe":{"process":')
    assert edge.stream.malformed_samples[1].startswith('{"process_kprobe":\ufffd\ufffd')


def test_normalise_edge_full_pod_strips_the_runtime_prefix(edge: TetragonSensor) -> None:
    d = _edge(edge, "cgroup-release-agent")
    assert d.container_id == CID
    assert (d.pid, d.ppid, d.ancestors, d.comm, d.node) == (41001, 41000, (40990, 1), "sh", "node-a")
    assert d.names == ("/bin/sh", "-c echo /tmp/x > /sys/fs/cgroup/release_agent",
                       "/sys/fs/cgroup/release_agent", "st-st00000000ab12-escape")
    assert d.fields["pod"] == {"name": "st-st00000000ab12-escape", "namespace": "shadowtest"}
    assert d.fields["ns_pid"] == 7
    assert d.fields["function_name"] == "security_file_permission"
    assert d.fields["return"] == {"int_arg": 0}
    assert d.fields["message"] == "release_agent written"
    assert d.observed_at == _epoch("2026-11-23T02:05:00", 123456789)


def test_normalise_edge_technique_from_mitre_tag(edge: TetragonSensor) -> None:
    d = _edge(edge, "cgroup-release-agent")
    assert d.technique == ("T1611",)
    assert d.fields["tags"] == ["observability.privilege_escalation", "mitre.T1611"]


def test_normalise_edge_sigkill_action_and_exit_signal_kept(edge: TetragonSensor) -> None:
    d = _edge(edge, "block-ptrace-attach")
    assert (d.action, d.fields["return_action"]) == ("KPROBE_ACTION_SIGKILL", "KPROBE_ACTION_POST")
    assert d.technique == ("T1055.008",)
    assert edge.exit_signal(d.fields["exec_id"]) == "SIGKILL"


def test_normalise_edge_host_process_without_pod_or_parent(edge: TetragonSensor) -> None:
    """No ``parent`` object, but its ``parent_exec_id`` is the exec id of line 1's parent
    (pid 41000), read before: the process tree still gives that pid."""
    d = _edge(edge, "block-ptrace-attach")
    assert (d.container_id, d.ppid, d.ancestors) == (None, None, (41000,))
    assert d.fields["pod"] == {"name": None, "namespace": None}
    assert d.names == ("/usr/bin/python3", "/tmp/st-st00000000ab12/ptrace.py 1")
    assert d.observed_at == _epoch("2026-11-23T02:05:01", 500000000)


def test_normalise_edge_null_container_tags_and_args(edge: TetragonSensor) -> None:
    d = _edge(edge, "namespace-changes", 0)
    assert d.container_id is None
    assert d.fields["pod"] == {"name": "st-pod-nocontainer", "namespace": "shadowtest"}
    assert (d.fields["tags"], d.fields["args"]) == ([], [])
    assert d.technique == ("T1611",)  # from the map: namespace-changes:sys_enter_unshare


def test_normalise_edge_docker_short_id_only(edge: TetragonSensor) -> None:
    d = _edge(edge, "namespace-changes", 1)
    assert d.container_id == CID[:15]
    assert d.technique == ()  # the map names only the unshare hook of this policy
    assert d.observed_at == _epoch("2026-11-23T02:05:03", 1000)


def test_normalise_edge_lsm_technique_from_policy_map(edge: TetragonSensor) -> None:
    d = _edge(edge, "exec-from-tmp")
    assert d.technique == ("T1059",)
    assert d.fields["function_name"] == "bprm_check_security"
    assert "/tmp/st-st00000000ab12/payload" in d.names  # linux_binprm_arg path
    assert d.observed_at == _epoch("2026-11-23T00:05:04", 250000000)  # +02:00


def test_normalise_edge_uprobe_policy_function_key_beats_policy_key(edge: TetragonSensor) -> None:
    d = _edge(edge, "bash-readline")
    assert d.technique == ("T1059.004",)
    assert (d.fields["function_name"], d.fields["path"], d.action) == ("readline", "/bin/bash", None)


def test_normalise_edge_missing_node_and_time_fall_back(edge: TetragonSensor) -> None:
    d = _edge(edge, "mounts")
    assert (d.node, d.observed_at) == ("configured-node", 0.0)
    assert d.names[-2:] == ("none", "/mnt")  # string_arg, path_arg


def test_normalise_edge_invalid_utf8_in_a_file_name_keeps_the_detection(edge: TetragonSensor) -> None:
    d = _edge(edge, "cgroup-release-agent", 1)
    assert "/tmp/ev\ufffdil" in d.names
    assert d.container_id == CID


def test_on_line_edge_lines_kept_as_surrogate_escapes_read_like_replaced_ones() -> None:
    """A reader that keeps invalid bytes as lone surrogates (errors="surrogateescape") gives
    the same detections as one that replaces them (msgspec refuses lone surrogates)."""
    raw = (DATA / "edge.jsonl").read_bytes().decode("utf-8", errors="surrogateescape")
    escaped = _feed(raw.split("\n")[:-1], techniques=TECHNIQUES)
    replaced = _feed(_lines("edge.jsonl"), techniques=TECHNIQUES)
    assert [(d.rule, d.names) for d in _detections(escaped)] == [
        (d.rule, d.names) for d in _detections(replaced)]
    assert (escaped.stream.malformed, escaped.stream.lost) == (
        replaced.stream.malformed, replaced.stream.lost)


@pytest.mark.parametrize(("index", "kind"), [
    (7, "kprobe without policy_name"), (8, "process_exec"), (9, "process_foo"),
    (10, "process_throttle"), (11, "rate_limit_info"), (12, "rate_limit_info (string)"),
    (2, "process_exit"),
])
def test_normalise_edge_non_detections_are_none(index: int, kind: str) -> None:
    raw = json.loads(_lines("edge.jsonl")[index])
    assert TetragonSensor(path="/nonexistent/tetragon.log").normalise(raw) is None, kind


def test_normalise_tags_win_over_the_technique_map() -> None:
    raw = json.loads(_lines("edge.jsonl")[0])
    sensor = TetragonSensor(path="/x/tetragon.log", techniques={"cgroup-release-agent": "T1068"})
    det = sensor.normalise(raw)
    assert det is not None
    assert det.technique == ("T1611",)


@pytest.mark.parametrize(("tags", "technique"), [
    (["T1611"], ("T1611",)),
    (["mitre.T1055.008"], ("T1055.008",)),
    (["attack:t1611", "mitre.T1611"], ("T1611",)),
    (["mitre_T1611", "T1055"], ("T1611", "T1055")),
    (["observability.process", "T16111", "xT1611", "T1611.1"], ()),
    ([], ()),
])
def test_normalise_technique_from_tags(tags: list[str], technique: tuple[str, ...]) -> None:
    raw = json.loads(_lines("edge.jsonl")[0])
    raw["process_kprobe"]["tags"] = tags
    det = TetragonSensor(path="/x/tetragon.log").normalise(raw)
    assert det is not None
    assert det.technique == technique


@pytest.mark.parametrize("prefix", ["containerd://", "docker://", "cri-o://", ""])
def test_normalise_container_runtime_prefixes_are_stripped(prefix: str) -> None:
    raw = json.loads(_lines("edge.jsonl")[0])
    raw["process_kprobe"]["process"]["pod"]["container"]["id"] = prefix + CID
    det = TetragonSensor(path="/x/tetragon.log").normalise(raw)
    assert det is not None
    assert det.container_id == CID


# ---------------------------------------------------------------- options
def test_events_option_narrows_the_detection_kinds() -> None:
    sensor = _feed(_lines("edge.jsonl"), events=["KPROBE", "process_lsm"])
    assert [d.rule for d in _detections(sensor)] == [
        "cgroup-release-agent", "block-ptrace-attach", "exec-from-tmp", "mounts",
        "cgroup-release-agent"]
    assert (sensor.stream.lost, sensor.exit_signal("a2lsbGVk")) == (49, "SIGKILL")


@pytest.mark.parametrize("events", [["process_exec"], ["process_foo"], ["rate_limit_info"]])
def test_events_option_rejects_non_hook_kinds(events: list[str]) -> None:
    with pytest.raises(ConfigError, match="not a policy-hook event"):
        TetragonSensor(path="/x/tetragon.log", events=events)


@pytest.mark.parametrize("value", ["t1611", "1611", "T1611.1", "Escape to Host"])
def test_techniques_option_rejects_non_attack_ids(value: str) -> None:
    with pytest.raises(ConfigError, match="ATT&CK ids"):
        TetragonSensor(path="/x/tetragon.log", techniques={"p": value})


def test_constructor_needs_exactly_one_transport() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        TetragonSensor()


# ---------------------------------------------------------------- health records
def test_on_line_rate_limit_info_counts_lost_events() -> None:
    sensor = _feed([
        '{"rate_limit_info":{"number_of_dropped_process_events":3},"node_name":"n","time":"2026-11-23T00:00:00Z"}',
        '{"rate_limit_info":{"number_of_dropped_process_events":"18446744073709551615"}}',
        '{"rate_limit_info":{"number_of_dropped_process_events":"lots"}}',
        '{"rate_limit_info":{}}',
    ])
    assert sensor.stream.lost == 3 + 18446744073709551615 + 1 + 1
    assert sensor.stream.malformed == 0


def test_exit_signal_is_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tetragon_tree, "MAX_EXITS", 3)
    lines = [json.dumps({"process_exit": {"process": {"exec_id": f"e{i}", "pid": i}, "signal": "SIGKILL"}})
             for i in range(5)]
    sensor = _feed(lines)
    assert [sensor.exit_signal(f"e{i}") for i in range(5)] == [None, None, "SIGKILL", "SIGKILL", "SIGKILL"]


def test_exit_signal_of_a_repeated_exec_id_is_the_latest() -> None:
    sensor = _feed([json.dumps({"process_exit": {"process": {"exec_id": "e"}, "signal": s}})
                    for s in ("SIGTERM", "SIGKILL")])
    assert sensor.exit_signal("e") == "SIGKILL"


# ---------------------------------------------------------------- never raises
@pytest.mark.parametrize("line", [
    '{"process_kprobe": "not an object", "policy_name": "p"}',
    '{"process_kprobe": {"policy_name": 5}}',
    '{"process_kprobe": {"policy_name": "p", "process": {"pid": "abc"}}}',
    '{"process_kprobe": {"policy_name": "p", "process": {"pod": []}}}',
    '{"process_kprobe": {"policy_name": "p", "tags": "T1611"}}',
    '{"process_kprobe": {"policy_name": "p", "ancestors": [{"pid": true}]}}',
    '{"process_tracepoint": {"policy_name": "p", "process": "x"}}',
    '{"process_exit": {"process": [], "signal": "SIGKILL"}}',
    '[{"process_kprobe": {}}]',
    '"process_kprobe"',
    "null",
    '{"process_kprobe": {"policy_name": "p"',
    "\ufffd\ufffd",
])
def test_on_line_bad_line_is_counted_as_malformed_not_raised(line: str) -> None:
    sensor = _feed([line])
    assert (sensor.stream.malformed, _detections(sensor)) == (1, [])


@pytest.mark.parametrize("line", [
    "", "   ", "{}", '{"node_name": "n"}', '{"process_kprobe": null}',
    '{"process_foo": {"policy_name": "p"}}', '{"process_loader": {"path": "/lib/x.so"}}',
    '{"process_kprobe": {"process": {"pid": 1}}}',
    '{"process_throttle": {"type": "THROTTLE_STOP", "cgroup": "x"}}',
    '{"process_exit": {"process": {"exec_id": "e"}}}',
    '{"process_exit": null}',
])
def test_on_line_non_detection_line_is_ignored(line: str) -> None:
    sensor = _feed([line])
    assert (sensor.stream.malformed, sensor.stream.lost, _detections(sensor)) == (0, 0, [])


def test_normalise_minimal_hook_event_has_only_the_rule() -> None:
    det = TetragonSensor(path="/x/tetragon.log", node="n1").normalise(
        {"process_kprobe": {"policy_name": "p"}})
    assert det is not None
    assert (det.rule, det.technique, det.pid, det.ppid, det.comm, det.names, det.node,
            det.container_id, det.observed_at) == ("p", (), None, None, None, (), "n1", None, 0.0)


def test_normalise_unreadable_time_keeps_the_detection() -> None:
    det = TetragonSensor(path="/x/tetragon.log").normalise(
        {"process_kprobe": {"policy_name": "p"}, "time": "yesterday"})
    assert det is not None
    assert det.observed_at == 0.0


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2026-11-23T02:01:35.738796110Z", _epoch("2026-11-23T02:01:35", 738796110)),
    ("2026-11-23T02:01:35.000000001Z", _epoch("2026-11-23T02:01:35", 1)),
    ("2026-11-23T02:01:35Z", _epoch("2026-11-23T02:01:35", 0)),
    ("2026-11-23T02:01:35.5z", _epoch("2026-11-23T02:01:35", 500000000)),
    ("2026-11-23T04:01:35.738796110+02:00", _epoch("2026-11-23T02:01:35", 738796110)),
    ("2026-11-22T21:01:35.1-05:00", _epoch("2026-11-23T02:01:35", 100000000)),
])
def test_parse_rfc3339_keeps_nanoseconds_and_offsets(stamp: str, expected: float) -> None:
    assert parse_rfc3339(stamp) == expected


@pytest.mark.parametrize("stamp", ["", "2026-11-23", "2026-11-23T02:01:35", "2026-13-23T02:01:35Z"])
def test_parse_rfc3339_rejects_other_text(stamp: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the cause
        parse_rfc3339(stamp)


# ---------------------------------------------------------------- correlation
def test_correlate_full_pod_container_id_matches_the_run(edge: TetragonSensor) -> None:
    assert correlate(_run(), _edge(edge, "cgroup-release-agent")) == "container_id"


def test_correlate_short_docker_id_matches_the_run_by_prefix(edge: TetragonSensor) -> None:
    d = _edge(edge, "namespace-changes", 1)
    assert len(d.container_id or "") == 15
    assert correlate(_run(), d) == "container_id"


def test_correlate_other_container_does_not_match(edge: TetragonSensor) -> None:
    other = "f" * 64
    assert correlate(_run(container_id=other), _edge(edge, "namespace-changes", 1)) is None
    assert correlate(_run(container_id=other), _edge(edge, "cgroup-release-agent")) is None


def test_correlate_run_id_in_a_pod_name_or_path(edge: TetragonSensor) -> None:
    run = _run(run_id="st00000000ab12", container_id=None)
    assert correlate(run, _edge(edge, "cgroup-release-agent")) == "run_id"  # pod name
    assert correlate(run, _edge(edge, "block-ptrace-attach")) == "run_id"  # arguments
    assert correlate(run, _edge(edge, "exec-from-tmp")) == "run_id"  # binary


def test_correlate_process_tree_by_ancestor(edge: TetragonSensor) -> None:
    run = _run(container_id=None, pids=frozenset({40990}))
    assert correlate(run, _edge(edge, "cgroup-release-agent")) == "process_tree"


# ---------------------------------------------------------------- real FileTail
def _event(i: int) -> str:
    """A real export tracepoint line, made distinct by its policy name and pid."""
    raw = json.loads(_lines("export.jsonl")[2])
    raw["process_tracepoint"]["policy_name"] = f"rot-{i}"
    raw["process_tracepoint"]["process"]["pid"] = 50000 + i
    return json.dumps(raw, separators=(",", ":")) + "\n"


def _append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(lines))




def test_filetail_rotation_and_truncation_deliver_each_detection_once_in_order(
        tmp_path: Path) -> None:
    log = tmp_path / "tetragon.log"
    _append(log, _event(-1))  # already there when the sensor starts: not read (from the end)
    sensor = TetragonSensor(path=str(log))
    sensor.start()
    try:
        sub = sensor.stream.subscribe()
        _append(log, _event(0), _event(1), _event(2))
        seen, _ = sub.wait(lambda ds: len(ds) >= 3, None, time.time() + 5)
        assert len(seen) == 3
        # Tetragon's rotation: rename to tetragon.log.1, then a new tetragon.log
        log.rename(tmp_path / "tetragon.log.1")
        _append(tmp_path / "tetragon.log.1", _event(3))  # written before the new file exists
        _append(log, _event(4), _event(5))
        seen, _ = sub.wait(lambda ds: len(ds) >= 6, None, time.time() + 5)
        assert len(seen) == 6
        # truncation in place, then shorter content (a rewrite to the same size or more
        # before the tail notices is not detectable by size: see the report)
        with log.open("r+", encoding="utf-8") as fh:
            fh.truncate(0)
        _append(log, _event(6))
        seen, _ = sub.wait(lambda ds: len(ds) >= 7, None, time.time() + 5)
        assert len(seen) == 7
        _append(log, _event(7))
        seen, _ = sub.wait(lambda ds: len(ds) >= 8, None, time.time() + 5)
        _append(log, _event(99))  # sentinel: anything read twice would come before it
        seen, _ = sub.wait(lambda ds: any(d.rule == "rot-99" for d in ds), None, time.time() + 5)
    finally:
        sensor.stop()
    assert [d.rule for d in seen] == [f"rot-{i}" for i in (*range(8), 99)]
    assert [d.pid for d in seen] == [50000 + i for i in (*range(8), 99)]
    assert (sensor.stream.malformed, sensor.stream.lost) == (0, 0)


def test_filetail_from_start_reads_existing_lines_and_follows_a_late_file(tmp_path: Path) -> None:
    log = tmp_path / "tetragon.log"
    sensor = TetragonSensor(path=str(log), from_start=True)  # the file does not exist yet
    sensor.start()
    try:
        sub = sensor.stream.subscribe()
        _append(log, _event(0), _event(1))
        seen, _ = sub.wait(lambda ds: len(ds) >= 2, None, time.time() + 5)
    finally:
        sensor.stop()
    assert [d.rule for d in seen] == ["rot-0", "rot-1"]


# ---------------------------------------------------------------- 10 MB line
def _huge(tmp_path: Path) -> tuple[Path, str, str]:
    raw = json.loads(_lines("edge.jsonl")[0])
    raw["process_kprobe"]["process"]["arguments"] = "A" * (10 * 1024 * 1024) + " st0000000000ff"
    huge = json.dumps(raw, separators=(",", ":"))
    normal = _lines("edge.jsonl")[1]
    path = tmp_path / "huge.jsonl"
    path.write_text(huge + "\n" + normal + "\n", encoding="utf-8")
    return path, huge, normal


def test_on_line_10mb_line_normalises_and_so_does_the_next(tmp_path: Path) -> None:
    _, huge, normal = _huge(tmp_path)
    assert len(huge) > 10 * 1024 * 1024
    sensor = _feed([huge, normal])
    big, after = _detections(sensor)
    assert (big.rule, big.pid, big.container_id) == ("cgroup-release-agent", 41001, CID)
    assert len(big.fields["arguments"]) == 10 * 1024 * 1024 + 15
    assert correlate(_run(run_id="st0000000000ff", container_id=None), big) == "run_id"
    assert (after.rule, after.action) == ("block-ptrace-attach", "KPROBE_ACTION_SIGKILL")
    assert sensor.stream.malformed == 0


def test_filetail_10mb_line_written_in_pieces_then_a_normal_line(tmp_path: Path) -> None:
    path, huge, normal = _huge(tmp_path)
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log))
    sensor.start()
    try:
        sub = sensor.stream.subscribe()
        data = (huge + "\n" + normal + "\n").encode()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        try:
            for at in range(0, len(data), 1 << 20):  # the tail sees partial lines
                os.write(fd, data[at:at + (1 << 20)])
        finally:
            os.close(fd)
        seen, _ = sub.wait(lambda ds: len(ds) >= 2, None, time.time() + 20)
    finally:
        sensor.stop()
    assert [d.rule for d in seen] == ["cgroup-release-agent", "block-ptrace-attach"]
    assert len(seen[0].fields["arguments"]) == 10 * 1024 * 1024 + 15
    assert sensor.stream.malformed == 0
    assert path.stat().st_size == len(data)


# ---------------------------------------------------------------- sign of life
def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def _exec_line() -> str:
    """A real export process_exec line: what a live Tetragon writes for every exec."""
    return _lines("export.jsonl")[0] + "\n"


def test_silence_an_exec_line_in_the_window_is_a_sign_of_life(tmp_path: Path) -> None:
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log))
    sensor.start()
    try:
        since = time.time()
        _append(log, _exec_line())
        _wait_for(lambda: sensor._tail is not None and sensor._tail.last_line >= since)
        assert sensor.silence(since, time.time()) is None
        assert _detections(sensor) == []  # a sign of life, not a detection
    finally:
        sensor.stop()


def test_silence_stale_export_file_says_what_was_seen_and_how_to_fix_it(tmp_path: Path) -> None:
    log = tmp_path / "tetragon.log"
    _append(log, _exec_line())
    os.utime(log, (time.time() - 42.0, time.time() - 42.0))  # last written 42 s ago
    sensor = TetragonSensor(path=str(log))
    sensor.start()
    try:
        since = time.time()
        why = sensor.silence(since, since + 3.0)
    finally:
        sensor.stop()
    assert why is not None
    assert f"no line from {log} during the window" in why
    assert "the file was last written 42." in why
    assert "exports process_exec for every exec" in why
    assert "pidfile" in why
    assert sensor.health().up is False  # stopped


def test_silence_last_line_before_the_window_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log))
    sensor.start()
    try:
        _append(log, _exec_line())
        _wait_for(lambda: sensor._tail is not None and sensor._tail.last_line > 0)
        since = sensor._tail.last_line + 42.1 if sensor._tail else 0.0
        why = sensor.silence(since, since + 3.0)
    finally:
        sensor.stop()
    assert why is not None
    assert "(last line 42.1 s before it)" in why


def test_silence_dead_writer_from_its_pidfile_is_down(tmp_path: Path) -> None:
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = tmp_path / "tetragon.pid"
    pidfile.write_text(f"{dead.pid}\n")
    log = tmp_path / "tetragon.log"
    _append(log, _exec_line())
    sensor = TetragonSensor(path=str(log), pidfile=str(pidfile))
    sensor.start()
    try:
        since = time.time()
        _append(log, _exec_line())  # a line from someone, but the writer is dead
        _wait_for(lambda: sensor._tail is not None and sensor._tail.last_line >= since)
        why = sensor.silence(since, time.time())
        health = sensor.health()
    finally:
        sensor.stop()
    assert why is not None
    assert f"Tetragon (pid {dead.pid} from {pidfile}) is not running" in why
    assert (health.up, health.reason) == (False, why)


def test_silence_quiet_but_alive_writer_by_pid_needs_no_line(tmp_path: Path) -> None:
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log), pid=os.getpid())  # started before any window
    sensor.start()
    try:
        since = time.time()
        assert sensor.silence(since, since + 3.0) is None
        assert sensor.health().up
    finally:
        sensor.stop()


def test_silence_writer_restarted_during_the_window_is_down(tmp_path: Path) -> None:
    import subprocess

    fresh = subprocess.Popen(["sleep", "30"])
    try:
        pidfile = tmp_path / "tetragon.pid"
        pidfile.write_text(str(fresh.pid))
        sensor = TetragonSensor(path=str(tmp_path / "tetragon.log"), pidfile=str(pidfile))
        why = sensor.silence(time.time() - 10.0, time.time())  # window opened 10 s ago
        missing = TetragonSensor(path=str(tmp_path / "tetragon.log"),
                                 pidfile=str(tmp_path / "nope.pid"))
        unreadable = missing.silence(time.time(), time.time())
    finally:
        fresh.kill()
        fresh.wait()
    assert why is not None
    assert "after the window opened (restarted?)" in why
    assert unreadable is not None
    assert "cannot read the writer's pid from" in unreadable


@pytest.mark.parametrize(("kw", "message"), [
    ({"pid": 1234, "pidfile": "/run/t.pid"}, "set pid or pidfile, not both"),
    ({"pid": True}, "expected the writer's process id"),
    ({"pid": 1}, "expected the writer's process id"),
])
def test_pid_options_are_checked(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TetragonSensor(path="/var/run/cilium/tetragon/tetragon.log", **kw)


def test_pid_options_do_not_go_with_a_command() -> None:
    with pytest.raises(ConfigError, match=r"with command = \.\.\. the harness watches the command"):
        TetragonSensor(command="tetra getevents -o json", pidfile="/run/tetragon.pid")


class _Scenario:
    """What ``_judge_all`` reads of a scenario: one expectation."""

    def __init__(self, technique: str | None) -> None:
        self.technique = technique

    def expectation(self, name: str, facts: Any = None) -> Any:
        from harness.core.verdict import Expectation

        return Expectation(technique=self.technique)


def _judged(sensor: TetragonSensor, log: Path, technique: str | None,
            line: str | None, window: float = 0.2) -> Any:
    """Subscribe, 'act' (append ``line`` if any), judge as harness.engine.execute does."""
    from harness.engine.execute import _judge_all

    before = {"tetragon": sensor.health()}
    sub = sensor.stream.subscribe()
    started = time.time()
    if line is not None:
        _append(log, line)
        _wait_for(lambda: sensor._tail is not None and sensor._tail.last_line >= started)
    run = Run(run_id="st000000000001", scenario="s", context="host", node="local",
              started_at=started, ended_at=time.time(), executed=True, pids=frozenset({1}))
    _, judgements, health = _judge_all(run, _Scenario(technique), {"tetragon": sensor},  # type: ignore[arg-type]
                                    {"tetragon": sub}, before, window=window)
    return judgements[0], health["tetragon"]


@pytest.mark.parametrize("technique", ["T1611", None], ids=["attack", "benign"])
def test_judge_silent_export_is_sensor_down_never_missed_or_clean(
        tmp_path: Path, technique: str | None) -> None:
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log))
    sensor.start()
    try:
        judgement, health = _judged(sensor, log, technique, None)
    finally:
        sensor.stop()
    assert judgement.verdict.value == "SENSOR_DOWN"
    assert judgement.reason.startswith(f"tetragon: no line from {log} during the window")
    assert health.up is False


@pytest.mark.parametrize(("technique", "verdict"), [("T1611", "MISSED"), (None, "CLEAN")],
                         ids=["attack", "benign"])
def test_judge_export_with_a_line_in_the_window_is_judged_normally(
        tmp_path: Path, technique: str | None, verdict: str) -> None:
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log))
    sensor.start()
    try:
        judgement, health = _judged(sensor, log, technique, _exec_line())
    finally:
        sensor.stop()
    assert (judgement.verdict.value, health.up) == (verdict, True)


def test_judge_quiet_export_with_a_live_writer_pid_is_judged_normally(tmp_path: Path) -> None:
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log), pid=os.getpid())
    sensor.start()
    try:
        judgement, _ = _judged(sensor, log, "T1611", None)
    finally:
        sensor.stop()
    assert judgement.verdict.value == "MISSED"


# ---------------------------------------------------------------- ancestry on real exports
# tests/data/real/tetragon/: REAL exports of the catalogue's runs (README.md there). The
# run's pid sits 2 to 8 exec images above the process that raised the hook event.
REAL = DATA.parent / "real" / "tetragon"


def _real_lines(folder: str) -> list[str]:
    return (REAL / folder / "export.jsonl").read_text("utf-8").split("\n")


def _real_run(folder: str, scenario: str) -> dict[str, Any]:
    rows = [json.loads(line) for line in
            (REAL / folder / "results.jsonl").read_text("utf-8").splitlines()]
    return next(r for r in rows if r["scenario"] == scenario and r["sensor"] == "tetragon")


@pytest.fixture(scope="module")
def real_default() -> TetragonSensor:
    return _feed(_real_lines("default"))


@pytest.mark.parametrize(("scenario", "technique"), [
    ("ptrace-pokedata", "T1055.008"),     # Python atomic behind the pyenv shim: 8 images
    ("shadow-read", "T1003.008"),         # head -> sh -> stage runner: 2 images
])
def test_ancestry_real_export_reaches_the_runs_pid_through_exec_ids(
        real_default: TetragonSensor, scenario: str, technique: str) -> None:
    row = _real_run("default", scenario)
    pids = frozenset(row["pids"])
    hits = [d for d in _detections(real_default)
            if any(t.startswith(technique) for t in d.technique) and pids & set(d.ancestors)]
    assert hits, f"no {technique} detection whose ancestors hold {sorted(pids)}"
    d = hits[0]
    assert not pids & {d.pid, d.ppid}, "only the exec-id tree ties it to the run"
    run = _run(run_id=row["run_id"], container_id=None, pids=pids)
    assert correlate(run, d) == "process_tree"
    assert "correlation_hint" not in d.fields


def test_ancestry_real_export_exec_without_fork_keeps_walking(
        real_default: TetragonSensor) -> None:
    """An exec without fork: the exec line's parent is the process's own previous image
    (``parent.pid == pid``); the walk goes through it to the images above."""
    same = [json.loads(line)["process_exec"] for line in _real_lines("default")
            if '"process_exec"' in line]
    same = [e for e in same if e["parent"].get("pid") == e["process"]["pid"]]
    assert same, "the recording has execs without fork (pyenv shims)"
    chain = real_default.ancestry(same[-1]["process"]["exec_id"])
    assert chain[0] == same[-1]["process"]["pid"]
    assert len(chain) > 2


def test_ancestry_real_export_without_exec_lines_names_what_to_enable() -> None:
    """The same export with PROCESS_EXEC/EXIT dropped (an export allow-list without them,
    no --enable-ancestors): the hook events no longer reach the run, and they say why."""
    row = _real_run("default", "ptrace-pokedata")
    sensor = _feed([line for line in _real_lines("default")
                    if '"process_exec"' not in line and '"process_exit"' not in line])
    run = _run(run_id=row["run_id"], container_id=None, pids=frozenset(row["pids"]))
    hooks = [d for d in _detections(sensor) if "T1055.008" in d.technique]
    assert hooks
    assert all(correlate(run, d) is None for d in hooks)
    assert all(d.fields["correlation_hint"] == tetragon.ANCESTRY_HINT for d in hooks)
    assert "--enable-ancestors base,tracepoint" in tetragon.ANCESTRY_HINT


def test_ancestry_real_ancestors_export_uses_the_hook_events_ancestors() -> None:
    """``ancestors/`` kept only hook lines (plus the run process's exec/exit): the hook's
    own ``ancestors`` list carries the tree."""
    row = _real_run("ancestors", "ptrace-pokedata")
    sensor = _feed(_real_lines("ancestors"))
    run = _run(run_id=row["run_id"], container_id=None, pids=frozenset(row["pids"]))
    hits = [d for d in _detections(sensor) if "T1055.008" in d.technique
            and correlate(run, d) == "process_tree"]
    assert hits
    assert "correlation_hint" not in hits[0].fields


def test_ancestry_clone_only_parent_links_through_the_childs_parent_object() -> None:
    """A forked-not-exec'd parent has no exec line: the child's ``parent`` object (with its
    own ``parent_exec_id``) links it upward; its pid comes from that object."""
    sensor = TetragonSensor(path="/nonexistent/tetragon.log")
    top = {"exec_id": "top", "pid": 100, "parent_exec_id": "init"}
    sensor.on_line(json.dumps({"process_exec": {"process": top, "parent": {}}}))
    clone = {"exec_id": "clone", "pid": 101, "parent_exec_id": "top"}
    child = {"exec_id": "child", "pid": 102, "parent_exec_id": "clone"}
    sensor.on_line(json.dumps({"process_exec": {"process": child, "parent": clone}}))
    assert sensor.ancestry("child") == (101, 100)


def test_ancestry_map_is_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tetragon_tree, "MAX_PROCS", 3)
    sensor = TetragonSensor(path="/nonexistent/tetragon.log")
    for i in range(5):
        proc = {"exec_id": f"e{i}", "pid": 10 + i, "parent_exec_id": f"e{i - 1}"}
        sensor.on_line(json.dumps({"process_exec": {"process": proc}}))
    assert sensor.ancestry("e4") == (13, 12)  # e1 and e0 forgotten


# ---------------------------------------------------------------- sync
SYNC_FILE = Path(tetragon.__file__).resolve().parent.parent / "rulepacks" / "tetragon" / \
    "shadowtest-sync.yaml"


def _marker_line(tid: int) -> str:
    """A marker event as Tetragon exports it: a REAL process_tracepoint line of the default/
    recording with the sync policy's name, event and argument, and the marker thread's tid."""
    raw = json.loads(next(line for line in _real_lines("default")
                          if '"process_tracepoint"' in line))
    event = raw["process_tracepoint"]
    event.update(policy_name=tetragon.SYNC_POLICY, event="sys_enter_getpgid",
                 args=[{"long_arg": str(tetragon.MARKER_PID)}], tags=["shadowtest.sync"],
                 message="shadowtest sync marker")
    event["process"]["tid"] = tid
    event.pop("ancestors", None)
    return json.dumps(raw, separators=(",", ":")) + "\n"


def test_sync_policy_file_hooks_the_marker_pid() -> None:
    import yaml

    policy = yaml.safe_load(SYNC_FILE.read_text("utf-8"))
    assert policy["metadata"]["name"] == tetragon.SYNC_POLICY == "shadowtest-sync"
    (hook,) = policy["spec"]["tracepoints"]
    assert (hook["subsystem"], hook["event"]) == ("syscalls", "sys_enter_getpgid")
    (selector,) = hook["selectors"]
    assert selector["matchArgs"][0]["values"] == [str(tetragon.MARKER_PID)]
    assert tetragon.MARKER_PID > 4194304  # above any pid_max: getpgid fails with ESRCH


def test_sync_marker_closes_after_one_event_per_cpu_and_is_no_detection() -> None:
    sensor = TetragonSensor(path="/nonexistent/tetragon.log", sync=True)
    token = sensor.sync()
    assert token is not None
    (tid,) = sensor._pending
    ncpu = len(os.sched_getaffinity(0))
    sensor.on_line(_marker_line(tid + 1))  # another thread's getpgid: ignored
    for _ in range(ncpu - 1):
        sensor.on_line(_marker_line(tid))
    assert token not in sensor.stream._s.markers
    sensor.on_line(_marker_line(tid))
    assert token in sensor.stream._s.markers
    assert _detections(sensor) == []


def test_sync_auto_starts_once_a_marker_came_back_and_can_be_off() -> None:
    sensor = TetragonSensor(path="/nonexistent/tetragon.log")
    assert sensor.sync() is None
    assert sensor.sync_hint == tetragon.SYNC_HINT
    (tid,) = sensor._pending
    sensor.on_line(_marker_line(tid))
    assert sensor.sync() is not None
    assert sensor.sync_hint is None
    assert TetragonSensor(path="/nonexistent/tetragon.log", sync=False).sync() is None
    listed = TetragonSensor(path="/x", policy_files=["/etc/tetragon/shadowtest-sync.yaml"])
    assert listed.sync() is not None
    with pytest.raises(ConfigError, match="sync: expected true or false"):
        TetragonSensor(path="/x", sync="yes")  # type: ignore[arg-type]


def test_judge_synced_tetragon_closes_a_miss_within_a_second(tmp_path: Path) -> None:
    """A live export with the sync policy: the harness fires its markers, 'Tetragon' exports
    one event per CPU; MISSED (synced) long before the 30 s window ends."""
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log), sync=True)
    stop = False

    def tetragon_agent() -> None:
        answered: set[int] = set()
        while not stop:
            for tid in list(sensor._pending):
                if tid not in answered:
                    answered.add(tid)
                    _append(log, *[_marker_line(tid)] * len(os.sched_getaffinity(0)))
            time.sleep(0.01)

    agent = threading.Thread(target=tetragon_agent, daemon=True)
    sensor.start()
    agent.start()
    try:
        started = time.time()
        judgement, health = _judged(sensor, log, "T1611", _exec_line(), window=30.0)
        took = time.time() - started
    finally:
        stop = True
        sensor.stop()
    assert (judgement.verdict.value, health.synced) == ("MISSED", True)
    assert took < 3.0
    assert "sensor synced past the window" in judgement.reason


def test_judge_unsynced_tetragon_miss_says_the_window_was_waited_out(tmp_path: Path) -> None:
    log = tmp_path / "tetragon.log"
    log.touch()
    sensor = TetragonSensor(path=str(log))
    sensor.start()
    try:
        judgement, health = _judged(sensor, log, "T1611", _exec_line())
    finally:
        sensor.stop()
    assert (judgement.verdict.value, health.synced) == ("MISSED", False)
    assert judgement.reason.endswith(f"; {tetragon.SYNC_HINT}")


# ---------------------------------------------------------------- replay of a real export
def test_replay_every_exported_line_is_a_sign_of_life_and_loss_is_sensor_down() -> None:
    """``ancestors/`` holds 42 hook lines and the run process's exec/exit only: a benign
    run between hook lines is still inside the recording's live span (its exec/exit
    lines), and a product that says it lost events makes the window SENSOR_DOWN."""
    from harness.sensors.replay import ReplaySensor

    replay = ReplaySensor(name="tetragon", path=str(REAL / "ancestors" / "export.jsonl"),
                          format="tetragon")
    replay.start()
    hooks = [d.observed_at for d in replay.stream.snapshot()]
    adapter: Any = replay.adapter
    assert adapter.first_seen < min(hooks)
    assert adapter.last_seen > max(hooks)
    before_first_hook = (adapter.first_seen + 1.0, min(hooks) - 1.0)
    assert replay.silence(*before_first_hook) is None
    adapter.loss_silence = lambda since, until: "tetragon lost 3 events"
    assert replay.silence(*before_first_hook) == "tetragon lost 3 events"
