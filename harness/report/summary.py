"""The terminal summary: verdict counts grouped by kernel, then sensor, and the scenario x
kernel x sensor grid (also the model the HTML report draws)."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from harness.core import policy
from harness.core.verdict import Verdict
from harness.report import enforcement
from harness.report.sortkey import natural_key

ORDER = [v.value for v in Verdict]
STYLE = {"DETECTED": "green", "CLEAN": "green", "BLOCKED": "green", "MISSED": "bold red",
         "UNEXPECTED": "bold red",
         "RACED": "yellow", "NOT_EXECUTED": "dim", "SENSOR_DOWN": "magenta"}
#: short forms for grid cells (a grid with a few kernels x sensors must fit a terminal)
SHORT = {"DETECTED": "DET", "MISSED": "MISS", "BLOCKED": "BLOCK", "RACED": "RACED",
         "NOT_EXECUTED": "N/E", "SENSOR_DOWN": "DOWN", "UNEXPECTED": "UNEXP", "CLEAN": "CLEAN"}


@dataclass(frozen=True)
class Grid:
    """Rows (scenario, context) x columns (kernel, sensor); each cell holds the results rows
    of that combination (one per node and run)."""

    rows: list[tuple[str, str]]
    columns: list[tuple[str, str]]
    cells: dict[tuple[str, str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    tactics: dict[str, str] = field(default_factory=dict)

    @property
    def kernels(self) -> list[str]:
        return list(dict.fromkeys(k for k, _ in self.columns))

    @property
    def sensors(self) -> list[str]:
        return sorted({s for _, s in self.columns}, key=natural_key)

    def cell(self, scenario: str, context: str, kernel: str, sensor: str) -> list[dict[str, Any]]:
        return self.cells.get((scenario, context, kernel, sensor), [])

    def nodes(self, scenario: str, context: str, kernel: str) -> set[str]:
        """Distinct nodes in one row under one kernel: cells name their node when > 1."""
        return {str(r.get("node")) for (sc, cx, k, _), rs in self.cells.items()
                if (sc, cx, k) == (scenario, context, kernel) for r in rs}


def build_grid(rows: Iterable[dict[str, Any]]) -> Grid:
    cells: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    tactics: dict[str, str] = {}
    for r in rows:
        key = (str(r.get("scenario")), str(r.get("context")), str(r.get("kernel")),
               str(r.get("sensor")))
        cells[key].append(r)
        tactics.setdefault(key[0], str(r.get("tactic") or ""))
    for rs in cells.values():
        rs.sort(key=lambda r: (natural_key(str(r.get("node"))), str(r.get("started_at") or "")))
    grid_rows = sorted({(s, c) for s, c, _, _ in cells},
                       key=lambda sc: (tactics.get(sc[0], ""), sc[0], sc[1]))
    columns = sorted({(k, s) for _, _, k, s in cells},
                     key=lambda ks: (natural_key(ks[0]), natural_key(ks[1])))
    return Grid(grid_rows, columns, dict(cells), tactics)


def latency_text(row: dict[str, Any]) -> str:
    lat = row.get("latency_ms")
    if lat is None:
        return ""
    value = float(lat)
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def grid_table(grid: Grid, title: str = "scenario x kernel x sensor",
               kernel_header: bool = True) -> Table:
    """The grid as a rich table: one column per (kernel, sensor); a cell lists each run's
    short verdict and latency, with the node when the row ran on several nodes."""
    table = Table(title=f"shadowtest {title}", title_justify="left", show_lines=False)
    table.add_column("scenario", no_wrap=True)
    table.add_column("context", no_wrap=True)
    for kernel, sensor in grid.columns:
        table.add_column(f"{kernel}\n{sensor}" if kernel_header else sensor, no_wrap=True)
    for scenario, context in grid.rows:
        cells: list[Text | str] = [scenario, context]
        for kernel, sensor in grid.columns:
            several = len(grid.nodes(scenario, context, kernel)) > 1
            text = Text()
            for i, r in enumerate(grid.cell(scenario, context, kernel, sensor)):
                if i:
                    text.append("\n")
                verdict = str(r.get("verdict"))
                text.append(SHORT.get(verdict, verdict), style=STYLE.get(verdict, ""))
                if lat := latency_text(r):
                    text.append(f" {lat}")
                if several:
                    text.append(f" {r.get('node')}", style="dim")
            cells.append(text if text.plain else "-")
        table.add_row(*cells)
    return table


def grid_tables(grid: Grid, console: Console) -> list[Table]:
    """One grid table, or one per kernel when the whole grid is wider than the console."""
    whole = grid_table(grid)
    if Measurement.get(console, console.options.update_width(10**5), whole).maximum <= console.width:
        return [whole]
    return [grid_table(_only_kernel(grid, k), title=f"scenario x sensor on kernel {k}",
                       kernel_header=False) for k in grid.kernels]


def _only_kernel(grid: Grid, kernel: str) -> Grid:
    cells = {key: rs for key, rs in grid.cells.items() if key[2] == kernel}
    rows = [sc for sc in grid.rows if any(k[:2] == sc for k in cells)]
    return Grid(rows, [c for c in grid.columns if c[0] == kernel], cells, grid.tactics)


def legend() -> str:
    return "  ".join(f"{SHORT[v]}={v}" for v in ORDER if SHORT.get(v, v) != v)


def counts_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Counts per (kernel, sensor) and verdict, with the p50 latency of DETECTED."""
    grid: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    latency: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        key = (str(r.get("kernel")), str(r.get("sensor")))
        grid[key][r["verdict"]] += 1
        if r.get("latency_ms") is not None and r["verdict"] == "DETECTED":
            latency[key].append(float(r["latency_ms"]))
    table = Table(title="shadowtest verdicts by kernel, then sensor", title_justify="left")
    table.add_column("kernel", no_wrap=True)
    table.add_column("sensor", no_wrap=True)
    for v in ORDER:
        table.add_column(v, justify="right", style=STYLE.get(v, ""))
    table.add_column("p50 latency ms", justify="right")
    for (kernel, sensor) in sorted(grid, key=lambda ks: (natural_key(ks[0]), natural_key(ks[1]))):
        counts = grid[(kernel, sensor)]
        lat = sorted(latency[(kernel, sensor)])
        p50 = f"{lat[len(lat) // 2]:.1f}" if lat else "-"
        table.add_row(kernel, sensor, *(str(counts.get(v, 0) or "") for v in ORDER), p50)
    return table


