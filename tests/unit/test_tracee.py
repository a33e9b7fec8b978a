"""The Tracee sensor's contract: both JSON event shapes to Detections.

Written from the documented schemas (SENSORS.md 4; tracee docs/docs/outputs/event-structure.md,
api/v1beta1/{event,threat}.proto, types/trace/trace.go at 09fc404db^):
v1beta1.jsonl = 1 plain sched_process_exec; 2 cgroup_release_agent (T1611, HIGH) in a
container in a pod with host_pid, ns pid and ancestors; 3 plain openat; 4
ptrace_code_injection (T1055.008, CRITICAL) of a host process (no container, no k8s, no
host_pid); 5 cgroup_release_agent in a container without host_pid, RFC 3339 timestamp;
6 the doc's FILE_MODIFICATION shape (empty mitre, no severity); 7 a signature with a null
workload.
legacy.jsonl = 1 plain ptrace (metadata null); 2 cgroup_release_agent (Severity 3, T1611)
in a pod, ``triggeredBy`` args; 3 ptrace_code_injection (T1055.008) host process; 4
fileless_execution (Severity 4, no ATT&CK id, container/kubernetes keys missing); 5 plain
event with empty Properties; 6 Severity 0 with containerId only; 7 Severity 1.
malformed.jsonl = truncated line, junk, invalid UTF-8 bytes, a JSON array, a wrong-typed
workload, a non-numeric processId, a blank line, then a good line.
"""

from __future__ import annotations

import calendar
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.core.correlate import correlate
from harness.core.detection import Detection
from harness.core.run import Run
from harness.sensors.tracee import TraceeSensor

DATA = Path(__file__).resolve().parent.parent / "data" / "tracee"
CID = "a23c00c66ad2611535a2c6c5352455bb78cc5e232e9c06c47f7440434dad88d4"
POD = "st-st00000000cd34-escape"


def _lines(name: str) -> list[str]:
    """The file's lines as FileTail/LineReader hand them over (UTF-8, errors replaced)."""
    return (DATA / name).read_bytes().decode("utf-8", errors="replace").split("\n")[:-1]


def _feed(lines: list[str]) -> TraceeSensor:
    sensor = TraceeSensor(name="tracee", path="/nonexistent/tracee.json", node="node-b")
    for line in lines:
        sensor.on_line(line)
    return sensor


def _detections(sensor: TraceeSensor) -> list[Detection]:
    return sensor.stream._since(0)


def _normalise(raw: dict[str, Any]) -> Detection | None:
    return TraceeSensor(path="/nonexistent/tracee.json").normalise(raw)


def _run(**kw: Any) -> Run:
    values: dict[str, Any] = {
        "run_id": "st000000000000", "scenario": "s", "context": "namespace", "node": "n",
        "started_at": 0, "ended_at": 1, "executed": True, "container_id": CID,
    }
    values.update(kw)
    return Run(**values)


@pytest.fixture(scope="module")
def v1() -> list[Detection]:
    sensor = _feed(_lines("v1beta1.jsonl"))
    assert (sensor.stream.malformed, sensor.stream.lost) == (0, 0)
    return _detections(sensor)


@pytest.fixture(scope="module")
def legacy() -> list[Detection]:
    sensor = _feed(_lines("legacy.jsonl"))
    assert (sensor.stream.malformed, sensor.stream.lost) == (0, 0)
    return _detections(sensor)


# ---------------------------------------------------------------- v1beta1
def test_on_line_v1beta1_only_signatures_are_detections(v1: list[Detection]) -> None:
    assert [(d.rule, d.technique, d.severity) for d in v1] == [
        ("cgroup_release_agent", ("T1611",), "high"),
        ("ptrace_code_injection", ("T1055.008",), "critical"),
        ("cgroup_release_agent", ("T1611",), "medium"),
        ("FILE_MODIFICATION", (), None),
        ("hidden_file_created", (), "low"),
    ]


@pytest.mark.parametrize("index", [0, 2])
def test_normalise_v1beta1_plain_events_are_none(index: int) -> None:
    assert _normalise(json.loads(_lines("v1beta1.jsonl")[index])) is None


