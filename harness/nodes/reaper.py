"""The runner's reaper: what a harness killed even with SIGKILL must not leave behind.

A parent-death signal covers processes the harness starts directly (contexts, QEMU, the
SSH master connection), but not a container (its processes belong to dockerd) nor a
dockerd the harness started for itself (it must stop *after* its containers). For those
the docker target starts this reaper, detached (``setsid -f``)::

    python -m harness.nodes.reaper STATE_FILE

STATE_FILE (JSON) names the runner's pid and start time, the run cgroups it holds (the
local target's namespace contexts), its private temporary directories (a VM's console
log, an SSH master's control socket: QEMU and ssh die by their parent-death signal, their
folders do not), the docker socket, the label that marks the runner's
containers, and the dockerd to stop (its state dir), if any. The runner rewrites it
*before* it creates what it names. The reaper checks every half second whether the runner
still lives; once it is gone it removes those cgroups and the labelled containers, stops
that dockerd by pid, removes the state file and exits. A runner that releases normally
stops the reaper by pid (and waits for it) and removes the state file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from harness.nodes.process import pid_alive

STATE_DIR = Path("/run/shadowtest/reaper")

_Handler = Callable[[int, FrameType | None], Any] | int | None


@contextlib.contextmanager
def deferred_signals(*signums: signal.Signals) -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM (or ``signums``) off a section that must not be cut short —
    starting a daemon and recording its pid, releasing what a run holds — and deliver
    them once it ends, as they would have been. Python-level handlers, not a blocked
    signal mask: a process started inside inherits the default dispositions on exec, not
    a mask that would make it deaf to its stop signal. Only the main thread receives
    signals; elsewhere this does nothing. Yields the list of signals received so far:
    a section that is itself the end (a teardown) clears it to absorb them."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    old: dict[int, _Handler] = {}

    def hold(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    for signum in signums or (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN or previous is None:
            continue  # ignored stays ignored; a handler set outside Python is left alone
        old[signum] = signal.signal(signum, hold)
    try:
        yield got
    finally:
        for num, handler in old.items():
            signal.signal(num, handler)
        for num in dict.fromkeys(got):
            handler = old.get(num)
            if callable(handler):
                handler(num, None)  # e.g. KeyboardInterrupt, now that the section is done
            elif handler == signal.SIG_DFL:
                signal.raise_signal(num)


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat):
    with the pid, it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def spawn_detached(argv: list[str]) -> tuple[int, str]:
    """Start a watchdog in its own session, not as our child (a Ctrl-C or SIGKILL of the
    harness does not reach it, and it is never our zombie); its pid and start time, to
    stop it by pid later."""
    res = subprocess.run(["sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "sh", *argv],
                         capture_output=True, text=True, check=False, start_new_session=True)
    pid = int(res.stdout.strip() or 0)
    return pid, start_time(pid) if pid else ""


def stop_detached(pid: int, start: str, timeout: float = 30.0) -> None:
    """Stop a watchdog started with spawn_detached (by pid, checked against its start time
    so a reused pid is never signalled) and wait until it is gone."""
    if not pid or pid == os.getpid() or start_time(pid) != start:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and start_time(pid) == start and time.monotonic() < deadline:
        time.sleep(0.01)


_ARMED: dict[Path, tuple[int, str]] = {}


def arm(name: str, **state: Any) -> Path:
    """Write the state and start the detached reaper for the current process."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = STATE_DIR / f"{name}-{os.getpid()}.json"
    update(path, **state)
    _ARMED[path] = spawn_detached([sys.executable, "-m", "harness.nodes.reaper", str(path)])
    return path


def update(path: Path, **state: Any) -> None:
    """(Re)write the reaper's state — what it must release — atomically, before the
    runner creates what it names (a journal entry)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "start": start_time(os.getpid()), **state}))
    tmp.replace(path)


def disarm(path: Path) -> None:
    """The runner released everything itself: the reaper is stopped (by pid, waited for)
    and its state removed."""
    path.unlink(missing_ok=True)
    pid, start = _ARMED.pop(path, (0, ""))
    stop_detached(pid, start)


def _runner_alive(state: dict[str, Any]) -> bool:
    pid = int(state["pid"])
    return pid_alive(pid) and start_time(pid) == state.get("start")


def remove_cgroup(cg: Path, timeout: float = 60.0) -> bool:
    """Kill what is left in a run's own cgroup (only it) and remove it, waiting for the
    kernel to let go (rmdir is EBUSY until the killed tasks are reaped): True when gone."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            (cg / "cgroup.kill").write_text("1")
        try:
            cg.rmdir()
        except FileNotFoundError:
            return True
        except OSError:  # EBUSY while the killed processes are reaped
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        else:
            return True


#: how long a run's own processes get, once the runner is gone, to finish what they do on
#: their parent's death (the stage runner runs the atomic's armed cleanup, then exits)
#: before the reaper kills what is left: killing at once killed that cleanup mid-way
CLEANUP_GRACE = 120.0


def wait_empty(cg: Path, timeout: float = CLEANUP_GRACE) -> bool:
    """Until no process is left in ``cg`` (``cgroup.events``: ``populated 0``) or the cgroup
    is gone; at most ``timeout``. True when empty."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            events = (cg / "cgroup.events").read_text()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        if "populated 0" in events.splitlines():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # a watchdog's period: the kernel's change is what ends it


def private_temp_dir(path: str) -> bool:
    """Only the harness's own temporary directories are removed for a runner: directly
    in the temporary directory and named ``shadowtest-*`` (a VM's console log, an SSH
    master's control socket)."""
    p = Path(path)
    return p.parent == Path(tempfile.gettempdir()) and p.name.startswith("shadowtest-")


def reap(state: dict[str, Any]) -> None:
    """Let each run cgroup's processes finish their own cleanup (bounded), remove the
    cgroups, the runner's private temporary directories, its containers, then stop the
    dockerd it started (by pid)."""
    for cg in state.get("cgroups", ()):
        wait_empty(Path(cg))
        remove_cgroup(Path(cg))
    for d in state.get("dirs", ()):
        if private_temp_dir(d):
            shutil.rmtree(d, ignore_errors=True)
    socket = state.get("socket")
    label = state.get("label")
    if socket and label and os.path.exists(socket):
        with contextlib.suppress(Exception):
            import docker  # type: ignore[import-untyped]

            client = docker.DockerClient(base_url=f"unix://{socket}", version="auto", timeout=30)
            for c in client.api.containers(all=True, filters={"label": label}):
                with contextlib.suppress(Exception):
                    client.api.remove_container(c["Id"], force=True, v=True)
            client.close()
    if state.get("dockerd_state"):
        from harness.nodes.dockerd import Dockerd

        with contextlib.suppress(Exception):
            Dockerd(state["dockerd_state"], state["dockerd_data"]).stop()


def watch(path: Path, interval: float = 0.5) -> None:
    while True:
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # disarmed: the runner released everything itself
        if not _runner_alive(state):
            reap(state)
            path.unlink(missing_ok=True)
            return
        time.sleep(interval)  # a watchdog's period, not a wait for a result


if __name__ == "__main__":
    watch(Path(sys.argv[1]))
