"""A local Kubernetes API server (core/v1 subset) whose pods are real docker containers.

aiohttp in a thread, on 127.0.0.1 and a free port. It implements the documented core/v1
endpoints the official ``kubernetes`` client calls for the ``kubernetes`` target, and acts
as the kubelet of one node (this machine) over the project's dockerd:

- ``GET /version``, ``/api``, ``/api/v1`` (discovery, minimal);
- nodes: list / get; ``status.nodeInfo`` from this machine (uname, /etc/os-release,
  machine-id, boot id, the docker version);
- pods: create (required fields validated: 422 ``Invalid`` Status with causes; 409
  ``AlreadyExists``; 404 for an unknown namespace), get, ``/status``, list (all
  namespaces or one; ``labelSelector`` with ``=``/``==``/``!=``/exists/``!key``,
  ``fieldSelector`` on metadata.name/namespace, spec.nodeName, status.phase), delete
  (``gracePeriodSeconds``; the object stays with ``deletionTimestamp`` until its container
  is gone) and deletecollection;
- ``pods/exec`` and ``pods/attach`` over WebSocket with the channel protocol
  (``v5.channel.k8s.io`` and ``v4.channel.k8s.io``): channel 0 stdin, 1 stdout, 2 stderr,
  3 the v1 Status at the end (exec: ``NonZeroExitCode`` with the ``ExitCode`` cause),
  4 resize (ignored: no tty), v5's 255 CLOSE of stdin;
- bearer-token auth (401 Status), and injected 429s with Retry-After (``fail_next``).

A pod on this node is realised like a kubelet over a container runtime: one docker
container per container, labelled with the pod's labels and ``io.kubernetes.*``;
``hostPID`` -> ``pid_mode=host``; ``privileged`` -> PLATFORM.md's near-privileged set
(cap_add ALL, cap_drop SYS_RESOURCE, seccomp/apparmor unconfined, no masked or read-only
paths; real ``--privileged`` fails on this host); hostPath -> binds; emptyDir -> tmpfs;
``network_mode=none`` always. A pod pinned to another node stays Pending (no kubelet).
Nothing here is a real kube-apiserver or kubelet: no admission, Pod Security, scheduler,
watch, CRI or cgroup-driver behaviour is reproduced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
from aiohttp import WSMsgType, web

from tests.servers._threaded import ThreadedApp

V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
LABEL = "io.shadowtest.kube-server"
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> web.Response:
    """A ``metav1.Status`` failure answer, as the API server writes it."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = dict(details)
    return web.json_response(body, status=code)


class Invalid(Exception):
    """422: the object does not validate; ``causes`` as the API server lists them."""

    def __init__(self, name: str, causes: list[dict[str, str]]) -> None:
        self.name = name
        self.causes = causes
        super().__init__("; ".join(f"{c['field']}: {c['message']}" for c in causes))


@dataclass
class PodRecord:
    obj: dict[str, Any]
    container_id: str | None = None
    waiting: tuple[str, str] = ("ContainerCreating", "")
    deleting: bool = False
    created_at: float = field(default_factory=time.time)