def test_normalise_v1beta1_container_signature_maps_every_field(v1: list[Detection]) -> None:
    d = v1[0]
    assert (d.sensor, d.node, d.action, d.cgroup_id) == ("tracee", "node-b", None, None)
    assert (d.pid, d.ppid, d.ancestors, d.comm) == (52011, 52010, (51990, 1), "sh")
    assert d.container_id == CID
    assert d.names == ("/bin/sh", POD, "security_file_open",
                       "/sys/fs/cgroup/st-st00000000cd34/release_agent")
    assert d.observed_at == 1795399500 + 123456789 / 1e9
    assert d.fields["ns_pid"] == 7
    assert d.fields["tid"] == 52011
    assert d.fields["pod"] == {"name": POD, "namespace": "shadowtest"}
    assert d.fields["signature_id"] == "TRC-1010"
    assert (d.fields["tactic"], d.fields["technique_name"]) == ("Privilege Escalation", "Escape to Host")
    assert d.fields["threat_name"] == "Core dumps or cgroups release agent modification"
    assert d.fields["policies"] == ["shadowtest-signatures"]
    assert d.fields["detected_from"] == "security_file_open"
    assert (d.fields["image"], d.fields["container_name"], d.fields["format"]) == (
        "alpine:3.20", "attacker", "v1beta1")
    assert d.value("pod.namespace") == "shadowtest"


def test_normalise_v1beta1_host_process_pid_is_the_host_pid(v1: list[Detection]) -> None:
    d = v1[1]
    assert (d.pid, d.ppid, d.ancestors, d.container_id, d.comm) == (53001, 53000, (), None, "python3")
    assert d.fields["ns_pid"] == 53001
    assert d.fields["pod"] == {"name": None, "namespace": None}
    assert d.names == ("/usr/bin/python3", "PTRACE_POKETEXT")
    assert d.fields["signature_id"] == "TRC-103"


def test_normalise_v1beta1_container_without_host_pid_never_uses_the_ns_pid(
        v1: list[Detection]) -> None:
    d = v1[2]
    assert (d.pid, d.fields["ns_pid"], d.container_id) == (None, 9, CID)
    assert d.observed_at == calendar.timegm((2026, 11, 23, 2, 5, 2)) + 750000001 / 1e9


def test_normalise_v1beta1_doc_shape_without_mitre_or_severity(v1: list[Detection]) -> None:
    d = v1[3]
    assert (d.technique, d.severity, d.pid, d.comm, d.container_id) == ((), None, 54001, "touch", None)
    assert d.fields["signature_id"] == "FILE_MODIFICATION"
    assert d.names == ("/tmp/st-file",)  # detected_from data
    assert d.observed_at == 1795399503.0  # nanos omitted (zero)


def test_normalise_v1beta1_null_workload(v1: list[Detection]) -> None:
    d = v1[4]
    assert (d.pid, d.ppid, d.comm, d.container_id, d.names) == (None, None, None, None, ())
    assert d.fields["policies"] == []


@pytest.mark.parametrize(("severity", "expected"), [
    ("INFO", "info"), ("LOW", "low"), ("MEDIUM", "medium"), ("HIGH", "high"),
    ("CRITICAL", "critical"), (3, "high"), ("4", "critical"), (None, None),
])
def test_normalise_v1beta1_severity(severity: Any, expected: str | None) -> None:
    raw = json.loads(_lines("v1beta1.jsonl")[1])
    raw["threat"]["severity"] = severity
    d = _normalise(raw)
    assert d is not None
    assert d.severity == expected


@pytest.mark.parametrize(("technique", "expected"), [
    ({"id": "T1611"}, ("T1611",)), ({"id": "t1055.008"}, ("T1055.008",)),
    ({"id": "attack-pattern--4a5b7ade"}, ()), ({"id": ""}, ()), (None, ()),
])
def test_normalise_v1beta1_technique_is_t_ids_only(technique: Any, expected: tuple[str, ...]) -> None:
    raw = json.loads(_lines("v1beta1.jsonl")[1])
    raw["threat"]["mitre"]["technique"] = technique
    d = _normalise(raw)
    assert d is not None
    assert d.technique == expected


