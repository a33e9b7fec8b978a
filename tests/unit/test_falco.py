"""The Falco sensor: its parsing over recorded alert files, and its HTTP receiver on loopback.

Recorded files (tests/data/falco), written from Falco's and Falcosidekick's documented schemas:
alerts.jsonl = file_output/stdout json lines: release_agent escape (T1611, container 3f1c9a7be0d2),
  PTRACE (T1055.008, host), Write below etc (T1098, same container), Write below etc (host),
  PTRACE (another container, kube-system), Write below etc without output/tags
  (json_include_*_property=false), Attach/Exec Pod (k8s_audit source).
sidekick.jsonl = Falcosidekick webhook payloads (uuid, customfields cluster/environment merged into
  output_fields, customtag shadowtest, sorted tags) + its /test event ("Test rule", internal).
drops.jsonl = "Falco internal: syscall event drop" alerts (2, 8, 18, n_drops missing) around one
  Write below etc, + a "Falco internal: metrics snapshot".
malformed.jsonl = 5 usable alerts (one with an invalid byte inside a string, no output_fields,
  null tags, both null) among 7 bad lines (truncated, startup text, invalid bytes outside strings,
  array, no rule, null, output_fields not an object) and a blank line.

Parsing tests feed lines as the file/command transports do (UTF-8 with errors replaced, newline
stripped); receiver tests start the real aiohttp receiver on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.core.correlate import correlate
from harness.core.detection import Detection
from harness.core.errors import ConfigError, SensorError
from harness.core.run import Run
from harness.sensors.falco import FalcoSensor
from harness.sensors.falco_alerts import parse_time

DATA = Path(__file__).resolve().parent.parent / "data" / "falco"
RUN_CID = "3f1c9a7be0d24c58a6e1b2d3c4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d"
SHORT = "3f1c9a7be0d2"
OTHER_SHORT = "9b2e4d6f8a1c"
T_RELEASE = "2025-11-03T14:02:11.123456789Z"
EPOCH_RELEASE = 1762178531 + 0.123456789
DROPS_LOST = 2 + 8 + 18 + 1  # the last drop alert has no n_drops: one loss at least
ESCAPE = ("Detect release_agent File Container Escapes", ("T1611",), "critical")
PTRACE = ("PTRACE attached to process", ("T1055.008",), "warning")
WRITE_ETC = ("Write below etc", ("T1098",), "error")


def _lines(name: str) -> list[str]:
    """The file's lines as FileTail/LineReader hand them over (invalid UTF-8 replaced)."""
    text = (DATA / name).read_bytes().decode("utf-8", errors="replace")
    return text.split("\n")[:-1]


def _records(name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in _lines(name)]


def _feed(name: str) -> FalcoSensor:
    sensor = FalcoSensor(path=str(DATA / name))
    for line in _lines(name):
        sensor.on_line(line)
    return sensor


def _detections(sensor: FalcoSensor) -> list[Detection]:
    return sensor.stream._since(0)


def _triple(d: Detection) -> tuple[str, tuple[str, ...], str | None]:
    return d.rule, d.technique, d.severity


def _run(container_id: str = RUN_CID) -> Run:
    return Run(run_id="st000000000000", scenario="s", context="namespace", node="n",
               started_at=0, ended_at=1, executed=True, container_id=container_id)


@pytest.fixture(scope="module")
def alerts() -> list[Detection]:
    sensor = _feed("alerts.jsonl")
    assert (sensor.stream.lost, sensor.stream.malformed) == (0, 0)
    return _detections(sensor)


# ================================================================ alerts.jsonl
def test_on_line_alerts_yield_rule_technique_and_lowercase_priority(
    alerts: list[Detection],
) -> None:
    assert [_triple(d) for d in alerts] == [
        ESCAPE, PTRACE, WRITE_ETC, WRITE_ETC, PTRACE, ("Write below etc", (), "error"),
        ("Attach/Exec Pod", (), "notice"),
    ]


def test_normalise_release_agent_maps_process_container_pod_and_time(
    alerts: list[Detection],
) -> None:
    d = alerts[0]
    assert (d.sensor, d.node, d.container_id) == ("falco", "k8s-node-1", SHORT)
    assert (d.pid, d.ppid, d.comm, d.ancestors) == (48211, 48190, "sh", ())
    assert d.observed_at == pytest.approx(EPOCH_RELEASE, abs=1e-6)
    assert d.names[0].startswith("14:02:11.123456789: Critical Detect an attempt to exploit")
    assert d.names[1:] == ("sh -c echo /cmd > /tmp/cgrp/release_agent", "/tmp/cgrp/release_agent",
                           "k8s_attacker_escape-7d9f6c_default_1c2d_0", "escape-7d9f6c")
    assert (d.value("pod"), d.value("namespace"), d.value("source")) == (
        "escape-7d9f6c", "default", "syscall")
    assert d.value("tactics") == ("mitre_privilege_escalation",)
    assert d.value("tags") == ("maturity_stable", "container", "process",
                               "mitre_privilege_escalation", "T1611")
    assert d.value("uuid") is None
    assert json.loads(d.raw)["output_fields"]["thread.cap_effective"] == "CAP_SYS_ADMIN"


def test_normalise_falco_field_names_are_readable_as_dotted_paths(
    alerts: list[Detection],
) -> None:
    d = alerts[0]
    assert (d.value("fd.name"), d.value("k8s.pod.name"), d.value("proc.pname")) == (
        "/tmp/cgrp/release_agent", "escape-7d9f6c", "runc:[2:INIT]")
    assert (d.value("container.id"), d.value("user.loginuid"), d.value("evt.type")) == (
        SHORT, -1, "openat")
    assert alerts[2].value("proc.aname[2]") == "containerd-shim"
    assert alerts[2].value("proc.aname[4]") is None  # recorded as JSON null


def test_normalise_host_alert_has_no_container_and_no_host_name(alerts: list[Detection]) -> None:
    d = alerts[1]
    assert (d.container_id, d.pid, d.ppid, d.comm) == (None, 51002, 50998, "python3")
    assert d.value("container.id") == "host"
    assert "host" not in d.names
    assert d.names[1:] == ("python3 -c import ctypes; ptrace(16, 1)",)
    assert (d.value("pod"), d.value("namespace")) == (None, None)


def test_normalise_without_output_and_tags_properties(alerts: list[Detection]) -> None:
    d = alerts[5]
    assert (d.technique, d.value("tags"), d.value("tactics")) == ((), (), ())
    assert d.names == ("touch /etc/hosts", "/etc/hosts", "k8s_debugger_tools-5b8c_kube-system_aa11_0")
    assert d.container_id == OTHER_SHORT


