"""The one-to-one matching of two sensors' detections, shared by every parity engine.

Input: events of both sides sorted by (group, ts, side, seq) — ``group`` is the key
group (equal key values; a null is a value), ``ts`` integer microseconds, ``side`` 0 for
the incumbent and 1 for the candidate, ``seq`` a unique load-order number that breaks ties.

Rule (``sweep``): within each group, walk the events in that order keeping a FIFO of
pending unmatched events, all of one side. Before an event at ``t`` is handled, pending
events older than ``t - tol`` are dropped (they can match nothing later). If the FIFO
holds the other side, the event is matched to its oldest entry; otherwise it is appended.
A pair therefore has ``|ts_i - ts_c| <= tol`` (inclusive), each event is in at most one
pair, and pairs never cross (the k-th matched incumbent of a group pairs with a later
candidate than the (k-1)-th). This is Glover's earliest-deadline greedy for intervals of
equal length, which yields a **maximum** matching (as many pairs as any one-to-one
assignment within the tolerance can have; tests check it against brute force). It is not
"nearest first": nearest-first is not maximum (incumbents at 0 and 1.9 s, candidates at
-1.5 and 1.0 s, tolerance 2 s: nearest-first pairs 0 with 1.0 and leaves 1.9 alone, the
sweep pairs both).

Fast path (same result): consecutive events more than ``tol`` apart (or in different
groups) can never pair, so the sorted events split into segments; a segment of one
incumbent and one candidate is a pair, a one-sided segment has none, and only the other
segments are swept in Python.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


def sweep(ts: I64, side: npt.NDArray[np.int8], tol: int, lo: int = 0,
          hi: int | None = None) -> list[tuple[int, int]]:
    """Pairs (incumbent index, candidate index) among events ``lo:hi`` of one group."""
    hi = len(ts) if hi is None else hi
    pending: deque[int] = deque()
    pending_side = -1
    pairs: list[tuple[int, int]] = []
    tsl = ts.tolist()
    sl = side.tolist()
    for i in range(lo, hi):
        t = tsl[i]
        s = sl[i]
        while pending and tsl[pending[0]] < t - tol:
            pending.popleft()
        if pending and pending_side != s:
            j = pending.popleft()
            pairs.append((j, i) if s == 1 else (i, j))
        else:
            pending.append(i)
            pending_side = s
    return pairs


def match_sorted(group: npt.NDArray[np.integer], ts: I64, side: npt.NDArray[np.int8],
                 tol: int) -> tuple[I64, I64]:
    """(incumbent indices, candidate indices) of every pair, for events sorted by
    (group, ts, side, seq)."""
    n = len(ts)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    brk = np.empty(n, dtype=bool)
    brk[0] = True
    brk[1:] = (np.diff(ts) > tol) | (group[1:] != group[:-1])
    starts = np.flatnonzero(brk)
    lengths = np.diff(np.append(starts, n))
    ones = np.add.reduceat(side.astype(np.int64), starts)
    two = starts[(lengths == 2) & (ones == 1)]
    inc = np.where(side[two] == 0, two, two + 1).astype(np.int64)
    cand = np.where(side[two] == 0, two + 1, two).astype(np.int64)
    mixed = np.flatnonzero((lengths > 2) & (ones > 0) & (ones < lengths))
    extra: list[tuple[int, int]] = []
    if len(mixed):
        tsl = ts[:] if ts.flags.c_contiguous else np.ascontiguousarray(ts)
        for k in mixed.tolist():
            lo = int(starts[k])
            hi = lo + int(lengths[k])
            extra.extend((lo + a, lo + b) for a, b in
                         sweep(tsl[lo:hi], side[lo:hi], tol))
    if extra:
        arr = np.asarray(extra, dtype=np.int64)
        inc = np.concatenate([inc, arr[:, 0]])
        cand = np.concatenate([cand, arr[:, 1]])
    return inc, cand
