"""The run journal and its reaper: what a harness killed even with SIGKILL must not leave
behind, with nothing left to timing.

A parent-death signal covers processes the harness starts directly (contexts, QEMU, the
SSH master connection), but not what outlives a process by nature: a run cgroup, a
container (its processes belong to dockerd), a dockerd the harness started for itself (it
must stop *after* its containers), a private temporary folder. Each of those is recorded
in a :class:`Journal` — a state file under ``/run/shadowtest/reaper`` — *before* it is
created, and leaves it once it is gone. The first entry arms a detached watchdog::

    python -m harness.nodes.reaper STATE_FILE

which holds ``STATE_FILE.lock`` (an flock: the kernel releases it when the watchdog dies,
so "is a watchdog looking after this journal?" is a fact, not a guess) and checks every
half second whether the runner still lives. Once the runner is gone it replays the
journal in reverse — run cgroups (after their processes finished the atomic's armed
cleanup, bounded), private folders, the runner's containers, then the dockerd it started,
by pid — removes the state file and exits. A runner that releases everything itself
stops the watchdog by pid and removes the file. A journal whose runner *and* watchdog are
both dead (both SIGKILLed, a reboot of a tmpfs-less /run, ...) is replayed by the next run:
:func:`sweep` runs at every session start and before every new journal, and gives each
such orphan a new watchdog.

The shared audit daemon keeps its own journal of the same discipline (the kernel's audit
settings and the daemon's pid recorded before they change; released by the last user, its
watchdog, or the next start): ``harness/sensors/auditd/daemon.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
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
_SERIAL = itertools.count(1)

Entry = dict[str, Any]


def _write(path: Path, entries: list[Entry], **extra: Any) -> None:
    """(Re)write a journal atomically: the runner (pid and start time, one process even
    after its pid is reused) and what it holds, in the order it was recorded."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "start": start_time(os.getpid()),
                               "entries": entries, **extra}))
    tmp.replace(path)


def _arm(name: str, entries: list[Entry]) -> Path:
    """Write a new journal and start its watchdog (orphaned journals of dead runners are
    swept first)."""
    sweep()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = STATE_DIR / f"{name}-{next(_SERIAL)}-{os.getpid()}.json"  # the runner last
    _write(path, entries)
    watchdog = spawn_detached([sys.executable, "-m", "harness.nodes.reaper", str(path)])
    _ARMED[path] = watchdog
    _write(path, entries, watchdog=list(watchdog))
    return path


def _disarm(path: Path) -> None:
    path.unlink(missing_ok=True)
    pid, start = _ARMED.pop(path, (0, ""))
    stop_detached(pid, start)
    _lock_path(path).unlink(missing_ok=True)


