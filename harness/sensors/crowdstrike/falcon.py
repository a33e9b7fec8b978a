"""Normalising CrowdStrike Falcon records: an alert (Alerts API v2) or a container runtime
detection to a Detection. Pure functions; the API client lives in ``api.py``, the poller in
the package's sensor (``__init__.py``)."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from harness.core.detection import Detection
from harness.core.mitre import TECHNIQUE_ID
from harness.sensors.rulepack import SEEN

PID_MAX = 1 << 22  # Falcon's process_id is a cloud-wide id; a Linux pid is at most 2^22


def normalise_falcon(raw: Any, sensor: str) -> Detection | None:
    """One Falcon alert or container runtime detection to a Detection (``received_at`` is
    stamped on delivery); None when it is not a mapping or carries nothing to name it by."""
    if not isinstance(raw, Mapping):
        return None
    device = mapping(raw.get("device"))
    parent = mapping(raw.get("parent_details"))
    grandparent = mapping(raw.get("grandparent_details"))
    rule = first_text(raw, "name", "display_name", "pattern_id", "detection_name")
    ident = first_text(raw, "composite_id", "detection_id", "id")
    if rule is None and ident is None:
        return None
    severity, sev_raw = _severity(raw)
    pid = _pid(raw.get("local_process_id"))
    if pid is None:
        pid = _pid(raw.get("process_id"))
    names = tuple(dict.fromkeys(
        v for v in (first_text(raw, "cmdline"), first_text(raw, "command_line"), first_text(raw, "filepath"),
                    first_text(raw, "file_path"), first_text(raw, "filename"), first_text(raw, "file_name"),
                    first_text(raw, "pod_name"), first_text(parent, "cmdline"),
                    first_text(grandparent, "cmdline")) if v))
    ppid = _pid(parent.get("local_process_id"))
    gpid = _pid(grandparent.get("local_process_id"))
    ancestors = (gpid,) if gpid is not None and gpid not in (pid, ppid) else ()
    observed = next((t for t in (epoch(raw.get(k)) for k in (
        "timestamp", "created_timestamp", "detect_timestamp")) if t is not None), 0.0)
    fields: dict[str, Any] = {k: raw[k] for k in _KEEP if raw.get(k) is not None}
    if sev_raw is not None:
        fields["severity_raw"] = sev_raw
    if device.get("hostname") is not None:
        fields["device_hostname"] = device.get("hostname")
    if device.get("device_id") is not None:
        fields["device_id"] = device.get("device_id")
    if hint := _ancestry_hint(pid, ppid, ancestors, first_text(raw, "container_id")):
        fields["correlation_hint"] = hint
    seen = [f"{key}:{raw[key]}" for key in ("agent_version", "sensor_version") if raw.get(key)]
    if device.get("agent_version"):
        seen.append(f"agent_version:{device['agent_version']}")
    if seen:  # what it reports about the rules (sensor) that produced it
        fields[SEEN] = tuple(seen)
    return Detection(
        sensor=sensor, rule=rule or str(ident), technique=_techniques(raw),
        severity=severity,
        node=(first_text(raw, "hostname") or first_text(device, "hostname")
              or first_text(raw, "computer_name")),
        action=disposition(raw),
        container_id=first_text(raw, "container_id"), pid=pid, ppid=ppid, ancestors=ancestors,
        comm=first_text(raw, "filename", "file_name"), names=names, observed_at=observed,
        fields=fields, raw=dict(raw),
    )


_KEEP = (
    "composite_id", "id", "aggregate_id", "detection_id", "pattern_id", "scenario", "objective",
    "tactic_id", "tactic", "technique_id", "technique", "severity_name", "name", "display_name",
    "description", "detection_description", "product", "type", "platform", "status", "cid",
    "agent_id", "aid", "host_id", "hostname", "computer_name", "process_id", "local_process_id",
    "cmdline", "command_line", "filepath", "file_path", "filename", "file_name", "sha256",
    "user_name", "container_id", "pod_name", "namespace", "cluster_name", "image_id",
    "action_taken", "timestamp", "created_timestamp", "detect_timestamp", "falcon_host_link",
    "pattern_disposition", "pattern_disposition_description", "pattern_disposition_details",
)
#: ``pattern_disposition_details`` flags saying Falcon's prevention acted on the process
_KILL_FLAGS = ("kill_process", "kill_subprocess", "kill_parent")
_BLOCK_FLAGS = ("operation_blocked", "process_blocked", "fs_operation_blocked")


def disposition(raw: Mapping[str, Any]) -> str | None:
    """What Falcon's prevention did, as the words ``harness.core.verdict`` reads
    (``process_killed``, ``operation_blocked``): an Alerts v2 record says it in
    ``pattern_disposition_details`` (``kill_process: true``, ``operation_blocked: true``;
    a kill with ``kill_action_failed`` did not happen); a container runtime detection in
    ``action_taken`` (read by the verdict as it is). None: it only detected."""
    details = mapping(raw.get("pattern_disposition_details"))
    acted: list[str] = []
    failed = details.get("kill_action_failed") is True
    if any(details.get(f) is True for f in _KILL_FLAGS) and not failed:
        acted.append("process_killed")
    if any(details.get(f) is True for f in _BLOCK_FLAGS):
        acted.append("operation_blocked")
    return ",".join(acted) or None


_SEVERITY_NAMES = {"critical": "critical", "high": "high", "medium": "medium", "low": "low",
                   "informational": "info", "info": "info"}
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _ancestry_hint(pid: int | None, ppid: int | None, ancestors: tuple[int, ...],
                   container_id: str | None) -> str | None:
    """What is missing when a Falcon record cannot be tied to a run's process tree (None
    when it can, or when its container id can)."""
    if container_id:
        return None
    if pid is None and ppid is None:
        return ("this Falcon record has no local_process_id (the Linux pid; process_id is "
                "Falcon's cloud-wide id): use the Alerts API v2 (source = 'alerts'), whose "
                "endpoint alerts carry local_process_id, parent_details and "
                "grandparent_details")
    if not ancestors:
        return ("this Falcon alert names no grandparent (grandparent_details."
                "local_process_id): it can only match a run's own pids and their children")
    return None


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}



def epoch(value: Any) -> float | None:
    """ISO 8601 (Falcon's ``2024-05-01T12:00:00.123456789Z``) or epoch s/ms/us/ns -> epoch s."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            text = _FRACTION.sub(r"\1", text.replace("Z", "+00:00").replace("z", "+00:00"))
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    if not math.isfinite(number) or number <= 0:
        return None
    for bound, unit in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):  # ns, us, ms
        if number > bound:
            return number / unit
    return number


