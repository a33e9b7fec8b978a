"""Tetragon: its JSON export (``tetragon.log``, one ``GetEventsResponse`` a line) tailed,
or ``tetra getevents -o json`` run.

Detections are the policy hooks' events (``process_kprobe``, ``process_tracepoint``,
``process_uprobe``, ``process_lsm``, ``process_usdt``) that carry a ``policy_name``.
Tetragon has no MITRE field: the technique comes from the policy's ``tags`` when a tag
is an ATT&CK id (``T1611``, ``mitre.T1055.008``), else from the ``techniques`` map
(``policy`` or ``policy:function`` -> id); without either the detection is kept with
``technique=()`` so near-miss tables show it. ``process_exit`` events are remembered
(``exit_signal``) to check enforcement (``KPROBE_ACTION_SIGKILL`` -> exit by SIGKILL);
``rate_limit_info`` (events the exporter dropped) is counted as lost.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

from harness.detection import Detection
from harness.errors import ConfigError
from harness.sensors._jsonlines import JsonLinesSensor

#: GetEventsResponse keys that are not the event itself
ENVELOPE = frozenset({"node_name", "time", "aggregation_info", "cluster_name", "node_labels"})
#: policy-hook event kinds (they carry policy_name, action, tags, message)
HOOK_EVENTS = ("process_kprobe", "process_tracepoint", "process_uprobe", "process_lsm", "process_usdt")
#: exit signals remembered (exec id -> signal), oldest forgotten first
MAX_EXITS = 65536

TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?")
_TAG_TECHNIQUE = re.compile(r"(?:^|[.:/_\-])(T\d{4}(?:\.\d{3})?)$", re.IGNORECASE)
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d{2}:\d{2})"
)


class TetragonSensor(JsonLinesSensor):
    """``path`` = the export file (``/var/run/cilium/tetragon/tetragon.log``), followed
    across Tetragon's rename-rotation; or ``command`` = ``tetra getevents -o json``."""

    NAME: ClassVar[str] = "tetragon"

    def __init__(self, name: str = "tetragon", path: str | None = None,
                 command: str | list[str] | None = None, from_start: bool = False,
                 delay: float = 0.0, node: str | None = None,
                 techniques: dict[str, str] | None = None,
                 events: list[str] | None = None) -> None:
        super().__init__(name, path, command, from_start, delay, node)
        self.techniques = _check_techniques(name, techniques or {})
        self.events = _check_events(name, events) if events is not None else HOOK_EVENTS
        self._exits: dict[str, str] = {}

    # ------------------------------------------------------------ health events
    def on_record(self, raw: dict[str, Any]) -> None:
        info = raw.get("rate_limit_info")
        if isinstance(info, dict):
            # the exporter's rate limit dropped events: a lossy window, never a miss
            try:
                dropped = _int(info.get("number_of_dropped_process_events"))
            except (TypeError, ValueError):
                dropped = None  # unreadable count: still at least one event lost
            self.stream.count_lost(1 if dropped is None else max(dropped, 0))
            return
        exit_ = raw.get("process_exit")
        if isinstance(exit_, dict):
            self._remember_exit(exit_)
            return
        super().on_record(raw)

    def _remember_exit(self, event: dict[str, Any]) -> None:
        process = _dict(event.get("process"))
        exec_id = _str(process.get("exec_id"))
        signal = _str(event.get("signal"))
        if not exec_id or not signal:
            return
        self._exits.pop(exec_id, None)
        self._exits[exec_id] = signal
        while len(self._exits) > MAX_EXITS:
            del self._exits[next(iter(self._exits))]

    def exit_signal(self, exec_id: str) -> str | None:
        """The signal (e.g. ``SIGKILL``) the process ``exec_id`` exited by, if its
        ``process_exit`` was read and it died by a signal; None otherwise."""
        return self._exits.get(exec_id)

    # ------------------------------------------------------------ parsing
    def normalise(self, raw: Any) -> Detection | None:
        """Pure: one decoded ``GetEventsResponse`` to a Detection (None: not one)."""
        if not isinstance(raw, dict):
            return None
        kind = next((k for k in self.events if k in raw), None)
        if kind is None:
            return None  # exec, exit, throttle, rate_limit_info, loader, unknown kinds
        event = raw[kind]
        if event is None:
            return None
        if not isinstance(event, dict):
            raise TypeError(f"{kind} is {type(event).__name__}, expected an object")
        policy = _str(event.get("policy_name"))
        if not policy:
            return None
        process = _dict(event.get("process"))
        parent = _dict(event.get("parent"))
        pod = _dict(process.get("pod"))
        container = _dict(pod.get("container"))
        function = _function(kind, event)
        tags = [str(t) for t in _list(event.get("tags"))]
        args = _list(event.get("args"))
        binary = _str(process.get("binary"))
        pod_fields = {"name": _str(pod.get("name")), "namespace": _str(pod.get("namespace"))}
        fields: dict[str, Any] = {
            "event": kind,
            "function_name": function,
            "policy_name": policy,
            "action": _str(event.get("action")),
            "return_action": _str(event.get("return_action")),
            "message": _str(event.get("message")),
            "tags": tags,
            "pod": pod_fields,
            "args": args,
            "return": event.get("return"),
            "exec_id": _str(process.get("exec_id")),
            "parent_exec_id": _str(process.get("parent_exec_id")),
            "ns_pid": _int(container.get("pid")),
            "uid": _int(process.get("uid")),
            "cwd": _str(process.get("cwd")),
            "arguments": _str(process.get("arguments")),
        }
        for key in ("subsys", "path", "symbol", "provider", "ima_hash"):
            if key in event:
                fields[key] = event[key]
        if "cluster_name" in raw:
            fields["cluster_name"] = raw["cluster_name"]
        node = _str(raw.get("node_name")) or self.node
        return Detection(
            sensor=self.name, rule=policy,
            technique=self._technique(policy, function, tags),
            severity=None, action=fields["action"], node=node,
            container_id=_container_id(container, process),
            pid=_int(process.get("pid")), ppid=_int(parent.get("pid")),
            ancestors=tuple(p for p in (_int(_dict(a).get("pid")) for a in
                                        _list(event.get("ancestors"))) if p is not None),
            comm=binary.rpartition("/")[2] if binary else None,
            names=_unique([binary, fields["arguments"], *_arg_names(args), pod_fields["name"]]),
            observed_at=_observed_at(raw, event), received_at=time.time(),
            fields=fields, raw=raw,
        )

    def _technique(self, policy: str, function: str | None, tags: list[str]) -> tuple[str, ...]:
        found = _unique(m.group(1).upper() for t in tags if (m := _TAG_TECHNIQUE.search(t)))
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
def _dict(value: Any) -> dict[str, Any]:
    """An object field, ``{}`` when missing or null (pod, container, parent ...)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def _str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: Any) -> int | None:
    """An integer field; protojson writes 64-bit integers as strings; wrapper types
    (``UInt32Value``) are bare numbers in protojson, ``{"value": n}`` elsewhere."""
    if isinstance(value, dict):
        value = value.get("value")
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return int(value)


def _unique(items: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


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
