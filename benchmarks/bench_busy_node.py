"""Rows decided on a busy node: the bundled catalogue on this machine beside background
load that matches a reference rule (reads of /etc/shadow by processes that are no run's:
``shadow-read`` events the whole node produces), at 0, 25k and 100k opens/s.

Judged in the same runs, three sensors of the one rule table:

- ``bpftrace``: sensor.bt (node-wide, perf buffers, filtering in user space);
- ``compiled``: the compiled sensor with ``filter = "none"`` (node-wide, ring buffer);
- ``compiled-runs``: the compiled sensor with ``filter = "runs"`` (only the runs' process
  trees leave the kernel).

Per sensor and rate: rows decided (executed runs whose verdict is not SENSOR_DOWN), false
MISSED (MISSED where the same sensor said DETECTED for the same scenario and context
without load, in this benchmark), lost events, and the background rate achieved (counted
by the load processes themselves). Run as root from the repository root:

    .venv/bin/python benchmarks/bench_busy_node.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section

REPO = Path(__file__).resolve().parents[1]
RATES = (0, 25_000, 100_000)
WORKERS = 2
SENSORS = ("bpftrace", "compiled", "compiled-runs")
CONFIG = """
[tool.shadowtest]
scenarios = ["builtin"]
allowed_nodes = ["local"]
window = "5s"
[tool.shadowtest.nodes.local]
url = "local://"
[tool.shadowtest.sensors.bpftrace]
type = "bpftrace"
[tool.shadowtest.sensors.compiled]
type = "libbpf"
[tool.shadowtest.sensors.compiled-runs]
type = "libbpf"
filter = "runs"
"""
BEGIN, END = "<!-- bench_busy_node:begin -->", "<!-- bench_busy_node:end -->"


def _load(rate: float, stop: Any, count: Any) -> None:
    """Open and close /etc/shadow ``rate`` times a second (in batches), until ``stop``."""
    done, started, batch = 0, time.monotonic(), 100
    while not stop.is_set():
        for _ in range(batch):
            os.close(os.open("/etc/shadow", os.O_RDONLY))
        done += batch
        ahead = done / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
        with count.get_lock():
            count.value += batch


def run_at(rate: int, workdir: Path) -> tuple[list[dict[str, Any]], float, float]:
    """The bundled catalogue with ``rate`` background opens/s: (rows, achieved rate, s)."""
    stop, count = mp.Event(), mp.Value("q", 0)
    procs = [mp.Process(target=_load, args=(rate / WORKERS, stop, count), daemon=True)
             for _ in range(WORKERS if rate else 0)]
    for p in procs:
        p.start()
    results = workdir / f"results-{rate}.jsonl"
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "harness", "run", "--config",
                          str(workdir / "shadowtest.toml"), "--results", str(results)],
                         cwd=workdir, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.monotonic() - started
    stop.set()
    for p in procs:
        p.join(10)
    if not results.exists():
        raise SystemExit(f"no results at {rate}/s (exit {res.returncode}): {res.stderr[-2000:]}")
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    return rows, count.value / seconds, seconds


def summarise(rows_by_rate: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    quiet = {(r["scenario"], r["context"], r["sensor"]): r["verdict"] for r in rows_by_rate[0]}
    out = []
    for rate, rows in rows_by_rate.items():
        for sensor in SENSORS:
            mine = [r for r in rows if r["sensor"] == sensor and r["executed"]]
            decided = [r for r in mine if r["verdict"] != "SENSOR_DOWN"]
            false_missed = [r for r in mine if r["verdict"] == "MISSED"
                            and quiet.get((r["scenario"], r["context"], sensor)) == "DETECTED"]
            out.append({"rate": rate, "sensor": sensor, "executed": len(mine),
                        "decided": len(decided), "false_missed": len(false_missed),
                        "lost": max((r["lost_events"] for r in mine), default=0)})
    return out


def render(summary: list[dict[str, Any]], achieved: dict[int, float],
           seconds: dict[int, float]) -> str:
    lines = [BEGIN, "## Rows decided on a busy node (`benchmarks/bench_busy_node.py`)", "",
             f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"{os.cpu_count()} CPUs, kernel {os.uname().release}",
             "- Background: reads of /etc/shadow (each a `shadow-read` event for a node-wide "
             f"sensor) by {WORKERS} processes that are no run's, at the target rate; the "
             "bundled catalogue runs beside it. Same rule table in all three sensors.",
             "- False MISSED: MISSED where the same sensor said DETECTED without load.", "",
             "| background opens/s (target → achieved) | suite s | sensor | rows decided "
             "(executed) | decided % | false MISSED | lost events |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        rate = s["rate"]
        pct = 100.0 * s["decided"] / s["executed"] if s["executed"] else 0.0
        lines.append(f"| {rate:,} → {achieved[rate]:,.0f} | {seconds[rate]:.0f} | {s['sensor']} "
                     f"| {s['decided']} ({s['executed']}) | {pct:.0f} % | {s['false_missed']} "
                     f"| {s['lost']:,} |")
    lines += ["", "Goal (issue 16): at 100k unrelated events/s, ≥ 95 % of rows decided and 0 false "
              "MISSED.", END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the section into this RESULTS.md")
    parser.add_argument("--keep", type=Path, help="work (config, results) in this folder, kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stbench-busy-") as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "shadowtest.toml").write_text(CONFIG)
        rows_by_rate, achieved, seconds = {}, {}, {}
        for rate in RATES:
            rows_by_rate[rate], achieved[rate], seconds[rate] = run_at(rate, workdir)
    text = render(summarise(rows_by_rate), achieved, seconds)
    print(text)
    if args.out:
        write_section(args.out, text + "\n", BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
