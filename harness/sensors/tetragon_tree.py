"""Tetragon's process tree and exit records, as the export showed them: every process object
(exec, clone, exit, a hook event's process, parent and ancestors) links its ``exec_id`` to
its pid and ``parent_exec_id`` in a bounded map, walked up for a detection's ancestry; each
``process_exit`` by a signal is remembered for the enforcement cross-check."""

from __future__ import annotations

from typing import Any

from harness.sensors.fields import integer, obj, text

#: exit signals remembered (exec id -> signal), oldest forgotten first
MAX_EXITS = 65536
#: processes remembered for ancestry (exec id -> pid, parent exec id), oldest forgotten first
MAX_PROCS = 65536
#: exec images walked up from a hook event's process (the pyenv shim chain alone is 8)
MAX_DEPTH = 64


class ProcessTree:
    """Bounded maps (oldest first out): exec id -> (pid, parent's exec id), and exec id ->
    the signal its process exited by."""

    def __init__(self) -> None:
        #: exec id -> (pid, parent's exec id), every process object read (``ancestry``)
        self.procs: dict[str, tuple[int | None, str | None]] = {}
        self.exits: dict[str, str] = {}

    def learn(self, proc: Any) -> None:
        if not isinstance(proc, dict):
            return
        exec_id = proc.get("exec_id")
        if not isinstance(exec_id, str) or not exec_id:
            return
        try:
            pid = integer(proc.get("pid"))
        except (TypeError, ValueError):
            pid = None
        parent = proc.get("parent_exec_id")
        self.link(exec_id, pid, parent if isinstance(parent, str) and parent else None)

    def link(self, exec_id: str, pid: int | None, parent: str | None) -> None:
        """Remember ``exec_id`` -> (pid, parent's exec_id): a bounded map (oldest first
        out). Every process object Tetragon writes (exec, clone, exit, a hook's process,
        parent and ancestors) carries its own ``parent_exec_id``, so a clone-only parent
        (no exec line: it appears as a child's ``parent``) links upward too."""
        known = self.procs.get(exec_id)
        if known is not None and known[0] is not None and known[1] is not None:
            return
        if known is not None:
            pid = pid if pid is not None else known[0]
            parent = parent or known[1]
        self.procs[exec_id] = (pid, parent)
        if len(self.procs) > MAX_PROCS:
            del self.procs[next(iter(self.procs))]

    def ancestry(self, exec_id: str | None) -> tuple[int, ...]:
        """The pids above the process ``exec_id`` (parent first), by walking
        ``parent_exec_id`` through the processes read so far; stops at an unknown or
        repeated exec id or after ``MAX_DEPTH`` images. An exec without fork keeps its pid
        (``parent.pid == pid``): the walk goes on through the previous image."""
        out: list[int] = []
        seen: set[str] = set()
        current = self.procs.get(exec_id) if exec_id else None
        parent = current[1] if current is not None else None
        if exec_id:
            seen.add(exec_id)
        while parent and parent not in seen and len(seen) < MAX_DEPTH:
            seen.add(parent)
            entry = self.procs.get(parent)
            if entry is None:
                break
            pid, parent = entry
            if pid is not None and pid not in out:
                out.append(pid)
        return tuple(out)

    def remember_exit(self, event: dict[str, Any]) -> None:
        process = obj(event.get("process"))
        exec_id = text(process.get("exec_id"))
        signal = text(event.get("signal"))
        if not exec_id or not signal:
            return
        self.store_exit(exec_id, signal)

    def store_exit(self, exec_id: str, signal: str) -> None:
        self.exits.pop(exec_id, None)
        self.exits[exec_id] = signal
        while len(self.exits) > MAX_EXITS:
            del self.exits[next(iter(self.exits))]

    def exit_signal(self, exec_id: str) -> str | None:
        """The signal (e.g. ``SIGKILL``) the process ``exec_id`` exited by, if its
        ``process_exit`` was read and it died by a signal; None otherwise."""
        return self.exits.get(exec_id)
