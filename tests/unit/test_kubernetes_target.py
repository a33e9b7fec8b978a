"""The kubernetes target's pure parts: url, pod specs, container ids, the attach adapter."""

from __future__ import annotations

import json
import queue
import threading

import pytest

from harness.core.errors import ConfigError, TargetError
from harness.nodes.runner import RunnerSession
from harness.targets.kubepod import CONTEXTS, label_value, parse_container_id, pod_manifest
from harness.targets.kubernetes import KubernetesTarget, parse_url
from harness.targets.kubestream import AttachProcess


def test_parse_url_reads_node_and_options() -> None:
    opts = parse_url("kubernetes://worker-1?kubeconfig=/k/c&context=ci&namespace=st&pull=Never")
    assert opts == {"node": "worker-1", "kubeconfig": "/k/c", "context": "ci", "namespace": "st",
                    "pull": "Never"}


@pytest.mark.parametrize(("url", "message"), [
    ("kubernetes://?kubeconfig=/x", "no node name"),
    ("kubernetes://n?kubecfg=/x", "unknown query key 'kubecfg': expected one of kubeconfig= ("),
    ("kubernetes://n?pull=Sometimes", "expected pull= one of Always, IfNotPresent, Never, "
                                      "got pull='Sometimes'"),
    ("kubernetes://n?timeout=soon", "expected seconds, e.g. timeout=120, got timeout='soon'"),
    ("kubernetes://n?namespace=a&namespace=b", "namespace= given 2 times"),
    ("k8s://n", "not a kubernetes:// URL: expected kubernetes://<node-name>"),
])
def test_parse_url_rejects_with_the_fix(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_url(url, "k1")
    assert str(err.value).startswith(f"node 'k1': url {url!r}: ")
    assert message in str(err.value)


def test_target_contexts_are_the_three_pod_kinds() -> None:
    assert KubernetesTarget("k", "kubernetes://n").contexts() == CONTEXTS == (
        "pod", "pod-hostpid", "pod-privileged")


def test_pod_manifest_plain_pod_is_pinned_labelled_and_runs_the_runner() -> None:
    pod = pod_manifest("pod", "stABC123", "worker-1", helpers={"x.py": b"print(1)"})
    assert pod["metadata"]["name"] == "shadowtest-stabc123"
    assert pod["metadata"]["labels"] == {
        "shadowtest.io/run-id": "stABC123", "shadowtest.io/managed": "true",
        "shadowtest.io/node": "worker-1", "shadowtest.io/context": "pod"}
    spec = pod["spec"]
    assert (spec["nodeName"], spec["restartPolicy"], spec["automountServiceAccountToken"]) == (
        "worker-1", "Never", False)
    assert "hostPID" not in spec
    (c,) = spec["containers"]
    assert (c["image"], c["imagePullPolicy"], c["stdin"], c["stdinOnce"], c["tty"]) == (
        "shadowtest/base:bookworm", "IfNotPresent", True, True, False)
    assert c["command"][:3] == ["python3", "-u", "-c"]
    assert c["env"] == [{"name": "SHADOWTEST_RUN_ID", "value": "stABC123"}]
    assert "securityContext" not in c


def test_pod_manifest_hostpid_adds_host_pid_and_ptrace_caps() -> None:
    pod = pod_manifest("pod-hostpid", "st1", "n")
    assert pod["spec"]["hostPID"] is True
    assert pod["spec"]["containers"][0]["securityContext"] == {
        "capabilities": {"add": ["SYS_ADMIN", "SYS_PTRACE"]}}


def test_pod_manifest_privileged_mounts_host_root_ro_and_etc_rw() -> None:
    pod = pod_manifest("pod-privileged", "st1", "n")
    c = pod["spec"]["containers"][0]
    assert c["securityContext"] == {"privileged": True}
    assert [v["hostPath"]["path"] for v in pod["spec"]["volumes"]] == ["/", "/etc"]
    assert c["volumeMounts"] == [{"name": "host-root", "mountPath": "/host", "readOnly": True},
                                 {"name": "host-etc", "mountPath": "/host/etc"}]


def test_pod_manifest_unknown_context_lists_the_known_ones() -> None:
    with pytest.raises(TargetError, match="expected one of pod, pod-hostpid, pod-privileged"):
        pod_manifest("host", "st1", "n")


def test_label_value_hashes_what_is_not_a_label_value() -> None:
    assert label_value("worker-1.example") == "worker-1.example"
    long = "n" * 70
    assert len(label_value(long)) == 16
    assert label_value(long) == label_value(long)


@pytest.mark.parametrize(("text", "cid"), [
    ("containerd://" + "a" * 64, "a" * 64),
    ("docker://" + "B" * 64, "b" * 64),
    ("cri-o://0123456789abcdef", "0123456789abcdef"),
])
def test_parse_container_id_strips_the_runtime(text: str, cid: str) -> None:
    assert parse_container_id(text) == cid


def test_parse_container_id_refuses_garbage() -> None:
    with pytest.raises(TargetError, match="expected <runtime>://<hex id>"):
        parse_container_id("docker://not-hex")


class FakeWS:
    """The WSClient surface the adapter uses, with a stage runner answering on stdin."""

    subprotocol = "v5.channel.k8s.io"
    sock = None  # no websocket under it

    def __init__(self) -> None:
        self.frames: queue.Queue[tuple[int, bytes] | None] = queue.Queue()
        self.channels: dict[int, bytes] = {}
        self.open = True
        self.closed_channels: list[int] = []
        self.frames.put((1, json.dumps({"ready": True, "pid": 1}).encode() + b"\n"))

    def is_open(self) -> bool:
        return self.open

    def update(self, timeout: float | None = None) -> None:
        frame = self.frames.get(timeout=timeout)
        if frame is None:
            self.open = False
            return
        self.channels[frame[0]] = self.channels.get(frame[0], b"") + frame[1]

    def read_channel(self, channel: int, timeout: float = 0) -> bytes:
        return self.channels.pop(channel, b"")

    def write_stdin(self, data: bytes) -> None:
        for line in data.decode().splitlines():
            req = json.loads(line)
            reply = {"stage": req["stage"], "exit_code": 0, "stdout": " ".join(req["argv"]),
                     "stderr": "", "pid": 7, "started_at": 1.0, "ended_at": 2.0, "error": None}
            half = len(json.dumps(reply)) // 2  # a reply split over two frames
            text = json.dumps(reply) + "\n"
            self.frames.put((1, text[:half].encode()))
            self.frames.put((1, text[half:].encode()))

    def close_channel(self, channel: int) -> None:
        self.closed_channels.append(channel)
        self.frames.put((3, b'{"metadata": {}, "status": "Success"}'))
        self.frames.put(None)

    def close(self) -> None:
        self.frames.put(None)


def test_attach_process_carries_the_session_line_protocol() -> None:
    ws = FakeWS()
    proc = AttachProcess(ws, exit_code=lambda wait: 9)
    assert proc.read_hello(5, "fake") == {"ready": True, "pid": 1}
    session = RunnerSession(context="pod", proc=proc, pids=frozenset(), hello={})
    res = session.stage("command", ["echo", "hi"], {}, 5)
    assert (res.exit_code, res.stdout, res.pid) == (0, "echo hi", 7)
    session.close()  # stdin close = v5 CLOSE of channel 0; the Status says Success
    assert ws.closed_channels == [0]
    assert proc.returncode == 0


def test_attach_process_exit_code_comes_from_the_pod_without_a_status() -> None:
    ws = FakeWS()
    proc = AttachProcess(ws, exit_code=lambda wait: 3)
    proc.read_hello(5, "fake")
    ws.close()
    assert proc.wait(5) == 3
    proc.close()


def test_attach_process_exec_status_gives_the_exit_code() -> None:
    ws = FakeWS()
    proc = AttachProcess(ws)
    ws.frames.put((3, json.dumps({"status": "Failure", "reason": "NonZeroExitCode", "details": {
        "causes": [{"reason": "ExitCode", "message": "4"}]}}).encode()))
    ws.close()
    assert proc.wait(5) == 4
    proc.close()


def test_attach_process_kill_ends_a_blocked_readline() -> None:
    ws = FakeWS()
    proc = AttachProcess(ws, exit_code=lambda wait: 0)
    proc.read_hello(5, "fake")
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()))
    reader.start()
    proc.kill()  # drops the stream: the pump ends, the reader sees EOF
    reader.join(5)
    assert got == [""]
    proc.close()


def test_attach_process_without_hello_says_what_the_runner_printed() -> None:
    ws = FakeWS()
    ws.frames = queue.Queue()
    ws.frames.put((2, b"python3: not found\n"))
    ws.frames.put(None)
    proc = AttachProcess(ws, exit_code=lambda wait: 127)
    with pytest.raises(TargetError, match=r"did not start .*python3: not found"):
        proc.read_hello(5, "pod default/x")
