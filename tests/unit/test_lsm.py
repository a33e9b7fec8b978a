"""The LSM enforcer sensor without a kernel: its loader's recorded output, its options,
its command line, and how it writes large files to a node.

vm-6.1.jsonl = the loader on Debian's 6.1 in the project's VM (tests/e2e/test_lsm_vm.py):
ready, an etc-file-create denial, a ptrace-pid1 denial, one sync marker per CPU.
host-6.18-error.jsonl = the loader on this development machine, whose kernel refuses BPF
LSM programs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.core.errors import ConfigError
from harness.sensors.base import build_sensor
from harness.sensors.lsm import RULES, LsmEnforcerSensor, loader_argv, validate

DATA = Path(__file__).resolve().parent.parent / "data" / "lsm"
HEADER = ("kind", "rule", "technique", "severity", "action", "pid", "tid", "ppid", "ancestors",
          "comm", "cgroup", "pidns", "mntns", "uid", "ts_ns", "wall_ns")


def _feed(name: str) -> LsmEnforcerSensor:
    sensor = LsmEnforcerSensor(node="vm-6.1")
    sensor._ncpu = 2
    for line in (DATA / name).read_text().splitlines():
        sensor.on_line(line)
    return sensor


def _payloads(name: str) -> list[dict[str, Any]]:
    return [json.loads(json.loads(line)["data"]) for line in (DATA / name).read_text().splitlines()]


def test_loader_lines_are_bpftrace_printf_envelopes_with_sensor_bt_header() -> None:
    dets = [p for p in _payloads("vm-6.1.jsonl") if p["kind"] == "detection"]
    assert [tuple(p)[:len(HEADER)] for p in dets] == [HEADER, HEADER]
    assert [(p["rule"], p["technique"], p["action"]) for p in dets] == [
        ("etc-file-create", "T1098", "deny"), ("ptrace-pid1", "T1055.008", "deny")]
    assert all(len(p["ancestors"]) == 6 for p in dets)


def test_on_line_vm_session_yields_deny_detections() -> None:
    sensor = _feed("vm-6.1.jsonl")
    dets = sensor.stream.snapshot()
    assert [(d.rule, d.technique, d.severity, d.action) for d in dets] == [
        ("etc-file-create", ("T1098",), "medium", "deny"),
        ("ptrace-pid1", ("T1055.008",), "high", "deny")]
    etc, ptrace = dets
    assert etc.names == ("/etc/shadowtest-st443162ac39e6.conf",)
    assert (etc.pid, etc.ppid, etc.ancestors, etc.comm, etc.cgroup_id) == (
        277, 267, (265, 225, 213, 1), "sh", 40)
    assert (ptrace.fields["target"], ptrace.fields["target_pid"]) == (1, 267)
    assert etc.observed_at == pytest.approx(1795456078.1098024)  # wall_ns, nanoseconds
    assert sensor.ready["load_ms"] > 0
    assert sensor._ready.is_set()
    assert sensor.stream.malformed == 0


def test_on_line_markers_complete_per_cpu() -> None:
    sensor = _feed("vm-6.1.jsonl")
    assert sensor._markers == {959232: {0, 1}}
    assert sensor.stream._s.markers == {"959232"}


def test_on_line_error_is_kept_as_the_reason() -> None:
    sensor = _feed("host-6.18-error.jsonl")
    assert sensor.error is not None
    assert sensor.error.startswith("BPF LSM not usable on local: 'bpf' is an active LSM")
    assert not sensor._ready.is_set()
    assert sensor.stream.snapshot() == []


def test_normalise_without_action_keeps_none() -> None:
    raw = _payloads("vm-6.1.jsonl")[1]
    del raw["action"]
    det = LsmEnforcerSensor().normalise(raw)
    assert det is not None
    assert det.action is None


# ---------------------------------------------------------------- options
def test_build_sensor_registers_lsm_with_defaults() -> None:
    sensor = build_sensor("lsm", {"type": "lsm", "node": "vm-6.1"})
    assert isinstance(sensor, LsmEnforcerSensor)
    assert sensor.rules == tuple(RULES)
    assert sensor.container_parents == ("shadowtest", "docker", "kubepods", "kubepods.slice")
    assert sensor.allow_comms == ("dpkg", "apt", "apt-get")


@pytest.mark.parametrize(("options", "message"), [
    ({"rules": ["etc-file-create", "kill-all"]}, "unknown: kill-all"),
    ({"rules": []}, "non-empty list"),
    ({"rules": "ptrace-pid1"}, "must be a list of strings"),
    ({"container_parents": []}, "container_parents is empty"),
    ({"container_parents": ["system.slice"]}, "holds the host's own processes"),
    ({"container_parents": ["docker/abc"]}, "is not a cgroup name"),
    ({"container_parents": [".."]}, "is not a cgroup name"),
    ({"allow_comms": ["a-comm-longer-than-15"]}, "is not a comm"),
    ({"allow_comms": [""]}, "is not a comm"),
    ({"allow_comms": [f"c{i}" for i in range(33)]}, "at most 32"),
])
def test_validate_rejects_bad_options(options: dict[str, Any], message: str) -> None:
    args = {"rules": list(RULES), "container_parents": ["shadowtest"], "allow_comms": ["dpkg"],
            **options}
    with pytest.raises(ConfigError, match=r"\[tool\.shadowtest\.sensors\.enf\]") as exc:
        validate("enf", args["rules"], args["container_parents"], args["allow_comms"])
    assert message in str(exc.value)


def test_build_sensor_rejects_unknown_key() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        build_sensor("lsm", {"type": "lsm", "action": "sigkill"})


def test_loader_argv_repeats_flags_in_order() -> None:
    assert loader_argv("/l", "/o", "vm", ["ptrace-pid1"], ["docker", "shadowtest"], ["dpkg"]) == [
        "/l", "--object", "/o", "--node", "vm", "--rule", "ptrace-pid1",
        "--container-parent", "docker", "--container-parent", "shadowtest",
        "--allow-comm", "dpkg"]


def test_loader_argv_passes_the_probed_cgroup2_root() -> None:
    argv = loader_argv("/l", "/o", "vm", ["ptrace-pid1"], ["shadowtest"], [],
                       cgroup2_root="/sys/fs/cgroup")
    assert argv[argv.index("--cgroup2-root") + 1] == "/sys/fs/cgroup"
    assert "--cgroup2-root" not in loader_argv("/l", "/o", "vm", ["ptrace-pid1"], ["x"], [])


def test_loader_takes_the_cgroup2_root_and_never_detects_it() -> None:
    """One home for the decision: the node probe. The C loader has no mount scan."""
    source = (Path(__file__).resolve().parents[2] / "harness/sensors/lsm/enforcer.c").read_text()
    assert "--cgroup2-root" in source
    assert "getmntent" not in source
    assert "cgroup2\")" not in source


