"""The LSM enforcer for real, on both VM kernels (one boot each): a container-scoped task
(the ``namespace`` context: cgroup <cgroup2>/shadowtest/<id>, private PID namespace) is
DENIED creating a file in the host's /etc (EPERM, and no file exists) and attaching to its
PID 1 (EPERM, TracerPid 0), with one ``action: deny`` detection line each; a host task
creates its /etc file untouched. On this machine the enforcer cannot load (BPF LSM
programs fail with EPERM), and says so: that is the SENSOR_DOWN evidence."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.builtin import BUILTIN
from harness.core.errors import SensorError
from harness.sensors.lsm import LsmEnforcerSensor
from harness.targets.ssh import VmTarget

pytestmark = [pytest.mark.vm, pytest.mark.node]


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def evidence(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Boot the kernel's VM once; run the attacks in both contexts under the enforcer."""
    kernel = str(request.param)
    record = tmp_path_factory.mktemp(f"lsm-{kernel}") / "lsm.jsonl"
    run_id = f"st{secrets.token_hex(6)}"
    ns_path, host_path = f"/etc/shadowtest-{run_id}.conf", f"/etc/shadowtest-{run_id}-host.conf"
    target = VmTarget(f"vm-{kernel}", f"vm://{kernel}")
    sensor = LsmEnforcerSensor(node=target.node, record=str(record))
    out: dict[str, Any] = {"kernel": kernel, "run_id": run_id, "ns_path": ns_path,
                           "host_path": host_path, "record": record}
    try:
        t0 = time.perf_counter()
        shell = target.shell()
        out["boot_s"] = time.perf_counter() - t0
        sensor.use_shell(shell)
        sensor.start()
        out["timings"], out["ready"] = sensor.timings, sensor.ready
        sub = sensor.stream.subscribe()

        _container_attacks(target, shell, run_id, ns_path, out)
        host = target.open("host", f"{run_id}h")
        try:
            out["host"] = host.stage("etc-host", ["sh", "-c", f"printf x > {host_path} && "
                                                  f"test -s {host_path}"], {}, 20)
        finally:
            host.close()
        token = sensor.sync()
        out["detections"], out["synced"] = sub.wait(lambda _d: False, token, time.time() + 30)
        out["health"] = sensor.health()
        out["progs_running"] = _deny_programs(shell)
        sensor.stop()  # SIGTERM: the loader destroys its links, the policy is gone
        out["exit_code"] = sensor._proc.returncode if sensor._proc else None
        out["progs_after_stop"] = _deny_programs(shell)
        yield out
    finally:
        with contextlib.suppress(Exception):
            if target._shell is not None:
                target._shell.run(["rm", "-f", ns_path, host_path])
        sensor.stop()
        target.close()
        print(f"\nlsm on {kernel}: boot {out.get('boot_s', 0):.1f} s, "
              f"sensor {out.get('timings')}, loader {out.get('ready')}")


def _container_attacks(target: VmTarget, shell: Any, run_id: str, ns_path: str,
                       out: dict[str, Any]) -> None:
    """The /etc create and the PID 1 attach from the namespace context (and a "dpkg")."""
    bin_dir = target.stage_bin(BUILTIN / "atomic" / "bin")
    ns = target.open("namespace", run_id)
    try:
        out["ns"] = {"cgroup_id": ns.cgroup_id, "init_pid": ns.variables.get("ns_init_pid")}
        out["etc"] = ns.stage("etc", ["sh", "-c", f"printf x > {ns_path}"], {}, 20)
        out["etc_exists"] = shell.run(["test", "-e", ns_path]).returncode == 0
        out["ptrace"] = ns.stage("ptrace", ["python3", f"{bin_dir}/ptrace_attach.py", "1",
                                            "--attach"], {}, 20)
        out["tracer"] = ns.stage("tracer", ["sh", "-c", "grep TracerPid /proc/1/status"],
                                 {}, 20).stdout.split()
        # a package manager is allowed (by comm), even in the container
        out["dpkg"] = ns.stage("dpkg", ["python3", "-c", "import ctypes; ctypes.CDLL(None)"
                                        f".prctl(15, b'dpkg'); open('{ns_path}', 'x')"],
                               {}, 20)
        out["dpkg_exists"] = shell.run(["test", "-e", ns_path]).returncode == 0
        shell.run(["rm", "-f", ns_path])
    finally:
        ns.close()