def test_normalise_v1beta1_accepts_protojson_spellings() -> None:
    """protojson: wrappers as bare numbers, camelCase hostPid, int64 seconds as a string,
    and the early v1beta1 ``context`` object with ``namespaced_pid``."""
    raw = json.loads(_lines("v1beta1.jsonl")[1])
    proc = raw["workload"]["process"]
    proc["pid"] = 7
    proc["hostPid"] = proc.pop("host_pid")
    d = _normalise(raw)
    assert d is not None
    assert (d.pid, d.fields["ns_pid"]) == (52011, 7)
    early = {"timestamp": {"seconds": "1795399500"}, "name": "x", "threat": {},
             "context": {"process": {"pid": 52011, "namespaced_pid": 7}, "container": {"id": CID}}}
    d = _normalise(early)
    assert d is not None
    assert (d.pid, d.fields["ns_pid"], d.container_id) == (52011, 7, CID)


# ---------------------------------------------------------------- legacy trace.Event
def test_on_line_legacy_only_signatures_are_detections(legacy: list[Detection]) -> None:
    assert [(d.rule, d.technique, d.severity) for d in legacy] == [
        ("cgroup_release_agent", ("T1611",), "high"),
        ("ptrace_code_injection", ("T1055.008",), "high"),
        ("fileless_execution", (), "critical"),
        ("k8s_service_account_token", ("T1212",), "info"),
        ("anti_debugging", ("T1622",), "low"),
    ]


@pytest.mark.parametrize("index", [0, 4])
def test_normalise_legacy_plain_events_are_none(index: int) -> None:
    assert _normalise(json.loads(_lines("legacy.jsonl")[index])) is None


def test_normalise_legacy_container_signature_maps_every_field(legacy: list[Detection]) -> None:
    d = legacy[0]
    assert (d.sensor, d.node, d.pid, d.ppid, d.comm, d.container_id) == (
        "tracee", "node-b", 62011, 62010, "sh", CID)
    assert d.names == (POD, "/sys/fs/cgroup/st-st00000000cd34/release_agent", "O_WRONLY|O_TRUNC")
    assert d.observed_at == 1795399600123456789 / 1e9
    assert (d.fields["ns_pid"], d.fields["ns_ppid"]) == (7, 1)
    assert d.fields["pod"] == {"name": POD, "namespace": "shadowtest"}
    assert d.fields["signature_id"] == "TRC-1010"
    assert d.fields["attack_pattern"] == "attack-pattern--4a5b7ade-8bb5-4853-84ed-23f262002665"
    assert (d.fields["category"], d.fields["technique_name"]) == ("privilege-escalation", "Escape to Host")
    assert d.fields["hostname"] == "attacker-uts"  # the process's UTS name, not the node
    assert d.fields["tags"] == ["linux", "container"]
    assert d.fields["format"] == "legacy"


def test_normalise_legacy_host_process(legacy: list[Detection]) -> None:
    d = legacy[1]
    assert (d.pid, d.ppid, d.container_id, d.comm) == (63001, 63000, None, "python3")
    assert d.fields["pod"] == {"name": None, "namespace": None}
    assert d.names == ("PTRACE_POKETEXT",)


def test_normalise_legacy_missing_container_kubernetes_and_parent(legacy: list[Detection]) -> None:
    d = legacy[2]
    assert (d.pid, d.ppid, d.container_id, d.technique) == (64001, None, None, ())
    assert d.fields["technique_name"] == "Reflective Code Loading"
    assert d.names == ("memfd:payload",)


def test_normalise_legacy_container_id_without_container_object(legacy: list[Detection]) -> None:
    d = legacy[3]
    assert (d.container_id, d.pid, d.fields["ns_pid"]) == (CID, 66008, 8)


