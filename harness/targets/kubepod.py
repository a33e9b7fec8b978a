"""The pod of one run on a Kubernetes node, as plain data: the manifest, its labels, the
bootstrap that makes the stage runner the pod's main process, and readings of a pod's
status (pure: no API calls; :mod:`harness.targets.kubernetes` talks to the cluster)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from harness.core.errors import TargetError

CONTEXTS = ("pod", "pod-hostpid", "pod-privileged")
DEFAULT_IMAGE = "shadowtest/base:bookworm"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
MANAGED = "shadowtest.io/managed"
RUN_ID = "shadowtest.io/run-id"
NODE = "shadowtest.io/node"
CONTEXT = "shadowtest.io/context"
CONTAINER = "runner"
BIN_DIR = "/shadowtest/bin"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

#: the container's main process: write the atomic helpers, wait for the harness to attach
#: (one line on stdin), then run the stage runner in this very process (PID 1 of the pod)
BOOTSTRAP = (
    "import base64,json,os,sys\n"
    "for n,d in json.loads(base64.b64decode(sys.argv[2])).items():\n"
    " p=os.path.join('/shadowtest/bin',n);os.makedirs(os.path.dirname(p),exist_ok=True)\n"
    " open(p,'wb').write(base64.b64decode(d));os.chmod(p,0o755)\n"
    "sys.stdin.readline()\n"
    "src=base64.b64decode(sys.argv[1]).decode()\n"
    "exec(compile(src,'/shadowtest/stagerunner.py','exec'),"
    "{'__name__':'__main__','__file__':'/shadowtest/stagerunner.py'})\n"
)

def label_value(text: str) -> str:
    """``text`` when it is a valid label value, else a stable 16-hex digest of it."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pod_name(run_id: str) -> str:
    return f"shadowtest-{run_id}".lower()


def runner_source() -> str:
    return files("harness.nodes.remote").joinpath("stagerunner.py").read_text("utf-8")


def bin_files(directory: Path | None) -> dict[str, bytes]:
    """The atomic helper files shipped into the pod at ``/shadowtest/bin``."""
    if directory is None:
        return {}
    if not directory.is_dir():
        raise TargetError(f"bin={directory}: not a directory: point it at the atomics' bin/")
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def pod_manifest(context: str, run_id: str, node: str, image: str = DEFAULT_IMAGE,
                 pull: str = "IfNotPresent", helpers: Mapping[str, bytes] | None = None) -> dict[str, Any]:
    """The pod for one run in ``context``, pinned to ``node`` (a plain dict, as the API takes)."""
    if context not in CONTEXTS:
        raise TargetError(f"context {context!r}: expected one of {', '.join(CONTEXTS)}")
    encoded = {k: base64.b64encode(v).decode() for k, v in (helpers or {}).items()}
    container: dict[str, Any] = {
        "name": CONTAINER, "image": image, "imagePullPolicy": pull,
        "command": ["python3", "-u", "-c", BOOTSTRAP,
                    base64.b64encode(runner_source().encode()).decode(),
                    base64.b64encode(json.dumps(encoded).encode()).decode()],
        "stdin": True, "stdinOnce": True, "tty": False,
        "env": [{"name": "SHADOWTEST_RUN_ID", "value": run_id}],
    }
    spec: dict[str, Any] = {
        "nodeName": node, "restartPolicy": "Never", "automountServiceAccountToken": False,
        "enableServiceLinks": False, "terminationGracePeriodSeconds": 5,
        "tolerations": [{"operator": "Exists"}],  # a tainted node under test still runs it
        "containers": [container],
    }
    if context == "pod-hostpid":
        spec["hostPID"] = True
        container["securityContext"] = {"capabilities": {"add": ["SYS_ADMIN", "SYS_PTRACE"]}}
    elif context == "pod-privileged":
        container["securityContext"] = {"privileged": True}
        spec["volumes"] = [
            {"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}},
            {"name": "host-etc", "hostPath": {"path": "/etc", "type": "Directory"}},
        ]
        container["volumeMounts"] = [
            {"name": "host-root", "mountPath": "/host", "readOnly": True},
            {"name": "host-etc", "mountPath": "/host/etc"},
        ]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(run_id), "labels": {
            RUN_ID: label_value(run_id), MANAGED: "true", NODE: label_value(node),
            CONTEXT: context}},
        "spec": spec,
    }


def container_id_of(pod: Any) -> str:
    """The runner container's id from ``status.containerStatuses[].containerID``
    (``containerd://<id>``, ``docker://<id>``, ``cri-o://<id>``) without the scheme."""
    for status in (pod.status.container_statuses or ()) if pod.status else ():
        if status.name == CONTAINER and status.container_id:
            return parse_container_id(status.container_id)
    raise TargetError(f"pod {pod.metadata.name}: no containerID for container {CONTAINER!r} "
                      f"in status.containerStatuses")


def parse_container_id(text: str) -> str:
    scheme, sep, cid = text.partition("://")
    cid = cid if sep else scheme
    if not re.fullmatch(r"[0-9a-fA-F]{12,}", cid):
        raise TargetError(f"containerID {text!r}: expected <runtime>://<hex id>")
    return cid.lower()


def pod_running(pod: Any) -> str | None:
    phase = pod.status.phase if pod.status else None
    if phase == "Running":
        for st in pod.status.container_statuses or ():
            if st.name == CONTAINER and st.state and st.state.running and st.container_id:
                return "ok"
        return "Running, container not started yet"
    if phase in ("Succeeded", "Failed"):
        return f"error:the pod ended ({phase}) before the harness attached: {describe_pod(pod)}"
    for st in (pod.status.container_statuses or ()) if pod.status else ():
        waiting = st.state.waiting if st.state else None
        if waiting and waiting.reason in ("ErrImageNeverPull", "InvalidImageName",
                                          "CreateContainerConfigError", "CreateContainerError"):
            return f"error:container {st.name}: {waiting.reason}: {waiting.message or ''}"
    return None


def pod_terminated(pod: Any) -> Any:
    for st in (pod.status.container_statuses or ()) if pod.status else ():
        if st.name == CONTAINER and st.state and st.state.terminated:
            return st.state.terminated
    return None


def describe_pod(pod: Any) -> str:
    status = pod.status
    if status is None:
        return "no status"
    bits = [f"phase {status.phase}"]
    for st in status.container_statuses or ():
        state = st.state
        if state and state.waiting:
            bits.append(f"{st.name} waiting: {state.waiting.reason} {state.waiting.message or ''}".strip())
        elif state and state.terminated:
            bits.append(f"{st.name} terminated: exit {state.terminated.exit_code} "
                        f"{state.terminated.reason or ''}".strip())
    for cond in status.conditions or ():
        if cond.status != "True" and cond.message:
            bits.append(f"{cond.type}: {cond.message}")
    return "; ".join(bits)
