"""End to end in docker, as root: the project's dockerd (ci/dockerd.sh), the offline base
image, the bundled attack scenarios in the three docker contexts, the real auditd and
bpftrace sensors, through the real ``shadowtest run`` CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.builtin import BUILTIN
from harness.nodes.remote.nodeprobe import cgroup2_root
from harness.targets.docker import DockerTarget
from tests.e2e.conftest import Catalog, verdicts

pytestmark = [pytest.mark.docker, pytest.mark.node]

SOCKET = "/run/shadowtest/dockerd/docker.sock"  # the project's dockerd: conftest's `dockerd`


def _docker(*args: str) -> str:
    return subprocess.run(["docker", "-H", f"unix://{SOCKET}", *args], capture_output=True,
                          text=True, check=True, timeout=60).stdout


def _managed(run_id: str | None = None) -> list[str]:
    """Ids of shadowtest containers (of one run) in the project's dockerd."""
    label = f"shadowtest.io/run-id={run_id}" if run_id else "shadowtest.io/managed"
    return _docker("ps", "-aq", "--no-trunc", "--filter", f"label={label}").split()


DOCKER_CONFIG = """
[tool.shadowtest]
scenarios = ["scenarios"]
atomics = ["atomic"]
allowed_nodes = ["docker"]
window = "5s"

[tool.shadowtest.nodes.docker]
url = "docker://"

[tool.shadowtest.sensors.auditd]
type = "auditd"

[tool.shadowtest.sensors.bpftrace]
type = "bpftrace"
"""

#: the proposed atomic/etc-file-create.yaml: the same action through a #{host_etc}
#: argument (default /etc; the docker target sets /host/etc in container-hostetc)
ETC_FILE_CREATE = """
id: etc-file-create
name: Create a file under the host's /etc
description: >
  Creates <host /etc>/shadowtest-<run id>.conf (a new, run-id-named file: no existing file
  is touched) and removes it in cleanup, even when the run is interrupted. host_etc is the
  host's /etc as the context sees it (/etc, or /host/etc in container-hostetc).
technique: T1098
supported_platforms: [linux, containers]
touches:
  - {kind: file, what: "#{host_etc}/shadowtest-#{run_id}.conf (created, then removed)"}
input_arguments:
  host_etc: {description: "the host's /etc as the context sees it", type: string, default: /etc}
precondition:
  - description: the host's /etc is writable here
    command: "test -w #{host_etc}"
  - description: the run's file does not exist yet (never overwrite)
    command: "test ! -e #{host_etc}/shadowtest-#{run_id}.conf"
executor:
  name: sh
  command: "printf 'written by shadowtest run %s\\\\n' '#{run_id}' > #{host_etc}/shadowtest-#{run_id}.conf"
  cleanup_command: "rm -f #{host_etc}/shadowtest-#{run_id}.conf"
  elevation_required: true
  timeout: 10s
proof:
  command: "test -s #{host_etc}/shadowtest-#{run_id}.conf"
"""

SCENARIO_CONTEXTS = {
    "privilege-escalation/container-escape-setns": ["namespace", "container-hostpid"],
    "privilege-escalation/ptrace-pid1": ["namespace", "container-privileged", "container-hostpid"],
    "persistence/etc-write": ["host", "container-privileged", "container-hostpid",
                              "container-hostetc"],
}


#: what the bundled sensors give in each docker context today (see the module docstring)
EXPECTED = {
    ("container-escape-setns", "container-hostpid", "auditd"): "DETECTED",
    # sensor.bt's container-setns-mnt fires only for callers outside the host PID
    # namespace: a host-PID container's setns is a real miss of the reference sensor
    ("container-escape-setns", "container-hostpid", "bpftrace"): "MISSED",
    ("ptrace-pid1", "container-privileged", "auditd"): "DETECTED",
    ("ptrace-pid1", "container-privileged", "bpftrace"): "DETECTED",
    # in the host PID namespace the precondition refuses: never the machine's PID 1
    ("ptrace-pid1", "container-hostpid", "auditd"): "NOT_EXECUTED",
    ("ptrace-pid1", "container-hostpid", "bpftrace"): "NOT_EXECUTED",
    # auditd's /etc watch is on the inode: the write through the bind mount is seen
    ("etc-write", "container-hostetc", "auditd"): "DETECTED",
    # sensor.bt's etc-file-create matches the literal "/etc/" prefix: /host/etc/... is missed
    ("etc-write", "container-hostetc", "bpftrace"): "MISSED",
    # the same write through /proc/<anchor>/root/etc from the host-PID container
    ("etc-write", "container-hostpid", "auditd"): "DETECTED",
    ("etc-write", "container-hostpid", "bpftrace"): "MISSED",
    # no path to the host's /etc: refused, never the container's own /etc
    ("etc-write", "container-privileged", "auditd"): "NOT_EXECUTED",
    ("etc-write", "container-privileged", "bpftrace"): "NOT_EXECUTED",
}


@pytest.fixture
def docker_catalog(catalog: Catalog, dockerd: str) -> Catalog:
    """The bundled attack scenarios with docker contexts added (as the proposed edits do),
    and etc-file-create taking #{host_etc}; nodes: docker:// only."""
    catalog.config(DOCKER_CONFIG)
    catalog.atomic("etc-file-create", ETC_FILE_CREATE)
    for rel, contexts in SCENARIO_CONTEXTS.items():
        tactic, sid = rel.split("/")
        src = (BUILTIN / "scenarios" / f"{rel}.yaml").read_text()
        src = re.sub(r"^contexts: .*$", f"contexts: [{', '.join(contexts)}]", src, flags=re.M)
        # auditd names the path as the caller wrote it (/host/etc/..., /proc/<pid>/root/etc/...)
        src = src.replace('regex: "^/etc/shadowtest-', 'regex: "/etc/shadowtest-')
        catalog.scenario(tactic, sid, src)
    return catalog