@pytest.mark.parametrize(("severity", "expected"), [
    (0, "info"), (1, "low"), (2, "medium"), (3, "high"), (4, "critical"), (9, "critical"),
    ("3", "high"), ("HIGH", "high"), (None, None),
])
def test_normalise_legacy_severity(severity: Any, expected: str | None) -> None:
    raw = json.loads(_lines("legacy.jsonl")[1])
    raw["metadata"]["Properties"]["Severity"] = severity
    d = _normalise(raw)
    assert d is not None
    assert d.severity == expected


def test_normalise_legacy_timestamp_relative_to_boot_is_unknown() -> None:
    raw = json.loads(_lines("legacy.jsonl")[1])
    raw["timestamp"] = 5_123_456_789  # --output option:relative-time
    d = _normalise(raw)
    assert d is not None
    assert d.observed_at == 0.0


def test_normalise_same_signature_in_both_formats_agrees(
        v1: list[Detection], legacy: list[Detection]) -> None:
    a, b = v1[0], legacy[0]
    assert (a.rule, a.technique, a.severity, a.container_id, a.fields["pod"], a.fields["signature_id"]) == (
        b.rule, b.technique, b.severity, b.container_id, b.fields["pod"], b.fields["signature_id"])


# ---------------------------------------------------------------- malformed
def test_on_line_malformed_lines_are_counted_not_raised() -> None:
    sensor = _feed(_lines("malformed.jsonl"))
    assert sensor.stream.malformed == 6
    assert [d.rule for d in _detections(sensor)] == ["cgroup_release_agent"]
    samples = sensor.stream.malformed_samples
    assert samples[1] == "not json at all"
    assert samples[2] == '{"name":"cgroup_release_agent",\ufffd\ufffd"threat":{}}'


@pytest.mark.parametrize("line", [
    '{"name": "x", "threat": "high"}',
    '{"name": 5, "threat": {}}',
    '{"name": "x", "threat": {"mitre": []}}',
    '{"name": "x", "threat": {"severity": true}}',
    '{"name": "x", "threat": {}, "workload": {"process": {"pid": {"value": "p"}}}}',
    '{"name": "x", "threat": {}, "timestamp": {"seconds": "s"}, "data": 3}',
    '{"eventName": "y", "processId": 1, "metadata": {"Properties": []}}',
    '{"eventName": 7, "processId": 1, "metadata": {"Properties": {"external_id": "T1611"}}}',
])
def test_on_line_bad_record_is_counted_as_malformed_not_raised(line: str) -> None:
    sensor = _feed([line])
    assert (sensor.stream.malformed, _detections(sensor)) == (1, [])


@pytest.mark.parametrize("line", [
    "{}", '{"name": "openat"}', '{"name": "x", "threat": null}',
    '{"eventName": "openat", "processId": 1, "metadata": null}',
    '{"eventName": "openat", "processId": 1, "metadata": {"Properties": {"Kubernetes_Technique": ""}}}',
])
def test_on_line_non_signature_is_ignored(line: str) -> None:
    sensor = _feed([line])
    assert (sensor.stream.malformed, _detections(sensor)) == (0, [])


def test_normalise_unreadable_timestamp_keeps_the_detection() -> None:
    d = _normalise({"name": "x", "threat": {}, "timestamp": "yesterday"})
    assert d is not None
    assert d.observed_at == 0.0


# ---------------------------------------------------------------- correlation
@pytest.mark.parametrize("fixture", ["v1", "legacy"])
def test_correlate_full_container_id_matches_the_run(
        fixture: str, request: pytest.FixtureRequest) -> None:
    d = request.getfixturevalue(fixture)[0]
    assert correlate(_run(), d) == "container_id"
    assert correlate(_run(container_id="f" * 64), d) is None


def test_correlate_short_run_container_id_matches_by_prefix(v1: list[Detection]) -> None:
    assert correlate(_run(container_id=CID[:12]), v1[0]) == "container_id"