def test_normalise_k8s_audit_alert_has_source_and_no_process(alerts: list[Detection]) -> None:
    d = alerts[6]
    assert (d.value("source"), d.pid, d.container_id, d.comm) == ("k8s_audit", None, None, None)
    assert d.value("ka.target.namespace") == "default"
    assert d.observed_at == pytest.approx(json.loads(d.raw)["output_fields"]["evt.time"] / 1e9, abs=1e-6)


def test_normalise_time_and_evt_time_agree_on_every_alert(alerts: list[Detection]) -> None:
    for d in alerts:
        assert d.observed_at == pytest.approx(json.loads(d.raw)["output_fields"]["evt.time"] / 1e9, abs=1e-6)


def test_correlate_short_falco_container_id_matches_the_runs_full_id(
    alerts: list[Detection],
) -> None:
    assert [correlate(_run(), d) for d in alerts] == [
        "container_id", None, "container_id", None, None, None, None]
    assert correlate(_run("containerd://" + RUN_CID), alerts[0]) == "container_id"
    assert correlate(_run(OTHER_SHORT + RUN_CID[12:]), alerts[4]) == "container_id"


def test_normalise_is_pure_and_repeatable() -> None:
    sensor = FalcoSensor(path="/dev/null", node="configured")
    raw = _records("alerts.jsonl")[0]
    before = json.dumps(raw, sort_keys=True)
    a, b = sensor.normalise(raw), sensor.normalise(raw)
    assert a is not None
    assert b is not None
    assert replace(a, received_at=0) == replace(b, received_at=0)  # received_at: the clock
    assert a.fields == b.fields
    assert json.dumps(raw, sort_keys=True) == before
    assert sensor.stream.subscribe().index == 0  # nothing pushed


# ================================================================ normalise edges
def _alert(**kw: Any) -> dict[str, Any]:
    raw = {"rule": "Write below etc", "priority": "Error", "output": "x", "source": "syscall",
           "tags": ["T1098"], "time": "2025-11-03T14:02:13.900000001Z", "hostname": "h",
           "output_fields": {"container.id": SHORT, "proc.pid": 7}}
    raw.update(kw)
    return raw


def _normalise(raw: Any, **kw: Any) -> Detection:
    d = FalcoSensor(path="/dev/null", **kw).normalise(raw)
    assert d is not None
    return d


@pytest.mark.parametrize(
    ("tags", "technique", "tactics"),
    [
        pytest.param(["T1611", "t1055.008", "mitre_privilege_escalation", "container"],
                     ("T1611", "T1055.008"), ("mitre_privilege_escalation",), id="mixed"),
        pytest.param(["mitre_persistence", "mitre_T1098"], (), ("mitre_persistence", "mitre_T1098"),
                     id="tactics-only"),
        pytest.param(["T16110", "T161", "T1055.08", "XT1611", 1611, None], (), (), id="not-ids"),
        pytest.param(None, (), (), id="null"),
        pytest.param([], (), (), id="empty"),
    ],
)
def test_normalise_techniques_and_tactics_from_tags(
    tags: Any, technique: tuple[str, ...], tactics: tuple[str, ...],
) -> None:
    d = _normalise(_alert(tags=tags))
    assert (d.technique, d.value("tactics")) == (technique, tactics)


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        pytest.param("2020-10-23T10:34:17.618305443Z", 1603449257.618305443, id="falco-ns"),
        pytest.param("2020-10-23T10:34:17.6183Z", 1603449257.6183, id="go-trimmed"),
        pytest.param("2020-10-23T10:34:17Z", 1603449257.0, id="no-fraction"),
        pytest.param("2020-10-23T12:34:17.5+02:00", 1603449257.5, id="offset"),
        pytest.param("2020-10-23T05:34:17.5-05:00", 1603449257.5, id="negative-offset"),
        pytest.param("2020-10-23T10:34:17.618305443123Z", 1603449257.618305443, id="more-than-ns"),
    ],
)
def test_parse_time_rfc3339(text: str, epoch: float) -> None:
    assert parse_time(text) == pytest.approx(epoch, abs=1e-6)


@pytest.mark.parametrize("text", ["", "yesterday", "2020-10-23", "10:34:17.6Z", "2020-10-23T1:2:3Z"])
def test_parse_time_rejects_non_timestamps(text: str) -> None:
    assert parse_time(text) is None


def test_normalise_without_time_uses_evt_time_then_zero() -> None:
    of = {"evt.time": 1603449257618305443}
    assert _normalise(_alert(time=None, output_fields=of)).observed_at == pytest.approx(
        1603449257.618305443, abs=1e-6)
    assert _normalise(_alert(time="garbage", output_fields={"evt.time": "1603449257618305443"})
                      ).observed_at == pytest.approx(1603449257.618305443, abs=1e-6)
    assert _normalise(_alert(time=None, output_fields=None)).observed_at == 0.0


def test_normalise_missing_and_null_parts_leave_fields_empty() -> None:
    d = _normalise({"rule": "Some rule"}, node="configured-node")
    assert (d.technique, d.severity, d.node, d.container_id, d.pid, d.ppid, d.comm, d.names) == (
        (), None, "configured-node", None, None, None, None, ())
    assert d.fields == {"source": None, "tags": (), "tactics": ()}


def test_normalise_ancestors_full_id_and_k8smeta_fields() -> None:
    of = {"container.id": SHORT, "container.full_id": RUN_CID, "proc.pid": "901",
          "proc.apid[1]": 900, "proc.apid[2]": 899, "proc.apid[3]": 1, "proc.apid[4]": 0,
          "k8smeta.pod.name": "p", "k8smeta.ns.name": "ns", "proc.name": "<NA>",
          "container.image": "nginx:1", "container.image.repository": "nginx"}
    d = _normalise(_alert(output_fields=of))
    assert (d.container_id, d.pid, d.ppid, d.ancestors, d.comm) == (RUN_CID, 901, 900, (899, 1), None)
    assert (d.value("pod"), d.value("namespace")) == ("p", "ns")
    assert (d.value("container.image"), d.value("container.image.repository")) == (
        "nginx:1", "nginx")  # a name that is also a prefix of another: both readable


