"""The real SysdigSensor against a real local Events API server (tests/servers/sysdig_server.py).

Everything is HTTP on 127.0.0.1; no root, no node attack. Waiting is done on the
sensor's stream (woken by every push and watermark advance), never by sleeping.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.core.detection import Detection
from harness.core.health import Health
from harness.core.run import Run
from harness.core.verdict import Expectation, Judgement, Verdict, judge
from harness.engine.execute import decided, new_run_id
from harness.sensors.base import Subscription
from harness.sensors.sysdig import SysdigSensor
from tests.servers.sysdig_server import TWO_WEEKS_NS, SysdigServer, make_event

REPO = Path(__file__).resolve().parents[2]
EVENTS = "/secure/events/v1/events"
TOKEN_VAR = "SHADOWTEST_TEST_SYSDIG_TOKEN"

SensorFactory = Callable[..., SysdigSensor]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours *_PROXY: the local server must be reached directly."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "sdt-" + secrets.token_hex(16)
    monkeypatch.setenv(TOKEN_VAR, value)
    return value


@pytest.fixture
def server(token: str) -> Iterator[SysdigServer]:
    with SysdigServer(token) as srv:
        yield srv


@pytest.fixture
def make_sensor(server: SysdigServer) -> Iterator[SensorFactory]:
    started: list[SysdigSensor] = []

    def build(**options: Any) -> SysdigSensor:
        kwargs: dict[str, Any] = {"url": server.url, "token": f"env:{TOKEN_VAR}",
                                  "poll_interval": 0.2, "delay": 1.0, "lookback": 60.0,
                                  "timeout": 5.0, "node": "node-1"}
        kwargs.update(options)
        sensor = SysdigSensor(**kwargs)
        started.append(sensor)
        return sensor

    yield build
    for sensor in started:
        sensor.stop()


def _no_token(token: str, *things: object) -> None:
    for thing in things:
        assert token not in repr(thing)
        assert token not in str(thing)


def _wait_ids(sensor: SysdigSensor, ids: set[str], seconds: float = 15.0) -> list[Detection]:
    seen, _ = sensor.stream.wait(0, lambda got: ids <= {d.fields.get("id") for d in got}, None,
                                 time.time() + seconds)  # from the stream's start
    return seen


def _wait_poll(sensor: SysdigSensor, seconds: float = 15.0) -> bool:
    """Until a poll that started after now completed (the watermark passed now - delay)."""
    _, synced = sensor.stream.subscribe().wait(lambda got: False, None, time.time() + seconds,
                                               until=time.time() - sensor.delay)
    return synced


# ---------------------------------------------------------------- the server itself
def test_server_list_validates_like_the_api(server: SysdigServer, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    now = time.time_ns()
    with httpx.Client(base_url=server.url, headers=auth) as c:
        assert c.get(EVENTS).status_code == 400  # no time criteria
        assert c.get(EVENTS, params={"from": now - 10}).status_code == 400
        assert c.get(EVENTS, params={"from": now - TWO_WEEKS_NS - 1, "to": now}).status_code == 400
        assert c.get(EVENTS, params={"from": now, "to": now - 1}).status_code == 400
        assert c.get(EVENTS, params={"from": 0, "to": 1, "cursor": "x"}).status_code == 400
        assert c.get(EVENTS, params={"cursor": "not-a-cursor"}).status_code == 400
        for limit in (0, 201, "ten"):
            assert c.get(EVENTS, params={"from": 0, "to": 1, "limit": limit}).status_code == 400
        ok = c.get(EVENTS, params={"from": now - TWO_WEEKS_NS, "to": now})
        assert ok.status_code == 200
        assert ok.json() == {"page": {"total": 0}, "data": []}
        assert ok.headers["X-RateLimit-Limit"] == "100"
        bad = c.get(EVENTS, params={"from": 0, "to": 1, "filter": 'nosuch = "x"'})
        assert bad.status_code == 400
        assert "supported-filters" in bad.json()["message"]
        filters = c.get("/secure/events/v1/supported-filters").json()["data"]
        assert {"ruleName", "containerId", "kubernetes.namespace.name"} <= {f["id"] for f in filters}
    denied = httpx.get(server.url + EVENTS, params={"from": 0, "to": 1},
                       headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401
    assert denied.json()["message"] == "Access denied."
    assert denied.headers["X-RateLimit-Limit"] == "100"
    assert httpx.get(server.url + EVENTS, params={"from": 0, "to": 1}).status_code == 401


def test_server_pages_newest_first_with_cursors_and_filter(server: SysdigServer, token: str) -> None:
    now = time.time_ns()
    cid = secrets.token_hex(32)
    ids = server.ingest([make_event(f"rule-{i}", timestamp=now - i * 1_000,
                                    container_id=cid if i % 2 else None) for i in range(7)])
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=auth) as c:
        first = c.get(EVENTS, params={"from": now - 10**9, "to": now, "limit": 3}).json()
        assert [e["id"] for e in first["data"]] == ids[:3]
        assert first["page"]["total"] == 7
        assert "prev" not in first["page"]
        second = c.get(EVENTS, params={"cursor": first["page"]["next"], "limit": 3}).json()
        assert [e["id"] for e in second["data"]] == ids[3:6]
        back = c.get(EVENTS, params={"cursor": second["page"]["prev"], "limit": 3}).json()
        assert [e["id"] for e in back["data"]] == ids[:3]
        third = c.get(EVENTS, params={"cursor": second["page"]["next"], "limit": 3}).json()
        assert [e["id"] for e in third["data"]] == ids[6:]
        assert "next" not in third["page"]
        only = c.get(EVENTS, params={"from": now - 10**9, "to": now,
                                     "filter": f'containerId = "{cid[:12]}"'}).json()
        assert [e["id"] for e in only["data"]] == ids[1::2]
        named = c.get(EVENTS, params={"from": now - 10**9, "to": now,
                                      "filter": 'ruleName in ("rule-2", "rule-5") and proc.name = "sh"'})
        assert [e["id"] for e in named.json()["data"]] == [ids[2], ids[5]]
        assert c.get(f"/secure/events/v1/events/{ids[4]}").json()["content"]["ruleName"] == "rule-4"
        assert c.get("/secure/events/v1/events/0000").status_code == 404


def test_server_ingest_delay_hides_events_until_due(server: SysdigServer, token: str) -> None:
    (eid,) = server.ingest(make_event("late"), delay=60)
    auth = {"Authorization": f"Bearer {token}"}
    now = time.time_ns()
    body = httpx.get(server.url + EVENTS, params={"from": now - 10**10, "to": now},
                     headers=auth).json()
    assert body["data"] == []
    assert httpx.get(f"{server.url}{EVENTS}/{eid}", headers=auth).status_code == 404


# ---------------------------------------------------------------- the sensor
def test_sensor_pages_through_more_events_than_limit(server: SysdigServer,
                                                     make_sensor: SensorFactory, token: str) -> None:
    now = time.time_ns()
    before = server.ingest([make_event(f"old-{i}", timestamp=now - (i + 1) * 10**6)
                            for i in range(57)])
    sensor = make_sensor(limit=10)
    sensor.start()  # the first poll is synchronous: all 57 pages' events are in
    got = sensor.stream._since(0)
    assert sorted(d.fields["id"] for d in got) == sorted(before)
    assert [d.observed_at for d in got] == sorted(d.observed_at for d in got)  # oldest first
    first_poll = server.requests(EVENTS)[:6]
    assert "from" in first_poll[0].query
    assert "to" in first_poll[0].query
    assert all("cursor" in r.query and "from" not in r.query and "to" not in r.query
               for r in first_poll[1:])
    assert [r.status for r in first_poll] == [200] * 6
    later = server.ingest([make_event(f"new-{i}") for i in range(23)])
    seen = _wait_ids(sensor, set(later))
    ids = [d.fields["id"] for d in seen]
    assert set(later) <= set(ids)
    assert len(ids) == len(set(ids)) == 80  # overlapping polls never push an event twice
    assert sensor.health().up
    _no_token(token, sensor, sensor.health(), *seen)


def test_sensor_wrong_token_is_down_with_reason(server: SysdigServer, make_sensor: SensorFactory,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sdt-wrong-" + secrets.token_hex(12)
    monkeypatch.setenv("SHADOWTEST_TEST_WRONG_TOKEN", wrong)
    ref = "env:SHADOWTEST_TEST_WRONG_TOKEN"
    sensor = make_sensor(token=ref)
    sensor.start()  # does not raise: the reason is in health
    health = sensor.health()
    assert not health.up
    assert "401" in health.reason
    assert "env:SHADOWTEST_TEST_WRONG_TOKEN" in health.reason
    assert server.url + EVENTS in health.reason
    assert [r.status for r in server.requests(EVENTS)] == [401]
    _no_token(wrong, health, sensor)
    _no_token(server.token, health, sensor)


def test_sensor_unreachable_backend_is_down(make_sensor: SensorFactory, token: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sensor = make_sensor(url=f"http://127.0.0.1:{port}")  # closed port: connection refused
    t0 = time.monotonic()
    sensor.start()
    assert time.monotonic() - t0 < 5
    health = sensor.health()
    assert not health.up
    assert "cannot connect" in health.reason
    assert f"127.0.0.1:{port}" in health.reason
    _no_token(token, health, sensor)


def test_sensor_honours_retry_after(server: SysdigServer, make_sensor: SensorFactory) -> None:
    server.throttle_next(2, retry_after=1)
    sensor = make_sensor()
    sensor.start()
    assert sensor.health().up  # throttling is not an outage
    log = server.requests(EVENTS)
    assert [r.status for r in log[:3]] == [429, 429, 200]
    assert log[0].retry_after == "1"
    assert log[1].at - log[0].at >= 1.0
    assert log[2].at - log[1].at >= 1.0
    assert sensor.polls == 1


def test_sensor_retries_transient_5xx(server: SysdigServer, make_sensor: SensorFactory) -> None:
    (eid,) = server.ingest(make_event("after-outage"))
    server.fail_next(2, status=503)
    sensor = make_sensor()
    sensor.start()
    assert sensor.health().up
    assert [r.status for r in server.requests(EVENTS)[:3]] == [503, 503, 200]
    assert [d.fields["id"] for d in sensor.stream._since(0)] == [eid]


def test_sensor_down_when_backend_keeps_failing_then_recovers(
    server: SysdigServer, make_sensor: SensorFactory, token: str,
) -> None:
    server.fail_next(10_000, status=500)
    sensor = make_sensor(poll_interval=0.2)
    t0 = time.monotonic()
    sensor.start()
    assert time.monotonic() - t0 >= 0.6  # retried for 3 x poll_interval before giving up
    health = sensor.health()
    assert not health.up
    assert "500" in health.reason
    assert "keeps failing" in health.reason
    failed = len(server.requests(EVENTS))
    assert failed > 2  # retried with backoff, not once
    server.clear_faults()
    assert _wait_poll(sensor)
    assert sensor.health().up
    _no_token(token, health)


def test_sensor_delayed_event_arrives_after_delay_and_watermark_advances(
    server: SysdigServer, make_sensor: SensorFactory,
) -> None:
    sensor = make_sensor(delay=2.5)
    sensor.start()
    wm0 = sensor.stream.watermark
    assert 0 < wm0 <= time.time() - 2.5
    polls0 = sensor.polls
    sub = sensor.stream.subscribe()
    t0 = time.time()
    (eid,) = server.ingest(make_event("late-arrival", timestamp=time.time_ns()), delay=2.0)
    seen, _ = sub.wait(lambda got: any(d.fields.get("id") == eid for d in got), None, t0 + 15)
    arrived = time.time()
    assert [d.fields["id"] for d in seen] == [eid]
    assert arrived - t0 >= 2.0  # invisible until the server's ingestion delay passed
    assert seen[0].received_at >= t0 + 2.0
    assert sensor.polls > polls0
    wm1 = sensor.stream.watermark
    assert wm1 > wm0
    assert wm1 <= time.time() - 2.5  # trails the last poll by the ingestion delay
    # the watermark keeps advancing as polls complete
    _, synced = sensor.stream.subscribe().wait(lambda got: False, None, time.time() + 10,
                                               until=wm1 + 0.5)
    assert synced
    assert sensor.stream.watermark >= wm1 + 0.5


def test_sensor_fed_by_a_bridge_process(token: str, tmp_path: Path) -> None:
    """The server run alone (python -m), fed over POST /_shadowtest/ingest like a bridge."""
    env = {**os.environ, TOKEN_VAR: token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.sysdig_server", "--token-env", TOKEN_VAR],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    sensor: SysdigSensor | None = None
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        sensor = SysdigSensor(url=url, token=f"env:{TOKEN_VAR}", poll_interval=0.2, delay=1.0,
                              lookback=60)
        sensor.start()
        assert sensor.health().up
        sub = sensor.stream.subscribe()
        resp = httpx.post(f"{url}/_shadowtest/ingest",
                          json={"events": [make_event("bridged", event_id="b" * 32)], "delay": 0.5})
        assert resp.status_code == 202
        assert resp.json()["ids"] == ["b" * 32]
        seen, _ = sub.wait(lambda got: len(got) >= 1, None, time.time() + 15)
        assert [d.rule for d in seen] == ["bridged"]
    finally:
        if sensor is not None:
            sensor.stop()
        proc.terminate()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


# ---------------------------------------------------------------- judged runs
def _run(container_id: str, started: float, ended: float) -> Run:
    return Run(run_id=new_run_id(), scenario="container-escape-release-agent", context="container",
               node="node-1", started_at=started, ended_at=ended, executed=True,
               container_id=container_id)


def _judge(sensor: SysdigSensor, sub: Subscription, run: Run, expectation: Expectation,
           before: Health, window: float) -> tuple[Judgement, Health, float]:
    """What harness.engine.execute does for one sensor after the action, minus the atomic."""
    deadline = run.ended_at + window + sensor.delay
    t0 = time.time()
    seen, synced = sub.wait(partial(decided, run, expectation), sensor.sync(), deadline,
                            until=run.ended_at)
    waited = time.time() - t0
    now = sensor.health()
    health = Health(up=before.up and now.up, reason=before.reason if not before.up else now.reason,
                    lost=sub.lost(), malformed=sub.malformed(), synced=synced)
    return judge(run, seen, expectation, health, sensor.name), health, waited


def test_judged_run_detected_after_ingestion_delay(server: SysdigServer, make_sensor: SensorFactory,
                                                   token: str) -> None:
    sensor = make_sensor(delay=2.0)
    sensor.start()
    before = sensor.health()
    sub = sensor.stream.subscribe()  # before acting
    cid = secrets.token_hex(32)
    started = time.time()
    # the "action": the backend will report it (short container id) 1.5 s after it happened
    ingested = time.time()
    server.ingest(make_event("Container escape via release_agent", container_id=secrets.token_hex(32),
                             tags=["MITRE_T1611_escape_to_host"]))  # another container: ignored
    server.ingest(make_event("Container escape via release_agent", container_id=cid, severity=0,
                             tags=["container", "MITRE_T1611_escape_to_host", "mitre_privilege_escalation"],
                             timestamp=time.time_ns()), delay=1.5)
    run = _run(cid, started, time.time())
    expectation = Expectation(technique="T1611", rule={"contains": "release_agent"}, severity="high")
    judgement, health, waited = _judge(sensor, sub, run, expectation, before, window=5.0)
    assert judgement.verdict is Verdict.DETECTED, judgement.reason
    assert judgement.correlated_by == "container_id"
    assert judgement.detection is not None
    assert judgement.detection.container_id == cid[:12]
    assert judgement.latency_ms is not None
    assert judgement.latency_ms >= 1400
    assert judgement.detection.received_at >= ingested + 1.5  # not before the backend had it
    assert waited < 5.0  # decided as soon as it arrived, not at the deadline
    assert health.up
    _no_token(token, judgement, health, sensor, judgement.detection)


def test_judged_run_missed_closes_early_on_watermark(server: SysdigServer, make_sensor: SensorFactory,
                                                     token: str) -> None:
    sensor = make_sensor(delay=1.0)
    sensor.start()
    before = sensor.health()
    sub = sensor.stream.subscribe()  # before acting
    cid = secrets.token_hex(32)
    started = time.time()
    server.ingest(make_event("Container escape via release_agent", container_id=secrets.token_hex(32),
                             tags=["MITRE_T1611_escape_to_host"]))  # not this run's container
    run = _run(cid, started, time.time())
    judgement, health, waited = _judge(sensor, sub, run, Expectation(technique="T1611"), before,
                                       window=30.0)
    assert judgement.verdict is Verdict.MISSED, judgement.reason
    assert health.synced
    assert health.up
    assert "synced past the window" in judgement.reason
    assert waited < 10.0  # the watermark passed run end + delay: no 31 s wait
    assert sensor.stream.watermark >= run.ended_at
    assert [n.correlated_by for n in judgement.near_misses] == [None]  # the other container
    _no_token(token, judgement, health, sensor, *judgement.near_misses)
