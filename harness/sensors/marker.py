"""Sync markers: ``getpgid(pid)`` once on every CPU this thread may run on. A sensor whose
event stream is per CPU (perf/ring buffers) has delivered everything up to the marker once
the marker of every CPU came back. ``pid`` is a harness-chosen number no process has."""

from __future__ import annotations

import contextlib
import os


def getpgid_every_cpu(pid: int, cpus: set[int] | None = None) -> set[int]:
    """Call ``getpgid(pid)`` pinned to each CPU of this thread's affinity in turn, then
    restore the affinity. Returns the CPUs asked (a CPU gone offline meanwhile is skipped:
    nothing of a run ran there after). ``cpus``, when given, is filled as the loop goes, so
    a reader on another thread sees which CPUs were already asked."""
    asked: set[int] = set() if cpus is None else cpus
    before = os.sched_getaffinity(0)
    try:
        for cpu in sorted(before):
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                continue
            asked.add(cpu)
            with contextlib.suppress(OSError):
                os.getpgid(pid)
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, before)
    return asked
