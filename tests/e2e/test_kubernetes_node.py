"""The kubernetes target through the real ``kubernetes`` client against tests/servers/kube_server.py,
whose pods are real containers in the project's dockerd (the ``dockerd`` fixture of
tests/e2e/conftest.py: stopped after the session only if it started it). Not a real
kube-apiserver/kubelet: see the README's "verified / not verified" statement."""

from __future__ import annotations

import contextlib
import json
import platform
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.builtin import BUILTIN
from harness.core.errors import ConfigError, TargetError
from harness.nodes.remote.nodeprobe import cgroup2_root
from harness.targets.kubernetes import KubernetesTarget
from tests.e2e.conftest import Catalog
from tests.servers.kube_server import V4, KubeServer, write_kubeconfig

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def kube(dockerd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeServer, Path]]:
    token = secrets.token_hex(16)
    with KubeServer(dockerd, token) as server:
        path = write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig", server.url, token)
        yield server, path


@pytest.fixture
def target(kube: tuple[KubeServer, Path]) -> Iterator[KubernetesTarget]:
    server, path = kube
    t = KubernetesTarget("kube", f"kubernetes://{server.node_name}?kubeconfig={path}"
                                 f"&bin={BUILTIN / 'atomic' / 'bin'}")
    yield t
    t.close()


