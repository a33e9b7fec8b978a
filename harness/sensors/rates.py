"""Buffers sized from the measured rate (issue 16): a sensor measures the peak rate its
producer offered during a session and keeps it per node; the next session on that node
sizes its buffers from it (the compiled sensor's ring buffer, the audit log's rotation)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path


class PeakRate:
    """The highest rate of a growing total (events, bytes) seen over intervals of at least
    ``min_interval`` seconds: ``observe(t, total)`` as often as convenient."""

    def __init__(self, min_interval: float = 0.5) -> None:
        self.min_interval = min_interval
        self._last: tuple[float, float] | None = None
        self.peak: float | None = None

    def due(self, t: float) -> bool:
        """Whether an observation at ``t`` would count (the first, or one at least
        ``min_interval`` after the last that did)."""
        return self._last is None or t - self._last[0] >= self.min_interval

    def observe(self, t: float, total: float) -> None:
        if self._last is None:
            self._last = (t, total)
            return
        dt = t - self._last[0]
        if dt < self.min_interval:
            return
        self.peak = max(self.peak or 0.0, (total - self._last[1]) / dt)
        self._last = (t, total)


def size_for(rate: float | None, unit_bytes: float, seconds: float, lo_mb: int,
             hi_mb: int) -> int:
    """Pure: the smallest power-of-two MiB from ``lo_mb`` that holds ``seconds`` of ``rate``
    units of ``unit_bytes`` each, at most ``hi_mb`` (None: not measured, ``lo_mb``)."""
    need = (rate or 0.0) * unit_bytes * seconds / (1 << 20)
    mb = lo_mb
    while mb < need and mb < hi_mb:
        mb *= 2
    return min(mb, hi_mb)


def rate_file(root: Path, *parts: str) -> Path:
    """Where a measured rate is kept: ``root/rate-<part>-<part>.json`` (a node name and
    what else tells the measurements apart, made safe for a file name)."""
    return root / ("rate-" + "-".join(re.sub(r"[^A-Za-z0-9_.-]", "_", p) for p in parts) + ".json")


def load_rate(path: Path) -> float | None:
    """The peak rate an earlier session measured (None: none, or unreadable)."""
    try:
        rate = json.loads(path.read_text())["peak_per_s"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(rate) if isinstance(rate, (int, float)) and rate >= 0 else None


def save_rate(path: Path, peak: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"peak_per_s": round(peak, 1), "at": time.time()}))
    tmp.replace(path)
