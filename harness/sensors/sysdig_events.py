"""Sysdig Secure's events read: one Event of the Events API (wire camelCase or the SDK's
snake_case) to a Detection, and the pure readers of its fields and MITRE tags. No I/O: the
poller lives in ``sysdig.py``.

Correlation: a Falco-type event's ``content.fields`` hold the fields its rule's output
prints; its ancestors are Falco's ``proc.apid[2..]`` and ``proc.sid`` there. A syscall event
of a Falco rule without them carries ``fields['correlation_hint']`` (what to print)."""

from __future__ import annotations

import re
from typing import Any

from harness.core.detection import Detection
from harness.sensors.falco_alerts import ancestors_of
from harness.sensors.rulepack import SEEN

_TECHNIQUE = re.compile(r"(?<![A-Za-z0-9])T(\d{4})(\.\d{3})?(?![0-9]|\.[0-9])", re.IGNORECASE)
_TACTIC_ID = re.compile(r"(?<![A-Za-z0-9])TA(\d{4})(?![0-9])", re.IGNORECASE)
#: what to print when a Falco-rule event carries no ancestry (the MISSED near miss says it)
_FIELDS = ("proc.pid, proc.ppid, proc.apid[2]..proc.apid[7], proc.vpid and proc.sid in the "
           "output of the Falco rules your runtime policies use (custom rules: Sysdig puts the "
           "fields a rule's output prints in its events' content.fields; README, 'Sysdig "
           "Secure correlation')")
ANCESTRY_HINT = ("this Sysdig Secure event has no process ancestry beyond proc.ppid, so it "
                 "can only match the run's own pids: print " + _FIELDS)
NO_PID_HINT = ("this Sysdig Secure event has no proc.pid: its rule's output prints no process "
               "id; print " + _FIELDS)
_SEVERITY = {0: "high", 1: "high", 2: "high", 3: "high", 4: "medium", 5: "medium", 6: "low",
             7: "info"}


def normalise_event(raw: Any, sensor: str) -> Detection | None:
    """Pure: one Event to a Detection of ``sensor``; None when it is not an event object."""
    if not isinstance(raw, dict):
        return None
    content = _dict(raw.get("content"))
    cfields = _dict(content.get("fields"))
    labels = _dict(raw.get("labels"))
    rule = _get(content, "ruleName", "rule_name") or raw.get("name")
    if not rule:
        return None
    tags = [str(t) for t in _list(_get(content, "ruleTags", "rule_tags")) if t is not None]
    techniques = mitre_techniques(tags)
    actions = [a for a in _list(raw.get("actions")) if a is not None]
    action_types = [str(a["type"]) for a in actions if isinstance(a, dict) and a.get("type")]
    container = _field(cfields, labels, "container.id")
    if container is not None and container.lower() == "host":
        container = None
    pod = _field(labels, cfields, "kubernetes.pod.name")
    names = tuple(dict.fromkeys(
        str(v) for v in (
            content.get("output"), _field(cfields, labels, "proc.cmdline"),
            _field(cfields, labels, "fd.name"), _field(cfields, labels, "container.name"), pod,
        ) if v not in (None, "")
    ))
    severity_code = integer(raw.get("severity"))
    fields: dict[str, Any] = {
        "id": raw.get("id"),
        "policy": raw.get("name"),
        "policy_id": _get(content, "policyId", "policy_id"),
        "description": raw.get("description"),
        "engine": raw.get("engine"),
        "originator": raw.get("originator"),
        "category": raw.get("category"),
        "source": raw.get("source"),
        "raw_event_originator": _get(raw, "rawEventOriginator", "raw_event_originator"),
        "raw_event_category": _get(raw, "rawEventCategory", "raw_event_category"),
        "content_type": content.get("type"),
        "rule_type": _get(content, "ruleType", "rule_type"),
        "rule_sub_type": _get(content, "ruleSubType", "rule_sub_type"),
        "rule_tags": tags,
        "tactics": mitre_tactics(tags),
        "severity_code": severity_code,
        "actions": actions,
        "namespace": _field(labels, cfields, "kubernetes.namespace.name"),
        "pod": pod,
        "cluster": _field(labels, cfields, "kubernetes.cluster.name"),
        "container_name": _field(cfields, labels, "container.name"),
        "image": _field(cfields, labels, "container.image.repo"),
        "user": _field(cfields, labels, "user.name"),
        "pcomm": _field(cfields, labels, "proc.pname"),
        "output": content.get("output"),
        "event_fields": cfields,
        "labels": labels,
    }
    if raw.get("name"):  # what it reports about the rules that produced it
        fields[SEEN] = (f"policy:{raw['name']}",)
    pid = integer(_field(cfields, labels, "proc.pid"))
    ancestors = ancestors_of(cfields, pid, container)  # proc.apid[2..], proc.sid
    if hint := _ancestry_hint(raw, pid, ancestors):
        fields["correlation_hint"] = hint
    return Detection(
        sensor=sensor, rule=str(rule), technique=techniques,
        severity=_SEVERITY.get(severity_code) if severity_code is not None else None,
        action=",".join(action_types) or None,
        node=_field(labels, cfields, "host.hostName"),
        container_id=container,
        pid=pid,
        ppid=integer(_field(cfields, labels, "proc.ppid")),
        ancestors=ancestors,
        comm=_field(cfields, labels, "proc.name"),
        names=names,
        observed_at=(integer(raw.get("timestamp")) or 0) / 1e9,
        fields={k: v for k, v in fields.items() if v not in (None, [], {})},
        raw=raw,
    )


def _ancestry_hint(raw: dict[str, Any], pid: int | None,
                   ancestors: tuple[int, ...]) -> str | None:
    """What to print when a Falco rule's syscall event cannot be tied to a run's process
    tree (other engines' fields, e.g. drift's, are Sysdig's own: nothing to print)."""
    if raw.get("source") != "syscall" or raw.get("engine") != "falco":
        return None
    if pid is None:
        return NO_PID_HINT
    return None if ancestors else ANCESTRY_HINT


def mitre_techniques(tags: list[str]) -> tuple[str, ...]:
    """ATT&CK technique ids in rule tags (``T1611``, ``MITRE_T1611_escape``, ``mitre_T1055.008``)."""
    out: dict[str, None] = {}
    for tag in tags:
        for m in _TECHNIQUE.finditer(tag):
            out[f"T{m[1]}{m[2] or ''}"] = None
    return tuple(out)


def mitre_tactics(tags: list[str]) -> list[str]:
    """Tactics named by ``mitre_*`` tags (``mitre_privilege_escalation``,
    ``MITRE_TA0004_privilege_escalation`` -> ``privilege_escalation``; ids kept as ``TA0004``)."""
    out: dict[str, None] = {}
    for tag in tags:
        low = tag.lower()
        if not low.startswith("mitre_") or _TECHNIQUE.search(tag):
            continue
        rest = tag[len("mitre_"):]
        m = _TACTIC_ID.match(rest)
        if m:
            out[f"TA{m[1]}"] = None
            rest = rest[m.end():].lstrip("_")
        if rest:
            out[rest.lower()] = None
    return list(out)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _get(obj: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if obj.get(key) is not None:
            return obj[key]
    return None


def _field(first: dict[str, Any], second: dict[str, Any], key: str) -> str | None:
    for source in (first, second):
        value = source.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def integer(value: Any) -> int | None:
    """An event field's integer (numbers, numeric strings); None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
