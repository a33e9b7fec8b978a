"""The local node: the host context (plain process) and a namespaced-container context."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import ClassVar

from harness.core.errors import TargetError
from harness.core.node import NodeFacts
from harness.nodes import reaper
from harness.nodes.remote.nodeprobe import cgroup2_root, probe
from harness.nodes.runner import RunnerSession, stage_runner_argv, start_runner
from harness.nodes.shell import LocalShell
from harness.nodes.url import parse_node_url
from harness.targets.base import TargetBase

CGROUP_PARENT = "shadowtest"


class LocalTarget(TargetBase):
    """Runs atomics on this machine, in the host context or a namespaced container context."""

    NAME: ClassVar[str] = "local"
    PARALLEL_SAFE: ClassVar[bool] = True

    def __init__(self, node: str, url: str = "local://") -> None:
        scheme = self.NAME  # a target's scheme is its registry name (a subclass's its own)
        parsed = parse_node_url(node, url, scheme, self.URL_KEYS, f"{scheme}://")
        if parsed.netloc or parsed.path:
            raise parsed.error(f"{scheme}:// names this machine", f"{scheme}://",
                               repr(url), f"drop what follows {scheme}://")
        self.node = node
        self.url = url
        self._facts: NodeFacts | None = None

    def contexts(self) -> tuple[str, ...]:
        return ("host", "namespace")

    def facts(self) -> NodeFacts:
        if self._facts is None:
            self._facts = read_local_facts(self.node)
        return self._facts

    def cgroup2_root(self) -> Path:
        """Where this node's cgroup2 hierarchy is mounted, as the node probe found it
        (``/sys/fs/cgroup`` on pure v2, ``/sys/fs/cgroup/unified`` on a hybrid host)."""
        return cgroup2_root_of(self.facts())

    def shell(self) -> LocalShell:
        """The embedded sensors run on this machine."""
        return LocalShell(self.node)

    def open(self, context: str, run_id: str) -> RunnerSession:
        if context == "host":
            return _open_host(self.shell(), run_id)
        if context == "namespace":
            return _open_namespace(self.shell(), run_id, self.cgroup2_root())
        raise TargetError(
            f"node {self.node!r}: context {context!r} is not provided by local://: "
            f"expected one of {', '.join(self.contexts())}"
        )

    def close(self) -> None:
        """Nothing held between runs: the run reaper (if one was armed) is stopped."""
        _journal.close()


def _base_env(run_id: str) -> dict[str, str]:
    return {"SHADOWTEST_RUN_ID": run_id}


def _host_variables() -> dict[str, str]:
    return {"host_pidns": os.readlink("/proc/self/ns/pid"), "host_mntns": os.readlink("/proc/self/ns/mnt")}


#: the context gets SIGTERM if the harness dies, even by SIGKILL (its stage runner then
#: kills the running stage and runs the armed cleanup itself)
PDEATHSIG = ["setpriv", "--pdeathsig", "TERM", "--"]


def _open_host(shell: LocalShell, run_id: str) -> RunnerSession:
    proc, hello = start_runner([*PDEATHSIG, *stage_runner_argv()], "host",
                               env=_base_env(run_id), shell=shell)
    return RunnerSession(context="host", proc=proc, pids=frozenset({proc.pid}), hello=hello,
                   variables=_host_variables())


def container_id_for(run_id: str) -> str:
    """A container-like 64-hex id for a run (what docker would name the cgroup)."""
    return hashlib.sha256(run_id.encode()).hexdigest()


def cgroup2_root_of(facts: NodeFacts) -> Path:
    """The probed cgroup2 root of a node; TargetError naming the probe's reason when the
    node has none (the namespace context and container mapping need it)."""
    if not facts.cgroup2_root:
        why = dict(facts.reasons).get("cgroup2", "no cgroup2 hierarchy mounted")
        raise TargetError(f"node {facts.node!r}: the namespace context needs a cgroup2 "
                          f"hierarchy and the node probe found none ({why}); mount one, e.g. "
                          "`mount -t cgroup2 none /sys/fs/cgroup` on a node without cgroups")
    return Path(facts.cgroup2_root)


def _open_namespace(shell: LocalShell, run_id: str, root: Path) -> RunnerSession:
    """unshare pid/mnt/uts/ipc/net + a cgroup named like a container; the stage runner is
    PID 1 of the new PID namespace. unshare blocks SIGTERM while it waits, so its
    parent-death signal is SIGKILL; its --kill-child SIGTERM then reaches the runner, which
    runs the armed cleanup. The host mount namespace's fd is passed in (as a
    leaky runtime would), so escape scenarios have a real door to the host."""
    if not root.is_dir():
        raise TargetError(f"namespace context: the probed cgroup2 root {root} is gone; "
                          "was the hierarchy unmounted after the node probe?")
    cid = container_id_for(run_id)
    sweep_cgroups(root=root)
    sweep_named_hierarchies()
    cg = root / CGROUP_PARENT / cid
    _journal.record("cgroup", path=str(cg))  # before it exists: a harness killed from here on leaves nothing
    cg.mkdir(parents=True, exist_ok=True)
    host_mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    hostname = f"shadowtest-{run_id}"
    script = (
        'echo $$ > "$1/cgroup.procs" && exec setpriv --pdeathsig KILL -- unshare --pid --fork '
        '--mount-proc --mount --uts --ipc --net --kill-child=SIGTERM -- '
        'sh -c \'hostname "$0" && exec "$@"\' "$2" "${@:3}"'
    )
    argv = ["bash", "-c", script, "ns", str(cg), hostname, *stage_runner_argv()]
    try:
        proc, hello = start_runner(argv, "namespace", pass_fds=(host_mnt,),
                                   env=_base_env(run_id), shell=shell)
    except BaseException:
        os.close(host_mnt)
        remove_cgroup(cg)
        raise
    inner = _children(proc.pid)
    return RunnerSession(
        context="namespace", proc=proc, pids=frozenset({proc.pid, *inner}), hello=hello,
        cgroup_id=os.stat(cg).st_ino, container_id=cid,
        variables={**_host_variables(), "host_mntns_fd": host_mnt,
                   "ns_init_pid": next(iter(inner), 0)},
        pass_fds=(host_mnt,), runner_pid=next(iter(inner), None),
        on_close=[lambda: os.close(host_mnt), lambda: remove_cgroup(cg)],
    )


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def sweep_cgroups(root: Path | None = None) -> list[Path]:
    """Remove empty run cgroups that no live runner's journal names (left by a harness of an
    older version, or whose journal was lost with /run). Every run's cgroup is recorded in
    its runner's journal before it is created, so nothing here depends on age or timing.
    ``root``: the cgroup2 root (default: the node probe's, on this machine)."""
    removed: list[Path] = []
    if root is None:
        found = cgroup2_root()
        if not found:
            return removed
        root = Path(found)
    parent = root / CGROUP_PARENT
    if not parent.is_dir():
        return removed
    live = reaper.held("cgroup")  # (dead runners' journals are swept at session start)
    for cg in parent.iterdir():
        try:
            if (not cg.is_dir() or str(cg) in live
                    or (cg / "cgroup.procs").read_text().strip()):
                continue
            cg.rmdir()
        except OSError:
            continue
        removed.append(cg)
    return removed


#: mounts then unmounts each named hierarchy (argv) in a private mount namespace: one with
#: no cgroup left and no mount elsewhere is destroyed at that umount; any other (a live
#: run's, mounted in its context) is left as it was
_SWEEP_NAMED = ('d=$(mktemp -d /tmp/shadowtest-sweep.XXXXXX) || exit 1; for n in "$@"; do '
                'mount -t cgroup -o "none,$n" cgroup "$d" 2>/dev/null && umount "$d"; done; '
                'rmdir "$d"')


def named_hierarchies() -> list[str]:
    """The named cgroup v1 hierarchies of shadowtest runs (``name=shadowtest-<run id>``),
    mounted or not: every process is in every hierarchy, so /proc/self/cgroup lists them."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    return [f[1] for f in (ln.split(":", 2) for ln in lines)
            if len(f) == 3 and f[1].startswith("name=shadowtest-")]


def sweep_named_hierarchies() -> list[str]:
    """Destroy named v1 hierarchies an earlier run leaked (the cgroup-release-agent atomic
    interrupted, or run by an older version): returns the names now gone."""
    names = named_hierarchies()
    if not names:
        return []
    LocalShell().run(["unshare", "--mount", "--propagation", "private", "sh", "-c", _SWEEP_NAMED,
                      "sh", *names], timeout=120)
    left = set(named_hierarchies())
    return [n for n in names if n not in left]


def remove_cgroup(cg: Path) -> None:
    """Kill what is left in the run's own cgroup (only it), then remove it — waiting for
    the kernel to let go, however long a busy machine takes (bounded generously). Once
    gone, it leaves the run reaper's journal."""
    if reaper.remove_cgroup(cg):
        _journal.forget("cgroup", path=str(cg))


#: the run cgroups this process holds: recorded before each is created, so a harness killed
#: even with SIGKILL leaves none behind (the journal's watchdog, or the next run, removes them)
_journal = reaper.Journal("local")


def read_local_facts(node: str) -> NodeFacts:
    """Kernel release, distro, arch and BPF features, probed on this machine."""
    return NodeFacts.from_probe(probe(node))
