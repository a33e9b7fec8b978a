"""A node over SSH: :class:`SshShell`, the :class:`harness.nodes.shell.NodeShell` of an
``ssh://`` or ``vm://`` node.

One OpenSSH master connection per node carries everything: a *control* stage runner on
the node (commands for the sensors and contexts, without an SSH handshake each), one
channel per context's stage runner, one per sensor daemon. The node gets the stage
runner and the facts probe in ``/run/shadowtest`` (tmpfs).
"""

from __future__ import annotations

import contextlib
import json
import os
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
from typing import Any

from harness.core.errors import TargetError
from harness.nodes.reaper import Journal
from harness.nodes.runner import RunnerSession, start_runner
from harness.nodes.shell import LocalProcess, close_pipes, put_argv, remote_wrapped

REMOTE_DIR = "/run/shadowtest"
RUNNER = f"{REMOTE_DIR}/_stagerunner.py"
PROBE = f"{REMOTE_DIR}/_nodeprobe.py"
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
               "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=5",
               "-o", "ServerAliveCountMax=6")
#: only for the harness's own ephemeral VMs (vm://), whose host key is new at every boot
NO_HOST_KEY_CHECK = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")
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
        # removed by close(), or by the journal's watchdog when this process is SIGKILLed
        self._journal = Journal("ssh")
        self._journal.record("dir", path=self._dir)
        self.control_path = f"{self._dir}/master"
        self._master: subprocess.Popen[str] | None = None
        self._control: RunnerSession | None = None
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
        proc, hello = start_runner(["python3", "-S", "-u", RUNNER], "control", shell=self)
        self._control = RunnerSession(context="control", proc=proc, pids=frozenset(), hello=hello)

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
        if not Path(self._dir).exists():
            self._journal.forget("dir", path=self._dir)
        self._journal.close()

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

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              pass_fds: Sequence[int] = ()) -> subprocess.Popen[str]:
        """``argv`` on the node over the master connection (``env`` set there with
        ``env K=V``); fds cannot cross SSH."""
        if pass_fds:
            raise TargetError(f"node {self.node!r}: fds {list(pass_fds)} cannot be passed to a "
                              "command over SSH: open them on the node")
        if self._master is None:
            self.connect()
        envs = [f"{k}={v}" for k, v in (env or {}).items()]
        return subprocess.Popen(
            self.remote_argv(["env", *envs, *argv] if envs else argv), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
            start_new_session=True,  # Ctrl-C on the terminal reaches the harness, not the node
        )

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
