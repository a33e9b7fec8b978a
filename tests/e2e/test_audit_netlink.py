"""The audit netlink calls made in process (harness/sensors/auditd/netlink.py) say what
``auditctl`` says, and a sync marker sent that way is read back by the real audit daemon's
sensor as its marker (the record has the shape ``auditctl -m`` gives it)."""

from __future__ import annotations

import subprocess
import time

import pytest

from harness.sensors.auditd import AuditdSensor, netlink

pytestmark = pytest.mark.node


def _auditctl_status() -> dict[str, int]:
    out = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True).stdout
    status = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if value.split() and value.split()[0].isdigit():
            status[key] = int(value.split()[0])
    return status


def test_status_is_what_auditctl_prints() -> None:
    mine, theirs = netlink.status(), _auditctl_status()
    keys = ("enabled", "failure", "rate_limit", "backlog_limit", "backlog_wait_time")
    assert {k: mine[k] for k in keys} == {k: theirs[k] for k in keys}
    assert mine["pid"] == theirs["pid"]


def test_a_marker_sent_over_netlink_is_read_back_by_the_daemon() -> None:
    sensor = AuditdSensor()
    sensor.start()
    try:
        assert sensor.health().up, sensor.health().reason
        sub = sensor.stream.subscribe()
        started = time.monotonic()
        token = sensor.sync()
        assert token is not None
        _, synced = sub.wait(lambda _: False, token, time.time() + 10)
        assert synced, f"marker {token} not read back within 10 s"
        assert time.monotonic() - started < 5
    finally:
        sensor.stop()
