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
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

from harness.core.detection import Detection, make_detection
from harness.core.errors import ConfigError
from harness.sensors.fields import array as _list
from harness.sensors.fields import integer as _int
from harness.sensors.fields import obj as _dict
from harness.sensors.fields import text as _str
from harness.sensors.fields import unique as _unique
from harness.sensors.jsonlines import JsonLinesSensor
from harness.sensors.marker import getpgid_every_cpu

#: GetEventsResponse keys that are not the event itself
ENVELOPE = frozenset({"node_name", "time", "aggregation_info", "cluster_name", "node_labels"})
#: policy-hook event kinds (they carry policy_name, action, tags, message)
HOOK_EVENTS = ("process_kprobe", "process_tracepoint", "process_uprobe", "process_lsm", "process_usdt")
#: event keys copied to ``fields`` when present (tracepoint subsystem, uprobe path/symbol ...)
_EXTRA_KEYS = ("subsys", "path", "symbol", "provider", "ima_hash")
#: exit signals remembered (exec id -> signal), oldest forgotten first
MAX_EXITS = 65536
#: processes remembered for ancestry (exec id -> pid, parent exec id), oldest forgotten first
MAX_PROCS = 65536
#: exec images walked up from a hook event's process (the pyenv shim chain alone is 8)
MAX_DEPTH = 64
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
#: what a near-miss says when the export cannot tie a process to its ancestors
ANCESTRY_HINT = (
    "Tetragon exported no ancestry above this process's parent: run the agent with "
    "--enable-ancestors base,tracepoint (add kprobe, lsm, uprobe for the hook kinds your "
    "policies use) and keep PROCESS_EXEC in the export allow-list, so the process tree "
    "reaches the run's pid")

TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?")
_TAG_TECHNIQUE = re.compile(r"(?:^|[.:/_\-])(T\d{4}(?:\.\d{3})?)$", re.IGNORECASE)
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d{2}:\d{2})"
)

_NO_EVENT = msgspec.Raw()


# ---------------------------------------------------------------- on_line's first look
# Most export lines are process_exec / process_exit. ``on_line`` first decodes a line into
# these Structs: undeclared fields are skipped in C and the hook events are kept as raw bytes
# (``Raw``: absent = empty, ``null`` = b"null"), so an exec line costs a scan and an exit line
# the two fields it needs. A line holding a hook event or ``rate_limit_info``, or one these
# types do not fit, takes the generic path (``JsonLinesSensor.on_line``: decode to a dict,
# ``on_record``), which decides exactly as before; test_ingest_equivalence.py checks both agree.
class _Proc(msgspec.Struct, gc=False):
    exec_id: str | None = None
    pid: int | None = None
    parent_exec_id: str | None = None


class _ProcEvent(msgspec.Struct, gc=False):
    process: _Proc | None = None
    parent: _Proc | None = None
    signal: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    time: str | None = None
    rate_limit_info: msgspec.Raw = _NO_EVENT
    process_exec: _ProcEvent | None = None
    process_clone: _ProcEvent | None = None
    process_exit: _ProcEvent | None = None
    process_kprobe: msgspec.Raw = _NO_EVENT
    process_tracepoint: msgspec.Raw = _NO_EVENT
    process_uprobe: msgspec.Raw = _NO_EVENT
    process_lsm: msgspec.Raw = _NO_EVENT
    process_usdt: msgspec.Raw = _NO_EVENT


