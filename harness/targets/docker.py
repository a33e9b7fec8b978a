"""The docker target: atomics run in containers of the project's own dockerd.

URL: ``docker://`` (the project's daemon, ``ci/dockerd.sh start``),
``docker:///path/to/docker.sock`` or ``docker://?socket=/path``; optional query key
``image=`` (default ``shadowtest/base:bookworm``, built offline by ``ci/dockerd.sh image``).
The atomic's ``bin/`` is bind-mounted read-only at ``/shadowtest/bin`` (``#{bin}``).

The docker SDK creates, labels, inspects and removes each container; the docker CLI
(``docker start -a -i``) only carries the stage runner's stdin/stdout. The container is
created first, so its id is known before any action.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

from harness.core.errors import TargetError
from harness.core.node import NodeFacts
from harness.nodes.cgroups import container_id, process_cgroup
from harness.nodes.dockerd import BASE_IMAGE, STATE_DIR, Dockerd, ensure_base_image
from harness.nodes.reaper import Journal, start_time
from harness.nodes.runner import RunnerSession, start_runner
from harness.nodes.shell import LocalShell
from harness.nodes.url import parse_node_url
from harness.targets.base import TargetBase
from harness.targets.local import PDEATHSIG, read_local_facts

DEFAULT_SOCKET = str(STATE_DIR / "docker.sock")
CONTEXTS = ("container-privileged", "container-hostpid", "container-hostetc")
LABEL_RUN = "shadowtest.io/run-id"
LABEL_MANAGED = "shadowtest.io/managed"
#: the runner process (pid-starttime) whose containers these are: its reaper removes them
LABEL_SESSION = "shadowtest.io/session"
#: dockerd=own: the target's own daemon (its data root keeps the imported base image)
OWN_STATE = Path("/run/shadowtest/dockerd-own")
OWN_DATA = Path("/var/lib/shadowtest/docker-own")
RUNNER = "/shadowtest/_stagerunner.py"
BIN = "/shadowtest/bin"
HOST_ETC = "/host/etc"
#: container-privileged has no path to the host's /etc: a path that cannot exist, so an
#: atomic writing #{host_etc} fails its precondition (NOT_EXECUTED), never the container's
#: own /etc passed off as the host's
NO_HOST_ETC = "/nonexistent/no-path-to-the-host-etc-in-this-context"
#: container-hostpid: the runner holds this fd on the host anchor's mount namespace
#: (reached through the host PID namespace), passed to every stage like the namespace
#: context's leaked fd
LEAKED_FD = 9
#: created-but-never-started containers younger than this may belong to a concurrent run
SWEEP_MIN_AGE = 60.0


@dataclass(frozen=True)
class DockerUrl:
    socket: str = DEFAULT_SOCKET
    image: str = BASE_IMAGE
    #: "shared": the project's dockerd (ci/dockerd.sh start); "own": the target starts a
    #: dockerd of its own and stops it at close — and its reaper does, if the harness is killed
    dockerd: str = "shared"

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"


#: the query keys a docker:// url may have
URL_KEYS = {
    "socket": "the docker daemon's unix socket, an absolute path (default: the project's "
              "dockerd, ci/dockerd.sh start)",
    "image": f"the image of every context's container (default {BASE_IMAGE})",
    "dockerd": "'shared' (the project's dockerd, the default) or 'own' (a dockerd the target "
               "starts and stops)",
}
USAGE = "docker://, docker:///path/to/docker.sock or docker://?socket=/path"


def parse_url(url: str, node: str = "docker") -> DockerUrl:
    """``docker://``, ``docker:///path/to/docker.sock``, ``docker://?socket=...&image=...``."""
    parsed = parse_node_url(node, url, "docker", URL_KEYS, USAGE)
    query = parsed.options
    if parsed.netloc:
        raise parsed.error("a host part is not supported (only the local unix socket)", USAGE,
                           repr(parsed.netloc), "drop the host")
    socket = query.get("socket", "")
    if socket and parsed.path:
        raise parsed.error("both a path and socket=", "one of them",
                           f"{parsed.path} and socket={socket}", "give one")
    socket = socket or parsed.path or DEFAULT_SOCKET
    if not socket.startswith("/"):
        raise parsed.error("the socket must be an absolute path", "/path/to/docker.sock",
                           repr(socket), key="socket")
    dockerd = query.get("dockerd", "shared")
    if dockerd not in ("shared", "own"):
        raise parsed.error("unknown dockerd=", "'shared' (the project's dockerd, ci/dockerd.sh "
                           "start) or 'own' (started and stopped by the target)", repr(dockerd),
                           key="dockerd")
    if dockerd == "own" and ("socket" in query or parsed.path):
        raise parsed.error("dockerd=own starts its own daemon", "no socket with dockerd=own",
                           socket, "drop the socket", key="socket")
    if dockerd == "own":
        socket = str(OWN_STATE / "docker.sock")
    return DockerUrl(socket=socket, image=query.get("image", BASE_IMAGE), dockerd=dockerd)


