"""Which stretches of a Falco run may have lost events, from its drop alerts and metrics
snapshots (``LossLedger``); a window overlapping one cannot prove a miss."""

from __future__ import annotations

import re
import threading
from typing import Any

from harness.sensors.falco_alerts import number

#: metrics snapshot counters of events Falco lost (kernel buffer, userspace, outputs queue);
#: rates and percentages (``*_perc``, ``*_prev``, ``*_rate_sec``) are not counters
_LOSS_COUNTER = re.compile(r"(?:scap|falco)\.n_drops(?:_[a-z_]+)?|falco\.outputs_queue_num_drops")
_NOT_COUNTER = ("_perc", "_prev", "_rate_sec")
#: a snapshot proves no kernel-side loss only with one of these (metrics
#: kernel_event_counters_enabled: true)
_KERNEL_COUNTERS = ("scap.n_drops", "scap.n_drops_buffer_total")


class LossLedger:
    """Which stretches of time (harness clock, when each alert was read) may have lost
    events, from Falco's drop alerts and metrics snapshots.

    - A drop alert opens a stretch that stays open: Falco raises at most one drop alert per
      ``syscall_event_drops`` token (one per 30 s by default), so later losses are silent.
      It closes at the first proof of no loss: two consecutive metrics snapshots of the
      same Falco (same ``falco.start_ts``) whose drop counters (``scap.n_drops*``,
      ``falco.n_drops*``, ``falco.outputs_queue_num_drops``) did not change, the first of
      them read after the drop alert (the stretch ends where that proof begins); or once
      ``interval`` seconds have passed since the alert (the token is back: the next drop
      raises an alert again).
    - Two snapshots whose counters grew: the stretch between them lost events (counted as
      lost, less what drop alerts already counted in it).

    A window overlapping a stretch cannot prove a miss: ``silence`` says why."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self.stretches: list[tuple[float, float, str]] = []  # closed (start, end, what)
        self.open_since: float | None = None
        self.open_drops = 0
        self._snapshot: tuple[float, Any, dict[str, int]] | None = None  # (read at, start, counters)
        self._alerted_since_snapshot = 0

    def drop(self, at: float, n: int) -> None:
        with self._lock:
            self._alerted_since_snapshot += n
            if self.open_since is None or at >= self.open_since + self.interval:
                self._close(at)
                self.open_since = at
                self.open_drops = 0
            self.open_drops += n

    def snapshot(self, at: float, of: Any) -> int:
        """A metrics snapshot read at ``at``; returns the events it shows lost that no drop
        alert counted (0 when none or when it cannot tell)."""
        if not isinstance(of, dict):
            return 0
        counters = {k: n for k, v in of.items()
                    if _LOSS_COUNTER.fullmatch(k) and not k.endswith(_NOT_COUNTER)
                    and (n := number(v)) is not None}
        start = of.get("falco.start_ts")
        with self._lock:
            prev, self._snapshot = self._snapshot, (at, start, counters)
            alerted, self._alerted_since_snapshot = self._alerted_since_snapshot, 0
            if prev is None or prev[1] != start or set(prev[2]) != set(counters):
                return 0  # a first snapshot, a restarted Falco or other counters: no proof
            # the counters overlap (scap.n_drops counts what scap.n_drops_buffer_total does):
            # the largest growth of one of them is the loss
            grown = max((counters[k] - prev[2][k] for k in counters), default=0)
            if grown > 0:
                self.stretches.append((prev[0], at, f"metrics counters grew by {grown}"))
                del self.stretches[:-64]
                return max(1, grown - alerted) if grown > alerted else 0
            has_kernel = any(k in counters for k in _KERNEL_COUNTERS)
            if (self.open_since is not None and has_kernel and grown == 0
                    and prev[0] >= self.open_since):
                self._close(prev[0])
            return 0

    def _close(self, end: float) -> None:
        if self.open_since is not None:
            end = min(max(end, self.open_since), self.open_since + self.interval)
            self.stretches.append((self.open_since, end,
                                   f"{self.open_drops} dropped events alerted"))
            del self.stretches[:-64]
            self.open_since = None

    def unproven_at(self, at: float) -> bool:
        """A drop alert's stretch is open at ``at``."""
        with self._lock:
            return (self.open_since is not None and self.open_since <= at
                    < self.open_since + self.interval)

    def silence(self, name: str, since: float, until: float) -> str | None:
        with self._lock:
            if self.open_since is not None:
                end = self.open_since + self.interval
                if self.open_since <= until and since < end:
                    return (
                        f"{name}: Falco alerted {self.open_drops} dropped syscall events "
                        f"{max(0.0, since - self.open_since):.1f} s before the window opened and "
                        "sends at most one drop alert per "
                        f"{self.interval:g} s (syscall_event_drops rate/max_burst), so later "
                        "losses are silent; no metrics snapshot has proved since that it "
                        "stopped dropping: a miss cannot be proved. Turn on metrics "
                        "(enabled: true, output_rule: true, kernel_event_counters_enabled: "
                        "true, interval: 2s): two snapshots with unchanged drop counters end "
                        "this; set syscall_event_drops.threshold: 0 so every loss alerts")
            for start, end, what in reversed(self.stretches):
                if start <= until and since <= end:
                    return (f"{name}: Falco lost events during the window ({what} between "
                            f"{start - since:+.1f} s and {end - since:+.1f} s from its opening): "
                            "a miss cannot be proved")
        return None