@pytest.mark.parametrize(
    "raw",
    [
        {"rule": "Falco internal: syscall event drop", "output_fields": {"n_drops": "3"}},
        {"rule": "Falco internal: metrics snapshot", "output_fields": {}},
        {"rule": "Test rule", "source": "internal", "output": "This is a test from falcosidekick"},
        ["not", "a", "record"],
        None,
    ],
)
def test_normalise_returns_none_for_non_detections(raw: Any) -> None:
    assert FalcoSensor(path="/dev/null").normalise(raw) is None


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({"output": "no rule"}, KeyError, id="no-rule"),
        pytest.param({"rule": None}, ValueError, id="null-rule"),
        pytest.param({"rule": ""}, ValueError, id="empty-rule"),
        pytest.param({"rule": "r", "output_fields": "x=1"}, TypeError, id="fields-not-object"),
        pytest.param({"rule": "r", "tags": "T1611"}, TypeError, id="tags-not-array"),
    ],
)
def test_normalise_raises_for_records_that_are_not_alerts(
    raw: dict[str, Any], error: type[Exception],
) -> None:
    with pytest.raises(error):
        FalcoSensor(path="/dev/null").normalise(raw)


# ================================================================ sidekick.jsonl
@pytest.fixture(scope="module")
def sidekick() -> FalcoSensor:
    return _feed("sidekick.jsonl")


def test_on_line_sidekick_payloads_keep_uuid_customfields_and_tags(sidekick: FalcoSensor) -> None:
    ds = _detections(sidekick)
    assert [_triple(d) for d in ds] == [ESCAPE, PTRACE, WRITE_ETC, PTRACE]  # "Test rule" is not
    assert [d.value("uuid") for d in ds] == [
        "f3b2a0c4-8d1e-4f5a-9b6c-2d7e8f901a2b", "0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f",
        "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170", "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"]
    assert {(d.value("cluster"), d.value("environment")) for d in ds} == {("lab-1", "ci")}
    assert ds[0].value("tags") == ("T1611", "container", "maturity_stable",
                                   "mitre_privilege_escalation", "process", "shadowtest")
    assert (sidekick.stream.lost, sidekick.stream.malformed) == (0, 0)


def test_on_line_sidekick_maps_like_falco(sidekick: FalcoSensor, alerts: list[Detection]) -> None:
    for sk, falco in zip(_detections(sidekick), [alerts[0], alerts[1], alerts[2], alerts[4]],
                         strict=True):
        assert (sk.rule, sk.technique, sk.severity, sk.node, sk.container_id, sk.pid, sk.ppid,
                sk.comm, sk.names, sk.observed_at) == (
            falco.rule, falco.technique, falco.severity, falco.node, falco.container_id,
            falco.pid, falco.ppid, falco.comm, falco.names, falco.observed_at)
    assert correlate(_run(), _detections(sidekick)[0]) == "container_id"


# ================================================================ drops.jsonl
def test_on_line_drop_alerts_count_lost_and_are_not_detections() -> None:
    sensor = _feed("drops.jsonl")
    assert [_triple(d) for d in _detections(sensor)] == [WRITE_ETC]
    assert (sensor.stream.lost, sensor.stream.malformed) == (DROPS_LOST, 0)
    assert sensor.health().up is False  # never started; the counts are still reported
    sub_lost = sensor.stream.subscribe()
    sensor.on_line(_lines("drops.jsonl")[1])
    assert sub_lost.lost() == 8


@pytest.mark.parametrize(
    ("output_fields", "lost"),
    [({"n_drops": 5}, 5), ({"n_drops": "0"}, 1), ({"n_drops": "many"}, 1), ({}, 1), (None, 1)],
)
def test_on_record_drop_without_usable_count_is_still_a_loss(
    output_fields: Any, lost: int,
) -> None:
    sensor = FalcoSensor(path="/dev/null")
    sensor.on_record({"rule": "Falco internal: syscall event drop", "output_fields": output_fields})
    assert (sensor.stream.lost, _detections(sensor)) == (lost, [])


# ================================================================ malformed.jsonl
def test_on_line_malformed_lines_are_counted_never_raised() -> None:
    sensor = _feed("malformed.jsonl")
    ds = _detections(sensor)
    untagged = (PTRACE[0], (), PTRACE[2])
    assert [_triple(d) for d in ds] == [WRITE_ETC, PTRACE, WRITE_ETC, untagged, untagged]
    assert sensor.stream.malformed == 7
    lines = _lines("malformed.jsonl")
    assert sensor.stream.malformed_samples == [lines[i][:200] for i in (1, 2, 3, 9, 10, 11, 12)]
    assert ds[1].value("proc.cmdline") == "python3 -c \ufffd"  # invalid byte inside a string
    assert (ds[2].pid, ds[2].container_id, ds[2].technique) == (None, None, ("T1098",))
    assert (ds[3].technique, ds[3].pid) == ((), 51002)
    assert (ds[4].technique, ds[4].pid, ds[4].names[1:]) == ((), None, ())


# ================================================================ configuration
@pytest.mark.parametrize(
    "kw",
    [{}, {"path": "a", "command": "b"}, {"path": "a", "listen": "127.0.0.1:0"},
     {"command": "b", "listen": "127.0.0.1:0"}],
)
def test_falco_sensor_needs_exactly_one_transport(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="exactly one of path"):
        FalcoSensor(**kw)


@pytest.mark.parametrize("listen", ["2801", ":2801", "127.0.0.1", "127.0.0.1:http",
                                    "127.0.0.1:70000"])
