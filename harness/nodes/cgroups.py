"""cgroup v2 path -> container id, for every layout the runtimes use, and the scan that
maps a node's cgroup ids (the inodes bpftrace's ``cgroup`` builtin reports) to them.

Stdlib only and standalone: the bpftrace and LSM sensors run :func:`scan` on remote nodes
too (its source goes over SSH with the node probe's, see :func:`node_scan_code`). The
cgroup2 root is never decided here: it is the node probe's
(``harness.nodes.remote.nodeprobe.cgroup2_root``), carried in the node facts.

Layouts (``container_id`` returns the 64-hex id, or the containerd name):

===================================================  ==========================================
``docker/<id>``                                      docker, cgroupfs driver (hybrid/v1 hosts)
``system.slice/docker-<id>.scope``                   docker, systemd driver (pure v2 default)
``kubepods/<qos>/pod<uid>/<id>``                     kubelet + containerd/docker, cgroupfs driver
``kubepods.slice/…/cri-containerd-<id>.scope``       kubelet + containerd, systemd driver
``kubepods.slice/…/crio-<id>.scope``, ``…/crio-<id>``  kubelet + CRI-O (systemd / cgroupfs)
``kubepods.slice/…/docker-<id>.scope``               kubelet + dockershim, systemd driver
``<namespace>/<name>`` (``default``, ``k8s.io``)      containerd without a runtime on top (ctr)
``machine.slice/libpod-<id>.scope[/container]``      podman (rootful and rootless)
``shadowtest/<id>``                                  shadowtest's own namespace context
===================================================  ==========================================

The deepest component that names a container wins (a container's own sub-cgroups, e.g.
crun's ``…/libpod-<id>.scope/container``, belong to it; a kind/minikube node container's
pods are the pods, not the node). Monitor scopes (``crio-conmon-<id>.scope``,
``libpod-conmon-<id>.scope``) are not the container.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: this file also runs standalone on remote nodes
    from harness.nodes.shell import NodeShell

#: systemd scope prefixes that name a container: <prefix>-<id>.scope
SCOPE_PREFIXES = ("docker", "cri-containerd", "crio", "libpod")
#: containerd namespaces used as the level-1 cgroup by plain containerd (``ctr run``)
CONTAINERD_NAMESPACES = ("default", "k8s.io")
#: deepest cgroup a scan descends to (rootless podman: user.slice/user-0.slice/user@0.service/
#: machine.slice/libpod-<id>.scope/container is 6)
MAX_DEPTH = 8

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SCOPE = re.compile(r"^(?P<prefix>[a-z][a-z-]*?)-(?P<id>[0-9a-f]{64})(?:\.scope)?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _component(name: str) -> str | None:
    """The container id one path component names, or None."""
    if _HEX64.match(name):
        return name
    m = _SCOPE.match(name)
    if m and m["prefix"] in SCOPE_PREFIXES:
        return m["id"]
    # runc's systemd notation used as a literal directory name (a cgroupfs driver given
    # "slice:prefix:id"): kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>
    parts = name.split(":")
    if len(parts) == 3 and parts[1] in SCOPE_PREFIXES and _HEX64.match(parts[2]):
        return parts[2]
    return None


def container_id(path: str) -> str | None:
    """Pure: the container a cgroup path belongs to, or None for a host cgroup.

    ``path`` is relative to the cgroup2 root, with or without a leading ``/``; a
    ``/proc/<pid>/cgroup`` line (``0::/system.slice/docker-<id>.scope``) works too."""
    if "::" in path:
        path = path.split("::", 1)[1]
    parts = [p for p in path.strip().split("/") if p]
    for i in range(len(parts) - 1, -1, -1):
        cid = _component(parts[i])
        if cid is not None:
            return cid
    if len(parts) >= 2 and parts[0] in CONTAINERD_NAMESPACES and _NAME.match(parts[1]):
        return parts[1]
    return None


def scan(root: str, max_depth: int = MAX_DEPTH) -> dict[int, str]:
    """{cgroup id (directory inode): container id} for every container cgroup under the
    cgroup2 hierarchy mounted at ``root`` (a container's sub-cgroups included)."""
    out: dict[int, str] = {}
    stack: list[tuple[str, str, int]] = [(root, "", 0)]
    while stack:
        path, rel, depth = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:  # removed while we walked
            continue
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                child = f"{rel}/{entry.name}"
                cid = container_id(child)
                if cid is not None:
                    out[entry.inode()] = cid
                if depth + 1 < max_depth:
                    stack.append((entry.path, child, depth + 1))
            except OSError:
                continue
    return out


def process_cgroup(pid: int) -> str | None:
    """The cgroup2 path of ``pid`` relative to the hierarchy (``/proc/<pid>/cgroup``'s
    ``0::`` line), or None when the process is gone or has no v2 cgroup."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


def _source(name: str) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, name), encoding="utf-8") as fh:
        return fh.read()


@functools.lru_cache(maxsize=1)
def node_scan_code() -> str:
    """Python (stdlib only, for ``python3 -S -c``) that prints ``{"root": ..., "map":
    {inode: id}}`` for the node it runs on: the node probe's ``cgroup2_root()`` decides the
    root, this module's :func:`scan` maps it."""
    probe, mine = _source("remote/nodeprobe.py"), _source("cgroups.py")
    return (
        "import json\n"
        f"p={{'__name__':'_nodeprobe'}}\nexec(compile({probe!r},'_nodeprobe.py','exec'),p)\n"
        f"c={{'__name__':'_cgroups'}}\nexec(compile({mine!r},'cgroups.py','exec'),c)\n"
        "r=p['cgroup2_root']()\n"
        "print(json.dumps({'root':r,'map':c['scan'](r) if r else {}}))\n"
    )


def node_cgroup2_root(shell: NodeShell) -> str:
    """The cgroup2 root of the node behind ``shell``: the node probe's ``cgroup2_root()``
    (the one place that decides it), run there ('' when the node has none)."""
    if not shell.remote:
        from harness.nodes.remote.nodeprobe import cgroup2_root

        return cgroup2_root()
    res = shell.run(["python3", "-S", "-c", _source("remote/nodeprobe.py"), "--cgroup2-root"])
    return str(res.stdout).strip() if res.returncode == 0 else ""


if __name__ == "__main__":  # python3 cgroups.py ROOT: the scan as JSON
    json.dump(scan(sys.argv[1]), sys.stdout)
    sys.stdout.write("\n")