def _deny_programs(shell: Any) -> list[str]:
    """Names of the enforcer's LSM programs loaded in the node's kernel now."""
    res = shell.run(["/usr/sbin/bpftool", "-j", "prog", "show"])
    assert res.returncode == 0, res.stderr
    return sorted(p.get("name", "") for p in json.loads(res.stdout) if p.get("type") == "lsm")


def _mine(ev: dict[str, Any], rule: str) -> list[Any]:
    return [d for d in ev["detections"] if d.rule == rule and
            (rule != "etc-file-create" or d.names == (ev["ns_path"],))]


def test_lsm_blocks_etc_file_create_in_container(evidence: dict[str, Any]) -> None:
    etc = evidence["etc"]
    assert etc.exit_code != 0, etc
    assert "Operation not permitted" in etc.stderr
    assert evidence["etc_exists"] is False  # denied before the effect: no file
    dets = _mine(evidence, "etc-file-create")
    assert len(dets) == 1, evidence["detections"]
    det = dets[0]
    assert (det.action, det.technique, det.severity) == ("deny", ("T1098",), "medium")
    assert det.cgroup_id == evidence["ns"]["cgroup_id"]
    assert det.fields["pidns"] != 4026531836  # the container's own PID namespace
    assert evidence["synced"]
    assert evidence["health"].up, evidence["health"]


def test_lsm_blocks_ptrace_of_container_pid1(evidence: dict[str, Any]) -> None:
    res = evidence["ptrace"]
    assert res.exit_code == 1, res
    assert "Operation not permitted" in res.stderr
    assert evidence["tracer"] == ["TracerPid:", "0"]
    dets = _mine(evidence, "ptrace-pid1")
    assert len(dets) == 1, evidence["detections"]
    det = dets[0]
    assert (det.action, det.technique) == ("deny", ("T1055.008",))
    assert det.fields["target"] == 1
    assert det.fields["target_pid"] == int(evidence["ns"]["init_pid"])
    assert det.cgroup_id == evidence["ns"]["cgroup_id"]


def test_lsm_allows_host_and_package_manager(evidence: dict[str, Any]) -> None:
    host = evidence["host"]
    assert host.exit_code == 0, host  # the host's own task: created, never denied
    assert evidence["dpkg"].exit_code == 0, evidence["dpkg"]
    assert evidence["dpkg_exists"] is True
    assert [d.names for d in evidence["detections"]
            if d.rule == "etc-file-create"] == [(evidence["ns_path"],)]


def test_lsm_stop_detaches_the_policy(evidence: dict[str, Any]) -> None:
    assert evidence["exit_code"] == 0
    assert len(evidence["progs_running"]) == 2  # deny_etc_create, deny_ptrace_pid1
    assert all(p.startswith("deny_") for p in evidence["progs_running"])
    assert evidence["progs_after_stop"] == []
    lines = evidence["record"].read_text().splitlines()
    assert all(json.loads(ln)["type"] == "printf" for ln in lines)  # bpftrace's envelope


def test_lsm_reports_not_usable_on_this_machine() -> None:
    """This host's kernel lists 'bpf' as an LSM but refuses LSM programs: start() says so."""
    sensor = LsmEnforcerSensor(node="local")
    with pytest.raises(SensorError, match=r"BPF LSM not usable on local: .*do not load"):
        sensor.start()
    assert not sensor.health().up
