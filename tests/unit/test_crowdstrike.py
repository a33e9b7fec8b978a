"""The CrowdStrike sensor's pure parts: ``normalise`` over alerts and container runtime
detections written from the documented fields (tests/data/crowdstrike), its options, and
the small helpers (FQL window, Retry-After). Nothing here talks to a network.

alerts.json: a full Linux endpoint alert (T1611, device.hostname, container and pod,
local_process_id and Falcon's own process_id, nanosecond created_timestamp); a T1055.008
alert with no name (rule = pattern_id); display_name + severity_name only; every optional
field null; a non-ATT&CK technique id (CST0007) with severity as a name.
container_detections.json: a runtime detection with every documented filter field; numeric
severity with null pod fields; only a detection id.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.core.correlate import correlate
from harness.core.detection import Detection
from harness.core.errors import ConfigError, SensorError
from harness.core.run import Run
from harness.sensors.base import build_sensor
from harness.sensors.crowdstrike import CrowdStrikeSensor, api

DATA = Path(__file__).resolve().parent.parent / "data" / "crowdstrike"
SECRET_REF = "env:UNIT_FALCON_SECRET"
MISSING_REF = "env:UNIT_FALCON_MISSING"
ESCAPE_CONTAINER = "3f4e9a0c1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f"


def _records(name: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads((DATA / name).read_text("utf-8"))
    return records


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    return _records("alerts.json")


@pytest.fixture(scope="module")
def container() -> list[dict[str, Any]]:
    return _records("container_detections.json")


@pytest.fixture
def sensor() -> CrowdStrikeSensor:
    return CrowdStrikeSensor(name="falcon")


def _norm(sensor: CrowdStrikeSensor, raw: Any) -> Detection:
    det = sensor.normalise(raw)
    assert det is not None
    return det


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# ---------------------------------------------------------------- alerts
def test_normalise_full_alert_maps_every_documented_field(sensor: CrowdStrikeSensor,
                                                           alerts: list[dict[str, Any]]) -> None:
    d = _norm(sensor, alerts[0])
    assert (d.sensor, d.rule, d.technique, d.severity) == (
        "falcon", "ContainerEscapeNsenter", ("T1611",), "high")
    assert (d.node, d.container_id, d.pid, d.ppid, d.comm) == (
        "node-1", ESCAPE_CONTAINER, 4242, 4200, "nsenter")
    assert d.names == ("nsenter -t 1 -m -u -i -n -- sh -c 'id # st0123456789ab'",
                       "/usr/bin/nsenter", "nsenter", "st-escape-7d9f", "sh")
    assert d.observed_at == pytest.approx(_epoch("2025-03-01T10:00:00.123"))
    assert d.received_at == 0.0  # stamped on delivery, not by the pure normalise
    assert d.fields["composite_id"] == alerts[0]["composite_id"]
    assert (d.fields["pattern_id"], d.fields["scenario"], d.fields["objective"]) == (
        5704, "privilege_escalation", "Gain Access")
    assert (d.fields["tactic_id"], d.fields["tactic"]) == ("TA0004", "Privilege Escalation")
    assert (d.fields["severity_raw"], d.fields["severity_name"]) == (70, "High")
    assert (d.fields["pod_name"], d.fields["namespace"]) == ("st-escape-7d9f", "shadowtest")
    assert d.fields["process_id"] == "41234567890"  # Falcon's id is kept, never used as a pid
    assert d.value("pod_name") == "st-escape-7d9f"
    assert d.value("tactic_id") == "TA0004"
    assert d.raw == alerts[0]


def test_normalise_alert_without_name_uses_pattern_id(sensor: CrowdStrikeSensor,
                                                      alerts: list[dict[str, Any]]) -> None:
    d = _norm(sensor, alerts[1])
    assert (d.rule, d.technique, d.severity, d.node, d.pid) == (
        "5710", ("T1055.008",), "critical", "node-2", 777)
    assert d.observed_at == _epoch("2025-03-01T10:01:00")  # timestamp before created_timestamp


def test_normalise_alert_display_name_severity_name_and_computer_name(
        sensor: CrowdStrikeSensor, alerts: list[dict[str, Any]]) -> None:
    d = _norm(sensor, alerts[2])
    assert (d.rule, d.technique, d.severity, d.node) == (
        "Suspicious shell in container", ("T1611",), "info", "node-3")
    assert d.observed_at == _epoch("2025-03-01T10:02:00.5")  # created_timestamp, +00:00 offset


def test_normalise_alert_with_every_optional_field_null(sensor: CrowdStrikeSensor,
                                                        alerts: list[dict[str, Any]]) -> None:
    d = _norm(sensor, alerts[3])
    assert d.rule == alerts[3]["composite_id"]
    assert (d.technique, d.severity, d.node, d.container_id, d.pid, d.ppid, d.comm, d.names,
            d.observed_at) == ((), None, None, None, None, None, None, (), 0.0)
    assert "pod_name" not in d.fields
    assert set(d.fields) == {"composite_id", "correlation_hint"}


def test_normalise_alert_keeps_non_attack_technique_out(sensor: CrowdStrikeSensor,
                                                        alerts: list[dict[str, Any]]) -> None:
    d = _norm(sensor, alerts[4])
    assert (d.rule, d.technique, d.severity, d.pid) == ("MachineLearningMalware", (), "medium", None)
    assert (d.fields["technique_id"], d.fields["tactic_id"]) == ("CST0007", "CSTA0004")


def test_normalise_every_recorded_alert_and_detection_is_a_detection(
        sensor: CrowdStrikeSensor, alerts: list[dict[str, Any]],
        container: list[dict[str, Any]]) -> None:
    assert all(isinstance(sensor.normalise(r), Detection) for r in alerts + container)


def test_normalise_is_pure(sensor: CrowdStrikeSensor, alerts: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(alerts[0])
    first, second = sensor.normalise(alerts[0]), sensor.normalise(alerts[0])
    assert first == second
    assert first is not None
    assert second is not None
    assert first.fields == second.fields
    assert alerts[0] == before


@pytest.mark.parametrize("raw", [None, "alert", 42, ["composite_id"], {}, {"severity": 70},
                                 {"name": None, "composite_id": None}])
def test_normalise_non_alert_is_none(sensor: CrowdStrikeSensor, raw: Any) -> None:
    assert sensor.normalise(raw) is None


@pytest.mark.parametrize(("raw", "severity"), [
    ({"severity": 0}, "info"), ({"severity": 10}, "info"), ({"severity": 19.9}, "info"),
    ({"severity": 20}, "low"), ({"severity": 30}, "low"), ({"severity": 40}, "medium"),
    ({"severity": 59}, "medium"), ({"severity": 60}, "high"), ({"severity": 79}, "high"),
    ({"severity": 80}, "critical"), ({"severity": 100}, "critical"), ({"severity": "70"}, "high"),
    ({"severity": "High"}, "high"), ({"severity": "CRITICAL"}, "critical"),
    ({"severity": "informational"}, "info"), ({"severity_name": "Low"}, "low"),
    ({"severity": None, "severity_name": "Medium"}, "medium"), ({"severity": "unknown"}, None),
    ({"severity": True}, None), ({}, None),
])
def test_normalise_severity_numbers_and_names(sensor: CrowdStrikeSensor, raw: dict[str, Any],
                                              severity: str | None) -> None:
    d = _norm(sensor, {"composite_id": "c:ind:1", **raw})
    assert d.severity == severity
    if raw.get("severity") is not None:
        assert d.fields["severity_raw"] == raw["severity"]


@pytest.mark.parametrize(("raw", "technique"), [
    ({"technique_id": "T1611"}, ("T1611",)), ({"technique_id": " t1055.008 "}, ("T1055.008",)),
    ({"technique_id": ["T1611", "T1611", "x"]}, ("T1611",)), ({"technique_id": "T16"}, ()),
    ({"technique": "T1068"}, ("T1068",)), ({"technique": "Escape to Host"}, ()),
    ({"mitre_attack": [{"technique_id": "T1611"}, {"technique_id": None}, "x"]}, ("T1611",)),
    ({"technique_id": 1611}, ()),
])
def test_normalise_technique_only_attack_ids(sensor: CrowdStrikeSensor, raw: dict[str, Any],
                                             technique: tuple[str, ...]) -> None:
    assert _norm(sensor, {"composite_id": "c:ind:1", **raw}).technique == technique


@pytest.mark.parametrize(("raw", "pid", "ppid"), [
    ({"local_process_id": "4242", "process_id": "41234567890"}, 4242, None),
    ({"process_id": "41234567890"}, None, None),  # Falcon's cloud-wide id is no OS pid
    ({"process_id": 1234}, 1234, None),
    ({"local_process_id": "-1"}, None, None), ({"local_process_id": "abc"}, None, None),
    ({"local_process_id": 7, "parent_details": {"local_process_id": "1"}}, 7, 1),
    ({"parent_details": "not a mapping"}, None, None),
])
def test_normalise_pid_from_local_process_id(sensor: CrowdStrikeSensor, raw: dict[str, Any],
                                             pid: int | None, ppid: int | None) -> None:
    d = _norm(sensor, {"composite_id": "c:ind:1", **raw})
    assert (d.pid, d.ppid) == (pid, ppid)


@pytest.mark.parametrize(("raw", "node"), [
    ({"hostname": "a", "device": {"hostname": "b"}, "computer_name": "c"}, "a"),
    ({"device": {"hostname": "b"}, "computer_name": "c"}, "b"),
    ({"device": None, "computer_name": "c"}, "c"), ({"hostname": ""}, None),
])
def test_normalise_node_from_hostname_device_or_computer_name(
        sensor: CrowdStrikeSensor, raw: dict[str, Any], node: str | None) -> None:
    assert _norm(sensor, {"composite_id": "c:ind:1", **raw}).node == node


@pytest.mark.parametrize(("value", "epoch"), [
    ("2025-03-01T10:00:00Z", _epoch("2025-03-01T10:00:00")),
    ("2025-03-01T10:00:00.123456789Z", _epoch("2025-03-01T10:00:00.123456")),
    ("2025-03-01T12:00:00+02:00", _epoch("2025-03-01T10:00:00")),
    ("2025-03-01T10:00:00", _epoch("2025-03-01T10:00:00")),
    (1740823200, 1740823200.0), (1740823200123, 1740823200.123),
    (1740823200123456789, 1740823200.1234567), ("1740823200", 1740823200.0),
    ("yesterday", 0.0), (None, 0.0), (-5, 0.0),
])
def test_normalise_observed_at_iso_or_epoch(sensor: CrowdStrikeSensor, value: Any,
                                            epoch: float) -> None:
    d = _norm(sensor, {"composite_id": "c:ind:1", "timestamp": value})
    assert d.observed_at == pytest.approx(epoch, abs=1e-6)


# ---------------------------------------------------------------- container detections
def test_normalise_container_detection_maps_container_pod_and_namespace(
        sensor: CrowdStrikeSensor, container: list[dict[str, Any]]) -> None:
    d = _norm(sensor, container[0])
    assert (d.rule, d.technique, d.severity, d.node) == (
        "Container Drift: binary executed that was not in the image", ("T1611",), "high",
        "ip-10-0-1-23")
    assert d.container_id == container[0]["container_id"]
    assert (d.fields["pod_name"], d.fields["namespace"], d.fields["cluster_name"]) == (
        "st-drift-5c6b", "shadowtest", "prod-eu")
    assert d.fields["detection_id"] == container[0]["detection_id"]
    assert (d.comm, d.names) == ("escape", ("/tmp/escape --host", "/tmp/escape", "escape",
                                            "st-drift-5c6b"))
    assert d.observed_at == pytest.approx(_epoch("2025-03-01T10:05:00.250"))


def test_normalise_container_detection_null_pod_and_numeric_severity(
        sensor: CrowdStrikeSensor, container: list[dict[str, Any]]) -> None:
    d = _norm(sensor, container[1])
    assert (d.rule, d.severity, d.container_id, d.technique) == (
        "Reverse shell", "medium", "9d8c7b6a5f4e", ())
    assert "pod_name" not in d.fields
    assert "namespace" not in d.fields


def test_normalise_container_detection_with_only_an_id(sensor: CrowdStrikeSensor,
                                                       container: list[dict[str, Any]]) -> None:
    d = _norm(sensor, container[2])
    assert (d.rule, d.node, d.container_id, d.observed_at) == (
        container[2]["detection_id"], None, None, 0.0)


def test_normalise_full_container_id_correlates_with_the_run(
        sensor: CrowdStrikeSensor, alerts: list[dict[str, Any]]) -> None:
    run = Run("st0123456789ab", "T1611-escape", "container", "node-1", 0.0, 1.0, True,
              container_id=f"containerd://{ESCAPE_CONTAINER}")
    assert correlate(run, _norm(sensor, alerts[0])) == "run_id"  # stamped in the cmdline
    other = Run("stffffffffffff", "T1611-escape", "container", "node-1", 0.0, 1.0, True,
                container_id=ESCAPE_CONTAINER)
    assert correlate(other, _norm(sensor, alerts[0])) == "container_id"


# ---------------------------------------------------------------- options
def test_init_defaults_match_the_documented_options() -> None:
    s = CrowdStrikeSensor()
    assert (s.name, s.NAME, s.base_url, s.source, s.limit, s.delay, s.poll_interval, s.lookback,
            s.verify_tls) == ("crowdstrike", "crowdstrike", "https://api.crowdstrike.com", "alerts",
                              100, 60.0, 5.0, 600.0, True)
    assert (s.client_id, s.client_secret) == ("env:FALCON_CLIENT_ID", "env:FALCON_CLIENT_SECRET")
    assert s.sync() is None
    health = s.health()
    assert not health.up
    assert "not started" in health.reason


@pytest.mark.parametrize(("value", "url"), [
    ("us-1", "https://api.crowdstrike.com"), ("US-2", "https://api.us-2.crowdstrike.com"),
    ("eu-1", "https://api.eu-1.crowdstrike.com"),
    ("us-gov-1", "https://api.laggar.gcw.crowdstrike.com"),
    ("https://api.eu-1.crowdstrike.com/", "https://api.eu-1.crowdstrike.com"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
])
def test_init_base_url_accepts_region_names(value: str, url: str) -> None:
    assert CrowdStrikeSensor(base_url=value).base_url == url


@pytest.mark.parametrize(("options", "message"), [
    ({"client_id": "0123456789abcdef"}, "client_id: expected 'env:VARIABLE'"),
    ({"client_secret": "s3cr3t-value"}, "client_secret: expected 'env:VARIABLE'"),
    ({"source": "detects"}, "source: expected one of alerts, container"),
    ({"source": "container", "limit": 500}, "limit: expected an integer from 1 to 100"),
    ({"limit": 10001}, "limit: expected an integer from 1 to 10000"),
    ({"limit": 0}, "limit"), ({"poll_interval": 0}, "poll_interval"), ({"delay": -1}, "delay"),
    ({"base_url": "mars-1"}, "base_url: expected the API URL"),
])
def test_init_rejects_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"\[tool\.shadowtest\.sensors\.crowdstrike\]") as err:
        CrowdStrikeSensor(**options)
    assert message in str(err.value)
    assert "s3cr3t-value" not in str(err.value)
    assert "0123456789abcdef" not in str(err.value)


def test_build_sensor_from_registry() -> None:
    s = build_sensor("falcon", {"type": "crowdstrike", "source": "container", "delay": 30})
    assert isinstance(s, CrowdStrikeSensor)
    assert (s.name, s.source, s.delay) == ("falcon", "container", 30.0)


def test_repr_shows_references_never_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_FALCON_ID", "unit-client-id-9f8e7d")
    monkeypatch.setenv("UNIT_FALCON_SECRET", "unit-client-secret-1a2b3c")
    s = CrowdStrikeSensor(client_id="env:UNIT_FALCON_ID", client_secret=SECRET_REF,
                          base_url="http://127.0.0.1:9")
    assert "env:UNIT_FALCON_ID" in repr(s)
    assert "env:UNIT_FALCON_SECRET" in repr(s)
    assert "unit-client-secret-1a2b3c" not in repr(s)


def test_start_without_credential_raises_sensor_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIT_FALCON_MISSING", raising=False)
    s = CrowdStrikeSensor(client_id="env:UNIT_FALCON_MISSING", client_secret=MISSING_REF,
                          base_url="http://127.0.0.1:9")
    with pytest.raises(SensorError, match="environment variable UNIT_FALCON_MISSING is not set"):
        s.start()
    health = s.health()
    assert not health.up
    assert "UNIT_FALCON_MISSING" in health.reason


def test_start_with_empty_credential_raises_sensor_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_FALCON_EMPTY", "")
    monkeypatch.setenv("UNIT_FALCON_SECRET", "unit-client-secret-1a2b3c")
    s = CrowdStrikeSensor(client_id="env:UNIT_FALCON_EMPTY", client_secret=SECRET_REF,
                          base_url="http://127.0.0.1:9")
    with pytest.raises(SensorError, match="env:UNIT_FALCON_EMPTY is empty"):
        s.start()


# ---------------------------------------------------------------- helpers
def test_fql_window_is_anded_with_the_user_filter() -> None:
    s = CrowdStrikeSensor(filter="technique_id:'T1611'")
    assert s._fql("created_timestamp", 1740823200.0, 1740823260.5) == (
        "created_timestamp:>='2025-03-01T10:00:00.000Z'+created_timestamp:<='2025-03-01T10:01:00.500Z'"
        "+technique_id:'T1611'")
    s = CrowdStrikeSensor(filter="technique_id:'T1611',technique_id:'T1055.008'")
    assert s._fql("detect_timestamp", 0.0, 1.0).endswith(
        "+(technique_id:'T1611',technique_id:'T1055.008')")
    assert "+" not in CrowdStrikeSensor()._fql("created_timestamp", 0.0, 1.0).split("'+")[-1]


@pytest.mark.parametrize(("headers", "low", "high"), [
    ({"X-RateLimit-RetryAfter": "{now+3}"}, 1.5, 3.0),
    ({"x-ratelimit-retryafter": "{now-10}"}, 0.0, 0.0),
    ({"Retry-After": "2"}, 2.0, 2.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0, 0.0),
    ({"Retry-After": "soon"}, 7.0, 7.0), ({}, 7.0, 7.0),
])
def test_retry_after_prefers_crowdstrike_epoch_header(headers: dict[str, str], low: float,
                                                      high: float) -> None:
    import time

    now = int(time.time())
    filled = {k: v.replace("{now+3}", str(now + 3)).replace("{now-10}", str(now - 10))
              for k, v in headers.items()}
    assert low <= api.retry_after(filled, 7.0) <= high


# ================================================================ ancestry.json
# A real-shaped Alerts v2 Linux endpoint alert of a ptrace two levels below the stage
# runner (parent_details and grandparent_details as Falcon documents them), and the same
# alert without grandparent_details.
ANCESTRY = Path(__file__).resolve().parent.parent / "data" / "crowdstrike" / "ancestry.json"


def _ancestry_alerts() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(ANCESTRY.read_text())
    return loaded


def _tree_run(*pids: int) -> Run:
    return Run(run_id="st000000000003", scenario="s", context="host", node="n",
               started_at=0, ended_at=1, executed=True, pids=frozenset(pids))


def test_normalise_grandparent_details_is_the_first_ancestor(sensor: CrowdStrikeSensor) -> None:
    d = _norm(sensor, _ancestry_alerts()[0])
    assert (d.pid, d.ppid, d.ancestors) == (81030, 81010, (81000,))


def test_normalise_grandparent_correlates_to_the_runner(sensor: CrowdStrikeSensor) -> None:
    d = _norm(sensor, _ancestry_alerts()[0])
    assert correlate(_tree_run(81000), d) == "process_tree"


def test_normalise_with_grandparent_has_no_hint(sensor: CrowdStrikeSensor) -> None:
    d = _norm(sensor, _ancestry_alerts()[0])
    assert "correlation_hint" not in d.fields


def test_normalise_without_grandparent_says_so(sensor: CrowdStrikeSensor) -> None:
    d = _norm(sensor, _ancestry_alerts()[1])
    assert (d.ancestors, "grandparent_details" in d.fields["correlation_hint"]) == ((), True)


def test_normalise_parent_and_grandparent_command_lines_are_names(
        sensor: CrowdStrikeSensor) -> None:
    d = _norm(sensor, _ancestry_alerts()[0])
    assert {"sh -c python3 poke.py", "python3 -m harness._stagerunner"} <= set(d.names)


# ================================================================ prevention (issue 14)
# Falcon's prevention says what it did in ``pattern_disposition_details`` (Alerts v2):
# ``kill_process: true`` ("Prevention, process killed."), ``operation_blocked: true``.
def _prevented(**flags: bool) -> dict[str, Any]:
    raw = copy.deepcopy(_ancestry_alerts()[0])
    raw.update(pattern_disposition=2048, pattern_disposition_description="Prevention, process killed.",
               pattern_disposition_details={"detect": False, "kill_process": False,
                                            "kill_action_failed": False, "operation_blocked": False,
                                            **flags})
    return raw


@pytest.mark.parametrize(("flags", "action"), [
    ({"kill_process": True}, "sigkill"), ({"operation_blocked": True}, "deny"),
    ({"process_blocked": True}, "deny"), ({}, None),
    ({"kill_process": True, "kill_action_failed": True}, None),
])
def test_normalise_pattern_disposition_is_the_enforcement_action(
        sensor: CrowdStrikeSensor, flags: dict[str, bool], action: str | None) -> None:
    from harness.core.verdict import enforcement_action

    assert enforcement_action(_norm(sensor, _prevented(**flags))) == action


@pytest.mark.parametrize(("side_effect", "verdict"), [(True, "RACED"), (False, "BLOCKED")])
def test_falcon_kill_makes_an_enforcement_run_never_not_executed(
        sensor: CrowdStrikeSensor, side_effect: bool, verdict: str) -> None:
    """The action the stage runner (81000) started was killed (exit -9) and Falcon says it
    killed it: RACED or BLOCKED from the side-effect probe for an enforce expectation."""
    from harness.core.health import Health
    from harness.core.verdict import Expectation, enforcement_claims, judge, with_claims

    d = _norm(sensor, _prevented(kill_process=True))
    run = Run(run_id="st000000000003", scenario="s", context="host", node="n",
              started_at=d.observed_at - 1, ended_at=d.observed_at + 0.1, executed=False,
              reason="the action failed: exit -9", exit_code=-9, pids=frozenset({81000}),
              side_effect=side_effect)
    judged = with_claims(run, enforcement_claims(run, {"falcon": [d]}, run.ended_at + 5))
    assert (judged.executed, judged.killed_by) == (True, "SIGKILL")
    enforce = Expectation(technique=d.technique[0], enforce="sigkill")
    assert judge(judged, [d], enforce, Health(True), "falcon").verdict.value == verdict
