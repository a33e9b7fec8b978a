"""The event table both parity engines read, built from two sides' detections: one row
per detection with its side, time, rule, normalised severity and match-key values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.core.detection import Detection

SEVERITY_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1, "info": 0}
_SEVERITY = {
    "critical": "critical", "emergency": "critical", "alert": "critical", "crit": "critical",
    "high": "high", "error": "high", "err": "high",
    "medium": "medium", "warning": "medium", "warn": "medium", "moderate": "medium",
    "low": "low", "notice": "low",
    "info": "info", "informational": "info", "debug": "info", "informative": "info",
}


def severity_of(value: Any) -> str | None:
    """critical | high | medium | low | info from a product's severity (names, Falco
    priorities, Sysdig 0-7, CrowdStrike 0-100); None when unknown."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text.isdigit():
        n = int(text)
        if n > 7:  # CrowdStrike 0-100
            return "critical" if n >= 90 else "high" if n >= 70 else "medium" if n >= 50 else "low"
        return ("critical", "critical", "critical", "high", "medium", "low", "info", "info")[n]
    return _SEVERITY.get(text)


def key_value(d: Detection, name: str) -> str | None:
    if name == "technique":
        value: Any = d.technique[0] if d.technique else None
    elif name == "container_id":
        value = d.container_id[:12] if d.container_id else None
    elif name == "cluster":
        value = next((v for v in (d.value("cluster"), d.value("cluster_name"),
                                  d.value("k8s.cluster.name"), d.value("kubernetes.cluster.name"))
                      if v not in (None, "")), None)
    elif name in ("node", "cgroup_id", "pid", "rule", "comm", "severity"):
        value = getattr(d, name)
    else:
        value = d.value(name)
    return None if value in (None, "") else str(value)


def columns(incumbent: Sequence[Detection], candidate: Sequence[Detection],
            keys: Sequence[str]) -> dict[str, list[Any]]:
    """The event table both engines read: seq (load order, unique), side (0 incumbent, 1
    candidate), ts (integer microseconds), rule, severity, technique, node, container_id,
    pid, and k0..kN (the key values)."""
    cols: dict[str, list[Any]] = {c: [] for c in (
        "seq", "side", "ts", "rule", "severity", "technique", "node", "container_id", "pid",
        *(f"k{i}" for i in range(len(keys))))}
    seq = 0
    for side, dets in ((0, incumbent), (1, candidate)):
        for d in dets:
            cols["seq"].append(seq)
            seq += 1
            cols["side"].append(side)
            cols["ts"].append(round(d.observed_at * 1_000_000))
            cols["rule"].append(d.rule)
            cols["severity"].append(severity_of(d.severity))
            cols["technique"].append(",".join(d.technique) or None)
            cols["node"].append(d.node)
            cols["container_id"].append(d.container_id)
            cols["pid"].append(d.pid)
            for i, k in enumerate(keys):
                cols[f"k{i}"].append(key_value(d, k))
    return cols


def arrow_table(cols: Mapping[str, list[Any]]) -> Any:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    types = {"seq": pa.int64(), "side": pa.int8(), "ts": pa.int64(), "pid": pa.int64()}
    return pa.table({c: pa.array(v, type=types.get(c, pa.string())) for c, v in cols.items()})


def in_window(dets: Iterable[Detection], start: float, end: float) -> list[Detection]:
    return [d for d in dets if start <= d.observed_at <= end]


def iso(ts_us: int) -> str:
    """ISO 8601 UTC of integer microseconds since the epoch."""
    return dt.datetime.fromtimestamp(ts_us / 1e6, dt.UTC).isoformat(timespec="microseconds")
