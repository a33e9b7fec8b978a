"""The audit netlink calls made in process (harness/sensors/auditd/netlink.py) say what
``auditctl`` says, and a sync marker sent that way is read back by the real audit daemon's
sensor as its marker (the record has the shape ``auditctl -m`` gives it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.sensors.auditd import netlink
from tests.e2e.conftest import REPO

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


#: run as its own process (as a harness is): it starts the shared audit daemon, so the
#: daemon's pipes are that process's, not this test session's
READ_BACK = """
import json, time
import harness.sensors.auditd as auditd
real = auditd.auditctl
def no_marker_by_auditctl(*args, **kw):  # the marker must go over netlink
    assert args[0] != "-m", "the sync marker fell back to auditctl -m"
    return real(*args, **kw)
auditd.auditctl = no_marker_by_auditctl
sensor = auditd.AuditdSensor()
sensor.start()
try:
    up = sensor.health()
    sub = sensor.stream.subscribe()
    started = time.monotonic()
    token = sensor.sync()
    _, synced = sub.wait(lambda _: False, token, time.time() + 10)
    print(json.dumps({"up": up.up, "reason": up.reason, "token": token, "synced": synced,
                      "seconds": time.monotonic() - started}))
finally:
    sensor.stop()
"""


def test_a_marker_sent_over_netlink_is_read_back_by_the_daemon() -> None:
    res = subprocess.run([sys.executable, "-c", READ_BACK], capture_output=True, text=True,
                         timeout=120, check=False, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["up"], got["reason"]
    assert got["token"] is not None
    assert got["synced"], f"marker {got['token']} not read back within 10 s"
    assert got["seconds"] < 5
