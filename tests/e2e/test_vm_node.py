"""Kernel-matrix VMs for real: the cached image (ci/vm-image.sh, built here when missing)
booted under QEMU TCG with each stock kernel, reached over SSH on a 127.0.0.1 forward.

One VM at a time (TCG uses both cores); two boots in all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.targets import vm
from harness.targets.vm import KERNELS, VirtualMachine

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def image() -> Path:
    """The cached image: ci/vm-image.sh is a no-op when it is up to date."""
    vm.build_image(vm.DEFAULT_CACHE)
    return vm.DEFAULT_CACHE


def _poll(what: str, condition: Callable[[], bool], timeout: float = 15.0) -> None:
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def _port_refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def _proc_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_vm_6_1_boots_with_sensors_and_down_leaves_nothing(
        image: Path, tmp_path: Path) -> None:
    machine = VirtualMachine("6.1", cache_dir=image, state_dir=tmp_path)
    started = time.monotonic()
    with machine:
        endpoint = machine.endpoint
        assert endpoint is not None
        boot = time.monotonic() - started
        state = json.loads((tmp_path / "vm-6.1.json").read_text())
        assert (state["pid"], state["port"], state["kernel"]) == (
            endpoint.pid, endpoint.port, KERNELS["6.1"])
        assert vm.is_our_qemu(endpoint.pid, endpoint.port)

        t0 = time.monotonic()
        uname = endpoint.run("uname -r")
        round_trip = time.monotonic() - t0
        assert (uname.returncode, uname.stdout.strip()) == (0, KERNELS["6.1"]), uname.stderr

        lsm = endpoint.run("cat /sys/kernel/security/lsm")
        assert "bpf" in lsm.stdout.split(","), lsm
        bt = endpoint.run("bpftrace --version")
        assert (bt.returncode, bt.stdout.startswith("bpftrace v")) == (0, True), bt
        audit = endpoint.run(
            "auditd && for i in $(seq 100); do auditctl -s | grep -q '^pid [1-9]' && break; "
            "sleep 0.1; done; auditctl -s")
        assert audit.returncode == 0, audit
        assert any(ln.startswith("pid ") and ln != "pid 0" for ln in audit.stdout.splitlines()), audit
        mounts = endpoint.run("cat /proc/mounts").stdout
        for fs in ("tracefs", "securityfs", "bpf", "cgroup2", "devpts"):
            assert f" {fs} " in mounts, f"{fs} not mounted in the guest:\n{mounts}"
        print(f"\n6.1: boot to ssh {boot:.1f} s, one ssh round trip {round_trip:.2f} s")

    assert _proc_gone(endpoint.pid)
    assert not vm.is_our_qemu(endpoint.pid, endpoint.port)
    assert _port_refuses(endpoint.port)
    assert not (tmp_path / "vm-6.1.json").exists()
    machine.down()  # idempotent


CHILD = textwrap.dedent("""
    import json, sys, threading
    from pathlib import Path
    from harness.targets.vm import VirtualMachine
    machine = VirtualMachine("6.12", state_dir=Path(sys.argv[1]))
    endpoint = machine.up(timeout=float(sys.argv[2]))
    print(json.dumps(endpoint.as_json()), flush=True)
    threading.Event().wait()          # a harness that hangs until it is killed
""")


def test_vm_6_12_boots_and_dies_with_a_sigkilled_harness(
        image: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(BOOT_TIMEOUT)],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    endpoint: dict[str, object] = {}
    try:
        line = child.stdout.readline()  # bounded: the child's up() fails after BOOT_TIMEOUT
        assert line, f"the child harness exited {child.wait()} before the VM was up"
        endpoint = json.loads(line)
        boot = time.monotonic() - started
        pid, port = int(str(endpoint["pid"])), int(str(endpoint["port"]))
        ep = vm.VmEndpoint(host="127.0.0.1", port=port, user="root", key=Path(str(endpoint["key"])),
                           kernel=str(endpoint["kernel"]), pid=pid,
                           console=Path(str(endpoint["console"])))
        uname = ep.run("uname -r")
        assert (uname.returncode, uname.stdout.strip()) == (0, KERNELS["6.12"]), uname.stderr
        assert vm.ssh_banner(port)
        print(f"\n6.12: boot to ssh {boot:.1f} s (including the child's start)")

        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        killed = time.monotonic()
        _poll(f"qemu pid {pid} gone after its harness was SIGKILLed", lambda: _proc_gone(pid))
        _poll(f"port forward 127.0.0.1:{port} closed", lambda: _port_refuses(port))
        print(f"qemu and its forward gone {time.monotonic() - killed:.2f} s after the SIGKILL")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        if endpoint:
            vm.stop_qemu(int(str(endpoint["pid"])), int(str(endpoint["port"])))