_envelope = msgspec.json.Decoder(_Envelope)


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
        self.techniques = _check_techniques(name, techniques or {})
        self.events = _check_events(name, events) if events is not None else HOOK_EVENTS
        self._exits: dict[str, str] = {}
        #: exec id -> (pid, parent's exec id), every process object read (``ancestry``)
        self._procs: dict[str, tuple[int | None, str | None]] = {}
        #: the span of the export's ``time`` stamps read, as (second, nanoseconds) keys
        self._first_key = _NO_KEY_FIRST
        self._last_key = _NO_KEY_LAST

    # ------------------------------------------------------------ lines
    def on_line(self, line: str) -> None:
        """As ``JsonLinesSensor.on_line`` (decode, ``on_record``), with exec/clone/exit lines
        and other non-detections read through ``_Envelope`` instead of a whole dict."""
        try:
            env = _envelope.decode(line)
        except (msgspec.DecodeError, ValueError):  # not JSON, not these types, not UTF-8
            # (msgspec <= 0.18: DecodeError is no ValueError, invalid UTF-8 a UnicodeError)
            super().on_line(line)
            return
        if env.time:
            self._saw(env.time)
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
            self._saw(stamp)
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
                self._learn(event.get("process"))
                self._learn(event.get("parent"))
                if kind == "process_exit":
                    self._remember_exit(event)
                return
        marker = raw.get("process_tracepoint")
        if isinstance(marker, dict) and marker.get("policy_name") == SYNC_POLICY:
            self._on_marker(marker)
            return
        for kind in self.events:
            event = raw.get(kind)
            if isinstance(event, dict):  # the hook's own process tree, before normalise
                self._learn(event.get("process"))
                self._learn(event.get("parent"))
                for entry in event.get("ancestors") or ():
                    self._learn(entry)
                break
        super().on_record(raw)

    def _on_process_event(self, event: _ProcEvent, exit_: bool) -> None:
        """An exec/exit/clone line read through ``_Envelope``: its processes linked, an
        exit's signal remembered."""
        procs = self._procs
        for proc in (event.process, event.parent):
            if proc is not None and proc.exec_id:
                known = procs.get(proc.exec_id)
                if known is None or known[0] is None or known[1] is None:
                    self._link(proc.exec_id, proc.pid, proc.parent_exec_id)
        if exit_:
            process = event.process
            exec_id = process.exec_id if process is not None else None
            if exec_id and event.signal:
                self._store_exit(exec_id, event.signal)

    def _saw(self, stamp: str) -> None:
        """A line's ``time``: the span of the export read so far (a recording's sign of
        life, ``ReplaySensor.silence``). Kept as comparable keys (second, nanoseconds) and
        parsed only when read: a line costs two string compares."""
        if len(stamp) < 20 or stamp[-1] != "Z" or stamp[19] not in ".Z":
            try:  # not protojson's UTC form: parse it once
                stamp = _utc(parse_rfc3339(stamp))
            except ValueError:
                return
        key = (stamp[:19], stamp[20:-1].ljust(9, "0"))
        if key > self._last_key:  # noqa: PLR1730 (min()/max() cost a call each, every line)
            self._last_key = key
        if key < self._first_key:  # noqa: PLR1730
            self._first_key = key

    @property
    def first_seen(self) -> float:
        """The earliest ``time`` read (epoch seconds; 0.0: none yet)."""
        return _epoch_of(self._first_key)

    @property
    def last_seen(self) -> float:
        """The latest ``time`` read (epoch seconds; 0.0: none yet)."""
        return _epoch_of(self._last_key)

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
        tid = _number(_dict(event.get("process")).get("tid"))
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
    def _learn(self, proc: Any) -> None:
        if not isinstance(proc, dict):
            return
        exec_id = proc.get("exec_id")
        if not isinstance(exec_id, str) or not exec_id:
            return
        try:
            pid = _number(proc.get("pid"))
        except (TypeError, ValueError):
            pid = None
        parent = proc.get("parent_exec_id")
        self._link(exec_id, pid, parent if isinstance(parent, str) and parent else None)

    def _link(self, exec_id: str, pid: int | None, parent: str | None) -> None:
        """Remember ``exec_id`` -> (pid, parent's exec_id): a bounded map (oldest first
        out). Every process object Tetragon writes (exec, clone, exit, a hook's process,
        parent and ancestors) carries its own ``parent_exec_id``, so a clone-only parent
        (no exec line: it appears as a child's ``parent``) links upward too."""
        known = self._procs.get(exec_id)
        if known is not None and known[0] is not None and known[1] is not None:
            return
        if known is not None:
            pid = pid if pid is not None else known[0]
            parent = parent or known[1]
        self._procs[exec_id] = (pid, parent)
        if len(self._procs) > MAX_PROCS:
            del self._procs[next(iter(self._procs))]

    def ancestry(self, exec_id: str | None) -> tuple[int, ...]:
        """The pids above the process ``exec_id`` (parent first), by walking
        ``parent_exec_id`` through the processes read so far; stops at an unknown or
        repeated exec id or after ``MAX_DEPTH`` images. An exec without fork keeps its pid
        (``parent.pid == pid``): the walk goes on through the previous image."""
        out: list[int] = []
        seen: set[str] = set()
        current = self._procs.get(exec_id) if exec_id else None
        parent = current[1] if current is not None else None
        if exec_id:
            seen.add(exec_id)
        while parent and parent not in seen and len(seen) < MAX_DEPTH:
            seen.add(parent)
            entry = self._procs.get(parent)
            if entry is None:
                break
            pid, parent = entry
            if pid is not None and pid not in out:
                out.append(pid)
        return tuple(out)

    def _remember_exit(self, event: dict[str, Any]) -> None:
        process = _dict(event.get("process"))
        exec_id = _str(process.get("exec_id"))
        signal = _str(event.get("signal"))
        if not exec_id or not signal:
            return
        self._store_exit(exec_id, signal)

    def _store_exit(self, exec_id: str, signal: str) -> None:
        self._exits.pop(exec_id, None)
        self._exits[exec_id] = signal
        while len(self._exits) > MAX_EXITS:
            del self._exits[next(iter(self._exits))]

    def exit_signal(self, exec_id: str) -> str | None:
        """The signal (e.g. ``SIGKILL``) the process ``exec_id`` exited by, if its
        ``process_exit`` was read and it died by a signal; None otherwise."""
        return self._exits.get(exec_id)

    def exit_record(self, detection: Detection) -> str | None:
        """The product's own exit record for the process that raised ``detection``: the
        signal its ``process_exit`` reports (``SIGKILL``), None when none was read or it
        exited by itself (the enforcement cross-check, ``harness.core.verdict.enforcement``)."""
        exec_id = detection.fields.get("exec_id")
        return self._exits.get(exec_id) if isinstance(exec_id, str) else None

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
        return self._detection(raw, kind, event, policy)

    def _detection(self, raw: dict[str, Any], kind: str, event: dict[str, Any],
                   policy: str) -> Detection:
        # Field readers inlined for the common types (str, dict, list, int); anything else
        # goes through _str/_dict/_list/_int, which return or raise exactly as before.
        get = event.get
        process = get("process")
        if process.__class__ is not dict:
            process = _dict(process)
        parent = get("parent")
        if parent.__class__ is not dict:
            parent = _dict(parent)
        pget = process.get
        pod = pget("pod")
        if pod.__class__ is not dict:
            pod = _dict(pod)
        container = pod.get("container")
        if container.__class__ is not dict:
            container = _dict(container)
        function = _function(kind, event)
        tags = get("tags")
        tags = [t if t.__class__ is str else str(t) for t in
                (tags if tags.__class__ is list else _list(tags))]
        args = get("args")
        if args.__class__ is not list:
            args = _list(args)
        binary = _text(pget("binary"))
        pod_name = _text(pod.get("name"))
        pod_fields = {"name": pod_name, "namespace": _text(pod.get("namespace"))}
        action = _text(get("action"))
        arguments = _text(pget("arguments"))
        fields: dict[str, Any] = {
            "event": kind,
            "function_name": function,
            "policy_name": policy,
            "action": action,
            "return_action": _text(get("return_action")),
            "message": _text(get("message")),
            "tags": tags,
            "pod": pod_fields,
            "args": args,
            "return": get("return"),
            "exec_id": _text(pget("exec_id")),
            "parent_exec_id": _text(pget("parent_exec_id")),
            "ns_pid": _number(container.get("pid")),
            "uid": _number(pget("uid")),
            "cwd": _text(pget("cwd")),
            "arguments": arguments,
        }
        for key in _EXTRA_KEYS:
            if key in event:
                fields[key] = event[key]
        if "cluster_name" in raw:
            fields["cluster_name"] = raw["cluster_name"]
        node = _text(raw.get("node_name")) or self.node
        exported = get("ancestors")
        exported_pids = () if exported is None else tuple(
            p for p in (_int(_dict(a).get("pid")) for a in _list(exported)) if p is not None)
        ppid = _number(parent.get("pid"))
        tree = tuple(p for p in self.ancestry(fields["exec_id"]) if p != ppid)
        ancestors = _unique_ints(exported_pids + tree)
        if not ancestors:
            # nothing above the parent: neither exec lines nor ``ancestors`` were exported
            fields["correlation_hint"] = ANCESTRY_HINT
        names = [binary, arguments]
        if args:
            names.extend(_arg_names(args))
        names.append(pod_name)
        return make_detection(
            self.name, policy, self._technique(policy, function, tags), None, action, node,
            _container_id(container, process), None, _number(pget("pid")), ppid, ancestors,
            binary.rpartition("/")[2] if binary else None,
            _unique(names), _observed_at(raw, event), time.time(), fields, raw,
        )

    def _technique(self, policy: str, function: str | None, tags: list[str]) -> tuple[str, ...]:
        found = _unique([t for t in map(tag_technique, tags) if t]) if tags else ()
        if found:
            return found
        mapped = self.techniques.get(f"{policy}:{function}") if function else None
        mapped = mapped or self.techniques.get(policy)
        return (mapped,) if mapped else ()


