"""A Kubernetes node: each run is a pod pinned to the node, its stage runner PID 1.

``kubernetes://<node>?kubeconfig=PATH&context=CTX&namespace=NS&image=IMG&pull=POLICY&bin=DIR``

Only the official ``kubernetes`` client (CoreV1Api) talks to the cluster. A context is a
pod (``shadowtest-<run id>``, labelled ``shadowtest.io/run-id`` / ``shadowtest.io/managed``
/ ``shadowtest.io/node``) whose container's main process *is* the stage runner
(``python3 -u -c <bootstrap>``), so "PID 1" of the pod is a process the harness started.
The runner's JSON lines travel over the pod's ``attach`` stream (``stdin: true,
stdinOnce: true``): closing it is EOF to the runner, which then runs the armed cleanup and
exits, exactly as a local runner does; a harness killed by SIGKILL drops the stream, with
the same effect. The bootstrap waits for one line on stdin before starting the runner, so
the runner's hello is never printed before the harness is attached.

Contexts: ``pod`` (plain), ``pod-hostpid`` (hostPID + SYS_ADMIN/SYS_PTRACE),
``pod-privileged`` (privileged, the node's ``/`` read-only at ``/host`` and its ``/etc``
writable at ``/host/etc``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote

from harness.core.errors import TargetError
from harness.core.node import NodeFacts
from harness.nodes.runner import RunnerSession
from harness.nodes.shell import LocalShell
from harness.nodes.url import parse_node_url
from harness.targets.base import TargetBase
from harness.targets.kubepod import (
    BIN_DIR,
    CONTAINER,
    CONTEXTS,
    DEFAULT_IMAGE,
    MANAGED,
    NODE,
    PULL_POLICIES,
    bin_files,
    container_id_of,
    describe_pod,
    label_value,
    pod_manifest,
    pod_running,
    pod_terminated,
)
from harness.targets.kubestream import AttachProcess, close_stream

#: the query keys a kubernetes:// url may have
URL_KEYS = {
    "kubeconfig": "the kubeconfig file (default $KUBECONFIG, ~/.kube/config, else in-cluster)",
    "context": "the kubeconfig context (default: its current one)",
    "namespace": "the namespace of the pods (default: the context's, else 'default')",
    "image": f"the pods' image (default {DEFAULT_IMAGE})",
    "pull": f"the image pull policy: {', '.join(PULL_POLICIES)} (default IfNotPresent)",
    "bin": "the atomics' bin/ directory shipped into each pod (default: the built-in one)",
    "timeout": "seconds to wait for a pod to run or go (default 120)",
}
USAGE = "kubernetes://<node-name>?kubeconfig=PATH&context=CTX&namespace=NS&image=IMG&pull=POLICY"
_T = TypeVar("_T")

#: read inside a pod-privileged pod, through the node's / at /host: ``key=value`` lines;
#: $1 is the node probe's source (its cgroup2_root() decides the node's cgroup2 root)
PROBE = r"""
echo "cgroup2_root=$(python3 -c "$1" --cgroup2-root /host)"
python3 - <<'PY'
# the node's pid/mnt namespaces: those of the nearest ancestor outside this pod (the
# runtime's shim), read through the node's procfs at /host/proc
import os
def field(pid, key):
    for line in open(f"/host/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return line.split()[1]
try:
    mine, pid = os.readlink("/proc/self/ns/pid"), int(field("self", "Pid"))
    while pid > 1:
        pid = int(field(pid, "PPid"))
        ns = os.readlink(f"/host/proc/{pid}/ns/pid")
        if ns != mine:
            print("host_pidns=" + ns)
            print("host_mntns=" + os.readlink(f"/host/proc/{pid}/ns/mnt"))
            break
except (OSError, TypeError, ValueError) as exc:
    print("host_ns_error=" + str(exc))
PY
"""


class KubernetesTarget(TargetBase):
    """Runs atomics in pods pinned (``nodeName``) to one Kubernetes node."""

    NAME: ClassVar[str] = "kubernetes"
    URL_KEYS: ClassVar[Mapping[str, str]] = URL_KEYS

    def __init__(self, node: str, url: str) -> None:
        self.node = node
        self.url = url
        opts = parse_url(url, node)
        self.node_name: str = opts["node"]
        self.kubeconfig: str | None = opts.get("kubeconfig")
        self.kube_context: str | None = opts.get("context")
        self.namespace: str | None = opts.get("namespace")
        self.image: str = opts.get("image", DEFAULT_IMAGE)
        self.pull: str = opts.get("pull", "IfNotPresent")
        self.bin: Path | None = Path(opts["bin"]) if "bin" in opts else _default_bin()
        self.timeout = float(opts.get("timeout", 120))
        self._api: Any = None
        self._created: set[str] = set()
        self._swept = False
        self._facts: NodeFacts | None = None
        self._namespaces: dict[str, str] = {}
        self._same_kernel: bool | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ protocol
    def contexts(self) -> tuple[str, ...]:
        return CONTEXTS

    def facts(self) -> NodeFacts:
        if self._facts is None:
            self._facts = self._read_facts()
        return self._facts

    def shell(self) -> LocalShell | None:
        """Where the embedded sensors (auditd, bpftrace) run: the node's kernel. When the
        node's boot id (``status.nodeInfo.bootID``) is this machine's, the node *is* this
        kernel (a kind/k3d/minikube-docker node, or the harness running on the node): here.
        Otherwise None: a remote node's kernel cannot be watched from here."""
        if self._same_kernel is None:
            node = self._call(f"read node {self.node_name}", lambda: self.api.read_node(self.node_name))
            try:
                here = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
            except OSError:
                here = ""
            self._same_kernel = bool(here) and node.status.node_info.boot_id == here
        return LocalShell(self.node) if self._same_kernel else None

    def open(self, context: str, run_id: str) -> RunnerSession:
        if context not in CONTEXTS:
            raise TargetError(
                f"node {self.node!r}: context {context!r} is not provided by kubernetes://: "
                f"expected one of {', '.join(CONTEXTS)}"
            )
        self._sweep()
        manifest = pod_manifest(context, run_id, self.node_name, self.image, self.pull,
                                bin_files(self.bin))
        name = manifest["metadata"]["name"]
        ns = self._ns()
        self._call("create pod", lambda: self.api.create_namespaced_pod(ns, manifest))
        self._created.add(name)
        try:
            pod = self._wait_pod(name, pod_running, f"pod {ns}/{name} to be Running")
            container_id = container_id_of(pod)
            proc = AttachProcess(
                self._attach(name), exit_code=lambda wait: self._exit_code(name, wait),
            )
        except BaseException:
            self._delete(name)
            raise
        try:
            proc.write_line("go")  # the bootstrap starts the runner now that we listen
            hello = proc.read_hello(30, f"pod {ns}/{name}")
        except BaseException:
            proc.close()
            self._delete(name)
            raise
        pid = int(hello.get("pid") or 0)
        proc.signal_runner = lambda: self._signal(name, pid)
        host_pids = frozenset({pid}) if context == "pod-hostpid" and pid else frozenset()
        return RunnerSession(
            context=context, proc=proc, pids=host_pids, hello=hello,
            container_id=container_id, variables=self._variables(context, hello),
            on_close=[lambda: self._delete(name)], interrupt=proc.signal_runner,
        )

    def close(self) -> None:
        """Delete every pod this target created (they carry our managed/node labels), then
        close the client's connections."""
        if self._api is None:
            return
        try:
            self._delete_created()
        finally:
            self._api.api_client.close()
            self._api = None

    def _delete_created(self) -> None:
        if not self._created:
            return
        selector = f"{MANAGED}=true,{NODE}={label_value(self.node_name)}"
        with contextlib.suppress(TargetError):
            pods = self._call("list pods", lambda: self.api.list_namespaced_pod(
                self._ns(), label_selector=selector))
            for pod in pods.items:
                if pod.metadata.name in self._created:
                    self._delete(pod.metadata.name)
        self._created.clear()

    # ------------------------------------------------------------ client
    @property
    def api(self) -> Any:
        with self._lock:
            if self._api is None:
                self._api = self._connect()
            return self._api

    def _connect(self) -> Any:
        import kubernetes.config
        from kubernetes import client
        from kubernetes.config.config_exception import ConfigException

        config: Any = kubernetes.config  # partly untyped

        path = self.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        try:
            if self.kubeconfig or os.path.exists(path):
                api_client = config.new_client_from_config(config_file=path, context=self.kube_context,
                                                           persist_config=False)
                if self.namespace is None:
                    _, active = config.list_kube_config_contexts(path)
                    if self.kube_context:
                        contexts, _ = config.list_kube_config_contexts(path)
                        active = next((c for c in contexts if c["name"] == self.kube_context), active)
                    self.namespace = (active or {}).get("context", {}).get("namespace")
            else:
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                api_client = client.ApiClient(cfg)
                sa_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                if self.namespace is None and sa_ns.is_file():
                    self.namespace = sa_ns.read_text().strip()
        except (ConfigException, OSError, ValueError) as exc:
            raise TargetError(
                f"node {self.node!r}: cannot load the Kubernetes client configuration "
                f"(kubeconfig {path}{', context ' + self.kube_context if self.kube_context else ''}): "
                f"{exc}; pass ?kubeconfig=PATH&context=NAME in {self.url!r} or run in-cluster"
            ) from exc
        return client.CoreV1Api(api_client)

    def _ns(self) -> str:
        if self._api is None:
            _ = self.api
        return self.namespace or "default"

    def _call(self, what: str, fn: Callable[[], _T], deadline: float | None = None) -> _T:
        """``fn()`` with API errors turned into TargetErrors that say what to fix; a 429 is
        retried after its Retry-After (bounded by ``deadline``)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        deadline = deadline or time.monotonic() + 60
        while True:
            try:
                return fn()
            except ApiException as exc:
                wait = _retry_after(exc)
                if exc.status == 429 and time.monotonic() + wait < deadline:
                    threading.Event().wait(wait)  # the server's own back-off, as documented
                    continue
                raise TargetError(self._explain(what, exc)) from exc
            except (OSError, HTTPError) as exc:  # connection refused, DNS, TLS
                raise TargetError(f"node {self.node!r}: {what}: cannot reach the API server "
                                  f"({exc}); check the kubeconfig's server") from exc

    def _explain(self, what: str, exc: Any) -> str:
        """What to say about ``exc``, a ``kubernetes.client.exceptions.ApiException`` (its
        status, reason, body and headers are always set, maybe None)."""
        status, reason = exc.status or 0, str(exc.reason or "")
        if status == 0 and (m := re.search(r"Handshake status (\d{3})", reason)):
            status = int(m.group(1))  # the stream's upgrade was refused with this status
        message = reason
        with contextlib.suppress(ValueError, TypeError):
            message = json.loads(exc.body or "{}").get("message", reason) or reason
        hint = {
            0: "the API server did not answer (or refused the stream); check its URL and token",
            401: "the credentials were refused: fix the token/certificate in the kubeconfig",
            403: f"RBAC forbids it: grant pods (create/get/list/delete) and pods/attach, "
                 f"pods/exec in namespace {self.namespace or 'default'} and nodes (get)",
            404: "not found: check the node name and the namespace",
            409: "a pod of that name exists: a run id was reused or a pod was left behind",
            422: "the API server rejected the pod spec (admission or Pod Security?)",
            429: "the API server kept throttling past the deadline",
        }.get(status, "see the API server's message")
        return (f"node {self.node!r} ({self.url}): {what}: API answered {status} {message!r}: "
                f"{hint}")

    # ------------------------------------------------------------ pods
    def _wait_pod(self, name: str, ready: Callable[[Any], str | None], what: str) -> Any:
        """Read the pod until ``ready(pod)`` says 'ok' (or an error text); deadline
        ``timeout``. The pod's own state is polled: no watch needed, RBAC get suffices."""
        deadline = time.monotonic() + self.timeout
        pause = threading.Event()
        last = "no status yet"
        while True:
            pod = self._call("read pod", lambda: self.api.read_namespaced_pod(name, self._ns()),
                             deadline)
            verdict = ready(pod)
            if verdict == "ok":
                return pod
            if verdict is not None and verdict.startswith("error:"):
                raise TargetError(f"node {self.node!r}: waiting for {what}: {verdict[6:]}")
            last = verdict or describe_pod(pod)
            if time.monotonic() > deadline:
                raise TargetError(
                    f"node {self.node!r}: {what} did not happen within {self.timeout:g} s "
                    f"(last: {last}); is node {self.node_name!r} Ready, is image "
                    f"{self.image!r} present on it (pull policy {self.pull})?"
                )
            pause.wait(0.1)

    def _attach(self, name: str) -> Any:
        from kubernetes.stream import stream

        return self._call("attach to the runner", lambda: stream(
            self.api.connect_get_namespaced_pod_attach, name, self._ns(), container=CONTAINER,
            stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False,
            binary=True))

    def exec(self, name: str, argv: list[str], timeout: float = 30) -> tuple[int, str]:
        """Run ``argv`` in the pod (the exec API); (exit code, stdout+stderr)."""
        from kubernetes.stream import stream

        ws = self._call(f"exec {argv[0]}", lambda: stream(
            self.api.connect_get_namespaced_pod_exec, name, self._ns(), command=argv,
            container=CONTAINER, stdin=False, stdout=True, stderr=True, tty=False,
            _preload_content=False))
        try:
            ws.run_forever(timeout=timeout)
            code = ws.returncode if not ws.is_open() else None  # before read_all: it clears
            out = str(ws.read_all())
        finally:
            close_stream(ws)
        return (code if code is not None else -1), out

    def _signal(self, name: str, pid: int) -> None:
        """SIGTERM to the runner inside the pod: it kills the stage, runs the armed cleanup."""
        code, out = self.exec(name, ["kill", "-TERM", str(pid)])
        # the runner is PID 1 of the pod: once it exits, the kernel kills the exec'd kill too
        if code != 0 and self._exit_code(name, 10) is None:
            raise TargetError(f"node {self.node!r}: kill -TERM {pid} in pod {name} exited "
                              f"{code}: {out.strip()[:200]}")

    def _exit_code(self, name: str, wait: float) -> int | None:
        deadline = time.monotonic() + wait
        pause = threading.Event()
        while True:
            try:
                pod = self.api.read_namespaced_pod(name, self._ns())
            except Exception:  # gone or unreachable: the runner's code cannot be known
                return -1
            term = pod_terminated(pod)
            if term is not None:
                return int(term.exit_code)
            if time.monotonic() >= deadline:
                return None
            pause.wait(0.1)

    def _delete(self, name: str) -> None:
        """Delete the pod at once (grace 0) and wait until it is gone."""
        from kubernetes.client.exceptions import ApiException

        ns = self._ns()
        try:
            self.api.delete_namespaced_pod(name, ns, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise TargetError(self._explain(f"delete pod {ns}/{name}", exc)) from exc
        deadline = time.monotonic() + self.timeout
        pause = threading.Event()
        while time.monotonic() < deadline:
            try:
                self.api.read_namespaced_pod(name, ns)
            except ApiException as exc:
                if exc.status == 404:
                    break
            pause.wait(0.1)
        else:
            raise TargetError(f"node {self.node!r}: pod {ns}/{name} still exists "
                              f"{self.timeout:g} s after its deletion; delete it by hand")
        self._created.discard(name)

    def _sweep(self) -> None:
        """Once: delete managed pods on this node that finished (a harness killed before
        its cleanup leaves them Succeeded/Failed; running ones may be another run's)."""
        if self._swept:
            return
        self._swept = True
        selector = f"{MANAGED}=true,{NODE}={label_value(self.node_name)}"
        pods = self._call("list pods", lambda: self.api.list_namespaced_pod(
            self._ns(), label_selector=selector))
        for pod in pods.items:
            if (pod.status and pod.status.phase in ("Succeeded", "Failed")
                    and not pod.metadata.deletion_timestamp):
                self._delete(pod.metadata.name)

    # ------------------------------------------------------------ facts
    def _read_facts(self) -> NodeFacts:
        """Kernel, distro and arch from the Node object (the kubelet reads them on the
        node); features probed inside a pod-privileged pod on the node with the same probe
        local and VM nodes use (``harness/nodes/remote/nodeprobe.py``)."""
        node = self._call(f"read node {self.node_name}", lambda: self.api.read_node(self.node_name))
        info = node.status.node_info
        hostname = next((a.address for a in node.status.addresses or () if a.type == "Hostname"),
                        self.node_name)
        probed, why = self._probe()
        if not probed:
            reasons = dict.fromkeys(("btf", "bpf_lsm", "kprobes", "kfunc", "tracepoints", "cgroup2"), why)
        else:
            reasons = {k: f"{v} (probed in a pod-privileged pod of image {self.image})"
                       for k, v in probed["reasons"]}
        return NodeFacts(
            node=self.node, kernel=info.kernel_version, distro=info.os_image,
            arch=_ARCH.get(info.architecture, info.architecture), hostname=hostname,
            btf=bool(probed.get("btf")), bpf_lsm=bool(probed.get("bpf_lsm")),
            kprobes=bool(probed.get("kprobes")), kfunc=bool(probed.get("kfunc")),
            tracepoints=bool(probed.get("tracepoints")), cgroup2=bool(probed.get("cgroup2_root")),
            cgroup2_root=str(probed.get("cgroup2_root", "")), ncpu=int(probed.get("ncpu", 0)),
            reasons=tuple(sorted(reasons.items())),
        )

    def _probe(self) -> tuple[dict[str, Any], str]:
        """(facts, '') from a pod-privileged pod, or ({}, why the probe could not run)."""
        try:
            session = self.open("pod-privileged", "probe" + os.urandom(4).hex())
        except TargetError as exc:
            return {}, f"the probe pod could not run on the node: {exc}"
        source = files("harness.nodes.remote").joinpath("nodeprobe.py").read_text("utf-8")
        try:
            features = session.stage("probe", ["python3", "-c", source, self.node], {}, 90)
            node = session.stage("probe-node", ["sh", "-c", PROBE, "probe", source], {}, 30)
        except TargetError as exc:
            return {}, f"the probe stage failed in the probe pod: {exc}"
        finally:
            session.close()
        try:
            facts: dict[str, Any] = json.loads(features.stdout)
        except ValueError:
            return {}, (f"the probe in the probe pod printed no facts (exit {features.exit_code}): "
                        f"{features.stderr.strip()[-300:]}")
        values = dict(line.split("=", 1) for line in node.stdout.splitlines() if "=" in line)
        self._namespaces = {k: values[k] for k in ("host_pidns", "host_mntns") if values.get(k)}
        # the pod's own cgroup view is not the node's: take the node's (through /host)
        facts["cgroup2_root"] = values.get("cgroup2_root", "")
        facts["reasons"] = [(k, v) for k, v in facts.get("reasons", []) if k != "cgroup2"]
        if not facts["cgroup2_root"]:
            facts["reasons"].append(("cgroup2", "no cgroup2 hierarchy on the node"))
        return facts, ""

    def _variables(self, context: str, hello: Mapping[str, Any]) -> dict[str, Any]:
        """What atomics may use. In a hostPID pod the runner is in the node's PID namespace,
        so ``host_pidns`` is exact; elsewhere it is the probed value or a placeholder that
        matches nothing (the pod's own PID namespace is private by construction)."""
        out: dict[str, Any] = {"host_pidns": self._namespaces.get("host_pidns", "pid:[unknown]"),
                               "host_mntns": self._namespaces.get("host_mntns", "mnt:[unknown]")}
        if context == "pod-hostpid":
            out["host_pidns"] = hello.get("pidns") or out["host_pidns"]
        if self.bin is not None:
            out["bin"] = BIN_DIR
        return out


_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


# ------------------------------------------------------------------ pure helpers
def parse_url(url: str, node: str = "kubernetes") -> dict[str, str]:
    """``kubernetes://node?kubeconfig=...`` -> options (``node``: the node's name in the
    cluster); unknown, repeated or empty keys are errors."""
    parsed = parse_node_url(node, url, "kubernetes", URL_KEYS, USAGE)
    name = parsed.hostname or unquote(parsed.netloc)
    if not name:
        raise parsed.error("no node name", USAGE, repr(url),
                           "name the cluster's node: kubernetes://<node-name>")
    out = {"node": name, **parsed.options}
    if "pull" in out and out["pull"] not in PULL_POLICIES:
        raise parsed.error("unknown pull policy", f"pull= one of {', '.join(PULL_POLICIES)}",
                           f"pull={out['pull']!r}", key="pull")
    if "kubeconfig" in out:
        out["kubeconfig"] = os.path.expanduser(out["kubeconfig"])
    if "timeout" in out:
        try:
            float(out["timeout"])
        except ValueError:
            raise parsed.error("timeout= is not a number", "seconds, e.g. timeout=120",
                               f"timeout={out['timeout']!r}", key="timeout") from None
    return out


def _default_bin() -> Path | None:
    """The built-in catalogue's ``atomic/bin`` (``bin=`` points at a project's own)."""
    from harness.builtin import ATOMICS

    return ATOMICS / "bin"


def _retry_after(exc: Any) -> float:
    """The Retry-After of an ApiException (1 s when it gives none), at most 30 s."""
    headers = exc.headers or {}
    try:
        return min(30.0, max(0.0, float(headers.get("Retry-After", 1))))
    except (TypeError, ValueError):
        return 1.0