def container_config(context: str, run_id: str, image: str, runner: str,
                     bin_dir: str | None = None, anchor_pid: int | None = None) -> dict[str, Any]:
    """The Engine API create body (``POST /containers/create``) for a context: pure."""
    if context not in CONTEXTS:
        raise TargetError(f"context {context!r} is not provided by docker://: expected one of "
                          f"{', '.join(CONTEXTS)}")
    binds = [f"{runner}:{RUNNER}:ro", *([f"{bin_dir}:{BIN}:ro"] if bin_dir else [])]
    host: dict[str, Any] = {"NetworkMode": "none", "Binds": binds, "AutoRemove": False}
    command = ["python3", "-u", RUNNER]
    env = {"SHADOWTEST_RUN_ID": run_id}
    if context == "container-privileged":
        # --privileged fails here (no CAP_SYS_RESOURCE in the bounding set): near-privileged
        host.update(CapAdd=["ALL"], CapDrop=["SYS_RESOURCE"],
                    SecurityOpt=["seccomp=unconfined", "apparmor=unconfined"],
                    MaskedPaths=[], ReadonlyPaths=[])
    elif context == "container-hostpid":
        if anchor_pid is None:
            raise TargetError("container-hostpid needs the host anchor's pid")
        host.update(PidMode="host", CapAdd=["SYS_ADMIN", "SYS_PTRACE"],
                    SecurityOpt=["seccomp=unconfined", "apparmor=unconfined"])
        env["SHADOWTEST_ANCHOR_PID"] = str(anchor_pid)
        command = ["sh", "-c", f'exec {LEAKED_FD}</proc/"$SHADOWTEST_ANCHOR_PID"/ns/mnt && '
                               f'exec python3 -u {RUNNER}']
    else:  # container-hostetc
        binds.append(f"/etc:{HOST_ETC}:rw")
    return {
        "Image": image, "Cmd": command, "Hostname": f"shadowtest-{run_id}",
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": {LABEL_RUN: run_id, LABEL_MANAGED: "true", "shadowtest.io/context": context},
        "AttachStdin": True, "AttachStdout": True, "AttachStderr": True,
        "OpenStdin": True, "StdinOnce": True, "Tty": False, "NetworkDisabled": True,
        "HostConfig": host,
    }


def context_variables(context: str, anchor_pid: int | None) -> dict[str, Any]:
    """What atomics may use in a context, beyond #{run_id}, #{bin} and #{python}."""
    out: dict[str, Any] = {"host_pidns": os.readlink("/proc/self/ns/pid"),
                           "host_mntns": os.readlink("/proc/self/ns/mnt"),
                           "host_etc": NO_HOST_ETC}
    if context == "container-hostpid":  # the host's / through the anchor (CAP_SYS_PTRACE)
        out.update(host_anchor_pid=anchor_pid, host_mntns_fd=LEAKED_FD,
                   host_etc=f"/proc/{anchor_pid}/root/etc")
    elif context == "container-hostetc":
        out["host_etc"] = HOST_ETC
    return out


