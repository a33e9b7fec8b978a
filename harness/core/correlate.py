"""Correlation of a detection to a run: strongest key first, pure."""

from __future__ import annotations

from harness.core.detection import Detection
from harness.core.run import Run

KEYS = ("run_id", "container_id", "cgroup_id", "process_tree")


def correlate(run: Run, detection: Detection) -> str | None:
    """The strongest key that ties ``detection`` to ``run``, or None.

    Run id stamped in names/labels beats container id, which beats cgroup id, which
    beats the process tree (the detection's pid or one of its ancestors is a pid the
    harness started for this run). Time alone never correlates: sensors' clocks lag.
    """
    if any(run.run_id in name for name in detection.names):
        return "run_id"
    if run.container_id and detection.container_id and _same_container(
        run.container_id, detection.container_id
    ):
        return "container_id"
    if run.cgroup_id is not None and detection.cgroup_id == run.cgroup_id:
        return "cgroup_id"
    tree = {detection.pid, detection.ppid, *detection.ancestors}
    if run.pids & {p for p in tree if p}:
        return "process_tree"
    return None


def _same_container(a: str, b: str) -> bool:
    """Container ids match on their common prefix (sensors shorten ids to 12 or 15 chars)."""
    a = a.rpartition("://")[2].lower()
    b = b.rpartition("://")[2].lower()
    n = min(len(a), len(b))
    return n >= 12 and a[:n] == b[:n]