def test_correlate_host_pid_ties_the_process_tree_not_the_ns_pid(
        v1: list[Detection], legacy: list[Detection]) -> None:
    assert correlate(_run(container_id=None, pids=frozenset({52011})), v1[0]) == "process_tree"
    assert correlate(_run(container_id=None, pids=frozenset({51990})), v1[0]) == "process_tree"
    assert correlate(_run(container_id=None, pids=frozenset({7})), v1[0]) is None
    assert correlate(_run(container_id=None, pids=frozenset({62010})), legacy[0]) == "process_tree"


def test_correlate_run_id_in_pod_name_or_path(v1: list[Detection], legacy: list[Detection]) -> None:
    run = _run(run_id="st00000000cd34", container_id=None)
    assert correlate(run, v1[0]) == "run_id"
    assert correlate(run, legacy[0]) == "run_id"


# ---------------------------------------------------------------- command transport
def test_command_transport_reads_stdout_until_it_ends() -> None:
    path = DATA / "legacy.jsonl"
    sensor = TraceeSensor(command=[sys.executable, "-c",
                                   f"import sys; sys.stdout.write(open({str(path)!r}).read())"])
    sub = sensor.stream.subscribe()
    sensor.start()
    try:
        seen, synced = sub.wait(lambda ds: False, None, time.time() + 10)  # returns on close
    finally:
        sensor.stop()
    assert not synced
    assert sensor.stream.closed == "tracee: command output ended"
    assert [d.rule for d in seen] == [
        "cgroup_release_agent", "ptrace_code_injection", "fileless_execution",
        "k8s_service_account_token", "anti_debugging"]


# ---------------------------------------------------------------- sign of life
def test_silence_a_plain_event_line_is_life_and_none_is_down(tmp_path: Path) -> None:
    """Tracee writes only the events it was asked for: a plain (non-signature) event in the
    window is a sign of life; a silent file is SENSOR_DOWN material, with the fix."""
    events = tmp_path / "tracee.json"
    events.touch()
    sensor = TraceeSensor(path=str(events))
    sensor.start()
    try:
        since = time.time()
        why = sensor.silence(since, since + 1.0)
        plain = [x for x in _lines("v1beta1.jsonl") if '"threat"' not in x]
        with events.open("a") as fh:
            fh.write(plain[0] + "\n")
        deadline = time.time() + 5
        while sensor.silence(since, time.time()) is not None:
            assert time.time() < deadline, "the line was never read"
            time.sleep(0.01)
    finally:
        sensor.stop()
    assert why is not None
    assert why.startswith(f"tracee: no line from {events} during the window")
    assert "--events sched_process_exec" in why
    assert _detections(sensor) == []


def test_build_sensor_accepts_pid_and_pidfile() -> None:
    from harness.sensors.base import build_sensor

    for kind in ("tracee", "tetragon", "falco"):
        sensor = build_sensor("s", {"type": kind, "path": "/var/log/x.json",
                                    "pidfile": "/run/x.pid"})
        assert str(getattr(sensor, "pidfile", None)) == "/run/x.pid"


# ================================================================ ancestry.jsonl
# Real-shaped Tracee events of one attack two execs below the stage runner (legacy
# trace.Event: sched_process_exec of the runner, the stage's sh, its exec into python3
# without a fork, a helper, then a TRC-103 finding naming only its parent), then v1beta1: a
# sched_process_exec with --proctree ancestors and a TRC-103 finding naming only its parent.
ANCESTRY = Path(__file__).resolve().parent.parent / "data" / "tracee" / "ancestry.jsonl"


def _ancestry_lines() -> list[str]:
    return ANCESTRY.read_text().splitlines()


def _fed(lines: list[str]) -> list[Detection]:
    sensor = TraceeSensor(path="x")
    for line in lines:
        sensor.on_line(line)
    assert sensor.stream.malformed == 0
    return sensor.stream.snapshot()


def _tree_run(*pids: int) -> Run:
    return Run(run_id="st000000000002", scenario="s", context="host", node="n",
               started_at=0, ended_at=1, executed=True, pids=frozenset(pids))


def test_tree_legacy_entity_ids_rebuild_the_chain_to_the_runner() -> None:
    (det,) = _fed(_ancestry_lines()[:6])
    assert (det.pid, det.ppid, det.ancestors) == (80030, 80010, (80000, 79000))


