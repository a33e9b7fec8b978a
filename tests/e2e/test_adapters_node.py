"""Kernel event -> product-shaped output -> adapter -> verdict, with the real atomics.

A bridge (tests/bridges/bpftrace_bridge.py) runs the bundled bpftrace sensor and re-emits
each detection as a Falco http_output alert, a Tetragon export line (with rotation), or an
event/alert ingested by the local Sysdig / CrowdStrike API servers (with ingestion delay).
Its signs of life are the products' own: Falco metrics snapshots POSTed every half second,
and a pid file for the Tetragon export's writer. A bridge that dies makes those sensors'
rows SENSOR_DOWN, never MISSED (test_dead_bridge_...), and a test whose bridge died says so.

What these tests prove is the transports and the adapters' correlation, not any product's
detection: the bridge maps the bundled sensor's rules to product-shaped records itself. So
the bridge-fed sensors are named ``<product>-bridge``: no scenario declares an expectation
for them (they are judged on the scenario's technique), and no assertion here states what
Falco, Tetragon or Sysdig would report for a scenario (the scenarios' own ``falco`` /
``tetragon`` expectations, with their gaps, are the word on that).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.builtin import BUILTIN
from tests.e2e.conftest import REPO, Catalog, verdicts
from tests.servers.crowdstrike_server import CrowdStrikeServer
from tests.servers.sysdig_server import SysdigServer

pytestmark = pytest.mark.node

SYSDIG_TOKEN = "sdc-token-5f1e9c0b7a2d4e6f8a1b3c5d7e9f0a2b"
CS_ID = "0123456789abcdef0123456789abcdef"
CS_SECRET = "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA9z8y"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bridge:
    """The bridge process: started, READY awaited with a deadline (its stderr in a file, so
    a chatty bpftrace never fills a pipe nobody reads), checked alive after a run."""

    def __init__(self, tmp: Path, *args: str, ready_timeout: float = 180.0) -> None:
        self.pidfile = tmp / "bridge.pid"
        self.log = tmp / "bridge.log"
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "tests/bridges/bpftrace_bridge.py"),
                 "--pidfile", str(self.pidfile), "--ready-timeout", str(ready_timeout), *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
            )
        assert self.proc.stdout is not None
        # the bridge gives up itself after ready_timeout; this deadline only guards a hang
        ready, _, _ = select.select([self.proc.stdout], [], [], ready_timeout + 30)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "READY":
            self.stop()
            pytest.fail(f"the bpftrace bridge did not become ready (got {line!r}, exit "
                        f"{self.proc.returncode}): {self.log.read_text()[-2000:]}")

    def assert_alive(self) -> None:
        """A test's verdicts mean something only if the bridge lived through the run."""
        __tracebackhide__ = True
        if self.proc.poll() is not None:
            pytest.fail(f"the bpftrace bridge died during the run (exit {self.proc.returncode}):"
                        f" {self.log.read_text()[-2000:]}")

    def children(self) -> list[int]:
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                out.append(int(stat.parent.name))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.communicate(timeout=30)


@pytest.fixture
def attacks(catalog: Catalog) -> Catalog:
    for rel in ("privilege-escalation/ptrace-pid1.yaml", "privilege-escalation/container-escape-setns.yaml",
                "persistence/etc-write.yaml", "benign/read-etc-hostname.yaml"):
        src = BUILTIN / "scenarios" / rel
        catalog.scenario(src.parent.name, src.stem, src.read_text())
    return catalog


@pytest.fixture
def sysdig() -> Iterator[SysdigServer]:
    with SysdigServer(SYSDIG_TOKEN) as server:
        yield server


@pytest.fixture
def crowdstrike() -> Iterator[CrowdStrikeServer]:
    with CrowdStrikeServer(CS_ID, CS_SECRET) as server:
        yield server


def test_falco_http_receiver_delivers_and_correlates_real_atomics(
        attacks: Catalog, tmp_path: Path) -> None:
    """Transport: Falco-shaped http_output alerts POSTed to the receiver while the real
    atomics run reach the stream and correlate (12-char container id against the context's
    64-hex id; process tree outside containers); the metrics snapshots keep it alive."""
    port = free_port()
    attacks.config(f"""
        [tool.shadowtest]
        allowed_nodes = ["local"]
        window = "3s"
        [tool.shadowtest.sensors.falco-bridge]
        type = "falco"
        listen = "127.0.0.1:{port}"
    """)
    bridge = Bridge(tmp_path, "--falco-url", f"http://127.0.0.1:{port}/",
                    "--falco-metrics-interval", "0.5")
    try:
        res = attacks.run("run", "--results", "results.jsonl")
        bridge.assert_alive()
    finally:
        bridge.stop()
    got = verdicts(attacks.rows())
    assert res.returncode == 0, res.stdout
    assert got[("ptrace-pid1", "namespace", "falco-bridge")] == "DETECTED"
    assert got[("container-escape-setns", "namespace", "falco-bridge")] == "DETECTED"
    assert got[("etc-write", "host", "falco-bridge")] == "DETECTED"
    assert got[("etc-write", "namespace", "falco-bridge")] == "DETECTED"
    assert got[("read-etc-hostname", "host", "falco-bridge")] == "CLEAN"
    rows = {(r["scenario"], r["context"]): r for r in attacks.rows()
            if r["sensor"] == "falco-bridge"}
    # Falco's 12-char container id correlated with the context's 64-hex id
    assert rows[("ptrace-pid1", "namespace")]["correlated_by"] in ("container_id", "run_id")