class DockerTarget(TargetBase):
    """Runs atomics in near-privileged, host-PID and host-/etc containers of one dockerd."""

    NAME: ClassVar[str] = "docker"
    URL_KEYS: ClassVar[Mapping[str, str]] = URL_KEYS

    def __init__(self, node: str, url: str = "docker://") -> None:
        self.node = node
        self.url = url
        self.config = parse_url(url, node)
        self._client: Any = None
        self._facts: NodeFacts | None = None
        self._created: set[str] = set()
        self._bin_dir: str | None = None
        self._session = f"{os.getpid()}-{start_time(os.getpid())}"
        #: its containers and its own dockerd, recorded before they exist (see nodes/reaper)
        self._journal = Journal("docker")
        self._own: Dockerd | None = None

    def contexts(self) -> tuple[str, ...]:
        return CONTEXTS

    def facts(self) -> NodeFacts:
        if self._facts is None:  # the daemon is local (unix socket): the node is this machine
            self._facts = read_local_facts(self.node)
        return self._facts

    def stage_bin(self, bin_dir: Path) -> str:
        """The atomic's ``bin/`` as the next containers see it: mounted read-only at BIN."""
        self._bin_dir = str(Path(bin_dir).resolve()) if Path(bin_dir).is_dir() else None
        return BIN

    def shell(self) -> LocalShell:
        """The embedded sensors run on the docker host: this machine (a unix socket)."""
        return LocalShell(self.node)

    def client(self) -> Any:
        """The SDK client; the first call sweeps containers of finished runs and makes sure
        the base image is there."""
        if self._client is None:
            import docker  # type: ignore[import-untyped]

            if self.config.dockerd == "own":
                self._journal.record("dockerd", state=str(OWN_STATE), data=str(OWN_DATA))
                self._own = Dockerd(OWN_STATE, OWN_DATA)
                self._own.start()
            # removes this runner's containers (then stops its own dockerd) if it is killed
            self._journal.record("containers", socket=self.config.socket, label=self._label())
            if not os.path.exists(self.config.socket):
                raise TargetError(
                    f"node {self.node!r}: no docker socket at {self.config.socket}: start the "
                    f"project's dockerd with `ci/dockerd.sh start` (or fix the url {self.url!r})")
            client = docker.DockerClient(base_url=self.config.base_url, version="auto", timeout=60)
            try:
                client.ping()
            except docker.errors.DockerException as exc:
                client.close()
                raise TargetError(f"node {self.node!r}: dockerd at {self.config.socket} does not "
                                  f"answer ({exc}): `ci/dockerd.sh status`") from exc
            self._client = client
            sweep_containers(client)
            ensure_base_image(client, self.config.image)
        return self._client

    def open(self, context: str, run_id: str) -> RunnerSession:
        if context not in CONTEXTS:
            raise TargetError(f"node {self.node!r}: context {context!r} is not provided by "
                              f"docker://: expected one of {', '.join(CONTEXTS)}")
        client = self.client()
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            raise TargetError("the docker CLI is not on PATH: apt-get install -y docker.io")
        anchor = start_anchor() if context == "container-hostpid" else None
        cid = ""
        try:
            body = container_config(context, run_id, self.config.image, runner_path(),
                                    self._bin_dir, anchor.pid if anchor else None)
            body["Labels"][LABEL_SESSION] = self._session
            cid = _create(client.api, body, f"shadowtest-{run_id}")
            self._created.add(cid)
            # `start -a` proxies signals to the container: a harness killed even
            # by SIGKILL makes it SIGTERM the stage runner, which kills the running stage,
            # runs the armed cleanup and exits
            proc, hello = start_runner([*PDEATHSIG, docker_cli, "-H", self.config.base_url, "start",
                                        "-a", "-i", cid], context, shell=self.shell())
            state = client.api.inspect_container(cid)["State"]
            init_pid = int(state["Pid"])
        except BaseException:
            if cid:
                self._remove(cid)
            if anchor is not None:
                stop_anchor(anchor)
            raise
        on_close = [lambda: self._remove(cid)]
        if anchor is not None:
            on_close.insert(0, lambda: stop_anchor(anchor))  # popped last: after the container
        return RunnerSession(
            context=context, proc=proc, pids=frozenset({init_pid}), hello=hello,
            cgroup_id=cgroup_inode(init_pid, cid, self.facts().cgroup2_root), container_id=cid,
            variables={**context_variables(context, anchor.pid if anchor else None),
                       "container_id": cid},
            pass_fds=(LEAKED_FD,) if anchor is not None else (), runner_pid=init_pid,
            on_close=on_close,
        )

    def _remove(self, cid: str) -> None:
        import docker.errors  # type: ignore[import-untyped]

        with contextlib.suppress(docker.errors.NotFound):
            self._client.api.remove_container(cid, force=True, v=True)
        self._created.discard(cid)

    def _label(self) -> str:
        return f"{LABEL_SESSION}={self._session}"

    def close(self) -> None:
        if self._client is not None:
            for cid in list(self._created):
                with contextlib.suppress(Exception):
                    self._remove(cid)
            self._client.close()
            self._client = None
        self._journal.forget("containers", socket=self.config.socket, label=self._label())
        if self._own is not None:
            self._own.stop()
            self._own = None
            self._journal.forget("dockerd", state=str(OWN_STATE), data=str(OWN_DATA))
        self._journal.close()