def test_falco_sensor_rejects_a_bad_listen_address(listen: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        FalcoSensor(listen=listen)


def test_build_sensor_accepts_falco_options() -> None:
    from harness.sensors.base import build_sensor

    sensor = build_sensor("edge", {"type": "falco", "listen": "127.0.0.1:0", "delay": 2})
    assert isinstance(sensor, FalcoSensor)
    assert (sensor.name, sensor.delay, sensor.listen, sensor.port, sensor.url) == (
        "edge", 2.0, "127.0.0.1:0", None, None)


# ================================================================ file and command transports
def test_path_transport_tails_the_alerts_file(tmp_path: Path) -> None:
    target = tmp_path / "events.json"
    target.write_bytes((DATA / "alerts.jsonl").read_bytes())
    sensor = FalcoSensor(path=str(target), from_start=True)
    sub = sensor.stream.subscribe()
    sensor.start()
    try:
        seen, _ = sub.wait(lambda ds: len(ds) >= 7, None, time.time() + 5)
        with target.open("ab") as fh:
            fh.write((DATA / "drops.jsonl").read_bytes())
        seen, _ = sub.wait(lambda ds: len(ds) >= 8, None, time.time() + 5)
        assert sensor.health().up
    finally:
        sensor.stop()
    assert [d.rule for d in seen][-1] == "Write below etc"
    assert (len(seen), sensor.stream.lost) == (8, DROPS_LOST)


def test_command_transport_reads_stdout_until_it_ends() -> None:
    sensor = FalcoSensor(command=["cat", str(DATA / "malformed.jsonl")])
    sub = sensor.stream.subscribe()
    sensor.start()
    try:
        seen, _ = sub.wait(lambda ds: False, None, time.time() + 5)
    finally:
        sensor.stop()
    assert sensor.stream.closed == "falco: command output ended"
    assert (len(seen), sensor.stream.malformed) == (5, 7)


# ================================================================ HTTP receiver
@pytest.fixture
def receiver() -> Iterator[FalcoSensor]:
    sensor = FalcoSensor(listen="127.0.0.1:0")
    sensor.start()
    try:
        yield sensor
    finally:
        sensor.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def _url(sensor: FalcoSensor) -> str:
    assert sensor.url is not None
    return sensor.url


def _post_lines(client: httpx.Client, url: str, name: str, method: str = "POST") -> list[int]:
    headers = {"Content-Type": "application/json"}  # what Falco's http_output sends
    return [client.request(method, url, content=line.encode(), headers=headers).status_code
            for line in _lines(name)]


def test_receiver_start_binds_a_free_loopback_port_and_reports_health(
    receiver: FalcoSensor,
) -> None:
    assert receiver.port is not None
    assert receiver.port > 0
    assert receiver.url == f"http://127.0.0.1:{receiver.port}/"
    assert receiver.health().up


def test_receiver_healthz_answers_like_falcosidekick(
    receiver: FalcoSensor, client: httpx.Client,
) -> None:
    r = client.get(_url(receiver) + "healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_receiver_falco_http_output_alerts_are_detections(
    receiver: FalcoSensor, client: httpx.Client,
) -> None:
    sub = receiver.stream.subscribe()
    assert _post_lines(client, _url(receiver) + "falco", "alerts.jsonl") == [200] * 7
    seen, _ = sub.wait(lambda ds: len(ds) >= 7, None, time.time() + 5)
    assert [(d.rule, d.container_id, d.pid) for d in seen] == [
        (d.rule, d.container_id, d.pid) for d in _detections(_feed("alerts.jsonl"))]
    assert correlate(_run(), seen[0]) == "container_id"
    assert (receiver.stream.lost, receiver.stream.malformed) == (0, 0)


def test_receiver_sidekick_webhook_post_and_put(
    receiver: FalcoSensor, client: httpx.Client,
) -> None:
    sub = receiver.stream.subscribe()
    assert _post_lines(client, _url(receiver), "sidekick.jsonl") == [200] * 5
    assert _post_lines(client, _url(receiver), "sidekick.jsonl", method="PUT") == [200] * 5
    seen, _ = sub.wait(lambda ds: len(ds) >= 8, None, time.time() + 5)
    assert len(seen) == 8  # "Test rule" twice is not a detection
    assert seen[0].value("uuid") == seen[4].value("uuid") == "f3b2a0c4-8d1e-4f5a-9b6c-2d7e8f901a2b"


def test_receiver_drop_alerts_count_lost(receiver: FalcoSensor, client: httpx.Client) -> None:
    sub = receiver.stream.subscribe()
    assert _post_lines(client, _url(receiver), "drops.jsonl") == [200] * 6
    seen, _ = sub.wait(lambda ds: len(ds) >= 1, None, time.time() + 5)
    assert [d.rule for d in seen] == ["Write below etc"]
    assert (sub.lost(), sub.malformed()) == (DROPS_LOST, 0)


def test_receiver_json_array_and_ndjson_bodies_carry_several_alerts(
    receiver: FalcoSensor, client: httpx.Client,
) -> None:
    sub = receiver.stream.subscribe()
    records = _records("alerts.jsonl")
    assert client.post(_url(receiver), json=records).status_code == 200
    ndjson = (DATA / "sidekick.jsonl").read_bytes()
    assert client.post(_url(receiver), content=ndjson).status_code == 200
    seen, _ = sub.wait(lambda ds: len(ds) >= 11, None, time.time() + 5)
    assert len(seen) == 11
    assert seen[7].value("uuid") == "f3b2a0c4-8d1e-4f5a-9b6c-2d7e8f901a2b"


@pytest.mark.parametrize(
    ("body", "accepted", "malformed"),
    [
        pytest.param(b"junk", 0, 1, id="junk"),
        pytest.param(b"", 0, 1, id="empty"),
        pytest.param(b'{"rule":"Write below etc","output_fi', 0, 1, id="truncated"),
        pytest.param(b'{"rule": \xff\xfe}', 0, 1, id="invalid-utf8"),
        pytest.param(b"null", 0, 1, id="null"),
        pytest.param(b'{"output": "no rule"}', 0, 1, id="no-rule"),
        pytest.param(b'[{"rule": "Write below etc"}, 7, {"x": 1}]', 1, 2, id="array-with-junk"),
        pytest.param(b'{"rule": "Write below etc"}\nnot json\n{"rule": "r"}\n', 2, 1,
                     id="ndjson-with-junk"),
    ],
)
def test_receiver_undecodable_body_is_400_and_counted_malformed(
    receiver: FalcoSensor, client: httpx.Client, body: bytes, accepted: int, malformed: int,
) -> None:
    sub = receiver.stream.subscribe()
    r = client.post(_url(receiver), content=body, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (400, {"accepted": accepted, "malformed": malformed})
    seen, _ = sub.wait(lambda ds: len(ds) >= accepted, None, time.time() + 5)
    assert (len(seen), sub.malformed()) == (accepted, malformed)  # accepted ones are kept


def test_receiver_invalid_utf8_inside_a_string_is_replaced_not_rejected(
    receiver: FalcoSensor, client: httpx.Client,
) -> None:
    sub = receiver.stream.subscribe()
    body = b'{"rule": "Write below etc", "output_fields": {"proc.cmdline": "touch \xff"}}'
    assert client.post(_url(receiver), content=body).status_code == 200
    seen, _ = sub.wait(lambda ds: len(ds) >= 1, None, time.time() + 5)
    assert seen[0].value("proc.cmdline") == "touch \ufffd"


def test_receiver_takes_bodies_up_to_16_mb_and_refuses_larger(
    receiver: FalcoSensor, client: httpx.Client,
) -> None:
    sub = receiver.stream.subscribe()
    big = {"rule": "Write below etc", "output": "x" * (4 * 1024 * 1024 - 100)}
    body = json.dumps([big] * 4).encode()
    assert len(body) < 16 * 1024 * 1024
    assert client.post(_url(receiver), content=body).status_code == 200
    seen, _ = sub.wait(lambda ds: len(ds) >= 4, None, time.time() + 5)
    assert len(seen) == 4
    too_big = b"[" + b" " * (16 * 1024 * 1024) + b"]"
    assert client.post(_url(receiver), content=too_big).status_code == 413
    assert sub.malformed() == 1
    assert client.get(_url(receiver) + "healthz").status_code == 200


def test_receiver_burst_over_keepalive_connections_loses_nothing(receiver: FalcoSensor) -> None:
    url, threads_n, per_thread = _url(receiver), 4, 500
    template = _records("alerts.jsonl")[0]
    statuses: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def send(worker: int) -> None:
        got: list[int] = []
        try:
            with httpx.Client(timeout=10) as c:
                for i in range(per_thread):
                    alert = {**template, "output_fields": {
                        **template["output_fields"], "proc.pid": worker * per_thread + i}}
                    got.append(c.post(url, json=alert).status_code)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        with lock:
            statuses.extend(got)

    sub = receiver.stream.subscribe()
    workers = [threading.Thread(target=send, args=(w,)) for w in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    seen, _ = sub.wait(lambda ds: len(ds) >= threads_n * per_thread, None, time.time() + 5)
    assert errors == []
    assert statuses == [200] * (threads_n * per_thread)
    assert sorted(d.pid or 0 for d in seen) == list(range(threads_n * per_thread))
    assert (sub.lost(), sub.malformed()) == (0, 0)


def test_receiver_stop_releases_the_port() -> None:
    sensor = FalcoSensor(listen="127.0.0.1:0")
    sensor.start()
    port = sensor.port
    with httpx.Client() as c:
        assert c.post(_url(sensor), content=_lines("alerts.jsonl")[0]).status_code == 200
        sensor.stop()
        assert not sensor.health().up
        with pytest.raises(httpx.ConnectError):
            c.get(f"http://127.0.0.1:{port}/healthz")
    again = FalcoSensor(listen=f"127.0.0.1:{port}")
    again.start()
    try:
        assert again.port == port
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        again.stop()
    sensor.stop()  # a second stop is a no-op


def test_receiver_port_in_use_is_a_sensor_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        sensor = FalcoSensor(listen=f"127.0.0.1:{busy.getsockname()[1]}")
        with pytest.raises(SensorError, match="cannot listen"):
            sensor.start()
    assert not sensor.health().up


def test_receiver_health_before_start_is_down() -> None:
    health = FalcoSensor(listen="127.0.0.1:0").health()
    assert (health.up, health.reason) == (False, "falco: HTTP receiver on 127.0.0.1:0 is not running")


# ---------------------------------------------------------------- msgspec versions
class _Msgspec018Decoder:
    """msgspec <= 0.18's behaviour: invalid UTF-8 in bytes raises UnicodeDecodeError (0.19+
    raises msgspec.DecodeError); everything else as the installed decoder."""

    def __init__(self) -> None:
        import msgspec

        self._real = msgspec.json.Decoder()

    def decode(self, data: bytes | str) -> Any:
        if isinstance(data, bytes):
            data.decode("utf-8")  # raises UnicodeDecodeError, as 0.18 did
        return self._real.decode(data)


@pytest.mark.parametrize("old", [False, True], ids=["msgspec-installed", "msgspec-0.18"])
def test_receiver_invalid_utf8_is_replaced_whatever_msgspec_raises(
    old: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from harness.sensors import jsonlines as _jsonlines

    if old:
        monkeypatch.setattr(_jsonlines, "_decoder", _Msgspec018Decoder())
    sensor = FalcoSensor(listen="127.0.0.1:0")
    body = b'{"rule": "Write below etc", "output_fields": {"proc.cmdline": "touch /etc/\xff\xfe"}}'
    assert sensor.on_body(body) == (1, 0)
    assert sensor.on_body(body + b"\n" + body + b"\n") == (2, 0)  # the ndjson path too
    assert [d.value("proc.cmdline") for d in _detections(sensor)] == ["touch /etc/\ufffd\ufffd"] * 3
    assert sensor.on_body(b'{"rule": "Write below etc", \xff}') == (0, 1)  # outside a string


@pytest.mark.parametrize("old", [False, True], ids=["msgspec-installed", "msgspec-0.18"])
def test_on_line_lone_surrogate_is_replaced_not_malformed(
    old: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from harness.sensors import jsonlines as _jsonlines

    if old:
        monkeypatch.setattr(_jsonlines, "_decoder", _Msgspec018Decoder())
    sensor = FalcoSensor(path="/nonexistent/alerts.json")
    # a line read with errors="surrogateescape" keeps an invalid byte as a lone surrogate
    line = b'{"rule": "Write below etc", "output_fields": {"proc.cmdline": "touch \xff"}}'
    sensor.on_line(line.decode("utf-8", "surrogateescape"))
    assert (sensor.stream.malformed, [d.value("proc.cmdline") for d in _detections(sensor)]) == (
        0, ["touch \ufffd"])


# ---------------------------------------------------------------- sign of life
def _metrics_snapshot() -> str:
    """The recorded 'Falco internal: metrics snapshot' alert (metrics.output_rule: true)."""
    (line,) = [x for x in _lines("drops.jsonl") if "metrics snapshot" in x]
    return line


def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_receiver_silence_without_any_post_says_how_to_make_falco_visible(
    receiver: FalcoSensor,
) -> None:
    since = time.time()
    why = receiver.silence(since, since + 3.0)
    assert why is not None
    assert why.startswith(f"falco: no POST to {receiver.url} during the window (none since the "
                          "receiver started")
    assert "metrics.output_rule: true" in why
    assert "pidfile" in why


def test_receiver_metrics_snapshot_post_is_a_heartbeat_not_a_detection(
    receiver: FalcoSensor, client: httpx.Client,
) -> None:
    since = time.time()
    assert client.post(_url(receiver), content=_metrics_snapshot()).status_code == 200
    assert receiver.silence(since, time.time()) is None
    assert (_detections(receiver), receiver.stream.lost) == ([], 0)
    later = time.time() + 5.0  # the next window: that POST is 5 s before it
    why = receiver.silence(later, later + 1.0)
    assert why is not None
    assert "(last one 5.0 s before it)" in why


def test_path_metrics_snapshot_line_is_a_heartbeat(tmp_path: Path) -> None:
    target = tmp_path / "events.json"
    target.touch()
    sensor = FalcoSensor(path=str(target))
    sensor.start()
    try:
        since = time.time()
        assert sensor.silence(since, since) is not None  # quiet so far
        with target.open("a") as fh:
            fh.write(_metrics_snapshot() + "\n")
        _until(lambda: sensor.silence(since, time.time()) is None)
    finally:
        sensor.stop()
    assert _detections(sensor) == []


def test_receiver_with_a_live_falco_pid_needs_no_post() -> None:
    import os

    sensor = FalcoSensor(listen="127.0.0.1:0", pid=os.getpid())
    sensor.start()
    try:
        assert sensor.silence(time.time(), time.time()) is None
        assert sensor.health().up
    finally:
        sensor.stop()


def test_command_transport_exited_command_is_silent_from_its_exit() -> None:
    sensor = FalcoSensor(command=["sh", "-c", "echo 'falco: probe failed' >&2; exit 3"])
    since = time.time()
    sensor.start()
    try:
        _until(lambda: sensor._proc is not None and sensor._proc.poll() is not None
               and sensor.stream.closed is not None)
        why = sensor.silence(since, time.time())
        health = sensor.health()
    finally:
        sensor.stop()
    assert why is not None
    assert why.startswith("falco: command 'sh' exited with code 3, ")
    assert "s after the window opened" in why
    assert why.endswith(": falco: probe failed")
    assert health.up is False


def test_command_transport_running_command_is_alive_without_output() -> None:
    sensor = FalcoSensor(command=["sleep", "30"])
    sensor.start()
    try:
        assert sensor.silence(time.time(), time.time() + 1) is None
    finally:
        sensor.stop()


def test_replay_of_falco_alerts_is_silent_outside_the_recorded_span() -> None:
    from harness.sensors.replay import ReplaySensor

    sensor = ReplaySensor(path=str(DATA / "alerts.jsonl"), format="falco")
    sensor.start()
    times = [d.observed_at for d in sensor.stream.snapshot() if d.observed_at]
    first, last = min(times), max(times)
    assert sensor.silence(first, last) is None  # a window inside the recording
    after = sensor.silence(last + 10.0, last + 13.0)
    before = sensor.silence(first - 13.0, first - 10.0)
    assert after is not None
    assert "ends 10.0 s before the window" in after
    assert before is not None
    assert "starts 10.0 s after the window" in before


# ================================================================ ancestry.jsonl
# Real-shaped Falco 0.44 alerts of stable rules (their own output text and fields) with and
# without the README's append_output extra_fields (proc.pid, proc.ppid, proc.apid[2..7],
# proc.vpid, proc.sid): a ptrace two execs below the stage, the same alert without the extra
# fields, a namespaced read of /etc/shadow, and a sync marker alert.
def _ancestry() -> list[dict[str, Any]]:
    return _records("ancestry.jsonl")


def _tree_run(*pids: int) -> Run:
    return Run(run_id="st000000000001", scenario="s", context="host", node="n",
               started_at=0, ended_at=1, executed=True, pids=frozenset(pids))


def test_normalise_apid_chain_from_append_output_gives_every_ancestor() -> None:
    det = FalcoSensor(path="x").normalise(_ancestry()[0])
    assert det is not None
    assert (det.pid, det.ppid, det.ancestors) == (61212, 61210, (61208, 61190, 60876, 60001, 1))


def test_normalise_apid_chain_correlates_a_descendant_five_levels_below_the_run() -> None:
    det = FalcoSensor(path="x").normalise(_ancestry()[0])
    assert det is not None
    assert correlate(_tree_run(61190), det) == "process_tree"


def test_normalise_apid_chain_has_no_hint() -> None:
    det = FalcoSensor(path="x").normalise(_ancestry()[0])
    assert det is not None
    assert "correlation_hint" not in det.fields


def test_normalise_stable_output_alone_has_no_pid_and_says_what_to_append() -> None:
    det = FalcoSensor(path="x").normalise(_ancestry()[1])
    assert det is not None
    assert (det.pid, det.ppid, det.ancestors) == (None, None, ())
    assert "append_output" in det.fields["correlation_hint"]
    assert correlate(_tree_run(61190), det) is None


def test_normalise_pid_without_apid_says_to_append_the_ancestors() -> None:
    raw = _ancestry()[0]
    raw["output_fields"] = {k: v for k, v in raw["output_fields"].items()
                            if k in ("proc.pid", "proc.ppid")}
    det = FalcoSensor(path="x").normalise(raw)
    assert det is not None
    assert "proc.apid[2]..proc.apid[7]" in det.fields["correlation_hint"]


def test_normalise_namespaced_process_keeps_apid_but_not_its_session_id() -> None:
    det = FalcoSensor(path="x").normalise(_ancestry()[2])
    assert det is not None
    assert det.ancestors == (61299, 61190, 60876, 60001, 1)  # proc.sid 3 is the ns view


def test_normalise_host_session_id_joins_the_chain_when_apid_is_short() -> None:
    raw = _ancestry()[0]
    of = raw["output_fields"]
    for n in range(2, 8):
        del of[f"proc.apid[{n}]"]
    det = FalcoSensor(path="x").normalise(raw)
    assert det is not None
    assert det.ancestors == (61208,)


def test_normalise_apid0_stands_in_for_a_missing_proc_pid() -> None:
    raw = _ancestry()[0]
    of = raw["output_fields"]
    of["proc.apid[0]"], of["proc.apid[1]"] = of.pop("proc.pid"), of.pop("proc.ppid")
    det = FalcoSensor(path="x").normalise(raw)
    assert det is not None
    assert (det.pid, det.ppid) == (61212, 61210)


# ================================================================ loss (drops, metrics)
def _now(line: str, offset: float = 0.0) -> str:
    """A recorded internal alert as a live Falco writes it now (its own ``time``)."""
    import datetime as dt

    raw = json.loads(line)
    stamp = dt.datetime.fromtimestamp(time.time() + offset, dt.UTC)
    raw["time"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(raw)


def _drop_line() -> str:
    return _now(_lines("drops.jsonl")[0])


def _metrics() -> list[str]:
    return [_now(x, 0.01 * (i + 1)) for i, x in enumerate(_lines("metrics.jsonl"))]


def test_drop_alert_makes_a_later_window_sensor_down_until_proved() -> None:
    sensor = FalcoSensor(path="x")
    sensor.on_line(_drop_line())
    later = time.time() + 5.0  # no second drop alert could have come (one per 30 s)
    why = sensor.loss.silence("falco", later, later + 3.0)
    assert why is not None
    assert "at most one drop alert per 30 s" in why


def test_drop_alert_unproven_window_reason_says_how_to_prove_it() -> None:
    sensor = FalcoSensor(path="x")
    sensor.on_line(_drop_line())
    why = sensor.loss.silence("falco", time.time(), time.time() + 1.0)
    assert why is not None
    assert "kernel_event_counters_enabled" in why


def test_drop_alert_window_before_it_is_not_touched() -> None:
    sensor = FalcoSensor(path="x")
    before = time.time() - 10.0
    sensor.on_line(_drop_line())
    assert sensor.loss.silence("falco", before, before + 3.0) is None


def test_drop_alert_closed_by_two_snapshots_with_unchanged_counters() -> None:
    sensor = FalcoSensor(path="x")
    sensor.on_line(_drop_line())
    first, second = _metrics()[:2]  # scap.n_drops 40, 40
    sensor.on_line(first)
    sensor.on_line(second)
    later = time.time() + 1.0
    assert sensor.loss.silence("falco", later, later + 3.0) is None


def test_drop_alert_not_closed_by_one_snapshot() -> None:
    sensor = FalcoSensor(path="x")
    sensor.on_line(_drop_line())
    sensor.on_line(_metrics()[0])
    assert sensor.loss.silence("falco", time.time(), time.time() + 1.0) is not None


def test_drop_alert_not_closed_by_snapshots_without_kernel_counters() -> None:
    sensor = FalcoSensor(path="x")
    sensor.on_line(_drop_line())
    for line in _metrics()[:2]:
        raw = json.loads(line)
        raw["output_fields"] = {k: v for k, v in raw["output_fields"].items()
                                if not k.startswith("scap.")}
        sensor.on_line(json.dumps(raw))
    assert sensor.loss.silence("falco", time.time(), time.time() + 1.0) is not None


def test_drop_alert_window_overlapping_its_stretch_stays_down_after_the_proof() -> None:
    sensor = FalcoSensor(path="x")
    since = time.time()
    sensor.on_line(_drop_line())
    for line in _metrics()[:2]:
        sensor.on_line(line)
    assert sensor.silence(since - 1.0, time.time()) is not None


def test_drop_alert_stretch_ends_when_the_next_alert_could_have_come() -> None:
    sensor = FalcoSensor(path="x", drop_alert_interval=0.05)
    sensor.on_line(_drop_line())
    time.sleep(0.1)
    assert sensor.loss.silence("falco", time.time(), time.time() + 1.0) is None


def test_metrics_counters_that_grew_are_lost_events_without_a_drop_alert() -> None:
    sensor = FalcoSensor(path="x")
    for line in _metrics()[1:3]:  # scap.n_drops 40 -> 57
        sensor.on_line(line)
    assert sensor.stream.lost == 17


def test_metrics_counters_unchanged_are_no_loss() -> None:
    sensor = FalcoSensor(path="x")
    for line in _metrics()[:2]:
        sensor.on_line(line)
    assert (sensor.stream.lost, sensor.loss.stretches) == (0, [])


def test_metrics_snapshots_of_a_restarted_falco_prove_nothing() -> None:
    sensor = FalcoSensor(path="x")
    first, second = (json.loads(x) for x in _metrics()[1:3])
    second["output_fields"]["falco.start_ts"] += 1
    for raw in (first, second):
        sensor.on_line(json.dumps(raw))
    assert sensor.stream.lost == 0


def test_sync_is_withheld_while_a_drop_is_unproven() -> None:
    sensor = FalcoSensor(path="x", sync=True)
    sensor.on_line(_drop_line())
    assert sensor.sync() is None


# ================================================================ sync marker
def _marker(tid: int, cpu: int) -> str:
    raw = _ancestry()[3]
    raw["output_fields"]["thread.tid"] = tid
    raw["output_fields"]["evt.cpu"] = cpu
    return json.dumps(raw)


def _answer(sensor: FalcoSensor) -> None:
    """Falco's side: one marker alert per CPU each pending marker thread called getpgid on."""
    for tid, marker in list(sensor._pending.items()):
        for cpu in sorted(marker.cpus):
            sensor.on_line(_marker(tid, cpu))


def test_sync_marker_alerts_of_every_cpu_mark_the_token() -> None:
    sensor = FalcoSensor(path="x", sync=True)
    token = sensor.sync()
    assert token is not None
    _answer(sensor)
    assert token in sensor.stream._s.markers


def test_sync_marker_of_some_cpus_only_does_not_mark() -> None:
    sensor = FalcoSensor(path="x", sync=True)
    token = sensor.sync()
    ((tid, marker),) = sensor._pending.items()
    if len(marker.cpus) < 2:
        pytest.skip("one CPU: every marker is the last one")
    sensor.on_line(_marker(tid, min(marker.cpus)))
    assert token not in sensor.stream._s.markers


def test_sync_marker_of_another_thread_is_ignored() -> None:
    sensor = FalcoSensor(path="x", sync=True)
    token = sensor.sync()
    for cpu in range(len(os.sched_getaffinity(0))):
        sensor.on_line(_marker(threading.get_native_id(), cpu))  # e.g. bpftrace's markers
    assert token not in sensor.stream._s.markers


def test_sync_marker_alert_is_not_a_detection() -> None:
    sensor = FalcoSensor(path="x", sync=True)
    sensor.sync()
    _answer(sensor)
    assert _detections(sensor) == []


def test_sync_off_until_the_rule_answers_then_on() -> None:
    sensor = FalcoSensor(path="x")
    first = sensor.sync()  # the rule may not be loaded: wait out the window, as before
    _answer(sensor)
    assert (first, sensor.sync() is not None) == (None, True)


def test_sync_on_from_the_first_run_when_rules_files_name_the_sync_rule() -> None:
    sensor = FalcoSensor(path="x", rules_files=["/etc/falco/falco_rules.yaml",
                                                "/etc/falco/shadowtest-sync.yaml"])
    assert sensor.sync() is not None


def test_sync_false_never_fires_markers() -> None:
    sensor = FalcoSensor(path="x", sync=False)
    assert (sensor.sync(), sensor._pending) == (None, {})


def test_sync_rejects_a_non_boolean() -> None:
    with pytest.raises(ConfigError, match="sync: expected true or false"):
        FalcoSensor(path="x", sync="yes")  # type: ignore[arg-type]


def test_sync_marker_alert_without_tid_is_malformed() -> None:
    sensor = FalcoSensor(path="x", sync=True)
    raw = _ancestry()[3]
    del raw["output_fields"]["thread.tid"]
    sensor.on_line(json.dumps(raw))
    assert sensor.stream.malformed == 1


def test_sync_marker_getpgid_really_fails_with_esrch() -> None:
    """The marker's pid is above any pid_max: getpgid reaches the kernel and changes
    nothing."""
    from harness.sensors.falco import MARKER_BASE

    with pytest.raises(ProcessLookupError):
        os.getpgid(MARKER_BASE)


# ================================================================ the sync rules file
RULES = Path(__file__).resolve().parents[2] / "harness" / "rulepacks" / "falco"
UPSTREAM_RULES = Path(__file__).resolve().parents[3] / "shared" / "upstream" / "falco-rules"
#: Falco's documented syscall fields the sync rule uses (falco.org/docs/reference/rules/
#: supported-fields: evt.type, evt.cpu, thread.tid, proc.pid, proc.name)
_FIELDS = {"evt.type", "evt.cpu", "thread.tid", "proc.pid", "proc.name"}


def _sync_rules() -> list[dict[str, Any]]:
    import yaml

    docs: list[dict[str, Any]] = yaml.safe_load((RULES / "shadowtest-sync.yaml").read_text())
    return docs


def test_sync_rules_file_is_the_only_file_of_its_name() -> None:
    assert (RULES / "shadowtest-sync.yaml").is_file()


def test_sync_rule_has_falcos_required_keys_and_a_valid_priority() -> None:
    (rule,) = [d for d in _sync_rules() if "rule" in d]
    assert {"rule", "desc", "condition", "output", "priority"} <= set(rule)
    assert rule["priority"].lower() in ("emergency", "alert", "critical", "error", "warning",
                                        "notice", "informational", "info", "debug")


def test_sync_rule_name_is_the_one_the_sensor_reads() -> None:
    from harness.sensors.falco import SYNC_RULE

    assert [d["rule"] for d in _sync_rules() if "rule" in d] == [SYNC_RULE]


def test_sync_rule_output_prints_the_fields_the_sensor_needs() -> None:
    import re

    (rule,) = [d for d in _sync_rules() if "rule" in d]
    used = set(re.findall(r"%([a-z][a-z0-9_.]*)", rule["output"]))
    assert {"thread.tid", "evt.cpu"} <= used <= _FIELDS


def test_sync_rule_uses_only_keys_upstream_rules_use() -> None:
    import yaml

    upstream = yaml.safe_load((UPSTREAM_RULES / "falco_rules.yaml").read_text()) \
        if UPSTREAM_RULES.is_dir() else None
    if upstream is None:
        pytest.skip(f"{UPSTREAM_RULES} not here")
    rule_keys = {k for d in upstream if "rule" in d for k in d} | {"source"}
    top_keys = {next(iter(d)) for d in upstream}
    for doc in _sync_rules():
        assert next(iter(doc)) in top_keys
        if "rule" in doc:
            assert set(doc) <= rule_keys


def test_sync_rule_condition_names_the_marker_syscall() -> None:
    (rule,) = [d for d in _sync_rules() if "rule" in d]
    assert rule["condition"].split() == ["evt.type", "=", "getpgid"]


# ================================================================ a stopped Falco
def test_stopped_falco_with_pidfile_is_sensor_down_never_missed(tmp_path: Path) -> None:
    import subprocess

    from harness.core.health import Health
    from harness.core.verdict import Expectation, Verdict, judge

    falco = subprocess.Popen(["sleep", "30"])
    pidfile = tmp_path / "falco.pid"
    pidfile.write_text(f"{falco.pid}\n")
    alerts_file = tmp_path / "events.json"
    alerts_file.write_text("")
    sensor = FalcoSensor(path=str(alerts_file), pidfile=str(pidfile))
    sensor.start()
    try:
        since = time.time()
        falco.kill()
        falco.wait()
        why = sensor.silence(since, time.time())
        health = Health(up=why is None, reason=why or "")
        got = judge(_tree_run(os.getpid()), [], Expectation("T1055.008"), health, "falco")
    finally:
        sensor.stop()
    assert (got.verdict, "is not running" in got.reason) == (Verdict.SENSOR_DOWN, True)


def test_stopped_falco_without_pidfile_is_sensor_down_by_its_silent_file(tmp_path: Path) -> None:
    from harness.core.health import Health
    from harness.core.verdict import Expectation, Verdict, judge

    alerts_file = tmp_path / "events.json"
    alerts_file.write_text("")
    sensor = FalcoSensor(path=str(alerts_file))
    sensor.start()
    try:
        since = time.time()
        why = sensor.silence(since, since + 3.0)
        health = Health(up=why is None, reason=why or "")
        got = judge(_tree_run(os.getpid()), [], Expectation("T1055.008"), health, "falco")
    finally:
        sensor.stop()
    assert (got.verdict, "metrics" in got.reason) == (Verdict.SENSOR_DOWN, True)


def test_loss_stretches_use_the_alerts_own_time_so_a_replay_judges_the_same() -> None:
    sensor = FalcoSensor(path="x")
    sensor.on_line(_lines("drops.jsonl")[0])  # recorded 2025-11-03T14:04:00.946Z
    recorded = parse_time("2025-11-03T14:04:00.946068858Z")
    assert recorded is not None
    assert sensor.loss_silence(recorded + 5.0, recorded + 8.0) is not None


def test_first_and_last_seen_span_internal_alerts_too() -> None:
    sensor = _feed("metrics.jsonl")
    assert (sensor.first_seen, sensor.last_seen) == (parse_time("2026-12-07T15:10:10Z"),
                                                     parse_time("2026-12-07T15:10:16Z"))


def test_sync_on_when_rules_files_name_a_directory_holding_the_sync_rule(tmp_path: Path) -> None:
    (tmp_path / "shadowtest-sync.yaml").write_text("[]\n")
    sensor = FalcoSensor(path="x", rules_files=[str(tmp_path)])
    assert sensor.sync() is not None


def test_sync_hint_names_the_rules_file_until_the_rule_answers() -> None:
    sensor = FalcoSensor(path="x")
    hint = sensor.sync_hint
    sensor.sync()
    _answer(sensor)
    assert (hint is not None and "shadowtest-sync.yaml" in hint, sensor.sync_hint) == (True, None)


def test_sync_marker_of_the_first_cpu_before_the_last_was_asked_does_not_mark() -> None:
    """Falco may read CPU 0's marker before the thread has called getpgid on CPU 1."""
    from harness.sensors.falco import _Marker

    sensor = FalcoSensor(path="x", sync=True)
    sensor._pending[4321] = _Marker("7", {0}, set(), time.time())  # CPU 0 asked, loop running
    sensor.on_line(_marker(4321, 0))
    assert "7" not in sensor.stream._s.markers
