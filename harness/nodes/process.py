"""Starting and stopping sensor daemons by pid; the per-CPU sync marker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn(argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a daemon in its own session (a terminal Ctrl-C reaches the harness, which then
    stops the daemon itself, in order)."""
    return subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, errors="replace", env={**os.environ, **(env or {})}, start_new_session=True,
    )


def stop(proc: subprocess.Popen[str], first: signal.Signals, grace: float = 5.0,
         repeat: float | None = None) -> int | None:
    """Signal ``proc`` by its pid (never anything else), every ``repeat`` seconds if given
    (bpftrace 0.17 drops a SIGINT that lands while it is busy), SIGKILL after ``grace``."""
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, first)
        try:
            proc.wait(repeat if repeat else grace)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(grace)
    return proc.returncode


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def getpgid_every_cpu(pid: int, cpus: set[int] | None = None) -> set[int]:
    """A sync marker: call ``getpgid(pid)`` pinned to each CPU of this thread's affinity in
    turn, then restore the affinity. A sensor whose event stream is per CPU (perf/ring
    buffers) has delivered everything up to the marker once the marker of every CPU came
    back; ``pid`` is a harness-chosen number no process has. Returns the CPUs asked (a CPU
    gone offline meanwhile is skipped: nothing of a run ran there after). ``cpus``, when
    given, is filled as the loop goes, so a reader on another thread sees which CPUs were
    already asked."""
    asked: set[int] = set() if cpus is None else cpus
    before = os.sched_getaffinity(0)
    try:
        for cpu in sorted(before):
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                continue
            asked.add(cpu)
            with contextlib.suppress(OSError):
                os.getpgid(pid)
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, before)
    return asked