def runner_path() -> str:
    return str(Path(str(files("harness.nodes.remote").joinpath("stagerunner.py"))))


def _create(api: Any, body: Mapping[str, Any], name: str) -> str:
    """``POST /containers/create`` with the raw body (MaskedPaths/ReadonlyPaths have no SDK
    keyword: ``APIClient.create_container_from_config`` takes the body as it is); returns
    the full 64-hex id."""
    return str(api.create_container_from_config(dict(body), name=name)["Id"])


def cgroup_inode(pid: int, cid: str, root: str) -> int | None:
    """Inode of the container's cgroup2 directory under ``root`` (the node's probed cgroup2
    root) — what bpftrace's ``cgroup`` builtin reports. The directory is the one
    ``/proc/<pid>/cgroup`` names when it maps to ``cid`` (``harness.nodes.cgroups``: cgroupfs
    ``docker/<id>``, systemd ``system.slice/docker-<id>.scope``, ...), else the first of the
    two driver defaults that exists; None when the node has no cgroup2 hierarchy."""
    if not root:
        return None
    rel = process_cgroup(pid)
    candidates = [rel] if rel is not None and container_id(rel) == cid else []
    candidates += [f"docker/{cid}", f"system.slice/docker-{cid}.scope"]
    for candidate in candidates:
        try:
            return os.stat(Path(root) / candidate.lstrip("/")).st_ino
        except OSError:
            continue
    return None


def start_anchor() -> subprocess.Popen[bytes]:
    """A harmless host process in the host's namespaces (never PID 1): the door a host-PID
    container uses. Killed with the harness (parent-death signal) and in on_close."""
    return subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", "sleep", "infinity"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop_anchor(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def sweep_containers(client: Any, min_age: float = SWEEP_MIN_AGE) -> list[str]:
    """Remove shadowtest containers whose run is over: exited or dead ones, and ones
    created but never started more than ``min_age`` seconds ago (a harness killed between
    create and start). Running ones belong to a live run."""
    removed: list[str] = []
    now = time.time()
    for c in client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"}):
        state = c.get("State", "")
        if state in {"exited", "dead"} or (state == "created" and now - c.get("Created", now) > min_age):
            with contextlib.suppress(Exception):
                client.api.remove_container(c["Id"], force=True, v=True)
                removed.append(c["Id"])
    return removed

