"""Falco's alerts read: one alert object (a ``json_output`` line, an ``http_output`` body,
a Falcosidekick webhook payload) to a Detection, and the pure readers of its fields (tags,
process ancestry, timestamps, drop counts). No I/O: the transports live in ``falco.py``,
the loss bookkeeping in ``falco_loss.py``."""

from __future__ import annotations

import datetime
import re
import time
from typing import Any

from harness.core.detection import Detection, make_detection

#: rules Falco emits about itself (drops, timeouts, metrics snapshots): never detections
INTERNAL_PREFIX = "Falco internal:"
DROP_RULE = "Falco internal: syscall event drop"
METRICS_RULE = "Falco internal: metrics snapshot"
#: what to turn on when an alert carries no process ancestry (the MISSED near miss says it)
ANCESTRY_HINT = (
    "this Falco alert has no process ancestry beyond proc.ppid, so it can only match the "
    "run's own pids: add proc.pid, proc.ppid, proc.apid[2]..proc.apid[7], proc.vpid and "
    "proc.sid to every alert with append_output in falco.yaml (README, 'Falco: "
    "correlation')")
NO_PID_HINT = (
    "this Falco alert has no proc.pid: its rule's output prints no process id; add proc.pid, "
    "proc.ppid, proc.apid[2]..proc.apid[7], proc.vpid and proc.sid to every alert with "
    "append_output in falco.yaml (README, 'Falco: correlation')")
#: what Falcosidekick's ``/test`` endpoint forwards to its outputs (``source: internal``)
SIDEKICK_TEST_RULE = "Test rule"

_TECHNIQUE = re.compile(r"[Tt]\d{4}(?:\.\d{3})?")
_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?(?:[Zz]|([+-])(\d\d):?(\d\d))?"
)
_HOST = "host"  # Falco's container.id / container.name for a process outside any container


def normalise_alert(raw: Any, sensor: str, node: str | None) -> Detection | None:
    """Pure: one Falco alert (or Falcosidekick payload) to a Detection of ``sensor`` (``node``
    when the alert names no hostname); None for Falco's internal alerts and Falcosidekick's
    test event. Raises KeyError/TypeError/ValueError for a record that is not an alert (no
    ``rule``, ``output_fields`` not an object)."""
    if not isinstance(raw, dict):
        return None
    rule = raw["rule"]
    if not isinstance(rule, str) or not rule:
        raise ValueError(f"rule is not a non-empty string: {rule!r}")
    get = raw.get
    if rule.startswith(INTERNAL_PREFIX) or (
        rule == SIDEKICK_TEST_RULE and get("source") == "internal"
    ):
        return None
    of = get("output_fields") or {}
    tags = get("tags") or ()
    if not isinstance(of, dict):
        raise TypeError(f"output_fields is not an object: {type(of).__name__}")
    techniques, tactics = _split_tags(tags)
    oget = of.get
    container_id = _text(oget("container.full_id")) or _text(oget("container.id"))
    if container_id == _HOST:
        container_id = None
    container_name = _text(oget("container.name")) if container_id else None
    pod = _text(oget("k8s.pod.name")) or _text(oget("k8smeta.pod.name"))
    namespace = _text(oget("k8s.ns.name")) or _text(oget("k8smeta.ns.name"))
    priority = get("priority")
    hostname = _text(get("hostname"))

    fields = dict(of)  # Falco's own names (fd.name, k8s.pod.name): Detection.value reads them
    fields["source"] = get("source")
    # tuples of strings: the collector stops walking them (and then ``fields``) after one
    # pass, so a long session's kept detections cost the cyclic collector ~nothing
    fields["tags"] = tuple(tags)
    fields["tactics"] = tactics
    if pod:
        fields["pod"] = pod
    if namespace:
        fields["namespace"] = namespace
    if "uuid" in raw:
        fields["uuid"] = raw["uuid"]
    names = [n for n in (_text(get("output")), _text(oget("proc.cmdline")),
                         _text(oget("fd.name")), container_name, pod) if n]
    pid = number(oget("proc.pid"))
    if pid is None:
        pid = number(oget("proc.apid[0]"))
    ppid = number(oget("proc.ppid"))
    if ppid is None:
        ppid = number(oget("proc.apid[1]"))
    ancestors = _ancestors(of, pid, container_id) if (_APID2 in of or _SID in of) else ()
    if hint := _ancestry_hint(get("source"), pid, ancestors):
        fields["correlation_hint"] = hint
    return make_detection(
        sensor, rule, techniques,
        priority.lower() if isinstance(priority, str) and priority else None,
        None, hostname or node, container_id, None, pid, ppid, ancestors,
        _text(oget("proc.name")), tuple(names), _observed_at(raw, of), time.time(), fields,
        raw,
    )


# ---------------------------------------------------------------- helpers (pure)
def _text(value: Any) -> str | None:
    """A field's text; None for null, empty and Falco's ``<NA>``."""
    if isinstance(value, str) and value and value != "<NA>":
        return value
    return None


