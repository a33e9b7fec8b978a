"""The normalised ``Detection`` every sensor yields, whatever its product."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Detection:
    """One alert of one sensor, normalised.

    ``observed_at`` is the sensor's own timestamp (epoch seconds); ``received_at``
    is when the harness read it (epoch seconds), so latency is measurable even when
    a sensor's clock is coarse (auditd lags up to 0.8 s).
    """

    sensor: str
    rule: str
    technique: tuple[str, ...] = ()
    severity: str | None = None
    action: str | None = None
    node: str | None = None
    container_id: str | None = None
    cgroup_id: int | None = None
    pid: int | None = None
    ppid: int | None = None
    ancestors: tuple[int, ...] = ()
    comm: str | None = None
    names: tuple[str, ...] = ()
    observed_at: float = 0.0
    received_at: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    raw: Any = field(default=None, compare=False, hash=False, repr=False)

    def value(self, path: str) -> Any:
        """Value of a field by name or dotted path into ``fields`` (None when absent)."""
        head, _, rest = path.partition(".")
        if head in _ATTRS and not rest:
            return getattr(self, head)
        if path in self.fields:  # products' own dotted names: proc.pid, container.id
            return self.fields[path]
        node: Any = self.fields
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def summary(self) -> dict[str, Any]:
        """The fields a person reads in a near-miss table or an attachment."""
        return {
            "sensor": self.sensor,
            "rule": self.rule,
            "technique": list(self.technique),
            "pid": self.pid,
            "comm": self.comm,
            "cgroup_id": self.cgroup_id,
            "container_id": self.container_id,
            "names": list(self.names),
            "observed_at": self.observed_at,
            "action": self.action,
        }


def keep_raw(det: Detection, raw: Any) -> None:
    """Set ``raw`` on a detection that has just been built and not yet published (frozen
    afterwards; the same store a frozen dataclass's ``__init__`` does)."""
    object.__setattr__(det, "raw", raw)


def make_detection(
    sensor: str, rule: str, technique: tuple[str, ...], severity: str | None, action: str | None,
    node: str | None, container_id: str | None, cgroup_id: int | None, pid: int | None,
    ppid: int | None, ancestors: tuple[int, ...], comm: str | None, names: tuple[str, ...],
    observed_at: float, received_at: float, fields: dict[str, Any], raw: Any,
) -> Detection:
    """``Detection(...)`` with every field given, in declaration order: the same object,
    built by storing the slots directly. A frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` once per field, which costs more than parsing a whole line in
    the sensors' hot paths (tests/unit/test_ingest_equivalence.py checks both agree)."""
    det: Detection = _new(Detection)
    _set_sensor(det, sensor)
    _set_rule(det, rule)
    _set_technique(det, technique)
    _set_severity(det, severity)
    _set_action(det, action)
    _set_node(det, node)
    _set_container_id(det, container_id)
    _set_cgroup_id(det, cgroup_id)
    _set_pid(det, pid)
    _set_ppid(det, ppid)
    _set_ancestors(det, ancestors)
    _set_comm(det, comm)
    _set_names(det, names)
    _set_observed_at(det, observed_at)
    _set_received_at(det, received_at)
    _set_fields(det, fields)
    _set_raw(det, raw)
    return det


_new = object.__new__
_slot: Mapping[str, Any] = vars(Detection)
_set_sensor = _slot["sensor"].__set__
_set_rule = _slot["rule"].__set__
_set_technique = _slot["technique"].__set__
_set_severity = _slot["severity"].__set__
_set_action = _slot["action"].__set__
_set_node = _slot["node"].__set__
_set_container_id = _slot["container_id"].__set__
_set_cgroup_id = _slot["cgroup_id"].__set__
_set_pid = _slot["pid"].__set__
_set_ppid = _slot["ppid"].__set__
_set_ancestors = _slot["ancestors"].__set__
_set_comm = _slot["comm"].__set__
_set_names = _slot["names"].__set__
_set_observed_at = _slot["observed_at"].__set__
_set_received_at = _slot["received_at"].__set__
_set_fields = _slot["fields"].__set__
_set_raw = _slot["raw"].__set__

_ATTRS = frozenset(
    {
        "sensor", "rule", "technique", "severity", "action", "node", "container_id",
        "cgroup_id", "pid", "ppid", "ancestors", "comm", "names", "observed_at", "received_at",
    }
)
