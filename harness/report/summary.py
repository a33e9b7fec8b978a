"""The terminal summary: verdict counts grouped by kernel, then sensor."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.verdict import Verdict

ORDER = [v.value for v in Verdict]
STYLE = {"DETECTED": "green", "CLEAN": "green", "BLOCKED": "green", "MISSED": "bold red",
         "UNEXPECTED": "bold red",
         "RACED": "yellow", "NOT_EXECUTED": "dim", "SENSOR_DOWN": "magenta"}


def render(rows: Iterable[dict[str, Any]], width: int = 100, color: bool = False) -> str:
    """Counts per (kernel, sensor) and verdict, then every row that is not a pass."""
    grid: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    latency: dict[tuple[str, str], list[float]] = defaultdict(list)
    problems = []
    all_rows = list(rows)
    for r in all_rows:
        key = (str(r.get("kernel")), str(r.get("sensor")))
        grid[key][r["verdict"]] += 1
        if r.get("latency_ms") is not None and r["verdict"] == "DETECTED":
            latency[key].append(float(r["latency_ms"]))
        if r["verdict"] in ("MISSED", "UNEXPECTED", "SENSOR_DOWN", "RACED", "NOT_EXECUTED"):
            problems.append(r)
    table = Table(title="shadowtest verdicts by kernel, then sensor", title_justify="left")
    table.add_column("kernel", no_wrap=True)
    table.add_column("sensor", no_wrap=True)
    for v in ORDER:
        table.add_column(v, justify="right", style=STYLE.get(v, ""))
    table.add_column("p50 latency ms", justify="right")
    for (kernel, sensor) in sorted(grid):
        counts = grid[(kernel, sensor)]
        lat = sorted(latency[(kernel, sensor)])
        p50 = f"{lat[len(lat) // 2]:.1f}" if lat else "-"
        table.add_row(kernel, sensor, *(str(counts.get(v, 0) or "") for v in ORDER), p50)
    buf = io.StringIO()
    console = Console(file=buf, width=max(width, 132), force_terminal=color,
                      color_system="standard" if color else None)
    console.print(table)
    health: dict[str, Counter[str]] = defaultdict(Counter)
    for r in all_rows:
        health[str(r.get("sensor"))]["lost events"] += int(r.get("lost_events") or 0)
        health[str(r.get("sensor"))]["malformed lines"] += int(r.get("malformed_lines") or 0)
    for sensor, counts in sorted(health.items()):
        if any(counts.values()):
            console.print(f"{sensor}: " + ", ".join(f"{v} {k}" for k, v in counts.items()),
                          highlight=False, markup=False)
    for r in problems:
        console.print(
            f"{r['verdict']:<13} {r['scenario']}[{r['context']}-{r['node']}] {r['sensor']} "
            f"on {r['kernel']}: {r['reason']}", highlight=False, markup=False,
        )
    return buf.getvalue()