class Journal:
    """What this process creates on the node that would outlive it, recorded *before* it is
    created (:meth:`record`) and dropped once it is gone (:meth:`forget`); the file is
    written atomically, the watchdog armed with the first entry. Entries are JSON objects
    with a ``kind``: ``cgroup`` (path), ``dir`` (path), ``containers`` (socket, label),
    ``dockerd`` (state, data)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._path: Path | None = None
        self._pid = 0

    @property
    def path(self) -> Path | None:
        return self._path if self._pid == os.getpid() else None

    def record(self, kind: str, **fields: Any) -> None:
        entry = {"kind": kind, **fields}
        with self._lock, deferred_signals():
            if entry not in self._entries:
                self._entries.append(entry)
            if self._path is None or self._pid != os.getpid():  # none yet, or forked
                self._path = _arm(self.name, self._entries)
                self._pid = os.getpid()
            else:
                _write(self._path, self._entries, watchdog=list(_ARMED.get(self._path, (0, ""))))

    def forget(self, kind: str, **fields: Any) -> None:
        entry = {"kind": kind, **fields}
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)
            if self.path is not None:
                _write(self.path, self._entries, watchdog=list(_ARMED.get(self.path, (0, ""))))

    def holds(self) -> list[Entry]:
        return list(self._entries)

    def close(self) -> None:
        """Everything recorded is gone: stop the watchdog (by pid, waited for) and remove the
        journal. With entries left it stays armed: the watchdog replays them once this
        process is gone."""
        with self._lock, deferred_signals():
            if self.path is not None and not self._entries:
                _disarm(self.path)
                self._path = None


def entries_of(state: dict[str, Any]) -> list[Entry]:
    """A journal's entries in the order recorded; a state file of an older version (fixed
    keys) is read in the order those were created."""
    if "entries" in state:
        return [e for e in state["entries"] if isinstance(e, dict)]
    entries: list[Entry] = []
    if state.get("dockerd_state"):
        entries.append({"kind": "dockerd", "state": state["dockerd_state"],
                        "data": state.get("dockerd_data")})
    if state.get("socket") and state.get("label"):
        entries.append({"kind": "containers", "socket": state["socket"], "label": state["label"]})
    entries += [{"kind": "dir", "path": d} for d in state.get("dirs", ())]
    entries += [{"kind": "cgroup", "path": c} for c in state.get("cgroups", ())]
    return entries


def _lock_path(path: Path) -> Path:
    return path.with_suffix(".lock")


def _try_lock(path: Path) -> int | None:
    """The journal's watchdog lock, taken without waiting: None when a watchdog holds it."""
    fd = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _read(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "pid" in state else None


def sweep(state_dir: Path | None = None) -> list[Path]:
    """Give every journal whose runner is dead and that no watchdog looks after (both were
    killed) a new watchdog, which replays it; the journals so handed over. Nothing here
    waits or guesses by age: the runner's pid and start time, and the watchdog's lock."""
    handed: list[Path] = []
    root = state_dir or STATE_DIR
    if not root.is_dir():
        return handed
    for path in sorted(root.glob("*.json")):
        if path in _ARMED:
            continue
        fd = _try_lock(path)
        if fd is None:
            continue  # a watchdog looks after it
        try:
            state = _read(path)
            if state is None:
                if not path.exists():
                    _lock_path(path).unlink(missing_ok=True)
                continue
            if _runner_alive(state):
                continue
        finally:
            os.close(fd)
        spawn_detached([sys.executable, "-m", "harness.nodes.reaper", str(path)])
        handed.append(path)
    _sweep_locks(root)
    return handed


def _sweep_locks(root: Path) -> None:
    """Remove the locks whose journal is gone (a watchdog killed between removing the one
    and the other), unless someone holds them."""
    for lock in root.glob("*.lock"):
        journal = lock.with_suffix(".json")
        if journal.exists():
            continue
        fd = _try_lock(journal)
        if fd is not None:
            try:
                if not journal.exists():
                    lock.unlink(missing_ok=True)
            finally:
                os.close(fd)


def held(kind: str, state_dir: Path | None = None) -> set[str]:
    """The paths of ``kind`` entries in the journals of live runners (this one too): what
    a sweep of leftovers must not touch."""
    root = state_dir or STATE_DIR
    paths: set[str] = set()
    for path in root.glob("*.json") if root.is_dir() else ():
        state = _read(path)
        if state is not None and _runner_alive(state):
            paths |= {str(e.get("path")) for e in entries_of(state) if e.get("kind") == kind}
    return paths


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


def _remove_containers(socket: str, label: str) -> None:
    if not os.path.exists(socket):
        return
    with contextlib.suppress(Exception):
        import docker  # type: ignore[import-untyped]

        client = docker.DockerClient(base_url=f"unix://{socket}", version="auto", timeout=30)
        for c in client.api.containers(all=True, filters={"label": label}):
            with contextlib.suppress(Exception):
                client.api.remove_container(c["Id"], force=True, v=True)
        client.close()


def _stop_dockerd(state: str, data: str) -> None:
    from harness.nodes.dockerd import Dockerd

    with contextlib.suppress(Exception):
        Dockerd(state, data).stop()


def release(entry: Entry) -> None:
    """Undo one journal entry: a run cgroup once its processes finished their own cleanup
    (bounded), a private temporary folder, the runner's containers, the dockerd it started
    (by pid). Anything else is left alone (an entry this version does not know)."""
    kind = entry.get("kind")
    if kind == "cgroup":
        wait_empty(Path(entry["path"]))
        remove_cgroup(Path(entry["path"]))
    elif kind == "dir" and private_temp_dir(str(entry.get("path", ""))):
        shutil.rmtree(entry["path"], ignore_errors=True)
    elif kind == "containers" and entry.get("socket") and entry.get("label"):
        _remove_containers(str(entry["socket"]), str(entry["label"]))
    elif kind == "dockerd" and entry.get("state"):
        _stop_dockerd(str(entry["state"]), str(entry.get("data") or ""))


def reap(state: dict[str, Any]) -> None:
    """Replay a dead runner's journal in reverse: what was created last goes first (its
    containers before the dockerd they run on)."""
    for entry in reversed(entries_of(state)):
        release(entry)


def watch(path: Path, interval: float = 0.5) -> None:
    """The watchdog: holds the journal's lock for its whole life (a second watchdog for the
    same journal exits at once); once the runner is gone, replays the journal."""
    fd = _try_lock(path)
    if fd is None:
        return
    try:
        while True:
            state = _read(path)
            if state is None:
                return  # disarmed: the runner released everything itself
            if not _runner_alive(state):
                reap(state)
                path.unlink(missing_ok=True)
                return
            time.sleep(interval)  # a watchdog's period, not a wait for a result
    finally:
        if not path.exists():
            _lock_path(path).unlink(missing_ok=True)
        os.close(fd)


if __name__ == "__main__":
    watch(Path(sys.argv[1]))
