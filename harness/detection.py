"""The normalised ``Detection`` every sensor yields, whatever its product."""

from __future__ import annotations

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
        }


_ATTRS = frozenset(
    {
        "sensor", "rule", "technique", "severity", "action", "node", "container_id",
        "cgroup_id", "pid", "ppid", "ancestors", "comm", "names", "observed_at", "received_at",
    }
)