def render(rows: Iterable[dict[str, Any]], width: int = 100, color: bool = False,
           grid: bool = True) -> str:
    """Counts per (kernel, sensor) and verdict, the scenario x kernel x sensor grid, sensor
    health, then every row that is not a pass."""
    all_rows = list(rows)
    problems = [r for r in all_rows if not policy.clean_pass(policy.outcome_of_row(r))]
    buf = io.StringIO()
    console = Console(file=buf, width=max(width, 132), force_terminal=color,
                      color_system="standard" if color else None)
    console.print(counts_table(all_rows))
    if grid and all_rows:
        for table in grid_tables(build_grid(all_rows), console):
            console.print(table)
        console.print(legend(), style="dim", highlight=False, markup=False)
    health: dict[str, Counter[str]] = defaultdict(Counter)
    for r in all_rows:
        health[str(r.get("sensor"))]["lost events"] += int(r.get("lost_events") or 0)
        health[str(r.get("sensor"))]["malformed lines"] += int(r.get("malformed_lines") or 0)
    for sensor, counts in sorted(health.items()):
        if any(counts.values()):
            console.print(f"{sensor}: " + ", ".join(f"{v} {k}" for k, v in counts.items()),
                          highlight=False, markup=False)
    for r in problems:
        verdict = "KNOWN GAP" if policy.outcome_of_row(r).known_gap else r["verdict"]
        console.print(
            f"{verdict:<13} {r['scenario']}[{r['context']}-{r['node']}] {r['sensor']} "
            f"on {r['kernel']}: {r['reason']}", highlight=False, markup=False,
        )
    if enforcement.has_enforcement(all_rows) and (section := enforcement.render(all_rows)):
        console.print(section, end="", highlight=False, markup=False, soft_wrap=True)
    return buf.getvalue()


def failing(rows: Iterable[dict[str, Any]]) -> bool:
    """At least one verdict that fails a test (report's exit code 1); a known gap's MISSED
    does not (``harness.core.policy``)."""
    return policy.any_failed(rows)
