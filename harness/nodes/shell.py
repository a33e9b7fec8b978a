"""The one way to run a command on a node: the :class:`NodeShell` protocol.

Targets start their contexts' stage runners through it (``harness.nodes.runner.start_runner``)
and run their node commands with it; the bundled sensors (auditd, bpftrace, the BPF-LSM
loader) watch the kernel of the node under test, so they run their daemons *on* that node
through it too: this machine (:class:`LocalShell`) or a VM / remote host over SSH
(``harness.nodes.ssh.SshShell``). A target hands its node's shell to the sensors; a target
whose node has none (a remote Kubernetes node, reached only through the API server) gives
None, and the embedded sensors are then reported SENSOR_DOWN there with the reason.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from harness.nodes.process import getpgid_every_cpu, pid_alive, spawn, stop


class PipedProcess(Protocol):
    """A process whose stdout/stderr stream back here (a local ``Popen``, an ``ssh`` or
    ``docker start -a`` client, a Kubernetes exec stream wrapped to look like one)."""

    @property
    def stdout(self) -> IO[str] | None: ...

    @property
    def stderr(self) -> IO[str] | None: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...


class NodeProcess(PipedProcess, Protocol):
    """A long-running process on the node (a sensor's daemon) whose output streams back."""

    @property
    def node_pid(self) -> int | None:
        """Its pid on the node (for pid checks like ``auditctl -s``), when known."""

    def halt(self, grace: float = 5.0, repeat: float | None = None) -> int | None:
        """Stop it with its stop signal (SIGKILL after ``grace``); close the pipes."""


@runtime_checkable
class NodeShell(Protocol):
    """Commands and daemons on one node."""

    node: str
    remote: bool

    def run(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on the node and wait (never raises on a non-zero exit)."""

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              stop_signal: signal.Signals = signal.SIGTERM) -> NodeProcess:
        """Start a daemon on the node; its output streams back."""

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              pass_fds: Sequence[int] = ()) -> subprocess.Popen[str]:
        """Start ``argv`` on the node in a session of its own with stdin, stdout and stderr
        piped here (text): what carries a stage runner's JSON lines. ``pass_fds``: this
        machine's fds the command inherits (a local node only)."""

    def which(self, name: str) -> str | None:
        """The daemon's path on the node, or None."""

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` on the node (parents created)."""

    def pid_alive(self, pid: int) -> bool:
        """True while ``pid`` runs on the node."""

    def cpus(self) -> int:
        """How many CPUs the node's processes may run on."""

    def clock_offset(self) -> float:
        """The node's wall clock minus this machine's, in seconds (0 here)."""

    def getpgid_every_cpu(self, pid: int) -> None:
        """A sync marker on the node: ``getpgid(pid)`` once on every CPU of the node."""


class LocalProcess:
    """A daemon on this machine, stopped by its pid."""

    def __init__(self, proc: subprocess.Popen[str], stop_signal: signal.Signals) -> None:
        self.proc = proc
        self.stop_signal = stop_signal

    @property
    def stdout(self) -> IO[str] | None:
        return self.proc.stdout

    @property
    def stderr(self) -> IO[str] | None:
        return self.proc.stderr

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def node_pid(self) -> int | None:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def halt(self, grace: float = 5.0, repeat: float | None = None) -> int | None:
        return stop(self.proc, self.stop_signal, grace=grace, repeat=repeat)


class LocalShell:
    """This machine."""

    remote = False

    def __init__(self, node: str = "local") -> None:
        self.node = node

    def run(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              check=False, errors="replace")

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              stop_signal: signal.Signals = signal.SIGTERM) -> LocalProcess:
        return LocalProcess(spawn(argv, env), stop_signal)

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              pass_fds: Sequence[int] = ()) -> subprocess.Popen[str]:
        return subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, pass_fds=tuple(pass_fds), env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C on the terminal reaches the harness, not the context
        )

    def which(self, name: str) -> str | None:
        return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
        os.chmod(path, mode)

    def pid_alive(self, pid: int) -> bool:
        return pid_alive(pid)

    def cpus(self) -> int:
        return len(os.sched_getaffinity(0))

    def clock_offset(self) -> float:
        return 0.0

    def getpgid_every_cpu(self, pid: int) -> None:
        getpgid_every_cpu(pid)


#: run on the node around a daemon started over SSH: forwards its output, and when the
#: SSH channel closes (the harness stopped it, or died) sends it the stop signal, then
#: SIGKILL after a grace period. Stdlib only; argv: SIGNAL GRACE CMD...
REMOTE_WRAPPER = r"""
import os, signal, subprocess, sys, threading, time
sig, grace, argv = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
sys.stderr.write("shadowtest-pid %d\n" % p.pid); sys.stderr.flush()
def watch():
    try:
        sys.stdin.buffer.read()
    except OSError:
        pass
    end = time.time() + grace
    while p.poll() is None and time.time() < end:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            break
        try:
            p.wait(0.3)
        except subprocess.TimeoutExpired:
            pass
    if p.poll() is None:
        p.kill()
threading.Thread(target=watch, daemon=True).start()
sys.exit(p.wait())
"""


def remote_wrapped(argv: Sequence[str], stop_signal: signal.Signals, grace: float = 8.0) -> list[str]:
    return ["python3", "-S", "-c", REMOTE_WRAPPER, str(int(stop_signal)), str(grace), *argv]


def put_argv(path: str, data: bytes, mode: int) -> list[str]:
    """A command that writes ``data`` to ``path`` on a node (argv only: no stdin needed)."""
    code = ("import base64,os,sys;p=sys.argv[1];os.makedirs(os.path.dirname(p),exist_ok=True);"
            "open(p,'wb').write(base64.b64decode(sys.argv[2]));os.chmod(p,int(sys.argv[3],8))")
    return ["python3", "-S", "-c", code, path, base64.b64encode(data).decode(), oct(mode)[2:]]


def local_python() -> str:
    return sys.executable or "python3"


def close_pipes(*pipes: IO[str] | None) -> None:
    for pipe in pipes:
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