# ---------------------------------------------------------------- config checks
def _check_techniques(name: str, techniques: dict[str, str]) -> dict[str, str]:
    if not isinstance(techniques, dict):
        raise ConfigError(
            f"[tool.shadowtest.sensors.{name}] techniques: expected a table of "
            f"'<policy>[:<function>]' = '<ATT&CK id>', got {techniques!r}"
        )
    bad = {k: v for k, v in techniques.items() if not isinstance(v, str) or not TECHNIQUE.fullmatch(v)}
    if bad:
        raise ConfigError(
            f"[tool.shadowtest.sensors.{name}] techniques: values must be ATT&CK ids like "
            f"'T1611' or 'T1055.008', got {bad!r}"
        )
    return dict(techniques)


def _check_events(name: str, events: list[str]) -> tuple[str, ...]:
    """``events`` narrows which hook kinds are detections; accepts ``process_kprobe``,
    ``kprobe`` or ``PROCESS_KPROBE`` (the export allow-list spelling)."""
    out: list[str] = []
    for item in events:
        kind = str(item).lower()
        kind = kind if kind.startswith("process_") else f"process_{kind}"
        if kind not in HOOK_EVENTS:
            raise ConfigError(
                f"[tool.shadowtest.sensors.{name}] events: {item!r} is not a policy-hook event; "
                f"expected some of {', '.join(HOOK_EVENTS)}"
            )
        out.append(kind)
    return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------- field readers








