"""Tetragon's export decoded: a line's first look (``Envelope``: exec/clone/exit lines read
without building a dict), a policy hook's event to a Detection (``hook_detection``), the
configuration checks of its options, and the field and time readers. Pure: no I/O."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from harness.core.detection import Detection, make_detection
from harness.core.errors import ConfigError
from harness.sensors.fields import array as _list
from harness.sensors.fields import integer as _int
from harness.sensors.fields import obj as _dict
from harness.sensors.fields import text as _str
from harness.sensors.fields import unique as _unique
from harness.sensors.rulepack import SEEN

#: GetEventsResponse keys that are not the event itself
ENVELOPE = frozenset({"node_name", "time", "aggregation_info", "cluster_name", "node_labels"})
#: policy-hook event kinds (they carry policy_name, action, tags, message)
HOOK_EVENTS = ("process_kprobe", "process_tracepoint", "process_uprobe", "process_lsm", "process_usdt")
#: event keys copied to ``fields`` when present (tracepoint subsystem, uprobe path/symbol ...)
_EXTRA_KEYS = ("subsys", "path", "symbol", "provider", "ima_hash")
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
class Proc(msgspec.Struct, gc=False):
    exec_id: str | None = None
    pid: int | None = None
    parent_exec_id: str | None = None


class ProcEvent(msgspec.Struct, gc=False):
    process: Proc | None = None
    parent: Proc | None = None
    signal: str | None = None


class Envelope(msgspec.Struct, gc=False):
    time: str | None = None
    rate_limit_info: msgspec.Raw = _NO_EVENT
    process_exec: ProcEvent | None = None
    process_clone: ProcEvent | None = None
    process_exit: ProcEvent | None = None
    process_kprobe: msgspec.Raw = _NO_EVENT
    process_tracepoint: msgspec.Raw = _NO_EVENT
    process_uprobe: msgspec.Raw = _NO_EVENT
    process_lsm: msgspec.Raw = _NO_EVENT
    process_usdt: msgspec.Raw = _NO_EVENT


envelope = msgspec.json.Decoder(Envelope)


def hook_detection(sensor: str, node: str | None, raw: dict[str, Any], kind: str,
                   event: dict[str, Any], policy: str,
                   ancestry: Callable[[str | None], tuple[int, ...]],
                   technique: Callable[[str, str | None, list[str]], tuple[str, ...]],
                   ) -> Detection:
    """One policy hook's event (``kind``, decoded from the ``GetEventsResponse`` ``raw``) to a
    Detection of ``sensor``: ancestors from the event's own ``ancestors`` and ``ancestry``
    (the pids above an exec id, ``ProcessTree.ancestry``); the
    technique from ``technique(policy, function, tags)``; what it reports about its rules in
    ``fields[rulepack.SEEN]``."""
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
    binary = text_of(pget("binary"))
    pod_name = text_of(pod.get("name"))
    pod_fields = {"name": pod_name, "namespace": text_of(pod.get("namespace"))}
    action = text_of(get("action"))
    arguments = text_of(pget("arguments"))
    fields: dict[str, Any] = {
        "event": kind,
        "function_name": function,
        "policy_name": policy,
        "action": action,
        "return_action": text_of(get("return_action")),
        "message": text_of(get("message")),
        "tags": tags,
        "pod": pod_fields,
        "args": args,
        "return": get("return"),
        "exec_id": text_of(pget("exec_id")),
        "parent_exec_id": text_of(pget("parent_exec_id")),
        "ns_pid": number(container.get("pid")),
        "uid": number(pget("uid")),
        "cwd": text_of(pget("cwd")),
        "arguments": arguments,
        SEEN: (f"policy:{policy}",),
    }
    for key in _EXTRA_KEYS:
        if key in event:
            fields[key] = event[key]
    if "cluster_name" in raw:
        fields["cluster_name"] = raw["cluster_name"]
    node = text_of(raw.get("node_name")) or node
    exported = get("ancestors")
    exported_pids = () if exported is None else tuple(
        p for p in (_int(_dict(a).get("pid")) for a in _list(exported)) if p is not None)
    ppid = number(parent.get("pid"))
    tree = tuple(p for p in ancestry(fields["exec_id"]) if p != ppid)
    ancestors = _unique_ints(exported_pids + tree)
    if not ancestors:
        # nothing above the parent: neither exec lines nor ``ancestors`` were exported
        fields["correlation_hint"] = ANCESTRY_HINT
    names = [binary, arguments]
    if args:
        names.extend(_arg_names(args))
    names.append(pod_name)
    return make_detection(
        sensor, policy, technique(policy, function, tags), None, action, node,
        _container_id(container, process), None, number(pget("pid")), ppid, ancestors,
        binary.rpartition("/")[2] if binary else None,
        _unique(names), _observed_at(raw, event), time.time(), fields, raw,
    )


# ---------------------------------------------------------------- config checks
def check_techniques(name: str, techniques: dict[str, str]) -> dict[str, str]:
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


def check_events(name: str, events: list[str]) -> tuple[str, ...]:
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
def utc(epoch: float) -> str:
    """Epoch seconds to protojson's UTC form (``...T..:..:..NNNNNNNNNZ``)."""
    whole = int(epoch // 1)
    nanos = round((epoch - whole) * 1e9)
    stamp = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


class StampSpan:
    """The span of the export's ``time`` stamps read so far (a recording's sign of life,
    ``ReplaySensor.silence``). Kept as comparable keys (second, nanoseconds) and parsed only
    when read: a line costs two string compares."""

    #: the keys before any line was read (above / below every real key)
    NONE_FIRST = ("~", "")
    NONE_LAST = ("", "")

    def __init__(self) -> None:
        self.first_key = self.NONE_FIRST
        self.last_key = self.NONE_LAST

    def saw(self, stamp: str) -> None:
        """One line's ``time``."""
        if len(stamp) < 20 or stamp[-1] != "Z" or stamp[19] not in ".Z":
            try:  # not protojson's UTC form: parse it once
                stamp = utc(parse_rfc3339(stamp))
            except ValueError:
                return
        key = (stamp[:19], stamp[20:-1].ljust(9, "0"))
        if key > self.last_key:  # noqa: PLR1730 (min()/max() cost a call each, every line)
            self.last_key = key
        if key < self.first_key:  # noqa: PLR1730
            self.first_key = key

    @property
    def first(self) -> float:
        """The earliest time read (epoch seconds; 0.0: none yet)."""
        return self._epoch(self.first_key)

    @property
    def last(self) -> float:
        """The latest time read (epoch seconds; 0.0: none yet)."""
        return self._epoch(self.last_key)

    def _epoch(self, key: tuple[str, str]) -> float:
        if key in (self.NONE_FIRST, self.NONE_LAST):
            return 0.0
        return parse_rfc3339(f"{key[0]}.{key[1]}Z")


def _unique_ints(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(values))


def text_of(value: Any) -> str | None:
    """``_str`` with its common case (a non-empty str) first."""
    if value.__class__ is str and value:
        return value
    return _str(value)


def number(value: Any) -> int | None:
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