def first_text(data: Mapping[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` whose value is a non-empty scalar, as stripped text."""
    for key in keys:
        value = data.get(key)
        if value is None or isinstance(value, Mapping | list | tuple):
            continue
        text = str(value).strip()
        if text:
            return text
    return None


def _pid(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        pid = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return pid if 0 < pid <= PID_MAX else None


def _techniques(raw: Mapping[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    for value in (raw.get("technique_id"), raw.get("technique")):
        for item in value if isinstance(value, list | tuple) else [value]:
            text = str(item).strip().upper() if isinstance(item, str) else ""
            if TECHNIQUE_ID.match(text):
                found.append(text)
    mitre = raw.get("mitre_attack")
    if isinstance(mitre, list):
        for entry in mitre:
            tid = entry.get("technique_id") if isinstance(entry, Mapping) else None
            if isinstance(tid, str) and TECHNIQUE_ID.match(tid.strip().upper()):
                found.append(tid.strip().upper())
    return tuple(dict.fromkeys(found))


def _severity(raw: Mapping[str, Any]) -> tuple[str | None, Any]:
    """Falcon's 0-100 severity (10 info, 30 low, 50 medium, 70 high, 90 critical) or a name."""
    value = raw.get("severity")
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is not None:
        for floor, name in ((80, "critical"), (60, "high"), (40, "medium"), (20, "low")):
            if number >= floor:
                return name, value
        return "info", value
    for candidate in (value, raw.get("severity_name")):
        if isinstance(candidate, str) and candidate.strip().lower() in _SEVERITY_NAMES:
            return _SEVERITY_NAMES[candidate.strip().lower()], value if value is not None else candidate
    return None, value