def _utc(epoch: float) -> str:
    """Epoch seconds to protojson's UTC form (``...T..:..:..NNNNNNNNNZ``)."""
    whole = int(epoch // 1)
    nanos = round((epoch - whole) * 1e9)
    stamp = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


#: the span's keys before any line was read (above / below every real key)
_NO_KEY_FIRST = ("~", "")
_NO_KEY_LAST = ("", "")


def _epoch_of(key: tuple[str, str]) -> float:
    if key in (_NO_KEY_FIRST, _NO_KEY_LAST):
        return 0.0
    return parse_rfc3339(f"{key[0]}.{key[1]}Z")


def _unique_ints(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(values))


def _text(value: Any) -> str | None:
    """``_str`` with its common case (a non-empty str) first."""
    if value.__class__ is str and value:
        return value
    return _str(value)


def _number(value: Any) -> int | None:
    """``_int`` with its common case (an int from JSON) first."""
    if value.__class__ is int:
        return value
    return _int(value)




#: tag -> the ATT&CK id it names (or None); a policy's tags repeat on every event
_TAG_IDS: dict[str, str | None] = {}
_TAG_IDS_MAX = 4096


def tag_technique(tag: str) -> str | None:
    try:
        return _TAG_IDS[tag]
    except KeyError:
        pass
    m = _TAG_TECHNIQUE.search(tag)
    found = m.group(1).upper() if m else None
    if len(_TAG_IDS) >= _TAG_IDS_MAX:
        _TAG_IDS.clear()
    _TAG_IDS[tag] = found
    return found


def _function(kind: str, event: dict[str, Any]) -> str | None:
    """What the hook is attached to: kprobe/LSM function, tracepoint event, uprobe symbol,
    USDT probe name."""
    key = {"process_tracepoint": "event", "process_uprobe": "symbol", "process_usdt": "name"}
    return _str(event.get(key.get(kind, "function_name")))


def _container_id(container: dict[str, Any], process: dict[str, Any]) -> str | None:
    """Full id from the pod (``containerd://<64 hex>``, runtime prefix stripped), else the
    15-char ``process.docker`` (correlation matches a shorter id by prefix)."""
    full = _str(container.get("id"))
    if full:
        return full.rpartition("://")[2] or None
    return _str(process.get("docker"))


def _arg_names(args: list[Any]) -> Iterable[str]:
    """Paths (``file_arg``, ``path_arg``, ``linux_binprm_arg`` ...) and strings among args."""
    for arg in args:
        if not isinstance(arg, dict):
            continue
        for key, value in arg.items():
            if key == "string_arg" and isinstance(value, str):
                yield value
            elif isinstance(value, dict) and isinstance(value.get("path"), str):
                yield value["path"]


def _observed_at(raw: dict[str, Any], event: dict[str, Any]) -> float:
    """The export's ``time``; 0.0 (unknown: latency is then measured from the run's
    start) when absent or unreadable, rather than losing the detection."""
    stamp = raw.get("time") or event.get("time")
    if not isinstance(stamp, str):
        return 0.0
    try:
        return parse_rfc3339(stamp)
    except ValueError:
        return 0.0


def parse_rfc3339(stamp: str) -> float:
    """``2026-11-23T02:01:35.738796110Z`` (nanoseconds, any offset) to epoch seconds.
    ``datetime`` keeps microseconds only, so the fraction is added separately."""
    m = _RFC3339.fullmatch(stamp.strip())
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    base, frac, zone = m.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    seconds = datetime.fromisoformat(f"{base.replace(' ', 'T')}{zone}").timestamp()
    return seconds + (int(frac.ljust(9, "0")) / 1e9 if frac else 0.0)