def test_tree_legacy_finding_correlates_to_the_runner_it_descends_from() -> None:
    (det,) = _fed(_ancestry_lines()[:6])
    assert correlate(_tree_run(80000), det) == "process_tree"


def test_tree_legacy_finding_alone_names_its_parent_and_says_what_to_turn_on() -> None:
    (det,) = _fed(_ancestry_lines()[4:5])
    assert (det.ppid, det.ancestors, "--proctree source=both" in det.fields["correlation_hint"]) \
        == (80010, (), True)


def test_tree_legacy_finding_alone_does_not_correlate_to_the_runner() -> None:
    (det,) = _fed(_ancestry_lines()[4:5])
    assert correlate(_tree_run(80000), det) is None


def test_tree_v1beta1_earlier_events_extend_a_finding_that_names_its_parent_only() -> None:
    det = _fed(_ancestry_lines()[:7])[1]
    assert (det.pid, det.ppid, det.ancestors) == (90020, 90010, (90000, 89000))


def test_tree_v1beta1_chain_has_no_hint() -> None:
    det = _fed(_ancestry_lines()[:7])[1]
    assert "correlation_hint" not in det.fields


def test_tree_is_bounded() -> None:
    from harness.sensors import tracee

    sensor = TraceeSensor(path="x")
    for n in range(tracee.TREE_MAX + 10):
        sensor.learn({"eventName": "sched_process_exec", "hostProcessId": n,
                      "processEntityId": n + 1, "parentEntityId": n + 2})
    assert len(sensor.tree) == tracee.TREE_MAX


def test_tree_survives_an_exec_cycle_without_looping() -> None:
    sensor = TraceeSensor(path="x")
    sensor.learn({"eventName": "x", "hostProcessId": 5, "processEntityId": 1, "parentEntityId": 2})
    sensor.learn({"eventName": "x", "hostProcessId": 6, "processEntityId": 2, "parentEntityId": 1})
    line = _ancestry_lines()[4]
    raw = json.loads(line)
    raw.update(processEntityId=1, parentEntityId=2, hostProcessId=5, hostParentProcessId=6)
    sensor.on_line(json.dumps(raw))
    (det,) = sensor.stream.snapshot()
    assert (det.ppid, det.ancestors) == (6, ())


# ---------------------------------------------------------------- sync
def test_judge_tracee_miss_says_the_window_was_waited_out_and_why(tmp_path: Path) -> None:
    """Tracee cannot be synced: a healthy MISSED row says the window was waited out."""
    from harness.core.verdict import Expectation
    from harness.engine.execute import _judge_all
    from harness.sensors import tracee

    events = tmp_path / "tracee.json"
    events.touch()
    sensor = TraceeSensor(path=str(events))

    class Scenario:
        def expectation(self, name: str, facts: Any = None) -> Expectation:
            return Expectation(technique="T1611")

    sensor.start()
    try:
        before = {"tracee": sensor.health()}
        sub = sensor.stream.subscribe()
        started = time.time()
        plain = [x for x in _lines("v1beta1.jsonl") if '"threat"' not in x]
        with events.open("a") as fh:
            fh.write(plain[0] + "\n")  # a sign of life, not a finding
        deadline = time.time() + 5
        while sensor._tail is None or sensor._tail.last_line < started:
            assert time.time() < deadline, "the line was never read"
            time.sleep(0.01)
        run = Run(run_id="st000000000001", scenario="s", context="host", node="local",
                  started_at=started, ended_at=time.time(), executed=True, pids=frozenset({1}))
        _, (judgement,), health = _judge_all(run, Scenario(), {"tracee": sensor},  # type: ignore[arg-type]
                                             {"tracee": sub}, before, window=0.2)
    finally:
        sensor.stop()
    assert sensor.sync() is None
    assert (judgement.verdict.value, health["tracee"].synced) == ("MISSED", False)
    assert judgement.reason.endswith(f"; {tracee.SYNC_HINT}")
    assert "window was waited out" in tracee.SYNC_HINT
