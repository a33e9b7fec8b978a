"""The Sysdig Secure sensor's parsing and options, without a backend.

events.json is a ListEventsResponse written from the SDK's model docs (Event,
WorkloadRuntimeDetectionContent, EventsFeedPage), newest first:
0 falco container escape (T1611 tags, container + k8s labels, severity 0),
1 ptrace injection with actions (container killed + capture), T1055.008 tags, severity 5,
2 an event with null content/labels/actions (severity 7),
3 host event with null fields/tags/output and container.id "host" (severity 6),
4 drift event with drift_prevented, a non-numeric proc.pid, k8s labels (severity 3),
5 the same kind of event as the SDK's snake_case model_dump (severity 4).
"""

from __future__ import annotations

import copy
import json
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from harness.core.correlate import correlate
from harness.core.errors import ConfigError
from harness.core.run import Run
from harness.sensors import sysdig_events
from harness.sensors.base import build_sensor
from harness.sensors.sysdig import MAX_TIMEFRAME_NS, SysdigSensor, retry_after, split_timeframe
from harness.sensors.sysdig_events import mitre_tactics, mitre_techniques

DATA = Path(__file__).resolve().parent.parent / "data" / "sysdig"


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    body = json.loads((DATA / "events.json").read_text("utf-8"))
    assert set(body) == {"page", "data"}
    return list(body["data"])


@pytest.fixture
def sensor() -> SysdigSensor:
    return SysdigSensor(name="sysdig", node="configured-node")


# ---------------------------------------------------------------- normalise
def test_normalise_runtime_event_maps_every_key(sensor: SysdigSensor, events: list[dict[str, Any]]) -> None:
    d = sensor.normalise(events[0])
    assert d is not None
    assert (d.sensor, d.rule, d.technique, d.severity, d.action) == (
        "sysdig", "Detect release_agent File Container Escapes", ("T1611",), "high", None)
    assert (d.node, d.container_id, d.pid, d.ppid, d.comm) == (
        "node-1", "4b1f1ea0c2d3", 48213, 48190, "sh")
    assert d.observed_at == pytest.approx(1700000005.123456789)
    assert d.received_at == 0.0
    assert d.names == (
        events[0]["content"]["output"], "sh -c echo /cmd > /tmp/cg/release_agent",
        "/tmp/cg/release_agent", "shadowtest-st0a1b2c3d4e5f", "escape-st0a1b2c3d4e5f",
    )
    f = d.fields
    assert (f["id"], f["policy"], f["policy_id"], f["engine"], f["originator"], f["category"],
            f["rule_type"], f["severity_code"]) == (
        "179854fbe16a1279f2ebeb558f1ebe99", "Sysdig Runtime Threat Detection", 2, "falco",
        "policy", "runtime", 6, 0)
    assert f["tactics"] == ["TA0004", "privilege_escalation"]
    assert (f["namespace"], f["pod"], f["cluster"], f["image"]) == (
        "shadowtest", "escape-st0a1b2c3d4e5f", "lab", "docker.io/library/alpine")
    assert f["raw_event_originator"] == "linuxAgent"
    assert "actions" not in f  # an empty list is not kept
    assert d.value("pod") == "escape-st0a1b2c3d4e5f"
    assert d.raw is events[0]


def test_normalise_actions_joined_and_kept(sensor: SysdigSensor, events: list[dict[str, Any]]) -> None:
    d = sensor.normalise(events[1])
    assert d is not None
    assert d.action == "container_killed,capture"
    assert [a["type"] for a in d.fields["actions"]] == ["container_killed", "capture"]
    assert d.technique == ("T1055.008", "T1055")
    assert d.severity == "medium"
    assert (d.pid, d.ppid, d.comm, d.node) == (5150, 5149, "python3", "node-2")
    assert d.container_id == "9d8c7b6a5f4e"  # content.fields wins; labels have none
    assert d.fields["tactics"] == ["defense_evasion"]


def test_normalise_null_content_falls_back_to_policy_name(
    sensor: SysdigSensor, events: list[dict[str, Any]],
) -> None:
    d = sensor.normalise(events[2])
    assert d is not None
    assert (d.rule, d.technique, d.severity, d.action) == ("Suspicious Network Tools", (), "info", None)
    assert (d.node, d.container_id, d.pid, d.ppid, d.comm, d.names) == (
        None, None, None, None, None, ())
    assert d.fields["engine"] == "list"


def test_normalise_null_fields_and_host_container(sensor: SysdigSensor, events: list[dict[str, Any]]) -> None:
    d = sensor.normalise(events[3])
    assert d is not None
    assert (d.rule, d.technique, d.severity, d.names) == ("Write below etc", (), "low", ())
    assert d.container_id is None  # "host": not a container
    assert d.node == "node-1"
    assert "rule_tags" not in d.fields