def test_tetragon_tail_and_sysdig_api_pair_judge_the_same_runs(
        attacks: Catalog, sysdig: SysdigServer, tmp_path: Path) -> None:
    """Transports: the Tetragon export tail across rotation and the Sysdig API poller with
    its ingestion delay and watermark, as a sensor pair (incumbent, candidate): each gets its
    own verdict row.
    The tetragon sensor is named ``tetragon-bridge``: the bridge's export lines carry the
    bridge's own policy names, not the policy-library ones the bundled scenarios' ``tetragon``
    expectations name, so it is judged on the scenarios' techniques."""
    export = tmp_path / "tetragon" / "tetragon.log"
    export.parent.mkdir()
    attacks.config(f"""
        [tool.shadowtest]
        allowed_nodes = ["local"]
        window = "3s"
        [tool.shadowtest.sensors.tetragon-bridge]
        type = "tetragon"
        path = "{export}"
        pidfile = "{tmp_path / 'bridge.pid'}"
        techniques = {{ "shadowtest-setns" = "T1611" }}
        [tool.shadowtest.sensors.sysdig-bridge]
        type = "sysdig"
        url = "{sysdig.url}"
        token = "env:ST_TEST_SYSDIG_TOKEN"
        poll_interval = 0.25
        delay = 1.0
    """)
    bridge = Bridge(tmp_path, "--tetragon-file", str(export), "--tetragon-rotate", "1500",
                    "--sysdig-url", f"{sysdig.url}/_shadowtest/ingest", "--sysdig-delay", "0.5")
    try:
        res = attacks.run("run", "--results", "results.jsonl",
                          env={"ST_TEST_SYSDIG_TOKEN": SYSDIG_TOKEN})
        bridge.assert_alive()
    finally:
        bridge.stop()
    got = verdicts(attacks.rows())
    assert res.returncode == 0, res.stdout
    for sensor in ("tetragon-bridge", "sysdig-bridge"):
        assert got[("ptrace-pid1", "namespace", sensor)] == "DETECTED"
        assert got[("container-escape-setns", "namespace", sensor)] == "DETECTED"
        assert got[("etc-write", "host", sensor)] == "DETECTED"
        assert got[("read-etc-hostname", "host", sensor)] == "CLEAN"
    assert list(export.parent.glob("tetragon.log.1")), "the bridge rotated the export file"
    sysdig_rows = [r for r in attacks.rows() if r["sensor"] == "sysdig-bridge" and r["verdict"] == "DETECTED"]
    assert all(r["latency_ms"] >= 400 for r in sysdig_rows)  # the backend's ingestion delay


def test_dead_bridge_makes_tetragon_and_falco_rows_sensor_down_never_missed(
        attacks: Catalog, tmp_path: Path) -> None:
    """The producer dies (SIGKILL: its pid file stays behind, stale) before the runs: the
    Tetragon tail (writer pid file) and the Falco receiver (no POST, no metrics snapshot)
    judge every run SENSOR_DOWN with the reason, never MISSED or CLEAN."""
    export = tmp_path / "tetragon" / "tetragon.log"
    export.parent.mkdir()
    port = free_port()
    attacks.config(f"""
        [tool.shadowtest]
        allowed_nodes = ["local"]
        window = "2s"
        [tool.shadowtest.sensors.tetragon-bridge]
        type = "tetragon"
        path = "{export}"
        pidfile = "{tmp_path / 'bridge.pid'}"
        techniques = {{ "shadowtest-setns" = "T1611" }}
        [tool.shadowtest.sensors.falco-bridge]
        type = "falco"
        listen = "127.0.0.1:{port}"
    """)
    bridge = Bridge(tmp_path, "--tetragon-file", str(export), "--falco-url",
                    f"http://127.0.0.1:{port}/", "--falco-metrics-interval", "0.5")
    children = bridge.children()
    bridge.proc.kill()  # the producer dies without cleaning up
    bridge.proc.wait(30)
    for pid in children:  # its bpftrace, orphaned: stopped by pid, as the bridge would have
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            time.sleep(1.0)
    bridge.stop()
    assert bridge.pidfile.exists(), "SIGKILL leaves the pid file behind (stale)"
    res = attacks.run("run", "--results", "results.jsonl")
    rows = [r for r in attacks.rows() if r["sensor"] in ("tetragon-bridge", "falco-bridge")]
    assert res.returncode == 1, res.stdout
    judged = [r for r in rows if r["verdict"] != "NOT_EXECUTED"]  # an action that ran
    assert {r["verdict"] for r in judged} == {"SENSOR_DOWN"}, [
        (r["scenario"], r["context"], r["sensor"], r["verdict"], r["reason"]) for r in rows]
    got = verdicts(rows)
    for sensor in ("tetragon-bridge", "falco-bridge"):  # the runs that detect with a live bridge
        assert got[("ptrace-pid1", "namespace", sensor)] == "SENSOR_DOWN"
        assert got[("etc-write", "host", sensor)] == "SENSOR_DOWN"
        assert got[("read-etc-hostname", "host", sensor)] == "SENSOR_DOWN"
    for r in judged:
        if r["sensor"] == "tetragon-bridge":
            assert f"from {bridge.pidfile}) is not running" in r["reason"]
        else:
            assert r["reason"].startswith(f"falco-bridge: no POST to http://127.0.0.1:{port}/ during")


