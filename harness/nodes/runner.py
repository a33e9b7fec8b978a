"""The stage runner seen from the harness: start it on a node through the node's shell,
then talk to it (one JSON line per request, ``harness/nodes/remote/stagerunner.py``).

Every context of every target is a :class:`RunnerSession`: a stage runner started in the
context (a plain process, new namespaces, a container, a pod) whose pipes reach here.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import IO, Any, Protocol

from harness.core.errors import TargetError
from harness.core.run import StageResult
from harness.nodes.reaper import deferred_signals
from harness.nodes.shell import LocalShell, NodeShell, PipedProcess, close_pipes


class RunnerProcess(PipedProcess, Protocol):
    """What a RunnerSession needs of the process carrying the stage runner's pipes: its
    output, and its stdin to send requests."""

    @property
    def stdin(self) -> IO[str] | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


#: how long a stage runner may take to run its armed cleanup and exit once told to: it
#: returns as soon as the runner exits; the bound is generous for a busy machine (the
#: cleanup itself is bounded by the atomic's timeout)
RUNNER_EXIT_TIMEOUT = 120.0
#: how long a context may take to start its stage runner (an interpreter start inside new
#: namespaces; slow on a busy machine)
RUNNER_START_TIMEOUT = 60.0


@dataclass
class RunnerSession:
    """A live context on a node for one run: a stage-runner process and its ids (what a
    target's ``open`` returns; not pytest's session, nor the plugin's).

    ``pids`` are the node's pids the harness started for the run (process-tree roots);
    ``variables`` are values atomics may use (``#{host_mntns_fd}`` ...);
    ``interrupt`` delivers SIGTERM to the stage runner on its node (default: ``os.kill``
    of ``runner_pid`` or the local process — only right for local runners)."""

    context: str
    proc: RunnerProcess
    pids: frozenset[int]
    hello: Mapping[str, Any]
    cgroup_id: int | None = None
    container_id: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    pass_fds: tuple[int, ...] = ()
    runner_pid: int | None = None  # the stage runner's host pid when proc is a wrapper
    on_close: list[Callable[[], None]] = field(default_factory=list)
    interrupt: Callable[[], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stage(self, name: str, argv: Sequence[str], env: Mapping[str, str],
              timeout: float) -> StageResult:
        """Run one stage in the context and wait for its result."""
        reply = self._call({"stage": name, "argv": list(argv), "env": dict(env),
                            "timeout": timeout, "pass_fds": list(self.pass_fds)}, timeout + 10)
        return StageResult(
            stage=name, exit_code=reply.get("exit_code"), stdout=reply.get("stdout", ""),
            stderr=reply.get("stderr", ""), started_at=reply.get("started_at", 0.0),
            ended_at=reply.get("ended_at", 0.0), pid=reply.get("pid"), error=reply.get("error"),
        )

    def arm_cleanup(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """The runner runs ``argv`` itself if the harness dies before cleanup."""
        self._call({"on_exit": list(argv), "env": dict(env)}, 10)

    def call(self, req: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """One raw request to the runner (see harness/nodes/remote/stagerunner.py's protocol)."""
        return self._call(req, timeout)

    def _call(self, req: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        with self._lock:
            try:
                self.proc.stdin.write(json.dumps(req) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise TargetError(f"{self.context}: stage runner is gone ({exc}; exit "
                                  f"{_exit_code(self.proc)}; stderr: {_stderr_tail(self.proc)!r})"
                                  ) from exc
            line = _readline(self.proc, timeout)
        if not line:
            raise TargetError(
                f"{self.context}: stage runner exited (code {_exit_code(self.proc)}) during "
                f"{req.get('stage', 'on_exit')!r}; stderr: {_stderr_tail(self.proc)!r}"
            )
        reply: dict[str, Any] = json.loads(line)
        return reply

    def abort(self) -> None:
        """Interrupted mid-stage: SIGTERM the context by pid; the runner kills the running
        stage, runs the armed cleanup itself and exits. Then release the rest. A second
        Ctrl-C or SIGTERM meanwhile is held until this is done."""
        with deferred_signals():
            self._abort()

    def _abort(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self.interrupt is not None:
                    self.interrupt()
                else:
                    assert isinstance(self.proc, subprocess.Popen)
                    os.kill(self.runner_pid or self.proc.pid, signal.SIGTERM)
            try:  # the runner exits once its cleanup ran: a real condition, bounded
                self.proc.wait(RUNNER_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(RUNNER_EXIT_TIMEOUT)
        self.close()

    def close(self) -> None:
        """Stop the runner by pid (SIGTERM runs any armed cleanup), then release the rest
        (a Ctrl-C or SIGTERM meanwhile is held until this is done)."""
        with deferred_signals():
            self._close()

    def _close(self) -> None:
        try:
            if self.proc.poll() is None:
                assert self.proc.stdin is not None
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()  # EOF: the runner runs its armed cleanup and exits
                try:
                    self.proc.wait(RUNNER_EXIT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.terminate()
                    try:
                        self.proc.wait(RUNNER_EXIT_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait(RUNNER_EXIT_TIMEOUT)
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            while self.on_close:
                self.on_close.pop()()


def _readline(proc: RunnerProcess, timeout: float) -> str:
    """One line from the runner, or '' when it exits or ``timeout`` passes (then kill it).

    The timer is a daemon thread, started inside the ``try``: a Ctrl-C that lands while
    it starts (``Thread.start`` waits for the new thread, which takes long on a busy
    machine) must neither leave it armed nor keep the interpreter from exiting."""
    assert proc.stdout is not None
    timer = threading.Timer(timeout, proc.kill)
    timer.daemon = True
    try:
        timer.start()
        return proc.stdout.readline()
    finally:
        timer.cancel()


def stage_runner_argv() -> list[str]:
    """How to start the stage runner (stdlib only) on the local node: with this very
    interpreter, not a PATH lookup (a pyenv shim costs ~60 ms and extra processes)."""
    path = Path(str(files("harness.nodes.remote").joinpath("stagerunner.py")))
    return [sys.executable or shutil.which("python3") or "/usr/bin/python3", "-u", str(path)]


def _exit_code(proc: RunnerProcess, wait: float = 1.0) -> int | None:
    """The runner process's exit code once its output ended (it exits right after), or
    None when it still runs ``wait`` s later."""
    try:
        return proc.wait(wait)
    except subprocess.TimeoutExpired:
        return None


def _stderr_tail(proc: RunnerProcess, wait: float = 0.5) -> str:
    """What the runner's process (or the ssh/docker client carrying it) wrote to stderr,
    the last 500 characters, without blocking on a pipe still held open."""
    pipe = proc.stderr
    if pipe is None:
        return ""
    try:
        fd = pipe.fileno()
        chunks = []
        while select.select([fd], [], [], wait)[0]:
            data = os.read(fd, 4096)
            if not data:
                break
            chunks.append(data)
            wait = 0.0
    except (OSError, ValueError):
        return ""
    return b"".join(chunks).decode(errors="replace").strip()[-500:]


def start_runner(argv: Sequence[str], context: str, pass_fds: Sequence[int] = (),
                 env: Mapping[str, str] | None = None, *, shell: NodeShell | None = None,
                 ) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``argv`` (which execs the stage runner) on the node behind ``shell`` (default:
    this machine) and wait for its hello line."""
    proc = (shell or LocalShell()).start(argv, env=env, pass_fds=pass_fds)
    try:
        line = _readline(proc, RUNNER_START_TIMEOUT)
    except BaseException:  # Ctrl-C while it starts: it has nothing armed yet; stop it by pid
        with deferred_signals():
            proc.kill()
            proc.wait(RUNNER_EXIT_TIMEOUT)
        raise
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        proc.wait(5)
        close_pipes(proc.stdin, proc.stdout, proc.stderr)
        raise TargetError(
            f"{context}: the context did not start (exit {proc.returncode}): {err.strip()[:500]}"
        )
    hello: dict[str, Any] = json.loads(line)
    return proc, hello
