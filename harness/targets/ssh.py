"""A node over SSH (``ssh://``), and a VM of the project's own image booted for the run
(``vm://6.1``): the kernel matrix.

One OpenSSH master connection per node carries everything: a *control* stage runner on
the node (commands for the sensors and contexts, without an SSH handshake each), one
channel per context's stage runner, one per sensor daemon. The node gets the stage
runner, the facts probe and the atomics' ``bin/`` in ``/run/shadowtest`` (tmpfs).
Contexts are the local node's: ``host`` and ``namespace`` (unshare + a container-named
cgroup + a leaked host mount-namespace fd), built by the same script shape on the node.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

from harness.core.errors import TargetError
from harness.core.node import NodeFacts
from harness.nodes.shell import LocalProcess, close_pipes, put_argv, remote_wrapped
from harness.nodes.url import parse_node_url
from harness.targets.base import Session, TargetBase, start_runner

REMOTE_DIR = "/run/shadowtest"
RUNNER = f"{REMOTE_DIR}/_stagerunner.py"
PROBE = f"{REMOTE_DIR}/_nodeprobe.py"
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
               "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=5",
               "-o", "ServerAliveCountMax=6")
#: only for the harness's own ephemeral VMs (vm://), whose host key is new at every boot
NO_HOST_KEY_CHECK = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")
#: the query keys an ssh:// url may have
URL_KEYS = {
    "key": "the private key (ssh -i PATH, with IdentitiesOnly=yes)",
    "known_hosts": "the known_hosts file to check the node's host key against "
                   "(ssh -o UserKnownHostsFile=PATH; default: your ssh_config's, ~/.ssh/known_hosts)",
    "ssh_config": "the ssh_config file to use instead of ~/.ssh/config (ssh -F PATH)",
}
_HOST_KEY_FAILED = re.compile(r"Host key verification failed|host key is known for|"
                              r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed")


def _package_file(name: str) -> bytes:
    return Path(str(files("harness.nodes.remote").joinpath(name))).read_bytes()


class SshProcess(LocalProcess):
    """A daemon on the node behind the remote wrapper: closing our end of the channel
    makes the wrapper send the daemon its stop signal (the local process is ``ssh``)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(proc, signal.SIGTERM)
        self._node_pid: int | None = None
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the wrapper's "shadowtest-pid N"
        if first.startswith("shadowtest-pid "):
            self._node_pid = int(first.split()[1])

    @property
    def node_pid(self) -> int | None:
        return self._node_pid

    def halt(self, grace: float = 5.0, repeat: float | None = None) -> int | None:
        close_pipes(self.proc.stdin)
        try:
            self.proc.wait(grace + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return self.proc.returncode


class SshShell:
    """Commands and daemons on a node over one OpenSSH master connection."""

    remote = True

    def __init__(self, node: str, destination: str, port: int | None, key: str | None, *,
                 known_hosts: str | None = None, ssh_config: str | None = None,
                 check_host_key: bool = True) -> None:
        self.node = node
        self.destination = destination
        self.port = port  # None: ssh_config's Port, else 22
        self.key = key
        self.known_hosts = known_hosts
        self.ssh_config = ssh_config
        #: False only for the harness's own ephemeral VMs (vm://): a new host key each boot
        self.check_host_key = check_host_key
        self._dir = tempfile.mkdtemp(prefix="shadowtest-ssh-")
        self.control_path = f"{self._dir}/master"
        self._master: subprocess.Popen[str] | None = None
        self._control: Session | None = None
        self._lock = threading.Lock()
        self._ncpu: int | None = None
        self._clock: float | None = None

    def base_argv(self) -> list[str]:
        """``ssh`` with the user's ssh_config and known_hosts (host keys checked as
        configured: with BatchMode an unknown key fails instead of asking); only an
        ephemeral VM skips the check. Options the url does not set are ssh_config's."""
        argv = ["ssh", *(["-F", self.ssh_config] if self.ssh_config else []), *SSH_OPTIONS]
        if not self.check_host_key:
            argv += NO_HOST_KEY_CHECK
        elif self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        argv += [*(["-p", str(self.port)] if self.port else []),
                 "-o", f"ControlPath={self.control_path}"]
        if self.key:
            argv += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        return argv

    def remote_argv(self, argv: Sequence[str], tty: bool = False) -> list[str]:
        return [*self.base_argv(), *(["-tt"] if tty else []), self.destination, "--",
                shlex.join(argv)]

    # ------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """The master connection (stopped by pid in close(); SIGKILL'd with the harness by
        its parent-death signal), the node's files, and the control runner."""
        if self._control is not None:
            return
        self._master = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", *self.base_argv(), "-M", "-N",
             "-o", "ControlMaster=yes", "-o", "ControlPersist=no", self.destination],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )
        check = None
        for _ in range(3):
            check = subprocess.run([*self.base_argv(), "-o", "ControlMaster=no", self.destination,
                                    "--", "true"], capture_output=True, text=True, timeout=60,
                                   check=False)
            if check.returncode == 0 or _HOST_KEY_FAILED.search(check.stderr):
                break
        if check is None or check.returncode != 0:
            self.close()
            err = (check.stderr if check else "").strip()
            if _HOST_KEY_FAILED.search(err):
                raise TargetError(self.host_key_error(err))
            raise TargetError(
                f"node {self.node!r}: ssh {self.destination}"
                f"{f' -p {self.port}' if self.port else ''} failed: {err[:300]}; check the "
                "url's user, port and key=, and that sshd runs on the node"
            )
        for name, dest, mode in (("stagerunner.py", RUNNER, 0o755), ("nodeprobe.py", PROBE, 0o755)):
            res = subprocess.run(self.remote_argv(put_argv(dest, _package_file(name), mode)),
                                 capture_output=True, text=True, timeout=60, check=False)
            if res.returncode != 0:
                self.close()
                raise TargetError(f"node {self.node!r}: cannot write {dest}: {res.stderr.strip()}")
        proc, hello = start_runner(self.remote_argv(["python3", "-S", "-u", RUNNER]), "control")
        self._control = Session(context="control", proc=proc, pids=frozenset(), hello=hello)

    def host_key_error(self, stderr: str) -> str:
        """What to say when ssh refused the node's host key (unknown or changed)."""
        host = self.destination.rsplit("@", 1)[-1]
        entry = f"[{host}]:{self.port}" if self.port and self.port != 22 else host
        scan = f"ssh-keyscan{f' -p {self.port}' if self.port else ''} {host}"
        where = self.known_hosts or "~/.ssh/known_hosts"
        changed = "CHANGED" in stderr or "has changed" in stderr
        what = ("its host key has CHANGED since it was recorded: if the node was reinstalled, "
                f"remove the old key (ssh-keygen -R '{entry}' -f {where}) and add the new one"
                if changed else f"its host key is not in {where}")
        return (f"node {self.node!r}: ssh refused {self.destination}: {what} (ssh: "
                f"{' '.join(stderr.split())[:200]}). shadowtest checks the host key of every "
                f"ssh:// node: get the key on a trusted path, compare its fingerprint with the "
                f"node's (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the node), then: "
                f"{scan} >> {where}; or name another file with ?known_hosts=PATH in the url")

    def close(self) -> None:
        if self._control is not None:
            with contextlib.suppress(Exception):
                self._control.close()
            self._control = None
        if self._master is not None:
            if self._master.poll() is None:
                self._master.terminate()
                try:
                    self._master.wait(5)
                except subprocess.TimeoutExpired:
                    self._master.kill()
                    self._master.wait(5)
            close_pipes(self._master.stderr)
            self._master = None
        with contextlib.suppress(OSError):
            Path(self.control_path).unlink(missing_ok=True)
            Path(self._dir).rmdir()

    # ------------------------------------------------------------ NodeShell
    def run(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        self.connect()
        assert self._control is not None
        res = self._control.stage("cmd", argv, {}, timeout)
        code = res.exit_code if res.exit_code is not None else 127
        err = res.stderr if res.error is None else f"{res.stderr}{res.error}"
        return subprocess.CompletedProcess(list(argv), code, res.stdout, err)

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              stop_signal: signal.Signals = signal.SIGTERM) -> SshProcess:
        self.connect()
        envs = [f"{k}={v}" for k, v in (env or {}).items()]
        inner = ["env", *envs, *argv] if envs else list(argv)
        proc = subprocess.Popen(
            self.remote_argv(remote_wrapped(inner, stop_signal)), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
            start_new_session=True,
        )
        return SshProcess(proc)

    def getpgid_every_cpu(self, pid: int) -> None:
        """A sync marker: the control runner calls getpgid(pid) on every CPU itself."""
        self.connect()
        assert self._control is not None
        self._control.call({"getpgid": pid}, 30)

    def which(self, name: str) -> str | None:
        res = self.run(["sh", "-c", f"PATH=$PATH:/usr/sbin:/sbin command -v {shlex.quote(name)}"])
        path = res.stdout.strip()
        return path if res.returncode == 0 and path else None

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        res = self.run(put_argv(path, data, mode))
        if res.returncode != 0:
            raise TargetError(f"node {self.node!r}: cannot write {path}: {res.stderr.strip()}")

    def pid_alive(self, pid: int) -> bool:
        res = self.run(["sh", "-c", f"test -d /proc/{int(pid)} && ! grep -q '^State:.*Z' "
                                    f"/proc/{int(pid)}/status"])
        return res.returncode == 0

    def clock_offset(self) -> float:
        """The node's wall clock minus this machine's, in seconds (a VM's clock drifts
        under TCG): the stage runner's own timestamps of a no-op command against ours,
        the sample with the shortest round trip wins."""
        if self._clock is None:
            self.connect()
            assert self._control is not None
            best: tuple[float, float] | None = None
            for _ in range(5):
                t0 = time.time()
                res = self._control.stage("clock", ["true"], {}, 30)
                t1 = time.time()
                if not res.started_at:
                    continue
                sample = (t1 - t0, (res.started_at + res.ended_at) / 2 - (t0 + t1) / 2)
                best = sample if best is None or sample[0] < best[0] else best
            self._clock = best[1] if best else 0.0
        return self._clock

    def cpus(self) -> int:
        if self._ncpu is None:
            self._ncpu = int(self.run(["nproc"]).stdout.strip() or 1)
        return self._ncpu

    def read_json(self, argv: Sequence[str], timeout: float = 120) -> Any:
        res = self.run(argv, timeout)
        if res.returncode != 0:
            raise TargetError(f"node {self.node!r}: {shlex.join(argv)} failed "
                              f"(exit {res.returncode}): {res.stderr.strip()[:300]}")
        return json.loads(res.stdout)


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

    def open(self, context: str, run_id: str) -> Session:
        sh = self.shell()
        if context == "host":
            argv = ["env", f"SHADOWTEST_RUN_ID={run_id}", "setpriv", "--pdeathsig", "TERM", "--",
                    "python3", "-S", "-u", RUNNER]
            proc, hello = start_runner(sh.remote_argv(argv), "host")
            pid = int(hello.get("pid") or 0)
            return Session(context="host", proc=proc, pids=frozenset({pid}), hello=hello,
                           variables=self._host_variables(), runner_pid=pid,
                           interrupt=lambda: self._kill(pid))
        if context == "namespace":
            return self._open_namespace(sh, run_id)
        raise TargetError(f"node {self.node!r}: context {context!r} is not provided by "
                          f"{self.url}: expected one of {', '.join(self.contexts())}")

    def _open_namespace(self, sh: SshShell, run_id: str) -> Session:
        facts = self.facts()
        if not facts.cgroup2_root:
            raise TargetError(f"node {self.node!r}: namespace context needs a cgroup2 hierarchy")
        cid = hashlib.sha256(run_id.encode()).hexdigest()
        cg = f"{facts.cgroup2_root}/shadowtest/{cid}"
        pidfile = f"{REMOTE_DIR}/ctx-{run_id}.pid"
        argv = ["env", f"SHADOWTEST_RUN_ID={run_id}", "bash", "-c", NAMESPACE_SCRIPT, "ns",
                facts.cgroup2_root, cid, pidfile, f"shadowtest-{run_id}", RUNNER]
        try:
            proc, hello = start_runner(sh.remote_argv(argv), "namespace")
        except BaseException:
            self._remove_cgroup(cg, pidfile)
            raise
        info = sh.run(["sh", "-c", f'p=$(cat {pidfile}); echo $p; cat /proc/$p/task/$p/children; '
                                   f'stat -c %i {cg}'])
        nums = [int(x) for x in info.stdout.split() if x.isdigit()]
        outer, inner, ino = (*nums, 0, 0, 0)[:3] if len(nums) >= 3 else (0, 0, 0)
        return Session(
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

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._vm is not None:
                vm, self._vm = self._vm, None
                vm.down()
