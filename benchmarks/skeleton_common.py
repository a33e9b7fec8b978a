"""bench_skeleton's shared constants, statistics and table formatting."""

from __future__ import annotations

import datetime as dt
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACE_ENV = "BENCH_SKELETON_TRACE"
TARGET_LINE_P99_MS = 50.0
TARGET_SUITE_S = 15.0
NO_HYPOTHESIS = "-p no:hypothesispytest"


def pct(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def f(x: float, nd: int = 1) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:,.{nd}f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:,.1f}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def iso_to_epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)




def each(xs: list[float], nd: int = 3) -> str:
    return " / ".join(f(x, nd) for x in xs)
