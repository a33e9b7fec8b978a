"""Killing the runner with SIGKILL mid-run (no cleanup code of its own can run) leaves no VM,
no port forward, no container and no dockerd behind: QEMU and the SSH master die by their
parent-death signal, the docker target's detached reaper removes the runner's containers
and stops the dockerd the target started for itself (``docker://?dockerd=own``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.nodes.dockerd import Dockerd
from harness.targets.docker import OWN_DATA, OWN_STATE
from tests.e2e.conftest import Catalog

pytestmark = [pytest.mark.vm, pytest.mark.docker, pytest.mark.node]

CONFIG = """
[tool.shadowtest]
scenarios = ["scenarios"]
atomics = ["atomic"]
allowed_nodes = ["vm61", "dock"]
window = "5s"

[tool.shadowtest.nodes.vm61]
url = "vm://6.1"

[tool.shadowtest.nodes.dock]
url = "docker://?dockerd=own"
"""


def _pids(pattern: str) -> set[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return {int(x) for x in out.stdout.split()}


def _private_dirs() -> set[Path]:
    tmp = Path(tempfile.gettempdir())
    return {*tmp.glob("shadowtest-vm-*"), *tmp.glob("shadowtest-ssh-*")}


def _own_dockerd() -> int | None:
    return Dockerd(OWN_STATE, OWN_DATA).pid()


def _wait(cond: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for: {what}")
        time.sleep(0.5)


def _containers(label: str) -> list[str]:
    sock = OWN_STATE / "docker.sock"
    if not sock.exists() or _own_dockerd() is None:
        return []
    res = subprocess.run(["docker", "-H", f"unix://{sock}", "ps", "-aq", "--filter", f"label={label}"],
                         capture_output=True, text=True, check=False)
    return res.stdout.split()


def test_sigkill_mid_run_leaves_no_vm_container_dockerd_or_port_forward(catalog: Catalog) -> None:
    catalog.config(CONFIG)
    catalog.atomic("quick-true", """
        id: quick-true
        name: a no-op
        technique: T1082
        supported_platforms: [linux, containers]
        touches: [{kind: process, what: "one short-lived process"}]
        executor: {name: sh, command: "true", timeout: 10s}
        proof: {command: "true"}
    """)
    catalog.atomic("slow-sleep", """
        id: slow-sleep
        name: a long action, killed mid-run
        technique: T1082
        supported_platforms: [linux, containers]
        touches: [{kind: process, what: "one short-lived process"}]
        executor: {name: sh, command: "sleep 600", timeout: 700s}
        proof: {command: "true"}
    """)
    catalog.scenario("discovery", "a-vm-quick", """
        id: a-vm-quick
        name: boots the VM node first
        technique: T1082
        atomic: quick-true
        contexts: [host]
    """)
    catalog.scenario("discovery", "b-docker-slow", """
        id: b-docker-slow
        name: is killed in a container
        technique: T1082
        atomic: slow-sleep
        contexts: [container-privileged]
    """)
    qemu_before = _pids("qemu-system-x86_64")
    dirs_before = _private_dirs()
    assert _own_dockerd() is None, "a dockerd=own daemon runs already"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--results", "r.jsonl"],
                            cwd=catalog.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        _wait(lambda: bool(_containers("shadowtest.io/managed=true")) or proc.poll() is not None,
              400, "the docker scenario's container")
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        qemus = _pids("qemu-system-x86_64") - qemu_before
        dockerd = _own_dockerd()
        containers = _containers("shadowtest.io/managed=true")
        assert qemus, "the VM node is not up"
        assert dockerd is not None
        assert containers
        ports = [ln for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if ln.split()[3] == "0A"]  # listening sockets: the qemu port forward among them
        os.kill(proc.pid, signal.SIGKILL)  # the runner only: no cleanup of its own can run
        proc.wait(10)
        _wait(lambda: not (_pids("qemu-system-x86_64") & qemus), 60, "qemu gone")
        _wait(lambda: _own_dockerd() is None, 120, "the target's own dockerd gone")
        _wait(lambda: not _pids("docker start -a"), 30, "docker CLI attach processes gone")
        after = [ln for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if ln.split()[3] == "0A"]
        assert len(after) < len(ports), "the VM's port forward still listens"
        assert not _pids("sleep 600"), "the killed run's action still runs"
        assert not _pids(str(OWN_STATE)), "a process of the target's own dockerd still runs"
        reapers = Path("/run/shadowtest/reaper")
        _wait(lambda: not reapers.is_dir() or not any(
            json.loads(p.read_text()).get("pid") == proc.pid for p in reapers.glob("*.json")),
            30, "the reaper's state file removed")
        # the VM's console folder and the SSH master's socket folder: QEMU and ssh die by
        # their parent-death signal, their folders are the reaper's
        _wait(lambda: _private_dirs() <= dirs_before, 30,
              f"the runner's temporary folders removed: {_private_dirs() - dirs_before}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        if _own_dockerd() is not None:  # never leave the test's daemon, even on failure
            Dockerd(OWN_STATE, OWN_DATA).stop()
