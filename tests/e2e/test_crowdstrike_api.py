"""The CrowdStrike sensor end to end: the real sensor, and therefore the real FalconPy,
against a real local Falcon API (tests/servers/crowdstrike_server.py) on 127.0.0.1.

No root. Nothing sleeps to wait for a result: every wait is a stream subscription woken by
a detection or by the watermark.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from harness.core.detection import Detection
from harness.core.health import Health
from harness.core.run import Run
from harness.core.verdict import Expectation, Verdict, judge
from harness.engine.execute import decided, new_run_id
from harness.sensors import crowdstrike
from harness.sensors.crowdstrike import CrowdStrikeSensor
from tests.servers.crowdstrike_server import (
    ALERTS_ENTITIES,
    ALERTS_QUERY,
    RUNTIME_DETECTIONS,
    CrowdStrikeServer,
    Request,
    iso,
)

CLIENT_ID = "e2e-falcon-client-5d1c9a7e"
CLIENT_SECRET = "e2e-falcon-secret-8b3f2a6c4d9e"
CONTAINER = "5a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f"
BAD_SECRET_REF = "env:E2E_BAD_SECRET"
TIMEOUT = 20.0

Factory = Callable[..., CrowdStrikeSensor]


@pytest.fixture
def server() -> Iterator[CrowdStrikeServer]:
    with CrowdStrikeServer(CLIENT_ID, CLIENT_SECRET) as srv:
        yield srv


@pytest.fixture
def make_sensor(server: CrowdStrikeServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Factory]:
    """Sensors on the local server, credentials from the environment, stopped afterwards."""
    monkeypatch.setenv("E2E_FALCON_ID", CLIENT_ID)
    monkeypatch.setenv("E2E_FALCON_SECRET", CLIENT_SECRET)
    made: list[CrowdStrikeSensor] = []

    def make(**options: Any) -> CrowdStrikeSensor:
        opts: dict[str, Any] = {"base_url": server.url, "client_id": "env:E2E_FALCON_ID",
                                "client_secret": "env:E2E_FALCON_SECRET", "poll_interval": 0.1,
                                "delay": 0.5, "lookback": 60.0}
        opts.update(options)
        sensor = CrowdStrikeSensor(**opts)
        made.append(sensor)
        return sensor

    yield make
    for sensor in made:
        sensor.stop()


def alert(technique: str = "T1611", **extra: Any) -> dict[str, Any]:
    """An alert as GetEntitiesAlertsV2 returns it (server fills composite id and times)."""
    return {"name": "ContainerEscape", "display_name": "Container escape", "pattern_id": 5704,
            "technique_id": technique, "tactic_id": "TA0004", "severity": 70,
            "severity_name": "High", "device": {"hostname": "node-1"}, "filename": "nsenter",
            "cmdline": "nsenter -t 1 -m sh", "local_process_id": "4242", **extra}


def wait_count(sensor: CrowdStrikeSensor, n: int, index: int = 0) -> list[Detection]:
    seen, _ = sensor.stream.wait(index, lambda ds: len(ds) >= n, None, time.time() + TIMEOUT)
    return seen


def wait_watermark(sensor: CrowdStrikeSensor, until: float) -> bool:
    """Block until every event before ``until`` was delivered (the watermark passed it)."""
    sub = sensor.stream.subscribe()
    _, synced = sub.wait(lambda _ds: False, None, time.time() + TIMEOUT, until=until)
    return synced


def ids_fetched(server: CrowdStrikeServer) -> list[str]:
    return [i for r in server.requests(ALERTS_ENTITIES) for i in r.body["composite_ids"]]


def reasons_and_reprs(sensor: CrowdStrikeSensor, *more: str) -> str:
    seen = sensor.stream._since(0)
    return "\n".join([repr(sensor), sensor.health().reason, str(sensor.stream.closed),
                      *(repr(d) + json.dumps(d.fields, default=str) + json.dumps(d.raw, default=str)
                        for d in seen), *more])


# ---------------------------------------------------------------- alerts: paging
def test_alerts_start_pages_every_alert_once(server: CrowdStrikeServer, make_sensor: Factory) -> None:
    base = time.time() - 30
    server.ingest([alert(created_timestamp=iso(base + i * 0.01)) for i in range(250)])
    server.ingest([alert("T1055.008") for _ in range(7)])  # filtered out by the user's FQL
    sensor = make_sensor(limit=100, filter="technique_id:'T1611'")
    sensor.start()
    # the first poll is synchronous: everything is in the stream when start returns
    first = sensor.stream._since(0)
    assert len(first) == 250
    assert sensor.health().up
    queries = server.requests(ALERTS_QUERY)
    assert [(q.query["offset"], q.query["limit"], q.query["sort"]) for q in queries[:3]] == [
        ("0", "100", "created_timestamp|asc"), ("100", "100", "created_timestamp|asc"),
        ("200", "100", "created_timestamp|asc")]
    assert len({q.query["filter"] for q in queries[:3]}) == 1
    assert queries[0].query["filter"].endswith("+technique_id:'T1611'")
    assert all("shadowtest-crowdstrike" in r.user_agent for r in server.requests())
    # later overlapping polls re-read the ids but fetch and push nothing twice
    assert wait_watermark(sensor, time.time())
    assert sensor.polls >= 2
    assert len(sensor.stream._since(0)) == 250
    assert len(ids_fetched(server)) == 250
    assert len({d.fields["composite_id"] for d in sensor.stream._since(0)}) == 250
    assert all(d.technique == ("T1611",) and d.received_at > 0 for d in first)
    assert len(server.requests("/oauth2/token")) == 1


def test_alerts_entities_fetched_in_batches_of_1000(server: CrowdStrikeServer,
                                                    make_sensor: Factory) -> None:
    server.ingest([alert() for _ in range(1200)])
    sensor = make_sensor(limit=5000)
    sensor.start()
    assert len(sensor.stream._since(0)) == 1200
    assert [len(r.body["composite_ids"]) for r in server.requests(ALERTS_ENTITIES)] == [1000, 200]
    assert all(r.status < 300 for r in server.requests())


def test_alerts_past_the_offset_ceiling_continue_from_the_newest_read(
        make_sensor: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crowdstrike, "MAX_WINDOW", 100)
    with CrowdStrikeServer(CLIENT_ID, CLIENT_SECRET, max_window=100) as small:
        base = time.time() - 30
        small.ingest([alert(created_timestamp=iso(base + i * 0.05)) for i in range(230)])
        sensor = make_sensor(base_url=small.url, limit=40)
        sensor.start()
        assert len(sensor.stream._since(0)) == 230
        assert (sensor.stream.lost, sensor.health().up) == (0, True)
        queries = small.requests(ALERTS_QUERY)
        assert all(q.status == 200 for q in queries)
        assert all(int(q.query["offset"]) + int(q.query["limit"]) <= 100 for q in queries)
        assert len({q.query["filter"] for q in queries}) > 1  # rebased lower bound
        sensor.stop()


def test_alerts_beyond_the_ceiling_in_one_instant_are_counted_lost(
        make_sensor: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crowdstrike, "MAX_WINDOW", 100)
    with CrowdStrikeServer(CLIENT_ID, CLIENT_SECRET, max_window=100) as small:
        same = iso(time.time() - 5)
        small.ingest([alert(created_timestamp=same) for _ in range(130)])
        sensor = make_sensor(base_url=small.url, limit=40)
        sensor.start()
        assert len(sensor.stream._since(0)) == 80
        assert sensor.stream.lost == 50  # a miss cannot be proved: SENSOR_DOWN, not MISSED
        assert wait_watermark(sensor, time.time())
        assert sensor.health().lost == 50  # counted once, not on every overlapping poll
        sensor.stop()


# ---------------------------------------------------------------- credentials
@pytest.mark.parametrize(("client_id", "secret", "bad_status", "status"), [
    (CLIENT_ID, "e2e-wrong-secret-0a9b8c7d", 403, 403),
    (CLIENT_ID, "e2e-wrong-secret-0a9b8c7d", 401, 401),
    ("e2e-unknown-client-4f3e2d", CLIENT_SECRET, 403, 400),  # the API echoes the client id
], ids=["wrong-secret-403", "wrong-secret-401", "unknown-client-400"])
def test_bad_credentials_health_down_without_secrets(
        server: CrowdStrikeServer, make_sensor: Factory, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, client_id: str, secret: str, bad_status: int,
        status: int) -> None:
    caplog.set_level(logging.DEBUG)
    server.bad_secret_status = bad_status
    monkeypatch.setenv("E2E_BAD_ID", client_id)
    monkeypatch.setenv("E2E_BAD_SECRET", secret)
    sensor = make_sensor(client_id="env:E2E_BAD_ID", client_secret=BAD_SECRET_REF)
    sensor.start()  # never raises for a backend error
    health = sensor.health()
    assert not health.up
    assert f"OAuth2 token request to {server.url}/oauth2/token failed with {status}" in health.reason
    assert "check env:E2E_BAD_ID/env:E2E_BAD_SECRET" in health.reason
    assert sensor.stream.closed == health.reason  # runs end now: SENSOR_DOWN, not a long wait
    assert [r.path for r in server.requests()] == ["/oauth2/token"]  # no API call, no retry
    text = reasons_and_reprs(sensor, caplog.text)
    for value in (client_id, secret, CLIENT_SECRET, CLIENT_ID):
        assert value not in text
    judged = judge(Run("st000000000001", "s", "host", "n", 0, 1, True), [],
                   Expectation("T1611"), health, sensor.name)
    assert judged.verdict is Verdict.SENSOR_DOWN


def test_unreachable_api_health_down(make_sensor: Factory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sensor = make_sensor(base_url=f"http://127.0.0.1:{port}")
    sensor.start()
    health = sensor.health()
    assert not health.up
    assert f"cannot reach http://127.0.0.1:{port}" in health.reason
    assert "Connection refused" in health.reason
    assert sensor.retried >= crowdstrike.RETRIES
    assert sensor.stream.closed is None  # may come back: keep polling
    assert CLIENT_SECRET not in reasons_and_reprs(sensor)


def test_missing_scope_health_down(server: CrowdStrikeServer, make_sensor: Factory) -> None:
    server.scopes = {"container:read"}
    sensor = make_sensor()
    sensor.start()
    health = sensor.health()
    assert not health.up
    assert "failed with 403 (access denied, authorization failed)" in health.reason
    assert "Alerts: Read" in health.reason


def test_revoked_token_reauthenticates_once(server: CrowdStrikeServer, make_sensor: Factory) -> None:
    sensor = make_sensor()
    sensor.start()
    old = server.tokens
    server.expire_tokens()
    server.ingest(alert())
    assert len(wait_count(sensor, 1)) == 1
    assert any(r.status == 401 for r in server.requests(ALERTS_QUERY))
    assert len(server.requests("/oauth2/token")) == 2
    assert sensor.health().up
    text = reasons_and_reprs(sensor)
    assert all(token not in text for token in old + server.tokens)


def test_stop_revokes_the_token(server: CrowdStrikeServer, make_sensor: Factory) -> None:
    sensor = make_sensor()
    sensor.start()
    assert len(server.tokens) == 1
    sensor.stop()
    assert server.tokens == []
    assert [r.status for r in server.requests("/oauth2/revoke")] == [200]
    assert not sensor.health().up


# ---------------------------------------------------------------- 429 and 5xx
@pytest.mark.parametrize("header", ["X-RateLimit-RetryAfter", "Retry-After"])
def test_rate_limit_429_waits_for_retry_after(server: CrowdStrikeServer, make_sensor: Factory,
                                              header: str) -> None:
    sensor = make_sensor()
    sensor.start()
    server.throttle_next(2, retry_after=1.0, path=ALERTS_QUERY, header=header)
    server.ingest(alert())
    assert len(wait_count(sensor, 1)) == 1
    queries = server.requests(ALERTS_QUERY)
    throttled = [i for i, r in enumerate(queries) if r.status == 429]
    assert len(throttled) == 2
    assert sensor.rate_limited == 2
    for i in throttled:
        answer, retry = queries[i], queries[i + 1]
        assert answer.headers["X-RateLimit-Remaining"] == "0"
        assert "X-RateLimit-Limit" in answer.headers
        if header == "Retry-After":
            assert retry.at - answer.at >= float(answer.headers["Retry-After"]) - 0.05
        else:  # epoch seconds: the retry came at or after that second
            assert retry.at >= float(answer.headers["X-RateLimit-RetryAfter"]) - 0.05
    assert sensor.health().up


def test_transient_5xx_retried_within_the_poll(server: CrowdStrikeServer,
                                               make_sensor: Factory) -> None:
    sensor = make_sensor()
    sensor.start()
    server.fail_next(2, 503, path=ALERTS_ENTITIES)
    server.ingest(alert())
    assert len(wait_count(sensor, 1)) == 1
    assert [r.status for r in server.requests(ALERTS_ENTITIES)] == [503, 503, 200]
    assert sensor.retried == 2
    assert sensor.health().up
    assert wait_watermark(sensor, time.time())
    assert len(sensor.stream._since(0)) == 1


def test_persistent_5xx_down_then_recovers(server: CrowdStrikeServer, make_sensor: Factory,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crowdstrike.api, "BACKOFF", 0.01)
    server.fail_next(10**6, 502, path=ALERTS_QUERY)  # until cleared
    sensor = make_sensor()
    sensor.start()
    health = sensor.health()
    assert not health.up
    assert f"failed with 502 (service unavailable) {crowdstrike.RETRIES + 1} times" in health.reason
    assert sensor.stream.watermark == 0.0  # a failed poll proves nothing
    server.clear_faults()
    assert wait_watermark(sensor, time.time() - sensor.delay)
    assert sensor.health().up


# ---------------------------------------------------------------- ingestion delay
def test_delayed_alert_arrives_after_the_delay_and_watermark_advances(
        server: CrowdStrikeServer, make_sensor: Factory) -> None:
    sensor = make_sensor(delay=2.0)
    sensor.start()
    sub = sensor.stream.subscribe()
    t0 = time.time()
    server.ingest(alert(timestamp=iso(t0), created_timestamp=iso(t0)), delay=1.5)
    undelivered: list[float] = []  # the watermark at every wake-up before the alert came

    def arrived(ds: list[Detection]) -> bool:
        if not ds:
            undelivered.append(sensor.stream.watermark)  # read under the stream's lock
        return len(ds) >= 1

    seen, _ = sub.wait(arrived, None, t0 + TIMEOUT)
    assert len(seen) == 1
    d = seen[0]
    assert d.received_at - t0 >= 1.5
    assert d.observed_at == pytest.approx(t0, abs=0.001)
    assert len(undelivered) > 1  # polls ran (and advanced the watermark) meanwhile
    assert max(undelivered) < t0  # never claimed complete before the alert arrived
    assert wait_watermark(sensor, t0 + 0.5)
    assert sensor.stream.watermark >= t0 + 0.5
    assert len(sensor.stream._since(sub.index)) == 1


def test_ingest_endpoint_feeds_the_server_from_another_process(
        server: CrowdStrikeServer, make_sensor: Factory) -> None:
    sensor = make_sensor()
    sensor.start()
    payload = json.dumps({"alert": alert("T1055.008", name="PtraceInjection"), "delay": 0.2})
    code = ("import sys, urllib.request; r = urllib.request.urlopen(urllib.request.Request("
            "sys.argv[1], data=sys.argv[2].encode(), headers={'Content-Type': 'application/json'}));"
            " print(r.status)")
    out = subprocess.run([sys.executable, "-c", code, f"{server.url}/_shadowtest/ingest", payload],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "201"
    (d,) = wait_count(sensor, 1)
    assert (d.rule, d.technique) == ("PtraceInjection", ("T1055.008",))


# ---------------------------------------------------------------- container source
def test_container_source_pages_runtime_detections(server: CrowdStrikeServer,
                                                   make_sensor: Factory) -> None:
    base = time.time() - 20
    server.ingest_container([
        {"name": "Container drift", "container_id": f"{i:064x}", "pod_name": f"st-pod-{i}",
         "namespace": "shadowtest", "computer_name": "node-1", "severity": "High",
         "technique_id": "T1611", "detect_timestamp": iso(base + i * 0.01)} for i in range(120)])
    server.ingest_container([{"name": "Other", "namespace": "kube-system"} for _ in range(5)])
    sensor = make_sensor(source="container", limit=50, filter="namespace:'shadowtest'")
    sensor.start()
    seen = sensor.stream._since(0)
    assert len(seen) == 120
    runtime = server.requests(RUNTIME_DETECTIONS)
    assert [(r.query["offset"], r.query["limit"]) for r in runtime[:3]] == [
        ("0", "50"), ("50", "50"), ("100", "50")]
    assert runtime[0].query["filter"].startswith("detect_timestamp:>='")
    assert server.requests(ALERTS_QUERY) == []
    assert {d.fields["namespace"] for d in seen} == {"shadowtest"}
    d = seen[7]
    assert (d.container_id, d.fields["pod_name"], d.node, d.severity, d.technique) == (
        f"{7:064x}", "st-pod-7", "node-1", "high", ("T1611",))
    server.ingest_container({"name": "Late", "namespace": "shadowtest",
                             "container_id": CONTAINER}, delay=0.3)
    (late,) = wait_count(sensor, 1, index=120)
    assert (late.rule, late.container_id) == ("Late", CONTAINER)
    assert wait_watermark(sensor, time.time())
    assert len(sensor.stream._since(0)) == 121


# ---------------------------------------------------------------- judged runs
def _run(ended: float) -> Run:
    return Run(new_run_id(), "T1611-container-escape", "container", "node-1", ended - 0.2, ended,
               executed=True, container_id=f"containerd://{CONTAINER}")


def test_judged_run_detected_after_ingestion_delay(server: CrowdStrikeServer,
                                                   make_sensor: Factory) -> None:
    sensor = make_sensor(delay=2.5)
    sensor.start()
    sub = sensor.stream.subscribe()  # before acting
    run = _run(time.time())
    server.ingest(alert(container_id=CONTAINER, timestamp=iso(run.ended_at - 0.1)), delay=1.5)
    seen, synced = sub.wait(partial(decided, run, Expectation("T1611")), None,
                            run.ended_at + 1.0 + sensor.delay, until=run.ended_at)
    health = sensor.health()
    judged = judge(run, seen, Expectation("T1611"),
                   Health(health.up, health.reason, sub.lost(), sub.malformed(), synced),
                   sensor.name)
    assert judged.verdict is Verdict.DETECTED, judged.reason
    assert judged.correlated_by == "container_id"
    assert judged.latency_ms is not None
    assert judged.latency_ms >= 1400
    assert CLIENT_SECRET not in reasons_and_reprs(sensor, judged.reason)


def test_judged_run_missed_once_the_watermark_passes_the_run(server: CrowdStrikeServer,
                                                             make_sensor: Factory) -> None:
    sensor = make_sensor(delay=0.5)
    sensor.start()
    sub = sensor.stream.subscribe()
    run = _run(time.time())
    other = "f" * 64  # same technique, another container: a near miss, not a detection
    server.ingest(alert(container_id=other, timestamp=iso(run.ended_at - 0.1)))
    deadline = run.ended_at + 30.0 + sensor.delay
    seen, synced = sub.wait(partial(decided, run, Expectation("T1611")), None, deadline,
                            until=run.ended_at)
    assert synced
    assert time.time() < deadline - 25
    health = sensor.health()
    assert health.up
    judged = judge(run, seen, Expectation("T1611"),
                   Health(health.up, health.reason, sub.lost(), sub.malformed(), synced),
                   sensor.name)
    assert judged.verdict is Verdict.MISSED
    assert "sensor synced past the window" in judged.reason
    assert [n.detection.container_id for n in judged.near_misses] == [other]


def test_secrets_and_tokens_never_shown(server: CrowdStrikeServer, make_sensor: Factory,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sensor = make_sensor()
    sensor.start()
    tokens = server.tokens
    server.expire_tokens()
    server.fail_next(crowdstrike.RETRIES + 1, 500, path=ALERTS_QUERY)
    server.ingest(alert(cmdline="sh -c true"))
    assert len(wait_count(sensor, 1)) == 1
    tokens += server.tokens
    down: list[Request] = [r for r in server.requests() if r.status >= 400]
    assert down  # the sensor went through 401 and 500 answers
    text = reasons_and_reprs(sensor, caplog.text)
    for value in (CLIENT_ID, CLIENT_SECRET, *tokens):
        assert value not in text