def test_normalise_drift_event_tolerates_bad_pid(sensor: SysdigSensor, events: list[dict[str, Any]]) -> None:
    d = sensor.normalise(events[4])
    assert d is not None
    assert (d.rule, d.technique, d.severity, d.action) == (
        "Drift Detection", ("T1036",), "high", "drift_prevented")
    assert d.pid is None
    assert (d.container_id, d.fields["namespace"], d.fields["pod"], d.fields["rule_type"]) == (
        "0123456789ab", "prod", "miner-7f9c", 7)
    assert d.names[-1] == "miner-7f9c"


def test_normalise_sdk_snake_case_dump(sensor: SysdigSensor, events: list[dict[str, Any]]) -> None:
    d = sensor.normalise(events[5])
    assert d is not None
    assert (d.rule, d.technique, d.severity, d.pid, d.container_id) == (
        "Terminal shell in container", ("T1059",), "medium", 77, "aa11bb22cc33")
    assert (d.fields["policy_id"], d.fields["raw_event_originator"]) == (11, "linuxAgent")


def test_normalise_is_pure(sensor: SysdigSensor, events: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(events)
    first = [sensor.normalise(e) for e in events]
    second = [sensor.normalise(e) for e in events]
    assert first == second
    assert [d.fields for d in first if d] == [d.fields for d in second if d]
    assert events == before


@pytest.mark.parametrize("raw", [None, [], "event", 42, {}, {"id": "x", "content": None}])
def test_normalise_not_an_event_is_none(sensor: SysdigSensor, raw: Any) -> None:
    assert sensor.normalise(raw) is None


@pytest.mark.parametrize(("code", "severity"), [
    (0, "high"), (1, "high"), (2, "high"), (3, "high"), (4, "medium"), (5, "medium"),
    (6, "low"), (7, "info"), (8, None), (None, None), ("2", "high"),
])
def test_normalise_severity_buckets(sensor: SysdigSensor, code: Any, severity: str | None) -> None:
    d = sensor.normalise({"id": "e", "name": "p", "severity": code, "timestamp": 1})
    assert d is not None
    assert d.severity == severity


@pytest.mark.parametrize(("tags", "techniques"), [
    (["T1611"], ("T1611",)),
    (["MITRE_T1611"], ("T1611",)),
    (["MITRE_T1611_escape_to_host"], ("T1611",)),
    (["mitre_T1055.008"], ("T1055.008",)),
    (["t1059.004"], ("T1059.004",)),
    (["MITRE_TA0004_privilege_escalation", "mitre_execution", "container"], ()),
    (["T1611", "MITRE_T1611_escape_to_host", "T1055"], ("T1611", "T1055")),
    (["XT1611", "T16110", "T1611.0012"], ()),
])
def test_mitre_techniques_from_tags(tags: list[str], techniques: tuple[str, ...]) -> None:
    assert mitre_techniques(tags) == techniques


def test_mitre_tactics_from_tags() -> None:
    assert mitre_tactics(["mitre_execution", "MITRE_TA0002_execution", "MITRE_T1059_x",
                          "container", "MITRE_persistence"]) == ["execution", "TA0002", "persistence"]


def test_detection_correlates_by_short_container_id(
    sensor: SysdigSensor, events: list[dict[str, Any]],
) -> None:
    d = sensor.normalise(events[0])
    assert d is not None
    run = Run(run_id="st0123456789ab", scenario="s", context="container", node="node-1",
              started_at=0.0, ended_at=1.0, executed=True,
              container_id="4b1f1ea0c2d3" + "0" * 52)
    assert correlate(run, d) == "container_id"


# ---------------------------------------------------------------- helpers
def test_split_timeframe_clamps_to_two_weeks() -> None:
    assert list(split_timeframe(10, 20)) == [(10, 20)]
    assert list(split_timeframe(5, 5)) == [(5, 5)]
    chunks = list(split_timeframe(0, 2 * MAX_TIMEFRAME_NS + 7))
    assert chunks == [(0, MAX_TIMEFRAME_NS), (MAX_TIMEFRAME_NS, 2 * MAX_TIMEFRAME_NS),
                      (2 * MAX_TIMEFRAME_NS, 2 * MAX_TIMEFRAME_NS + 7)]
    assert all(b - a <= MAX_TIMEFRAME_NS for a, b in chunks)


def test_retry_after_seconds_date_and_garbage() -> None:
    assert retry_after("3", 9.0) == 3.0
    assert retry_after("0.5", 9.0) == 0.5
    assert retry_after(None, 9.0) == 9.0
    assert retry_after("soon", 9.0) == 9.0
    assert retry_after("-4", 9.0) == 0.0
    assert 3.0 < retry_after(formatdate(time.time() + 5, usegmt=True), 9.0) <= 5.0


# ---------------------------------------------------------------- options
@pytest.mark.parametrize("kwargs", [
    {"limit": 0}, {"limit": 201}, {"limit": True}, {"url": "us2.app.sysdig.com"},
    {"poll_interval": 0}, {"poll_interval": "soon"}, {"delay": -1}, {"lookback": 0},
])
def test_init_rejects_bad_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SysdigSensor(**kwargs)


def test_init_accepts_durations_and_trims_url() -> None:
    s = SysdigSensor(url="https://eu1.app.sysdig.com/", poll_interval="500ms", delay="1m",
                     lookback="5m", timeout=3)
    assert (s.url, s.poll_interval, s.delay, s.lookback, s.timeout) == (
        "https://eu1.app.sysdig.com", 0.5, 60.0, 300.0, 3.0)
    assert s.overlap >= s.delay


def test_start_refuses_literal_token_without_echoing_it() -> None:
    literal = "f00dfeed-literal-token-value"
    s = SysdigSensor(token=literal)
    with pytest.raises(ConfigError, match="literal") as info:
        s.start()
    assert literal not in str(info.value)
    assert literal not in repr(s)
    assert not s.health().up


def test_start_missing_variable_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHADOWTEST_NO_SUCH_TOKEN", raising=False)
    ref = "env:SHADOWTEST_NO_SUCH_TOKEN"
    with pytest.raises(ConfigError, match="SHADOWTEST_NO_SUCH_TOKEN"):
        SysdigSensor(token=ref).start()


def test_health_before_start_and_sync(sensor: SysdigSensor) -> None:
    health = sensor.health()
    assert not health.up
    assert "never started" in health.reason
    assert sensor.sync() is None
    assert sensor.delay == 30.0
    sensor.stop()  # harmless when never started


def test_registry_builds_sysdig_from_config_table() -> None:
    s = build_sensor("saas", {"type": "sysdig", "url": "https://us2.app.sysdig.com",
                              "token": "file:/run/secrets/sysdig", "limit": 50, "delay": "45s"})
    assert isinstance(s, SysdigSensor)
    assert (s.name, s.NAME, s.limit, s.delay) == ("saas", "sysdig", 50, 45.0)
    assert "file:/run/secrets/sysdig" in repr(s)
    with pytest.raises(ConfigError, match="unknown key"):
        build_sensor("saas", {"type": "sysdig", "api_token": "env:X"})


def test_normalise_falco_apid_fields_are_the_ancestors(sensor: SysdigSensor,
                                                       events: list[dict[str, Any]]) -> None:
    """A Falco-type event whose rule output prints Falco's ancestry fields (as strings, the
    way Sysdig's content.fields carry values) gets them as ancestors."""
    raw = copy.deepcopy(events[0])
    raw["content"]["fields"].update({"proc.apid[2]": "48100", "proc.apid[3]": "47000",
                                     "proc.apid[4]": None})
    d = sensor.normalise(raw)
    assert d is not None
    assert d.ancestors == (48100, 47000)


def test_normalise_without_apid_fields_has_no_ancestors(sensor: SysdigSensor,
                                                        events: list[dict[str, Any]]) -> None:
    d = sensor.normalise(events[0])
    assert d is not None
    assert d.ancestors == ()


def test_normalise_falco_event_without_ancestry_says_what_to_print(
        sensor: SysdigSensor, events: list[dict[str, Any]]) -> None:
    """A Falco rule's syscall event with proc.pid but no proc.apid/proc.sid, or no pid at
    all, names the output fields to print; one with ancestry, or of another engine (drift:
    Sysdig's own fields), says nothing."""
    raw = copy.deepcopy(events[0])
    raw["content"]["fields"]["proc.apid[2]"] = "48100"
    hints = [(d.fields if d else {}).get("correlation_hint")
             for d in (sensor.normalise(e) for e in (events[0], events[3], events[4], raw))]
    assert hints == [sysdig_events.ANCESTRY_HINT, sysdig_events.NO_PID_HINT, None, None]
    assert "proc.apid[2]..proc.apid[7]" in sysdig_events.ANCESTRY_HINT


def test_missed_row_names_the_sysdig_fields_an_uncorrelated_event_lacks(
        sensor: SysdigSensor, events: list[dict[str, Any]]) -> None:
    """The event fired in the run's descendant, but without ancestry it cannot be tied to the
    run: the MISSED reason says what to print."""
    from harness.core.health import Health
    from harness.core.verdict import Expectation, judge

    raw = copy.deepcopy(events[0])
    raw["content"]["fields"]["container.id"] = "host"
    d = sensor.normalise(raw)
    assert d is not None
    run = Run(run_id="st000000000001", scenario="s", context="host", node="node-1",
              started_at=d.observed_at - 1, ended_at=d.observed_at + 1, executed=True,
              pids=frozenset({47000}))
    j = judge(run, [d], Expectation(technique="T1611"), Health(up=True), "sysdig")
    assert j.verdict.value == "MISSED"
    assert j.reason.endswith(f"cannot be tied to the run: {sysdig_events.ANCESTRY_HINT}")