class KubeServer(ThreadedApp):
    """``with KubeServer(docker_url, token) as s: s.url``; ``s.node_name`` is this machine's."""

    NAME = "kube-server"

    def __init__(self, docker_url: str, token: str, node_name: str | None = None,
                 namespaces: tuple[str, ...] = ("default", "kube-system"),
                 host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.token = token
        self.node_name = node_name or socket.gethostname().lower()
        self.namespaces = set(namespaces)
        self.docker = docker.APIClient(base_url=docker_url, version="auto")
        self.pods: dict[tuple[str, str], PodRecord] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.started: dict[str, str] = {}  # pod name -> its container id, kept after deletion
        self._lock = threading.RLock()
        self._rv = 1
        self._fail: list[tuple[int, float]] = []

    # ------------------------------------------------------------ test controls
    def fail_next(self, count: int, code: int = 429, retry_after: float = 1) -> None:
        """The next ``count`` requests answer ``code`` (429: with Retry-After)."""
        with self._lock:
            self._fail += [(code, retry_after)] * count

    def stop(self) -> None:
        super().stop()
        for rec in list(self.pods.values()):
            if rec.container_id:
                with contextlib.suppress(docker.errors.APIError):
                    self.docker.remove_container(rec.container_id, force=True)
        self.docker.close()

    def _next_rv(self) -> str:
        with self._lock:
            self._rv += 1
            return str(self._rv)

    # ------------------------------------------------------------ app
    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        r = app.router
        r.add_get("/version", self._version)
        r.add_get("/api", self._api)
        r.add_get("/api/v1", self._api_v1)
        r.add_get("/api/v1/nodes", self._list_nodes)
        r.add_get("/api/v1/nodes/{name}", self._get_node)
        r.add_get("/api/v1/pods", self._list_pods)
        base = "/api/v1/namespaces/{ns}/pods"
        r.add_get(base, self._list_pods)
        r.add_post(base, self._create_pod)
        r.add_delete(base, self._delete_collection)
        r.add_get(base + "/{name}", self._get_pod)
        r.add_get(base + "/{name}/status", self._get_pod)
        r.add_delete(base + "/{name}", self._delete_pod)
        for verb in ("exec", "attach"):
            r.add_get(f"{base}/{{name}}/{verb}", self._stream)
            r.add_post(f"{base}/{{name}}/{verb}", self._stream)
        return app

    @web.middleware
    async def _auth(self, request: web.Request,
                    handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        with self._lock:
            fail = self._fail.pop(0) if self._fail else None
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            resp: web.StreamResponse = status(401, "Unauthorized", "Unauthorized")
        elif fail is not None:
            code, after = fail
            resp = status(code, "TooManyRequests" if code == 429 else "InternalError",
                          "the server has received too many requests and has asked us to try "
                          "again later" if code == 429 else "injected failure",
                          {"retryAfterSeconds": int(after)} if code == 429 else None)
            if code == 429:
                resp.headers["Retry-After"] = str(int(after))
        else:
            resp = await handler(request)
        self.requests.append((request.method, request.path, resp.status))
        return resp

    async def _version(self, _: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0-shadowtest",
                                  "platform": "linux/" + _ARCH.get(platform.machine(), "amd64")})

    async def _api(self, _: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [
                                      {"clientCIDR": "0.0.0.0/0",
                                       "serverAddress": f"{self.host}:{self.port}"}]})

    async def _api_v1(self, _: web.Request) -> web.Response:
        def res(name: str, kind: str, verbs: list[str], namespaced: bool = True) -> dict[str, Any]:
            return {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
                    "verbs": verbs}
        return web.json_response({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            res("nodes", "Node", ["get", "list"], namespaced=False),
            res("pods", "Pod", ["create", "delete", "deletecollection", "get", "list"]),
            res("pods/attach", "PodAttachOptions", ["create", "get"]),
            res("pods/exec", "PodExecOptions", ["create", "get"]),
            res("pods/status", "Pod", ["get"]),
        ]})

    # ------------------------------------------------------------ nodes
    def node(self) -> dict[str, Any]:
        uname = platform.uname()
        info = {
            "machineID": _read("/etc/machine-id"), "systemUUID": _read("/etc/machine-id"),
            "bootID": _read("/proc/sys/kernel/random/boot_id"), "kernelVersion": uname.release,
            "osImage": _os_image(), "containerRuntimeVersion": "docker://" + str(
                self.docker.version().get("Version", "")),
            "kubeletVersion": "v1.31.0-shadowtest", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": _ARCH.get(uname.machine, uname.machine),
        }
        return {
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": self.node_name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.node_name)),
                         "resourceVersion": "1", "creationTimestamp": now(),
                         "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": info["architecture"]}},
            "spec": {},
            "status": {
                "nodeInfo": info,
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": uname.node}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "docker-backed test node", "lastHeartbeatTime": now(),
                                "lastTransitionTime": now()}],
                "capacity": {"cpu": str(os.cpu_count() or 1), "pods": "110"},
            },
        }

    async def _list_nodes(self, _: web.Request) -> web.Response:
        node = await asyncio.to_thread(self.node)
        return web.json_response({"kind": "NodeList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": "1"}, "items": [node]})

    async def _get_node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name != self.node_name:
            return status(404, "NotFound", f'nodes "{name}" not found',
                          {"name": name, "kind": "nodes"})
        return web.json_response(await asyncio.to_thread(self.node))

    # ------------------------------------------------------------ pods
    def _ns_check(self, ns: str) -> web.Response | None:
        if ns not in self.namespaces:
            return status(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
        return None

    async def _create_pod(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        if (bad := self._ns_check(ns)) is not None:
            return bad
        try:
            body = await request.json()
        except ValueError as exc:
            return status(400, "BadRequest", f"the body is not JSON: {exc}")
        try:
            validate_pod(body)
        except Invalid as exc:
            return status(422, "Invalid", f'Pod "{exc.name}" is invalid: {exc}',
                          {"name": exc.name, "kind": "Pod", "causes": [
                              {"reason": "FieldValueInvalid", **c} for c in exc.causes]})
        name = body["metadata"]["name"]
        with self._lock:
            if (ns, name) in self.pods:
                return status(409, "AlreadyExists", f'pods "{name}" already exists',
                              {"name": name, "kind": "pods"})
            meta = body["metadata"]
            meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now(),
                        resourceVersion=self._next_rv())
            body.setdefault("spec", {}).setdefault("restartPolicy", "Always")
            rec = PodRecord(obj=body)
            self.pods[(ns, name)] = rec
        if body["spec"].get("nodeName") == self.node_name:
            threading.Thread(target=self._realise, args=(rec,), daemon=True).start()
        return web.json_response(self.view(rec), status=201)

    def _realise(self, rec: PodRecord) -> None:
        """The kubelet's part: image check, create and start the container; a pod deleted
        meanwhile is removed as soon as this is done."""
        try:
            self._start_pod(rec)
        finally:
            if rec.deleting:
                self._remove(rec, 0, created=True)

    def _start_pod(self, rec: PodRecord) -> None:
        pod = rec.obj
        c = pod["spec"]["containers"][0]
        policy = c.get("imagePullPolicy", "IfNotPresent")
        try:
            self.docker.inspect_image(c["image"])
        except docker.errors.ImageNotFound:
            rec.waiting = (("ErrImageNeverPull", f'Container image "{c["image"]}" is not present '
                            "with pull policy of Never") if policy == "Never" else
                           ("ErrImagePull", f'no registry is reachable to pull "{c["image"]}"'))
            return
        try:
            rec.container_id = self._create_container(pod, c)
            self.started[pod["metadata"]["name"]] = rec.container_id
            self.docker.start(rec.container_id)
        except docker.errors.APIError as exc:
            rec.waiting = ("CreateContainerError", str(exc.explanation or exc))
            return
        with self._lock:
            pod["metadata"]["resourceVersion"] = self._next_rv()

    def _create_container(self, pod: dict[str, Any], c: dict[str, Any]) -> str:
        spec, meta = pod["spec"], pod["metadata"]
        sc = c.get("securityContext") or {}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        binds, tmpfs = [], {}
        for m in c.get("volumeMounts", []):
            v = volumes[m["name"]]
            if "hostPath" in v:
                mode = "ro" if m.get("readOnly") else "rw"
                binds.append(f"{v['hostPath']['path']}:{m['mountPath']}:{mode}")
            elif "emptyDir" in v:
                tmpfs[m["mountPath"]] = ""
        caps = sc.get("capabilities") or {}
        cap_add, cap_drop = list(caps.get("add", [])), list(caps.get("drop", []))
        security_opt: list[str] = []
        if sc.get("privileged"):
            cap_add, cap_drop = ["ALL"], ["SYS_RESOURCE"]
            security_opt = ["seccomp=unconfined", "apparmor=unconfined"]
        host_config = self.docker.create_host_config(
            network_mode="none", pid_mode="host" if spec.get("hostPID") else None, binds=binds,
            tmpfs=tmpfs or None, cap_add=cap_add or None, cap_drop=cap_drop or None,
            security_opt=security_opt or None,
        )
        if sc.get("privileged"):
            host_config["MaskedPaths"], host_config["ReadonlyPaths"] = [], []
        labels = {**meta.get("labels", {}), LABEL: "true", "io.kubernetes.pod.name": meta["name"],
                  "io.kubernetes.pod.namespace": meta["namespace"], "io.kubernetes.pod.uid": meta["uid"],
                  "io.kubernetes.container.name": c["name"]}
        config = self.docker.create_container_config(
            c["image"], c.get("args"), entrypoint=c.get("command"), hostname=meta["name"][:63],
            environment={e["name"]: e.get("value", "") for e in c.get("env", [])},
            labels=labels, host_config=host_config, stdin_open=bool(c.get("stdin")),
            tty=bool(c.get("tty")), detach=not c.get("stdin"), working_dir=c.get("workingDir"),
        )
        config["StdinOnce"] = bool(c.get("stdinOnce"))
        name = f"k8s_{c['name']}_{meta['name']}_{meta['namespace']}_{meta['uid']}_0"
        return str(self.docker.create_container_from_config(config, name)["Id"])

    def view(self, rec: PodRecord) -> dict[str, Any]:
        """The pod object with its status read from the runtime now."""
        pod = dict(rec.obj)
        c = pod["spec"]["containers"][0]
        st: dict[str, Any] = {"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
                              "restartCount": 0, "started": False}
        phase, start = "Pending", None
        state: dict[str, Any] = {"waiting": {"reason": rec.waiting[0], "message": rec.waiting[1]}}
        if rec.container_id:
            try:
                info = self.docker.inspect_container(rec.container_id)
            except docker.errors.NotFound:
                info = None
            if info is not None:
                s = info["State"]
                st.update(containerID=f"docker://{rec.container_id}", imageID=info["Image"])
                start = s.get("StartedAt")
                if s["Status"] == "running":
                    phase, state = "Running", {"running": {"startedAt": _ts(s["StartedAt"])}}
                    st.update(ready=True, started=True)
                elif s["Status"] in ("exited", "dead"):
                    code = int(s.get("ExitCode", 0))
                    phase = "Succeeded" if code == 0 else "Failed"
                    state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                            "startedAt": _ts(s["StartedAt"]),
                                            "finishedAt": _ts(s["FinishedAt"]),
                                            "containerID": f"docker://{rec.container_id}"}}
        st["state"] = state
        scheduled = pod["spec"].get("nodeName") == self.node_name
        pod["status"] = {
            "phase": phase, "hostIP": "127.0.0.1" if scheduled else None,
            "startTime": _ts(start) if start else None, "qosClass": "BestEffort",
            "conditions": [{"type": "PodScheduled", "status": "True" if scheduled else "False",
                            "message": None if scheduled else
                            f"node {pod['spec'].get('nodeName')!r} has no kubelet here"},
                           {"type": "Ready", "status": "True" if phase == "Running" else "False"}],
            "containerStatuses": [st] if scheduled else [],
        }
        return pod

    def _find(self, request: web.Request) -> PodRecord | web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        rec = self.pods.get((ns, name))
        if rec is None:
            return status(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        return rec

    async def _get_pod(self, request: web.Request) -> web.Response:
        rec = self._find(request)
        if isinstance(rec, web.Response):
            return rec
        return web.json_response(await asyncio.to_thread(self.view, rec))

    def _select(self, request: web.Request) -> list[PodRecord]:
        ns = request.match_info.get("ns")
        labels = parse_selector(request.query.get("labelSelector", ""))
        fields = parse_selector(request.query.get("fieldSelector", ""))
        out = []
        for (pns, _), rec in sorted(self.pods.items()):
            if ns is not None and pns != ns:
                continue
            if not matches(labels, rec.obj["metadata"].get("labels", {})):
                continue
            out.append(rec)
        if fields:
            views = [(r, self.view(r)) for r in out]
            out = [r for r, v in views if matches(fields, {
                "metadata.name": v["metadata"]["name"], "metadata.namespace": v["metadata"]["namespace"],
                "spec.nodeName": v["spec"].get("nodeName", ""), "status.phase": v["status"]["phase"]})]
        return out

    async def _list_pods(self, request: web.Request) -> web.Response:
        if request.query.get("watch") in ("true", "1"):
            return status(400, "BadRequest", "watch is not implemented by this test server")
        if (ns := request.match_info.get("ns")) and (bad := self._ns_check(ns)) is not None:
            return bad
        try:
            recs = self._select(request)
        except ValueError as exc:
            return status(400, "BadRequest", str(exc))
        items = await asyncio.to_thread(lambda: [self.view(r) for r in recs])
        return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": str(self._rv)}, "items": items})

    def _begin_delete(self, rec: PodRecord, grace: int) -> dict[str, Any]:
        with self._lock:
            meta = rec.obj["metadata"]
            if not rec.deleting:
                rec.deleting = True
                meta.update(deletionTimestamp=now(), deletionGracePeriodSeconds=grace,
                            resourceVersion=self._next_rv())
                threading.Thread(target=self._remove, args=(rec, grace), daemon=True).start()
        return self.view(rec)

    def _remove(self, rec: PodRecord, grace: int, created: bool = False) -> None:
        """Stop the container within ``grace`` s, remove it, then forget the pod."""
        if rec.container_id:
            with contextlib.suppress(docker.errors.APIError):
                if grace > 0:
                    self.docker.stop(rec.container_id, timeout=grace)
                self.docker.remove_container(rec.container_id, force=True)
        elif (not created and rec.obj["spec"].get("nodeName") == self.node_name
              and rec.waiting[0] == "ContainerCreating"):
            return  # _realise is still creating it: it removes the pod once it exists
        meta = rec.obj["metadata"]
        with self._lock:
            self.pods.pop((meta["namespace"], meta["name"]), None)

    def _grace(self, request: web.Request, body: Mapping[str, Any]) -> int:
        raw = request.query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        if raw is None:
            return 30
        return max(0, int(raw))

    async def _delete_pod(self, request: web.Request) -> web.Response:
        rec = self._find(request)
        if isinstance(rec, web.Response):
            return rec
        body = await _json_or_empty(request)
        view = await asyncio.to_thread(self._begin_delete, rec, self._grace(request, body))
        return web.json_response(view)

    async def _delete_collection(self, request: web.Request) -> web.Response:
        if (bad := self._ns_check(request.match_info["ns"])) is not None:
            return bad
        body = await _json_or_empty(request)
        grace = self._grace(request, body)
        try:
            recs = self._select(request)
        except ValueError as exc:
            return status(400, "BadRequest", str(exc))
        items = await asyncio.to_thread(lambda: [self._begin_delete(r, grace) for r in recs])
        return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": str(self._rv)}, "items": items})

    # ------------------------------------------------------------ exec / attach
    async def _stream_refused(self, request: web.Request, rec: PodRecord, verb: str,
                              stdin: bool, command: list[str]) -> web.Response | None:
        """The 400s the API server answers before upgrading an exec/attach request."""
        c = rec.obj["spec"]["containers"][0]
        name = rec.obj["metadata"]["name"]
        view = await asyncio.to_thread(self.view, rec)
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        problem = None
        if request.query.get("container", c["name"]) != c["name"]:
            problem = f"container {request.query['container']} is not valid for pod {name}"
        elif view["status"]["phase"] != "Running" or rec.container_id is None:
            problem = f"pod {name} is not running (phase {view['status']['phase']})"
        elif verb == "attach" and stdin and not c.get("stdin"):
            problem = "Stdin is not enabled for this container"
        elif verb == "exec" and not command:
            problem = "you must specify at least 1 command"
        elif not {V5, V4} & set(offered):
            problem = f"requested protocol(s) are not supported: {offered}; supports {[V5, V4]}"
        return status(400, "BadRequest", problem) if problem else None

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        rec = self._find(request)
        if isinstance(rec, web.Response):
            return rec
        verb = request.path.rsplit("/", 1)[1]
        q = request.query
        flag = {k: q.get(k, "false") in ("true", "1") for k in ("stdin", "stdout", "stderr", "tty")}
        command = q.getall("command", [])
        refused = await self._stream_refused(request, rec, verb, flag["stdin"], command)
        if refused is not None:
            return refused
        ws = web.WebSocketResponse(protocols=(V5, V4), autoping=True)
        await ws.prepare(request)
        cid = rec.container_id
        if verb == "exec":
            exec_id = await asyncio.to_thread(
                lambda: self.docker.exec_create(cid, command, stdin=flag["stdin"], stdout=flag["stdout"],
                                                stderr=flag["stderr"], tty=flag["tty"])["Id"])
            sock = await asyncio.to_thread(self.docker.exec_start, exec_id, socket=True, tty=flag["tty"])
        else:
            exec_id = None
            sock = await asyncio.to_thread(self.docker.attach_socket, cid, params={
                "stdin": int(flag["stdin"]), "stdout": 1, "stderr": 1, "stream": 1, "logs": 0})
        raw: socket.socket = getattr(sock, "_sock", sock)
        try:
            await _bridge(ws, raw, flag["tty"])
        finally:  # the SDK's SocketIO and HTTP response hold the fd too
            for part in (raw, sock, getattr(sock, "_response", None)):
                with contextlib.suppress(Exception):
                    part.close()
        if exec_id is not None:
            code = int((await asyncio.to_thread(self.docker.exec_inspect, exec_id)).get("ExitCode") or 0)
            final = {"metadata": {}, "status": "Success"} if code == 0 else {
                "metadata": {}, "status": "Failure",
                "message": f"command terminated with non-zero exit code: exit status {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        else:
            final = {"metadata": {}, "status": "Success"}
        if not ws.closed:
            await ws.send_bytes(b"\x03" + json.dumps(final).encode())
            await ws.close()
        return ws


def _pump(ws: web.WebSocketResponse, raw: socket.socket, tty: bool,
          loop: asyncio.AbstractEventLoop, done: asyncio.Event) -> None:
    """The runtime's stream -> channels 1/2 (docker's 8-byte frame headers demuxed)."""

    def send(channel: int, data: bytes) -> None:
        asyncio.run_coroutine_threadsafe(ws.send_bytes(bytes([channel]) + data), loop).result()

    buf = b""
    try:
        while data := raw.recv(65536):
            if tty:
                send(1, data)
                continue
            buf += data
            while len(buf) >= 8 and len(buf) >= 8 + (size := struct.unpack(">I", buf[4:8])[0]):
                send(2 if buf[0] == 2 else 1, buf[8:8 + size])
                buf = buf[8 + size:]
    except (OSError, RuntimeError, ConnectionError):
        pass
    finally:
        loop.call_soon_threadsafe(done.set)


async def _bridge(ws: web.WebSocketResponse, raw: socket.socket, tty: bool) -> None:
    """Pump the runtime's hijacked stream to the websocket (stdout/stderr demuxed to
    channels 1/2) and the websocket's channel 0 to it, until the stream ends; a client
    that goes away closes the runtime stream (stdin EOF, as the kubelet does)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    reader = threading.Thread(target=_pump, args=(ws, raw, tty, loop, done),
                              name="kube-server-stream", daemon=True)
    reader.start()

    async def receive() -> None:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == 0 and payload:
                await asyncio.to_thread(raw.sendall, payload)
            elif channel == 255 and payload[:1] == b"\x00" and ws.ws_protocol == V5:
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_WR)  # v5 CLOSE of stdin: EOF for the process

    receiver = asyncio.ensure_future(receive())
    waiter = asyncio.ensure_future(done.wait())
    await asyncio.wait({receiver, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not done.is_set():  # the client went away first: stdin EOF, then end the stream
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RD)
        await waiter
    receiver.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await receiver


# ------------------------------------------------------------------ validation & selectors
def validate_pod(body: Any) -> None:
    """What the API server rejects with 422 (a subset of core/v1 validation)."""
    causes: list[dict[str, str]] = []

    def bad(path: str, message: str) -> None:
        causes.append({"field": path, "message": message})

    meta = body.get("metadata") if isinstance(body, dict) else None
    name = (meta or {}).get("name", "")
    _validate_meta(meta, bad)
    spec = body.get("spec") if isinstance(body, dict) else None
    containers = (spec or {}).get("containers") or []
    if not containers:
        bad("spec.containers", "Required value")
    volumes = {v.get("name") for v in (spec or {}).get("volumes") or []}
    for i, v in enumerate((spec or {}).get("volumes") or []):
        hp = v.get("hostPath")
        if hp is not None and not str(hp.get("path", "")).startswith("/"):
            bad(f"spec.volumes[{i}].hostPath.path", "Invalid value: must be an absolute path")
    for i, c in enumerate(containers):
        if not c.get("name"):
            bad(f"spec.containers[{i}].name", "Required value")
        if not c.get("image"):
            bad(f"spec.containers[{i}].image", "Required value")
        if c.get("imagePullPolicy", "IfNotPresent") not in ("Always", "IfNotPresent", "Never"):
            bad(f"spec.containers[{i}].imagePullPolicy", "Unsupported value")
        for j, m in enumerate(c.get("volumeMounts") or []):
            if m.get("name") not in volumes:
                bad(f"spec.containers[{i}].volumeMounts[{j}].name", f"Not found: {m.get('name')!r}")
    if (spec or {}).get("restartPolicy", "Always") not in ("Always", "OnFailure", "Never"):
        bad("spec.restartPolicy", "Unsupported value")
    if causes:
        raise Invalid(str(name or "<unnamed>"), causes)


def _validate_meta(meta: Any, bad: Callable[[str, str], None]) -> None:
    name = (meta or {}).get("name", "") if isinstance(meta, dict) else ""
    if not isinstance(meta, dict) or not name:
        bad("metadata.name", "Required value: name or generateName is required")
    elif not _DNS1123.match(name) or len(name) > 253:
        bad("metadata.name", f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain")
    for key, value in ((meta or {}).get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            bad(f"metadata.labels[{key}]", f"Invalid value: {value!r}: must be 63 characters or "
                "less, alphanumeric at both ends, '-', '_' or '.' between")


Selector = list[tuple[str, str, str]]


def parse_selector(text: str) -> Selector:
    """``a=b,c!=d,e,!f`` -> [(key, op, value)] (the equality-based selector grammar)."""
    out: Selector = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if m := re.fullmatch(r"([^!=\s]+)\s*(==|!=|=)\s*(\S*)", term):
            out.append((m[1], "!=" if m[2] == "!=" else "=", m[3]))
        elif re.fullmatch(r"!?[A-Za-z0-9./_-]+", term):
            out.append((term.lstrip("!"), "!" if term.startswith("!") else "exists", ""))
        else:
            raise ValueError(f"unable to parse requirement: {term!r}")
    return out


def matches(selector: Selector, labels: Mapping[str, str]) -> bool:
    for key, op, value in selector:
        if (op == "=" and labels.get(key) != value) or (op == "!=" and labels.get(key) == value) \
                or (op == "exists" and key not in labels) or (op == "!" and key in labels):
            return False
    return True


async def _json_or_empty(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    with contextlib.suppress(ValueError):
        data = await request.json()
        return data if isinstance(data, dict) else {}
    return {}


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def _ts(docker_time: str | None) -> str | None:
    """Docker's RFC 3339 with nanoseconds -> the API's second precision."""
    if not docker_time or docker_time.startswith("0001-"):
        return None
    return docker_time.split(".")[0].rstrip("Z") + "Z"


def write_kubeconfig(path: Path, server: str, token: str, namespace: str = "default",
                     name: str = "shadowtest") -> Path:
    """A kubeconfig for ``server`` with bearer-token auth (YAML is a JSON superset)."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
    }, indent=1))
    return path
