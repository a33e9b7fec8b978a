"""Tetragon: its JSON export (``tetragon.log``, one ``GetEventsResponse`` a line) tailed,
or ``tetra getevents -o json`` run.

Detections are the policy hooks' events (``process_kprobe``, ``process_tracepoint``,
``process_uprobe``, ``process_lsm``, ``process_usdt``) that carry a ``policy_name``.
Tetragon has no MITRE field: the technique comes from the policy's ``tags`` when a tag
is an ATT&CK id (``T1611``, ``mitre.T1055.008``), else from the ``techniques`` map
(``policy`` or ``policy:function`` -> id); without either the detection is kept with
``technique=()`` so near-miss tables show it. ``process_exit`` events are remembered
(``exit_signal``, ``exit_record``) to cross-check enforcement (``KPROBE_ACTION_SIGKILL`` ->
exit by SIGKILL); ``rate_limit_info`` (events the exporter dropped) is counted as lost.

Process tree: every process object of every line (``process_exec``, ``process_clone``,
``process_exit``, and a hook event's ``process``, ``parent`` and ``ancestors``) links its
``exec_id`` to its pid and ``parent_exec_id`` in a bounded map; a detection's ``ancestors``
are the hook's own ``ancestors`` (``--enable-ancestors``) and the pids found by walking
that map up, so a hook event eight exec images below the run's pid still correlates.
Without either, the detection carries ``fields['correlation_hint']`` (what to turn on).

Sync: with ``harness/rulepacks/tetragon/shadowtest-sync.yaml`` loaded (``sync = true``),
``sync`` calls getpgid(MARKER_PID) on every CPU and the run is synced once one marker
event per CPU is read; marker events are no detections.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from harness.core.detection import Detection
from harness.core.errors import ConfigError
from harness.nodes.process import getpgid_every_cpu
from harness.sensors.fields import integer as _int
from harness.sensors.fields import obj as _dict
from harness.sensors.fields import text as _str
from harness.sensors.fields import unique as _unique
from harness.sensors.jsonlines import JsonLinesSensor
from harness.sensors.rulepack import empty, files_pack
from harness.sensors.tetragon_events import (
    ANCESTRY_HINT,
    HOOK_EVENTS,
    TECHNIQUE,
    ProcEvent,
    StampSpan,
    check_events,
    check_techniques,
    envelope,
    hook_detection,
    number,
    parse_rfc3339,
    tag_technique,
)
from harness.sensors.tetragon_tree import ProcessTree

__all__ = ["ANCESTRY_HINT", "HOOK_EVENTS", "MARKER_PID", "SYNC_HINT", "SYNC_POLICY",
           "SYNC_POLICY_FILE", "TECHNIQUE", "TetragonSensor", "parse_rfc3339", "policy_names",
           "tag_technique"]

#: the policy of ``harness/rulepacks/tetragon/shadowtest-sync.yaml``: one event per marker
SYNC_POLICY = "shadowtest-sync"
SYNC_POLICY_FILE = "shadowtest-sync.yaml"
#: getpgid(MARKER_PID): above any pid_max (4194304), so ESRCH; outside the bpftrace
#: (0x5ad00000-0x5adfffff) and Falco (0x5ae00000-) marker ranges
MARKER_PID = 0x5AF00000
#: a marker thread not answered within this many seconds is forgotten
MARKER_TTL = 600.0
#: why a Tetragon sensor waits out the window (the MISSED row says it)
SYNC_HINT = (
    "Tetragon not synced: the window was waited out; load "
    "harness/rulepacks/tetragon/shadowtest-sync.yaml and set sync = true for this sensor "
    "to close a miss within a second")


class TetragonSensor(JsonLinesSensor):
    """``path`` = the export file (``/var/run/cilium/tetragon/tetragon.log``), followed
    across Tetragon's rename-rotation; or ``command`` = ``tetra getevents -o json``."""

    NAME: ClassVar[str] = "tetragon"
    PRODUCT: ClassVar[str] = "Tetragon"
    LIFE_HINT: ClassVar[str] = (
        "a live Tetragon exports process_exec for every exec and every run execs, so a "
        "silent export means a dead agent or an export-allowlist/denylist that drops "
        "PROCESS_EXEC (keep it exported); or set pidfile = '/var/run/tetragon/tetragon.pid' "
        "(the agent writes its pid there) for this sensor")

    def __init__(self, name: str = "tetragon", path: str | None = None,
                 command: str | list[str] | None = None, from_start: bool = False,
                 delay: float = 0.0, node: str | None = None,
                 techniques: dict[str, str] | None = None,
                 events: list[str] | None = None, policy_files: list[str] | None = None,
                 pid: int | None = None, pidfile: str | None = None,
                 sync: bool | None = None) -> None:
        super().__init__(name, path, command, from_start, delay, node, pid, pidfile)
        if sync is not None and not isinstance(sync, bool):
            raise ConfigError(
                f"[tool.shadowtest.sensors.{name}] sync: expected true or false, got {sync!r}; "
                "true = harness/rulepacks/tetragon/shadowtest-sync.yaml is loaded")
        #: True: the sync policy is loaded; False: never sync; None: once a marker came back
        self.sync_mode = sync
        self._sync_seen = False
        self._tokens = itertools.count(1)
        self._sync_lock = threading.Lock()
        #: tid of a marker thread -> (token, CPUs it called getpgid on, [events read,
        #: all CPUs fired (0/1)], when)
        self._pending: dict[int, tuple[str, set[int], list[int], float]] = {}
        #: TracingPolicy YAML files deployed (rule-pack identity in results rows only)
        self.policy_files = list(policy_files or [])
        self.techniques = check_techniques(name, techniques or {})
        self.events = check_events(name, events) if events is not None else HOOK_EVENTS
        #: every process object read (``ancestry``) and exit signal (``exit_record``)
        self.tree = ProcessTree()
        #: the span of the export's ``time`` stamps read (a recording's sign of life)
        self.span = StampSpan()

    # ------------------------------------------------------------ lines
    def on_line(self, line: str) -> None:
        """As ``JsonLinesSensor.on_line`` (decode, ``on_record``), with exec/clone/exit lines
        and other non-detections read through ``_Envelope`` instead of a whole dict."""
        try:
            env = envelope.decode(line)
        except (msgspec.DecodeError, ValueError, RecursionError):  # not JSON, these types, UTF-8; too deep
            # (msgspec <= 0.18: DecodeError is no ValueError, invalid UTF-8 a UnicodeError)
            super().on_line(line)
            return
        if env.time:
            self.span.saw(env.time)
        if env.rate_limit_info:  # present (lost events): the generic path counts them
            super().on_line(line)
            return
        for event in (env.process_exec, env.process_exit, env.process_clone):
            if event is not None:
                self._on_process_event(event, event is env.process_exit)
                return
        for kind in self.events:
            if getattr(env, kind):  # present, even as null: normalise decides
                super().on_line(line)
                return

    # ------------------------------------------------------------ health events
    def on_record(self, raw: dict[str, Any]) -> None:
        stamp = raw.get("time")
        if isinstance(stamp, str) and self._line is None:  # on_line saw it already
            self.span.saw(stamp)
        info = raw.get("rate_limit_info")
        if isinstance(info, dict):
            # the exporter's rate limit dropped events: a lossy window, never a miss
            try:
                dropped = _int(info.get("number_of_dropped_process_events"))
            except (TypeError, ValueError):
                dropped = None  # unreadable count: still at least one event lost
            self.stream.count_lost(1 if dropped is None else max(dropped, 0))
            return
        for kind in ("process_exec", "process_clone", "process_exit"):
            event = raw.get(kind)
            if isinstance(event, dict):
                self.tree.learn(event.get("process"))
                self.tree.learn(event.get("parent"))
                if kind == "process_exit":
                    self.tree.remember_exit(event)
                return
        marker = raw.get("process_tracepoint")
        if isinstance(marker, dict) and marker.get("policy_name") == SYNC_POLICY:
            self._on_marker(marker)
            return
        for kind in self.events:
            event = raw.get(kind)
            if isinstance(event, dict):  # the hook's own process tree, before normalise
                self.tree.learn(event.get("process"))
                self.tree.learn(event.get("parent"))
                for entry in event.get("ancestors") or ():
                    self.tree.learn(entry)
                break
        super().on_record(raw)

    def _on_process_event(self, event: ProcEvent, exit_: bool) -> None:
        """An exec/exit/clone line read through ``_Envelope``: its processes linked, an
        exit's signal remembered."""
        procs = self.tree.procs
        for proc in (event.process, event.parent):
            if proc is not None and proc.exec_id:
                known = procs.get(proc.exec_id)
                if known is None or known[0] is None or known[1] is None:
                    self.tree.link(proc.exec_id, proc.pid, proc.parent_exec_id)
        if exit_:
            process = event.process
            exec_id = process.exec_id if process is not None else None
            if exec_id and event.signal:
                self.tree.store_exit(exec_id, event.signal)

    @property
    def first_seen(self) -> float:
        """The earliest ``time`` read (epoch seconds; 0.0: none yet)."""
        return self.span.first

    @property
    def last_seen(self) -> float:
        """The latest ``time`` read (epoch seconds; 0.0: none yet)."""
        return self.span.last

    # ------------------------------------------------------------ sync
    def sync(self) -> str | None:
        """getpgid(MARKER_PID) on every CPU, from a thread of its own: with
        ``harness/rulepacks/tetragon/shadowtest-sync.yaml`` loaded, Tetragon exports each
        call (an event on the CPU that made it, carrying the thread's ``tid``); once one
        event per CPU is read, everything Tetragon read from those CPUs' buffers before it
        was delivered. The token is returned (the run waits for it, not for the window)
        when the policy is known to be loaded: ``sync = true``, ``policy_files`` names
        shadowtest-sync.yaml, or a marker came back earlier; otherwise None (the window is
        waited out, and the MISSED row says so). Markers are local: this machine's kernel
        is the one Tetragon watches."""
        if self.sync_mode is False:
            return None
        token = str(next(self._tokens))
        fired = threading.Thread(target=self._fire_markers, args=(token,),
                                 name=f"{self.name}-sync", daemon=True)
        fired.start()
        fired.join(10)
        return token if self.sync_ready else None

    @property
    def sync_ready(self) -> bool:
        """The sync policy is known to be loaded: ``sync = true``, ``policy_files`` names
        shadowtest-sync.yaml, or a marker came back."""
        if self.sync_mode is None:
            return self._sync_seen or any(
                str(f).rstrip("/").rpartition("/")[2] == SYNC_POLICY_FILE
                for f in self.policy_files)
        return self.sync_mode

    @property
    def sync_hint(self) -> str | None:
        """Why a window of this sensor is waited out (None: it syncs)."""
        return None if self.sync_ready else SYNC_HINT

    def _fire_markers(self, token: str) -> None:
        tid = threading.get_native_id()
        cpus: set[int] = set()
        with self._sync_lock:
            self._pending[tid] = (token, cpus, [0, 0], time.time())
            old = time.time() - MARKER_TTL
            for stale in [t for t, p in self._pending.items() if p[3] < old]:
                del self._pending[stale]
        getpgid_every_cpu(MARKER_PID, cpus)
        with self._sync_lock:  # markers read before the loop ended may complete it now
            pending = self._pending.get(tid)
            if pending is not None:
                pending[2][1] = 1
            self._complete(tid)

    def _on_marker(self, event: dict[str, Any]) -> None:
        """One exported marker call: counted for the thread that made it (``process.tid``);
        another process's getpgid(MARKER_PID), or an expired marker, is ignored."""
        tid = number(_dict(event.get("process")).get("tid"))
        if tid is None:
            return
        with self._sync_lock:
            pending = self._pending.get(tid)
            if pending is None:
                return
            self._sync_seen = True
            pending[2][0] += 1
            self._complete(tid)

    def _complete(self, tid: int) -> None:
        pending = self._pending.get(tid)
        if pending is None:
            return
        token, cpus, seen, _ = pending
        if seen[1] and cpus and seen[0] >= len(cpus):
            del self._pending[tid]
            self.stream.mark(token)

    # ------------------------------------------------------------ process tree
    def ancestry(self, exec_id: str | None) -> tuple[int, ...]:
        """The pids above the process ``exec_id``, parent first (``ProcessTree.ancestry``)."""
        return self.tree.ancestry(exec_id)

    def exit_signal(self, exec_id: str) -> str | None:
        """The signal (e.g. ``SIGKILL``) the process ``exec_id`` exited by, if its
        ``process_exit`` was read and it died by a signal; None otherwise."""
        return self.tree.exit_signal(exec_id)

    def exit_record(self, detection: Detection) -> str | None:
        """The product's own exit record for the process that raised ``detection``: the
        signal its ``process_exit`` reports (``SIGKILL``), None when none was read or it
        exited by itself (the enforcement cross-check, ``harness.core.verdict.enforcement``)."""
        exec_id = detection.fields.get("exec_id")
        return self.tree.exit_signal(exec_id) if isinstance(exec_id, str) else None

    # ------------------------------------------------------------ parsing
    def normalise(self, raw: Any) -> Detection | None:
        """Pure: one decoded ``GetEventsResponse`` to a Detection (None: not one)."""
        if not isinstance(raw, dict):
            return None
        for kind in self.events:
            if kind in raw:
                break
        else:
            return None  # exec, exit, throttle, rate_limit_info, loader, unknown kinds
        event = raw[kind]
        if event is None:
            return None
        if not isinstance(event, dict):
            raise TypeError(f"{kind} is {type(event).__name__}, expected an object")
        policy = _str(event.get("policy_name"))
        if not policy:
            return None
        return hook_detection(self.name, self.node, raw, kind, event, policy,
                              self.tree.ancestry, self._technique)

    def _technique(self, policy: str, function: str | None, tags: list[str]) -> tuple[str, ...]:
        found = _unique([t for t in map(tag_technique, tags) if t]) if tags else ()
        if found:
            return found
        mapped = self.techniques.get(f"{policy}:{function}") if function else None
        mapped = mapped or self.techniques.get(policy)
        return (mapped,) if mapped else ()

    def rulepack(self) -> dict[str, Any]:
        """The TracingPolicy files deployed (``policy_files``, in order) and the policy names
        they define; without them only the policy names seen in events are known."""
        files = [Path(p) for p in self.policy_files]
        if not files:
            return empty("policies", reason="no policy_files configured: only the policy names "
                                             "seen in events are known")
        pack = files_pack(files, kind="policies")
        pack["policies"] = sorted(set(policy_names(files)))
        return pack


def policy_names(paths: Iterable[Path]) -> list[str]:
    """``metadata.name`` of every TracingPolicy document in these YAML files."""
    import yaml

    names: list[str] = []
    for path in paths:
        try:
            docs = list(yaml.safe_load_all(path.read_text("utf-8")))
        except (OSError, yaml.YAMLError):
            continue
        for doc in docs:
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            if isinstance(meta, dict) and meta.get("name"):
                names.append(str(meta["name"]))
    return names
