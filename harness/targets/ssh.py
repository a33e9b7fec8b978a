"""A node over SSH (``ssh://``), and a VM of the project's own image booted for the run
(``vm://6.1``): the kernel matrix.

Everything on the node goes through its :class:`harness.nodes.ssh.SshShell` (one OpenSSH
master connection): the contexts' stage runners, the target's own commands, the sensors'
daemons. The node gets the atomics' ``bin/`` in ``/run/shadowtest`` (tmpfs). Contexts
are the local node's: ``host`` and ``namespace`` (unshare + a container-named cgroup + a
leaked host mount-namespace fd), built by the same script shape on the node.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from harness.core.errors import TargetError
from harness.core.node import NodeFacts
from harness.nodes.runner import RunnerSession, start_runner
from harness.nodes.ssh import PROBE, REMOTE_DIR, RUNNER, SshShell
from harness.nodes.url import parse_node_url
from harness.targets.base import TargetBase

#: the query keys an ssh:// url may have
URL_KEYS = {
    "key": "the private key (ssh -i PATH, with IdentitiesOnly=yes)",
    "known_hosts": "the known_hosts file to check the node's host key against "
                   "(ssh -o UserKnownHostsFile=PATH; default: your ssh_config's, ~/.ssh/known_hosts)",
    "ssh_config": "the ssh_config file to use instead of ~/.ssh/config (ssh -F PATH)",
}

NAMESPACE_SCRIPT = (
    'set -e; cg="$1/shadowtest/$2"; mkdir -p "$cg"; echo $$ > "$cg/cgroup.procs"; '
    'echo $$ > "$3"; exec 9</proc/self/ns/mnt; '
    'exec setpriv --pdeathsig KILL -- unshare --pid --fork --mount-proc --mount --uts --ipc '
    '--net --kill-child=SIGTERM -- sh -c \'hostname "$0" && exec "$@"\' "$4" python3 -S -u "$5"'
)


#: the query keys of a ``vm://`` url
VM_URL_KEYS = {"cache": "the image cache directory", "memory": "guest memory, MiB",
               "cpus": "guest CPUs", "cgroup": "v2 (default) or hybrid"}


SSH_USAGE = "ssh://[user@]host[:port][?key=PATH&known_hosts=PATH&ssh_config=PATH]"
VM_USAGE = "vm://KERNEL[?cache=DIR&memory=MB&cpus=N&cgroup=v2|hybrid]"


class SshTarget(TargetBase):
    """``ssh://[user@]host[:port][?key=PATH&known_hosts=PATH&ssh_config=PATH]``: the node's
    own kernel, sensors run on it. Reached with your ssh_config and known_hosts: the node's
    host key must be known (an unknown or changed key fails, saying how to add it)."""

    NAME: ClassVar[str] = "ssh"
    URL_KEYS: ClassVar[Mapping[str, str]] = URL_KEYS
    #: the node's host key is checked (only the harness's own vm:// nodes skip it)
    CHECK_HOST_KEY: ClassVar[bool] = True

    def __init__(self, node: str, url: str) -> None:
        self.node = node
        self.url = url
        parsed = parse_node_url(node, url, "ssh", URL_KEYS, SSH_USAGE)
        if not parsed.hostname:
            raise parsed.error("no host", SSH_USAGE, repr(url),
                               "e.g. ssh://root@10.0.0.5:2222?key=/path/to/key")
        options = parsed.options
        user = parsed.username + "@" if parsed.username else ""  # none: ssh_config's User
        self._shell_args: tuple[str, int | None, str | None] = (
            f"{user}{parsed.hostname}", parsed.port, options.get("key"))  # no port: ssh_config's
        self._known_hosts = options.get("known_hosts")
        self._ssh_config = options.get("ssh_config")
        self._shell: SshShell | None = None
        self._facts: NodeFacts | None = None
        self._bin: dict[Path, str] = {}
        self._vars: dict[str, str] | None = None

    def contexts(self) -> tuple[str, ...]:
        return ("host", "namespace")

    def shell(self) -> SshShell:
        if self._shell is None:
            self._shell = SshShell(self.node, *self._shell_args, known_hosts=self._known_hosts,
                                   ssh_config=self._ssh_config, check_host_key=self.CHECK_HOST_KEY)
        self._shell.connect()
        return self._shell

    def facts(self) -> NodeFacts:
        if self._facts is None:
            data = self.shell().read_json(["python3", "-S", PROBE, self.node])
            self._facts = NodeFacts.from_probe(data)
        return self._facts

    def stage_bin(self, local: Path) -> str:
        """Copy an atomics ``bin/`` directory to the node once; its path there."""
        if local not in self._bin:
            sh = self.shell()
            digest = hashlib.sha256(str(local.resolve()).encode()).hexdigest()[:12]
            dest = f"{REMOTE_DIR}/bin-{digest}"
            if local.is_dir():
                for f in sorted(local.iterdir()):
                    if f.is_file():
                        sh.put(f"{dest}/{f.name}", f.read_bytes(), 0o755)
            self._bin[local] = dest
        return self._bin[local]

    def _host_variables(self) -> dict[str, str]:
        if self._vars is None:
            res = self.shell().run(["sh", "-c", "readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt"])
            pidns, mntns = ([*res.stdout.split(), "", ""])[:2]
            self._vars = {"host_pidns": pidns, "host_mntns": mntns}
        return dict(self._vars)

    def open(self, context: str, run_id: str) -> RunnerSession:
        sh = self.shell()
        if context == "host":
            argv = ["setpriv", "--pdeathsig", "TERM", "--", "python3", "-S", "-u", RUNNER]
            proc, hello = start_runner(argv, "host", env={"SHADOWTEST_RUN_ID": run_id}, shell=sh)
            pid = int(hello.get("pid") or 0)
            return RunnerSession(context="host", proc=proc, pids=frozenset({pid}), hello=hello,
                           variables=self._host_variables(), runner_pid=pid,
                           interrupt=lambda: self._kill(pid))
        if context == "namespace":
            return self._open_namespace(sh, run_id)
        raise TargetError(f"node {self.node!r}: context {context!r} is not provided by "
                          f"{self.url}: expected one of {', '.join(self.contexts())}")

    def _open_namespace(self, sh: SshShell, run_id: str) -> RunnerSession:
        facts = self.facts()
        if not facts.cgroup2_root:
            raise TargetError(f"node {self.node!r}: namespace context needs a cgroup2 hierarchy")
        cid = hashlib.sha256(run_id.encode()).hexdigest()
        cg = f"{facts.cgroup2_root}/shadowtest/{cid}"
        pidfile = f"{REMOTE_DIR}/ctx-{run_id}.pid"
        argv = ["bash", "-c", NAMESPACE_SCRIPT, "ns", facts.cgroup2_root, cid, pidfile,
                f"shadowtest-{run_id}", RUNNER]
        try:
            proc, hello = start_runner(argv, "namespace", env={"SHADOWTEST_RUN_ID": run_id},
                                       shell=sh)
        except BaseException:
            self._remove_cgroup(cg, pidfile)
            raise
        info = sh.run(["sh", "-c", f'p=$(cat {pidfile}); echo $p; cat /proc/$p/task/$p/children; '
                                   f'stat -c %i {cg}'])
        nums = [int(x) for x in info.stdout.split() if x.isdigit()]
        outer, inner, ino = (*nums, 0, 0, 0)[:3] if len(nums) >= 3 else (0, 0, 0)
        return RunnerSession(
            context="namespace", proc=proc, pids=frozenset(p for p in (outer, inner) if p),
            hello=hello, cgroup_id=ino or None, container_id=cid,
            variables={**self._host_variables(), "host_mntns_fd": "9", "ns_init_pid": str(inner)},
            pass_fds=(9,), runner_pid=inner or None,
            interrupt=lambda: self._kill(inner or outer),
            on_close=[lambda: self._remove_cgroup(cg, pidfile)],
        )

    def _kill(self, pid: int) -> None:
        if pid > 1 and self._shell is not None:
            self._shell.run(["kill", "-TERM", str(pid)], timeout=15)

    def _remove_cgroup(self, cg: str, pidfile: str) -> None:
        if self._shell is None:
            return
        self._shell.run(["sh", "-c", f'echo 1 > {cg}/cgroup.kill 2>/dev/null; rm -f {pidfile}; '
                                     f'for i in $(seq 100); do rmdir {cg} 2>/dev/null && break; '
                                     f'[ -d {cg} ] || break; sleep 0.02; done'], timeout=30)

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close()
            self._shell = None


class VmTarget(SshTarget):
    """``vm://6.1`` (or ``vm://6.12``; ``?cache=DIR&memory=MB&cpus=N&cgroup=v2|hybrid``): a
    QEMU VM of the project's image (``bash ci/vm-image.sh``) booted with that stock kernel
    on first use and torn down in close() — and with the harness, even when it is killed.
    The guest's cgroups are pure v2 unless ``cgroup=hybrid``."""

    NAME: ClassVar[str] = "vm"
    URL_KEYS: ClassVar[Mapping[str, str]] = VM_URL_KEYS
    CHECK_HOST_KEY: ClassVar[bool] = False  # our own ephemeral VM: a new host key each boot

    def __init__(self, node: str, url: str) -> None:
        from harness.targets.vm import CGROUP_LAYOUTS, DEFAULT_CACHE, DEFAULT_CGROUP, KERNELS

        parsed = parse_node_url(node, url, "vm", VM_URL_KEYS, VM_USAGE)
        self.kernel = parsed.netloc or parsed.path.strip("/")
        if self.kernel not in KERNELS:
            raise parsed.error("unknown VM kernel", f"one of {', '.join(f'vm://{k}' for k in KERNELS)}",
                               repr(self.kernel))
        query = parsed.options
        self._cache = Path(query["cache"]) if "cache" in query else DEFAULT_CACHE
        try:
            self._memory = int(query.get("memory", "2048"))
            self._cpus = int(query.get("cpus", "2"))
        except ValueError as exc:
            raise parsed.error("memory= (MiB) and cpus= must be integers", "e.g. memory=2048&cpus=2",
                               str(exc)) from exc
        self._cgroup = query.get("cgroup", DEFAULT_CGROUP)
        if self._cgroup not in CGROUP_LAYOUTS:
            raise parsed.error("unknown cgroup layout",
                               f"cgroup={' or cgroup='.join(CGROUP_LAYOUTS)} (default "
                               f"{DEFAULT_CGROUP}: pure cgroup v2)", repr(self._cgroup),
                               key="cgroup")
        self._vm: Any = None
        super().__init__(node, "ssh://root@127.0.0.1:22")
        self.url = url

    def shell(self) -> SshShell:
        if self._vm is None:
            from harness.targets.vm import VirtualMachine

            vm = VirtualMachine(self.kernel, cache_dir=self._cache, memory_mb=self._memory,
                                cpus=self._cpus, cgroup=self._cgroup)
            endpoint = vm.up()
            self._vm = vm
            self._shell_args = (f"{endpoint.user}@{endpoint.host}", endpoint.port, str(endpoint.key))
        return super().shell()

    def facts(self) -> NodeFacts:
        """The guest's probe, and: disposable (``snapshot=on``: every boot starts from the
        image, so effects global by nature may run here and nowhere else)."""
        if self._facts is None:
            self._facts = dataclasses.replace(super().facts(), disposable=True)
        return self._facts

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._vm is not None:
                vm, self._vm = self._vm, None
                vm.down()