def test_secrets_never_appear_in_output_results_or_junit(
        attacks: Catalog, sysdig: SysdigServer, crowdstrike: CrowdStrikeServer) -> None:
    """Good and refused credentials, debug logging on: no secret in anything written."""
    attacks.config(f"""
        [tool.shadowtest]
        allowed_nodes = ["local"]
        window = "2s"
        [tool.shadowtest.sensors.sysdig]
        type = "sysdig"
        url = "{sysdig.url}"
        token = "env:ST_TEST_SYSDIG_TOKEN"
        poll_interval = 0.25
        delay = 0.5
        [tool.shadowtest.sensors.crowdstrike]
        type = "crowdstrike"
        base_url = "{crowdstrike.url}"
        client_id = "env:ST_TEST_CS_ID"
        client_secret = "env:ST_TEST_CS_SECRET"
        poll_interval = 0.25
        delay = 0.5
    """)
    wrong = "Wr0ngSecretWr0ngSecretWr0ngSecret"
    env = {"ST_TEST_SYSDIG_TOKEN": SYSDIG_TOKEN, "ST_TEST_CS_ID": CS_ID, "ST_TEST_CS_SECRET": wrong}
    res = attacks.run("run", "scenarios/benign", "--results", "results.jsonl", "--",
                      "--junitxml=junit.xml", "--log-level=DEBUG", "-o", "log_cli=true", "-rA",
                      env=env)
    got = verdicts(attacks.rows())
    assert got[("read-etc-hostname", "host", "sysdig")] == "CLEAN"
    assert got[("read-etc-hostname", "host", "crowdstrike")] == "SENSOR_DOWN"
    assert res.returncode == 1
    written = "\n".join([res.stdout, res.stderr, (attacks.root / "results.jsonl").read_text(),
                         (attacks.root / "junit.xml").read_text()])
    assert "SENSOR_DOWN" in written
    for secret in (SYSDIG_TOKEN, wrong, CS_SECRET):
        assert secret not in written
    assert os.environ.get("ST_TEST_SYSDIG_TOKEN") is None  # nothing leaked into this process


FALCO_SYNC_STANDIN = (  # what harness/rulepacks/falco/shadowtest-sync.yaml makes Falco print
    'tracepoint:syscalls:sys_enter_getpgid /args->pid >= 0x5ae00000 && args->pid <= 0x5aefffff/ { '
    'printf("{\\"rule\\":\\"shadowtest sync marker\\",\\"source\\":\\"syscall\\",'
    '\\"priority\\":\\"Notice\\",\\"tags\\":[\\"shadowtest\\",\\"sync\\"],'
    '\\"output_fields\\":{\\"thread.tid\\":%d,\\"evt.cpu\\":%d,\\"proc.pid\\":%d}}\\n", '
    'tid, cpu, pid); }')


def test_falco_sync_markers_reach_every_cpu_of_this_kernel() -> None:
    """The Falco sensor's sync markers, seen by a kernel tracer standing in for Falco with
    the sync rule (the same tracepoint, the same fields): one per CPU from the marker
    thread, so the token is marked within a second instead of waiting out the window."""
    from harness.sensors.falco import FalcoSensor

    sensor = FalcoSensor(command=["bpftrace", "-e", FALCO_SYNC_STANDIN], sync=True)
    sensor.start()
    try:
        deadline = time.time() + 60
        while sensor.stream.malformed < 1 and time.time() < deadline:  # "Attaching 1 probe..."
            time.sleep(0.1)
        time.sleep(1.0)
        sub = sensor.stream.subscribe()
        started = time.time()
        token = sensor.sync()
        _, synced = sub.wait(lambda _: False, token, time.time() + 5)
        took = time.time() - started
    finally:
        sensor.stop()
    assert (token is not None, synced, took < 1.5) == (True, True, True), took
