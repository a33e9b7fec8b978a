"""Tracee: its JSON events (``tracee --output json`` to a file, or run as a command).

Reads both event shapes Tracee has written: the current ``v1beta1.Event`` (``name``,
``timestamp{seconds,nanos}``, ``workload{process, container, k8s}``, ``threat``) and the
legacy ``trace.Event`` (``eventName``, ``timestamp`` in ns, ``hostProcessId``,
``metadata{Properties}``). Only signature findings are detections (a ``threat`` object,
or legacy ``metadata.Properties``); plain syscall/trace events are not. The pid is the
host pid (the harness correlates by the host pids it started); the namespace pid is
kept in ``fields["ns_pid"]``. Tracee's events carry no node name: ``node`` is the
configured one (legacy ``hostName`` is the process's UTS name, kept in fields).

No sync: Tracee gives no point in its output before which everything earlier was written
(events may come out unordered, and a finding is derived after the event that raised it),
so a window is waited out and the row says why (``sync_hint``).
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, ClassVar

from harness.core.detection import Detection, keep_raw
from harness.sensors.fields import array as _list
from harness.sensors.fields import integer as _int
from harness.sensors.fields import obj as _dict
from harness.sensors.fields import text as _str
from harness.sensors.fields import unique as _unique
from harness.sensors.jsonlines import JsonLinesSensor
from harness.sensors.rulepack import SEEN, reported_pack
from harness.sensors.tetragon_events import TECHNIQUE, parse_rfc3339

#: legacy ``Properties.Severity`` (and the v1beta1 enum's numbers)
SEVERITIES = ("info", "low", "medium", "high", "critical")
#: legacy ``Properties`` keys that only a signature finding has
_SIGNATURE_KEYS = ("Severity", "Technique", "external_id", "Category", "signatureID", "id")
_MAX_DEPTH = 4
#: process entities remembered for rebuilding ancestry (entity id -> host pid, parent id)
TREE_MAX = 65_536
_WALK_MAX = 32
#: what to turn on when a finding carries no ancestry (the MISSED near miss says it)
NO_PARENT_HINT = (
    "this Tracee finding has no parent process: run Tracee with --proctree source=both (v1beta1 "
    "findings then carry workload.process.ancestors) and select sched_process_fork and "
    "sched_process_exec too (--events), so the harness can rebuild the process tree from "
    "entity ids")
ANCESTRY_HINT = (
    "this Tracee finding names only its parent process, so it can only match a run's "
    "direct children: run Tracee with --proctree source=both (v1beta1 findings then carry "
    "workload.process.ancestors), or select sched_process_fork and sched_process_exec too "
    "(--events), so the harness can rebuild the process tree from entity ids")
#: why a Tracee window is waited out (a healthy MISSED row says it)
SYNC_HINT = (
    "Tracee not synced: the window was waited out; Tracee has no marker the harness could "
    "wait for (its events may be written out of order, and a signature finding only after "
    "the event it was derived from), so a miss is proved only when the window ends")
#: 1973 in ns: a smaller legacy timestamp is relative to boot, not the epoch
_EPOCH_NS_FLOOR = 10**17


class TraceeSensor(JsonLinesSensor):
    """``path`` = the JSON events file Tracee writes (followed across rotation and
    truncation), or ``command`` = a program printing them."""

    NAME: ClassVar[str] = "tracee"
    PRODUCT: ClassVar[str] = "Tracee"
    LIFE_HINT: ClassVar[str] = (
        "Tracee writes only the events it was asked for: also select a frequent one (e.g. "
        "--events sched_process_exec, which every run causes); or set pid = <Tracee's pid> "
        "(e.g. systemctl show -p MainPID tracee) or pidfile = '<a file holding it>' for this "
        "sensor")

    def __init__(self, name: str = "tracee", path: str | None = None,
                 command: str | list[str] | None = None, from_start: bool = False,
                 delay: float = 0.0, node: str | None = None, version: str | None = None,
                 pid: int | None = None, pidfile: str | None = None) -> None:
        super().__init__(name, path, command, from_start, delay, node, pid, pidfile)
        self.version = version  # tracee / signatures version (results rows' rulepack only)
        #: Tracee's process tree as its events showed it: entity id (legacy
        #: processEntityId, v1beta1 unique_id) -> (host pid, parent entity id); bounded
        self.tree: OrderedDict[int, tuple[int | None, int | None]] = OrderedDict()

    @property
    def sync_hint(self) -> str | None:
        """Why every window of this sensor is waited out: it cannot be synced."""
        return SYNC_HINT

    # ------------------------------------------------------------ process tree
    def on_record(self, raw: dict[str, Any]) -> None:
        """Learn the process tree from every event (plain events too: sched_process_exec,
        sched_process_fork), then push the finding, if it is one, with the ancestry the
        tree adds and a hint when it has none."""
        self.learn(raw)
        det = self.normalise(raw)
        if det is None:
            return
        det = self.with_tree(det, raw)
        if self._line is not None:
            keep_raw(det, self._line)
        self.stream.push(det)

    def learn(self, raw: dict[str, Any]) -> None:
        """Record each (entity id -> host pid, parent entity id) the event shows."""
        try:
            links = _links(raw)
        except (TypeError, ValueError):
            return  # normalise counts the line malformed if it is a finding
        tree = self.tree
        for entity, pid, parent in links:
            old = tree.get(entity)
            if old is not None:
                tree.move_to_end(entity)
                tree[entity] = (pid if pid is not None else old[0],
                                parent if parent is not None else old[1])
            else:
                tree[entity] = (pid, parent)
        while len(tree) > TREE_MAX:
            tree.popitem(last=False)

    def with_tree(self, det: Detection, raw: dict[str, Any]) -> Detection:
        """``det`` with the ancestors the remembered tree adds past what the event says
        (the event's own first), and a ``correlation_hint`` when it still has none."""
        try:
            links = _links(raw)
        except (TypeError, ValueError):
            links = []
        chain: list[int] = []
        if links:
            seen: set[int] = set()
            entity: int | None = links[0][0]
            while entity is not None and entity not in seen and len(chain) < _WALK_MAX:
                seen.add(entity)
                entry = self.tree.get(entity)
                if entry is None:
                    break
                parent = entry[1]
                above = self.tree.get(parent) if parent is not None else None
                if above is not None and above[0] is not None:
                    chain.append(above[0])
                entity = parent
        full = [p for p in (det.ppid, *det.ancestors) if p is not None]
        for pid in chain:
            if pid not in full and pid != det.pid:
                full.append(pid)
        if full[1:] != list(det.ancestors) or (full and det.ppid is None):
            det = dataclasses.replace(det, ppid=full[0], ancestors=tuple(full[1:]))
        if not full:
            det.fields["correlation_hint"] = NO_PARENT_HINT
        elif len(full) == 1:
            det.fields["correlation_hint"] = ANCESTRY_HINT
        return det

    def normalise(self, raw: Any) -> Detection | None:
        """Pure: one decoded Tracee event (either shape) to a Detection (None: not one)."""
        if not isinstance(raw, dict):
            return None
        if "eventName" in raw or "processId" in raw or "hostProcessId" in raw:
            det = self._legacy(raw)
        else:
            det = self._v1beta1(raw)
        metadata = raw.get("metadata")
        if det is not None and isinstance(metadata, dict) and metadata.get("Version"):
            det.fields[SEEN] = (f"signature:{det.rule}@{metadata['Version']}",)
        return det

    def rulepack(self) -> dict[str, Any]:
        """Tracee's events carry no rule-pack identity: the configured ``version``."""
        return reported_pack("tracee", self.version)

    # ------------------------------------------------------------ v1beta1.Event
    def _v1beta1(self, raw: dict[str, Any]) -> Detection | None:
        threat = raw.get("threat")
        if threat is None:
            return None  # a plain event: only signature findings carry a threat
        if not isinstance(threat, dict):
            raise TypeError(f"threat is {type(threat).__name__}, expected an object")
        rule = _str(raw.get("name"))
        if not rule:
            raise ValueError("v1beta1 event with a threat but no name")
        workload = _dict(raw.get("workload") or raw.get("context"))  # "context": early v1beta1
        process = _dict(workload.get("process"))
        thread = _dict(process.get("thread"))
        container = _dict(workload.get("container"))
        k8s = _dict(workload.get("k8s"))
        pod = _dict(k8s.get("pod") or workload.get("pod"))  # the doc's table says workload.pod
        namespace = _dict(k8s.get("namespace"))
        mitre = _dict(threat.get("mitre"))
        technique = _dict(mitre.get("technique"))
        properties = _dict(threat.get("properties"))
        container_id = _container_id(container.get("id"))
        ns_pid = _int(process.get("pid"))
        host_pid = _int(_first(process, "host_pid", "hostPid"))
        if host_pid is None and _int(process.get("namespaced_pid")) is not None:
            host_pid, ns_pid = ns_pid, _int(process.get("namespaced_pid"))  # early v1beta1
        elif host_pid is None and container_id is None:
            host_pid = ns_pid  # a host process: its pid namespace is the host's
        chain = [_host_pid(_dict(a)) for a in _list(process.get("ancestors"))]
        if not chain and isinstance(process.get("parent"), dict):
            chain = [_host_pid(process["parent"])]
        executable = _str(_dict(process.get("executable")).get("path"))
        pod_name = _str(pod.get("name"))
        data = _list(raw.get("data"))
        detected_from = _dict(raw.get("detected_from"))
        fields: dict[str, Any] = {
            "format": "v1beta1",
            "event_id": raw.get("id"),
            "threat_name": _str(threat.get("name")),
            "description": _str(threat.get("description")),
            "tactic": _str(_dict(mitre.get("tactic")).get("name")),
            "technique_name": _str(technique.get("name")),
            "signature_id": _str(properties.get("signatureID")) or _str(properties.get("id")),
            "properties": properties,
            "policies": [str(p) for p in _list(_dict(raw.get("policies")).get("matched"))],
            "pod": {"name": pod_name, "namespace": _str(namespace.get("name"))},
            "container_name": _str(container.get("name")),
            "image": _str(_dict(container.get("image")).get("name")),
            "ns_pid": ns_pid,
            "tid": _int(_first(thread, "host_tid", "hostTid", "tid")),
            "syscall": _str(thread.get("syscall")),
            "executable": executable,
            "data": data,
            "detected_from": _str(detected_from.get("name")),
        }
        names = [executable, pod_name, *_strings(data), *_strings(_list(detected_from.get("data")))]
        return Detection(
            sensor=self.name, rule=rule,
            technique=_techniques(technique.get("id"), properties.get("external_id")),
            severity=_severity(threat.get("severity"), default=None),
            node=self.node, container_id=container_id,
            pid=host_pid, ppid=chain[0] if chain else None,
            ancestors=tuple(p for p in chain[1:] if p is not None),
            comm=_str(thread.get("name")) or _basename(executable),
            names=_unique(names), observed_at=_v1_time(raw.get("timestamp")),
            received_at=time.time(), fields=fields, raw=raw,
        )

    # ------------------------------------------------------------ legacy trace.Event
    def _legacy(self, raw: dict[str, Any]) -> Detection | None:
        metadata = raw.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        properties = _dict(metadata.get("Properties"))
        if not any(properties.get(k) not in (None, "") for k in _SIGNATURE_KEYS):
            return None
        rule = _str(raw.get("eventName"))
        if not rule:
            raise ValueError("legacy signature event without eventName")
        container = _dict(raw.get("container"))
        kubernetes = _dict(raw.get("kubernetes"))
        container_id = _container_id(raw.get("containerId") or container.get("id"))
        ns_pid = _int(raw.get("processId"))
        host_pid = _int(raw.get("hostProcessId"))
        if host_pid is None and container_id is None:
            host_pid = ns_pid
        args = _list(raw.get("args"))
        pod_name = _str(kubernetes.get("podName"))
        executable = _executable(raw)
        fields: dict[str, Any] = {
            "format": "legacy",
            "event_id": raw.get("eventId"),
            "description": _str(metadata.get("Description")),
            "category": _str(properties.get("Category")),
            "technique_name": _str(properties.get("Technique")),
            "kubernetes_technique": _str(properties.get("Kubernetes_Technique")),
            "signature_id": _str(properties.get("signatureID")) or _signature_id(properties.get("id")),
            "attack_pattern": _str(properties.get("id")),
            "properties": properties,
            "tags": [str(t) for t in _list(metadata.get("Tags"))],
            "policies": [str(p) for p in _list(raw.get("matchedPolicies"))],
            "pod": {"name": pod_name, "namespace": _str(kubernetes.get("podNamespace"))},
            "container_name": _str(container.get("name")),
            "image": _str(container.get("image")),
            "hostname": _str(raw.get("hostName")),
            "ns_pid": ns_pid,
            "ns_ppid": _int(raw.get("parentProcessId")),
            "tid": _int(raw.get("hostThreadId")) or _int(raw.get("threadId")),
            "executable": executable,
            "args": args,
        }
        return Detection(
            sensor=self.name, rule=rule,
            technique=_techniques(properties.get("external_id"), properties.get("Technique")),
            severity=_severity(properties.get("Severity"), default=None),
            node=self.node, container_id=container_id,
            pid=host_pid, ppid=_int(raw.get("hostParentProcessId")),
            comm=_str(raw.get("processName")),
            names=_unique([executable, pod_name, *_strings(args)]),
            observed_at=_legacy_time(raw.get("timestamp")), received_at=time.time(),
            fields=fields, raw=raw,
        )


# ---------------------------------------------------------------- field readers








def _links(raw: dict[str, Any]) -> list[tuple[int, int | None, int | None]]:
    """(entity id, host pid, parent entity id) the event shows, its own process first:
    legacy ``processEntityId``/``hostProcessId``/``parentEntityId`` (and the parent's
    ``hostParentProcessId``); v1beta1 ``workload.process`` and each of its ``ancestors``
    (``unique_id``, ``host_pid``), nearest first."""
    if "eventName" in raw or "processId" in raw or "hostProcessId" in raw:
        entity = _int(raw.get("processEntityId")) or None
        if entity is None:
            return []
        parent = _int(raw.get("parentEntityId")) or None  # 0: none
        links = [(entity, _int(raw.get("hostProcessId")), parent)]
        if parent is not None:
            links.append((parent, _int(raw.get("hostParentProcessId")), None))
        return links
    workload = _dict(raw.get("workload") or raw.get("context"))
    process = _dict(workload.get("process"))
    ancestors = [_dict(a) for a in _list(process.get("ancestors"))]
    own = _int(process.get("unique_id")) or _int(_dict(process.get("thread")).get("unique_id"))
    procs = [(own, process), *((_int(a.get("unique_id")), a) for a in ancestors)]
    out: list[tuple[int, int | None, int | None]] = []
    for i, (entity, proc) in enumerate(procs):
        if entity is None:
            break
        parent = procs[i + 1][0] if i + 1 < len(procs) else None
        out.append((entity, _int(_first(proc, "host_pid", "hostPid")), parent))
    return out


def _first(obj: dict[str, Any], *keys: str) -> Any:
    return next((obj[k] for k in keys if obj.get(k) not in (None, "")), None)


def _host_pid(process: dict[str, Any]) -> int | None:
    return _int(_first(process, "host_pid", "hostPid", "pid"))




def _basename(path: str | None) -> str | None:
    return path.rpartition("/")[2] or None if path else None


def _container_id(value: Any) -> str | None:
    cid = _str(value)
    return cid.rpartition("://")[2] or None if cid else None


def _techniques(*candidates: Any) -> tuple[str, ...]:
    """ATT&CK ids among the candidates (T-ids only: ``attack-pattern--…`` and names are not)."""
    return _unique(c.strip().upper() for c in candidates
                   if isinstance(c, str) and TECHNIQUE.fullmatch(c.strip().upper()))


def _severity(value: Any, default: str | None) -> str | None:
    """v1beta1 enum name (``HIGH``) or number, legacy int 0..4 -> ``info`` .. ``critical``."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise TypeError("severity is a boolean")
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        return value.strip().lower()
    level = int(value)
    return SEVERITIES[min(max(level, 0), len(SEVERITIES) - 1)]


def _signature_id(value: Any) -> str | None:
    sid = _str(value)
    return sid if sid and sid.upper().startswith("TRC-") else None


def _executable(raw: dict[str, Any]) -> str | None:
    """``executable.path`` (late legacy versions), else a path among the args."""
    path = _dict(raw.get("executable")).get("path")
    if isinstance(path, str) and path:
        return path
    for arg in _list(raw.get("args")):
        if isinstance(arg, dict) and arg.get("name") in ("pathname", "exe_path", "binary.path"):
            path = arg.get("value")
            if isinstance(path, str) and path.startswith("/"):
                return path
    return None


def _strings(values: list[Any], depth: int = 0) -> Iterator[str]:
    """String values of event data/args: ``str``, ``str_array.value``, legacy ``value``
    (strings, lists of strings, and a ``triggeredBy`` event's own args)."""
    if depth > _MAX_DEPTH:
        return
    for item in values:
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            yield from _strings(item, depth + 1)
        elif isinstance(item, dict):
            for key in ("str", "value", "str_array", "args"):
                value = item.get(key)
                if isinstance(value, str):
                    yield value
                elif isinstance(value, list):
                    yield from _strings(value, depth + 1)
                elif isinstance(value, dict):
                    yield from _strings([value], depth + 1)


def _v1_time(stamp: Any) -> float:
    """``{seconds, nanos}`` (seconds may be a string: protojson int64) or RFC 3339."""
    try:
        if isinstance(stamp, str):
            return parse_rfc3339(stamp)
        if isinstance(stamp, dict):
            seconds = _int(stamp.get("seconds")) or 0
            nanos = _int(stamp.get("nanos")) or 0
            return seconds + nanos / 1e9
    except (ValueError, OverflowError):
        pass
    return 0.0


def _legacy_time(stamp: Any) -> float:
    """Nanoseconds since the epoch (Tracee's default; with ``--output option:relative-time``
    it is since boot and cannot be placed: latency then counts from the run's start)."""
    if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp < _EPOCH_NS_FLOOR:
        return 0.0
    try:
        return stamp / 1e9
    except OverflowError:
        return 0.0