def number(value: Any) -> int | None:
    """An alert field's integer: Falco prints numbers as JSON numbers, internal alerts as
    numeric strings; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _split_tags(tags: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """ATT&CK technique ids (``T1611``, ``T1055.008``) and tactic tags (``mitre_*``)."""
    if not isinstance(tags, list | tuple):
        raise TypeError(f"tags is not an array: {type(tags).__name__}")
    try:  # a rule's tags repeat on every alert it raises
        key = tuple(tags)
        techniques, tactics = _TAGS[key]
    except KeyError:
        techniques, tactics = _TAGS[key] = _read_tags(tags)
        if len(_TAGS) > _TAGS_MAX:
            _TAGS.clear()
    except TypeError:  # an unhashable tag (an object): not cached
        techniques, tactics = _read_tags(tags)
    return techniques, tactics


#: tags -> (techniques, tactics), for _split_tags
_TAGS: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
_TAGS_MAX = 4096


def _read_tags(tags: list[Any] | tuple[Any, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    techniques: list[str] = []
    tactics: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            continue
        if _TECHNIQUE.fullmatch(tag):
            techniques.append(tag.upper())
        elif tag.startswith("mitre_"):
            tactics.append(tag)
    return tuple(techniques), tuple(tactics)


def drops(raw: dict[str, Any]) -> int:
    of = raw.get("output_fields")
    n = number(of.get("n_drops")) if isinstance(of, dict) else None
    return n if n is not None and n > 0 else 1


def _ancestry_hint(source: Any, pid: int | None, ancestors: tuple[int, ...]) -> str | None:
    """What to turn on when a syscall alert cannot be tied to a run's process tree (plugin
    sources such as k8s_audit have no process to correlate)."""
    if source != "syscall":
        return None
    if pid is None:
        return NO_PID_HINT
    return None if ancestors else ANCESTRY_HINT


_APID2 = "proc.apid[2]"
_SID = "proc.sid"
_APID = re.compile(r"proc\.apid\[(\d+)\]")


def ancestors_of(of: dict[str, Any], pid: int | None,
                 container_id: str | None) -> tuple[int, ...]:
    """``_ancestors`` for any record carrying Falco's field names (Sysdig Secure's
    Falco-type events: ``content.fields``); () when it has no ancestry field."""
    if _APID2 in of or _SID in of:
        return _ancestors(of, pid, container_id)
    return ()


def _ancestors(of: dict[str, Any], pid: int | None,
               container_id: str | None) -> tuple[int, ...]:
    """The alert's ancestor pids past the parent, nearest first: ``proc.apid[2]``,
    ``proc.apid[3]`` ... (Falco's own process tree, as a rule's output or append_output
    prints them; gaps and ``<NA>`` skipped), then ``proc.sid``: the session leader, which
    is the stage the harness started (each stage runs in a session of its own) unless the
    attack called setsid itself. The session id is taken only for a process in the host's
    pid namespace (``proc.vpid == proc.pid``, or no vpid and no container): Falco may give
    a namespaced process's session id as seen inside its namespace."""
    out: list[tuple[int, int]] = []
    if _APID2 in of:
        for key, value in of.items():
            m = _APID.fullmatch(key)
            if m is None or int(m.group(1)) < 2:
                continue
            apid = number(value)
            if apid and apid > 0:
                out.append((int(m.group(1)), apid))
        out.sort()
    chain = [apid for _, apid in out]
    sid = number(of.get(_SID))
    vpid = number(of.get("proc.vpid"))
    host = (vpid == pid) if vpid is not None else container_id is None
    if sid is not None and sid > 1 and host and sid != pid and sid not in chain:
        chain.append(sid)
    return tuple(chain)


def parse_time(text: str) -> float | None:
    """RFC 3339 with up to nanoseconds (Falco ``time``, Go's RFC3339Nano in Falcosidekick)
    to epoch seconds; no offset means UTC. None when it is not such a timestamp."""
    # Falco's own form, ``2025-11-03T14:02:11.123456789Z``, once its first 19 characters
    # (date and time to the second) were read by the full path below: the same sum
    secs = _SECONDS.get(text[:19])
    if (secs is not None and len(text) == 30 and text[19] == "." and text[29] == "Z"
            and text[20:29].isdecimal()):
        return secs + int(text[20:29]) / 1e9
    m = _TIME.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    # calendar.timegm's arithmetic, with the days before the month looked up once per month
    secs = (((_days_before(int(year), int(month)) + int(day) - 1) * 24 + int(hour)) * 60
            + int(minute)) * 60 + int(second)
    if len(_SECONDS) >= 4096:
        _SECONDS.clear()
    _SECONDS[text[:19]] = secs
    if sign:
        offset = int(oh) * 3600 + int(om) * 60
        secs += -offset if sign == "+" else offset
    return secs + int(frac[:9].ljust(9, "0")) / 1e9 if frac else float(secs)


#: the first 19 characters of a timestamp parse_time read (``YYYY-MM-DDTHH:MM:SS``) -> its
#: epoch seconds before any offset
_SECONDS: dict[str, int] = {}
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_MONTHS: dict[tuple[int, int], int] = {}


def _days_before(year: int, month: int) -> int:
    """Days from 1970-01-01 to the first of ``month`` (ValueError for a month or year that
    does not exist, as calendar.timegm)."""
    try:
        return _MONTHS[year, month]
    except KeyError:
        days = _MONTHS[year, month] = datetime.date(year, month, 1).toordinal() - _EPOCH_ORDINAL
        if len(_MONTHS) > 4096:
            _MONTHS.clear()
        return days


def record_time(raw: dict[str, Any]) -> float:
    """A record's own time (``time``, else ``output_fields.evt.time``); the harness's clock
    when it has none."""
    of = raw.get("output_fields")
    return _observed_at(raw, of if isinstance(of, dict) else {}) or time.time()


def _observed_at(raw: dict[str, Any], of: dict[str, Any]) -> float:
    stamp = raw.get("time")
    if isinstance(stamp, str):
        parsed = parse_time(stamp)
        if parsed is not None:
            return parsed
    ns = number(of.get("evt.time"))
    return ns / 1e9 if ns else 0.0