def test_docker_scenarios_give_the_expected_verdicts_with_the_container_id(
        docker_catalog: Catalog) -> None:
    res = docker_catalog.run("run", "--results", "results.jsonl")
    rows = docker_catalog.rows()
    summary = _summary(rows)
    assert verdicts(rows) == EXPECTED, summary + "\n" + res.stdout[-4000:]
    assert res.returncode == 1  # the two bpftrace misses fail their tests
    for row in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", row["container_id"]), row
        if row["verdict"] == "DETECTED" and row["sensor"] == "bpftrace":
            # the sensor mapped the event's cgroup to the container docker created
            assert row["correlated_by"] == "container_id", row
            assert row["detection"]["container_id"] == row["container_id"], row
            assert row["detection"]["cgroup_id"] == row["cgroup_id"], row
    assert len({r["container_id"] for r in rows}) == 6  # one container per run
    for run_id in {r["run_id"] for r in rows}:
        assert not Path(f"/etc/shadowtest-{run_id}.conf").exists()
        assert _managed(run_id) == []  # every container removed at the end of its run


def _summary(rows: list[dict[str, object]]) -> str:
    return "\n".join(f"{r['scenario']:24} {r['context']:22} {r['sensor']:9} {r['verdict']:13} "
                     f"{r.get('correlated_by')} {r.get('reason', '')}" for r in rows)


def _wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_killed_harness_leaves_no_container_after_the_next_open(docker_catalog: Catalog) -> None:
    """SIGKILL of the harness mid-action: the container's stdin closes, so its stage
    runner kills the stage, runs the armed cleanup and exits; the next docker target
    sweeps the exited container."""
    shutil.rmtree(docker_catalog.root / "scenarios")
    docker_catalog.atomic("etc-write-slow", """
        id: etc-write-slow
        name: write under the host's /etc, then linger
        technique: T1098
        touches: [{kind: file, what: "/host/etc/shadowtest-#{run_id}-docker-slow.conf"}]
        executor:
          name: sh
          command: "echo x > /host/etc/shadowtest-#{run_id}-docker-slow.conf && sleep 60"
          cleanup_command: "rm -f /host/etc/shadowtest-#{run_id}-docker-slow.conf"
          timeout: 90s
        proof: {command: "test -e /host/etc/shadowtest-#{run_id}-docker-slow.conf"}
    """)
    docker_catalog.scenario("persistence", "slow", """
        id: slow
        name: interrupted mid-action in a container
        technique: T1098
        atomic: etc-write-slow
        contexts: [container-hostetc]
    """)
    pattern = "shadowtest-st*-docker-slow.conf"
    before = set(Path("/etc").glob(pattern))
    proc = docker_catalog.popen("run", "--results", "results.jsonl")
    _wait_for(lambda: set(Path("/etc").glob(pattern)) - before, 120, "the slow atomic's file")
    (written,) = set(Path("/etc").glob(pattern)) - before
    run_id = written.name.removeprefix("shadowtest-").removesuffix("-docker-slow.conf")
    assert len(_managed(run_id)) == 1
    proc.kill()
    proc.communicate(timeout=30)
    _wait_for(lambda: not written.exists(), 60, "the armed cleanup")
    _wait_for(lambda: not _docker("ps", "-q", "--filter", f"label=shadowtest.io/run-id={run_id}"),
              60, "the container to exit")
    assert len(_managed(run_id)) == 1  # exited, not removed: the harness was killed
    target = DockerTarget("docker")
    target.client()  # the next run's target sweeps it
    target.close()
    assert _managed(run_id) == []


def test_hostpid_session_ids_labels_and_the_anchor_door(dockerd: str) -> None:
    """The Session's ids are the container's; the anchor is a host process the harness
    started (never PID 1), reachable with nsenter from the host-PID container, and gone
    with the session."""
    target = DockerTarget("docker")
    run_id = "stdockere2e01"
    session = target.open("container-hostpid", run_id)
    try:
        cid = session.container_id
        assert cid is not None
        (info,) = target.client().api.containers(filters={"id": cid})
        assert info["Labels"]["shadowtest.io/run-id"] == run_id
        assert info["Labels"]["shadowtest.io/managed"] == "true"
        assert info["Names"] == [f"/shadowtest-{run_id}"]
        state = target.client().api.inspect_container(cid)["State"]
        assert session.pids == frozenset({state["Pid"]})
        inode = Path(cgroup2_root(), "docker", cid).stat().st_ino  # this host's layout, probed
        assert session.cgroup_id == inode
        anchor = session.variables["host_anchor_pid"]
        assert anchor != 1
        assert Path(f"/proc/{anchor}/comm").read_text().strip() == "sleep"
        res = session.stage("command", ["nsenter", "-t", str(anchor), "-m", "--",
                                        "readlink", "/proc/self/ns/mnt"], {}, 10)
        assert (res.exit_code, res.stdout.strip()) == (0, session.variables["host_mntns"])
    finally:
        session.close()
        target.close()
    assert not Path(f"/proc/{anchor}").exists()
    assert _managed(run_id) == []