def containers(server: KubeServer, run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.docker.containers(
        all=True, filters={"label": f"shadowtest.io/run-id={run_id}"})
    return found


@pytest.mark.parametrize("context", ["pod", "pod-hostpid", "pod-privileged"])
def test_kubernetes_context_runs_stages_and_leaves_nothing(
        target: KubernetesTarget, kube: tuple[KubeServer, Path], context: str) -> None:
    server, _ = kube
    run_id = "st" + secrets.token_hex(6)
    session = target.open(context, run_id)
    try:
        (ctr,) = containers(server, run_id)
        assert ctr["Id"] == session.container_id
        assert ctr["Labels"]["shadowtest.io/managed"] == "true"
        assert ctr["Labels"]["shadowtest.io/node"] == server.node_name
        uname = session.stage("uname", ["uname", "-r"], {}, 10)
        assert uname.stdout.strip() == platform.release()
        init = session.stage("init", ["sh", "-c", 'head -c 600 /proc/1/cmdline | tr "\\0" " "; echo; '
                                                  'echo "$SHADOWTEST_RUN_ID"; hostname'], {}, 10)
        *cmdline_lines, env_run_id, hostname = init.stdout.splitlines()
        cmdline = "\n".join(cmdline_lines)
        assert env_run_id == run_id
        assert hostname == f"shadowtest-{run_id}"
        if context == "pod-hostpid":  # the node's PID namespace: PID 1 is the node's init
            assert "stagerunner" not in cmdline
            assert session.pids == {session.hello["pid"]}
            assert session.variables["host_pidns"] == session.hello["pidns"]
        else:  # PID 1 of the pod is the stage runner the harness started
            assert session.hello["pid"] == 1
            assert "/shadowtest/stagerunner.py" in cmdline
        if context == "pod-privileged":
            host = session.stage("host", ["sh", "-c", "test -w /host/etc && ! test -w /host/usr "
                                                      "&& echo ok"], {}, 10)
            assert host.stdout.strip() == "ok", host
    finally:
        session.close()
    assert session.proc.returncode == 0
    assert containers(server, run_id) == []


def test_kubernetes_facts_come_from_the_node(target: KubernetesTarget) -> None:
    facts = target.facts()
    assert facts.kernel == platform.release()
    assert facts.btf == Path("/sys/kernel/btf/vmlinux").exists()
    assert facts.tracepoints is True
    assert facts.cgroup2_root == cgroup2_root()  # the pods run on this host: its probed root
    assert "kfunc" in dict(facts.reasons)  # the base image has no bpftrace: said, not guessed
    assert "pod-privileged" in dict(facts.reasons)["kfunc"]


def test_kubernetes_bad_token_is_a_clear_target_error(kube: tuple[KubeServer, Path],
                                                      tmp_path: Path) -> None:
    server, _ = kube
    path = write_kubeconfig(tmp_path / "bad", server.url, "not-the-token")
    target = KubernetesTarget("kube", f"kubernetes://{server.node_name}?kubeconfig={path}")
    with contextlib.closing(target), pytest.raises(
            TargetError, match=r"401 'Unauthorized': the credentials were refused"):
        target.facts()


def test_kubernetes_429_is_retried_after_retry_after(target: KubernetesTarget,
                                                    kube: tuple[KubeServer, Path]) -> None:
    server, _ = kube
    server.fail_next(2, 429, retry_after=1)
    started = time.monotonic()
    node = target._call("read node", lambda: target.api.read_node(server.node_name))
    assert node.metadata.name == server.node_name
    assert time.monotonic() - started >= 2  # both Retry-After waits were honoured
    assert [code for _, path, code in server.requests[-3:]] == [429, 429, 200]


def test_kubernetes_invalid_pod_is_a_422_target_error(kube: tuple[KubeServer, Path]) -> None:
    server, path = kube
    with pytest.raises(ConfigError, match=r"image= has no value"):  # refused before any call
        KubernetesTarget("kube", f"kubernetes://{server.node_name}?kubeconfig={path}&image=")
    target = KubernetesTarget("kube", f"kubernetes://{server.node_name}?kubeconfig={path}")
    target.image = ""  # what only the API server can refuse: a pod without an image
    with contextlib.closing(target), pytest.raises(
            TargetError, match=r"422 .*spec.containers\[0\].image: Required value"):
        target.open("pod", "st" + secrets.token_hex(6))


def test_kubernetes_unknown_node_times_out_with_the_reason(kube: tuple[KubeServer, Path]) -> None:
    server, path = kube
    target = KubernetesTarget("kube", f"kubernetes://no-such-node?kubeconfig={path}&timeout=1")
    run_id = "st" + secrets.token_hex(6)
    with contextlib.closing(target), pytest.raises(
            TargetError, match=r"did not happen within 1 s .*is node 'no-such-node' Ready"):
        target.open("pod", run_id)
    assert (("default", f"shadowtest-{run_id}")) not in server.pods  # deleted again


def test_kubernetes_dropped_stream_runs_the_armed_cleanup(target: KubernetesTarget,
                                                          kube: tuple[KubeServer, Path]) -> None:
    """A harness killed by SIGKILL drops the attach stream: stdinOnce closes the runner's
    stdin, so it runs the armed cleanup and exits 0 (like the local pdeathsig path)."""
    server, _ = kube
    run_id = "st" + secrets.token_hex(6)
    session = target.open("pod", run_id)
    session.arm_cleanup(["sh", "-c", "echo cleaned > /cleanup-ran"], {})
    session.proc.kill()
    assert session.proc.wait(30) == 0
    (ctr,) = containers(server, run_id)
    stream, _ = server.docker.get_archive(ctr["Id"], "/cleanup-ran")
    assert b"cleaned" in b"".join(stream)
    session.close()
    assert containers(server, run_id) == []


def test_kubernetes_interrupt_stops_the_stage_by_signal(target: KubernetesTarget) -> None:
    session = target.open("pod", "st" + secrets.token_hex(6))
    result: list[Any] = []
    running = threading.Thread(target=lambda: result.append(
        _stage_or_error(session, ["sh", "-c", "echo started; exec sleep 60"])))
    running.start()
    ps = ""
    for _ in range(100):  # until the stage's sleep runs in the pod (exec API)
        _, ps = target.exec(session.hello["hostname"], ["ps", "-eo", "args"])
        if "sleep 60" in ps:
            break
    assert "sleep 60" in ps
    started = time.monotonic()
    session.abort()  # interrupt: kill -TERM <runner pid> through the exec API
    running.join(30)
    assert time.monotonic() - started < 20
    assert session.proc.returncode == 0


def _stage_or_error(session: Any, argv: list[str]) -> Any:
    try:
        return session.stage("command", argv, {}, 60)
    except TargetError as exc:
        return exc


def test_kubernetes_exec_v4_and_v5_report_exit_codes(target: KubernetesTarget,
                                                     kube: tuple[KubeServer, Path]) -> None:
    import websocket

    server, _ = kube
    session = target.open("pod", "st" + secrets.token_hex(6))
    name = session.hello["hostname"]
    try:
        assert target.exec(name, ["sh", "-c", "echo hi; exit 3"]) == (3, "hi\n")  # v5
        ws = websocket.create_connection(
            server.url.replace("http", "ws") + f"/api/v1/namespaces/default/pods/{name}/exec?"
            "command=sh&command=-c&command=echo%20v4%3B%20exit%204&stdout=true&stderr=true",
            header=[f"Authorization: Bearer {server.token}"], subprotocols=[V4])
        frames = []
        try:
            with contextlib.suppress(websocket.WebSocketConnectionClosedException):
                while (data := ws.recv()):
                    frames.append(data)
        finally:
            ws.shutdown()  # close() skips the socket once the server has closed the stream
        assert ws.subprotocol == V4
        assert b"\x01v4\n" in frames
        final = json.loads(frames[-1][1:])
        assert frames[-1][0] == 3
        assert final["reason"] == "NonZeroExitCode"
        assert final["details"]["causes"] == [{"reason": "ExitCode", "message": "4"}]
    finally:
        session.close()


# ------------------------------------------------------------------ a real scenario
@pytest.mark.node
def test_kubernetes_ptrace_pid1_detected_in_pod_by_bpftrace(
        kube: tuple[KubeServer, Path], catalog: Catalog) -> None:
    """`shadowtest run` on a kubernetes:// node: ptrace of PID 1 of a pod-privileged pod
    (the stage runner), judged by the real bpftrace sensor; the detection carries the
    pod's container id (bpftrace's cgroup -> docker/<id>)."""
    server, path = kube
    catalog.config(f"""
        [tool.shadowtest]
        scenarios = ["scenarios"]
        atomics = ["atomic"]
        allowed_nodes = ["kube"]
        window = "5s"

        [tool.shadowtest.nodes.kube]
        url = "kubernetes://{server.node_name}?kubeconfig={path}"

        [tool.shadowtest.sensors.bpftrace]
        type = "bpftrace"
    """)
    catalog.scenario("privilege-escalation", "ptrace-pid1-pod", """
        id: ptrace-pid1-pod
        name: ptrace of PID 1 of a pod
        technique: T1055.008
        atomic: ptrace-attach
        arguments: {pid: 1}
        contexts: [pod-privileged]
        expect:
          bpftrace: {rule: ptrace-pid1, fields: {target: 1}}
    """)
    res = catalog.run("run", "--results", "results.jsonl")
    assert res.returncode == 0, res.stdout + res.stderr
    (row,) = catalog.rows()
    assert (row["verdict"], row["context"], row["node"]) == ("DETECTED", "pod-privileged", "kube")
    assert re.fullmatch(r"[0-9a-f]{64}", row["container_id"])
    assert row["detection"]["container_id"] == row["container_id"]
    assert row["correlated_by"] == "container_id"
    assert server.started[f"shadowtest-{row['run_id']}"] == row["container_id"]  # the pod's
    assert containers(server, row["run_id"]) == []
