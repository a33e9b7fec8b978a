"""Wall time of the WHOLE bundled catalogue on this node, sensor start included.

Runs ``python -m harness run --results FILE`` from the repository root ``--runs`` times
(real auditd + bpftrace, exactly what tests/e2e/test_catalogue_node.py and CI run), and
records per run the wall time, the pytest session time, the number of (scenario, context)
runs and the verdicts. The floor, measured in the same invocation, is the CLI's start-up:
``python -m harness run --collect-only`` (import, configuration, collection; no sensor, no
atomic). Goal: the whole catalogue under 120 s including sensor start.

    sudo .venv/bin/python benchmarks/bench_catalogue.py [--runs 3] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- bench_catalogue:begin -->"
END = "<!-- bench_catalogue:end -->"
GOAL_S = 120.0


def run_once(extra: list[str], results: Path | None) -> tuple[float, int, str]:
    argv = [sys.executable, "-m", "harness", "run"]
    if results is not None:
        argv += ["--results", str(results)]
    started = time.perf_counter()
    res = subprocess.run([*argv, *extra], cwd=REPO, capture_output=True, text=True, timeout=900,
                         check=False)
    return time.perf_counter() - started, res.returncode, res.stdout + res.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_catalogue: needs root (real auditd and bpftrace)", file=sys.stderr)
        return 2
    floors = [run_once(["--", "--collect-only", "-q"], None)[0] for _ in range(args.runs)]
    walls: list[float] = []
    verdicts: Counter[str] = Counter()
    runs = rows_n = 0
    failures: list[str] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-catalogue-") as tmp:
            results = Path(tmp) / "results.jsonl"
            wall, rc, log = run_once([], results)
            rows = [json.loads(ln) for ln in results.read_text().splitlines()] if results.exists() else []
        walls.append(wall)
        if rc != 0:
            failures.append(f"run {i + 1}: exit {rc}: {log.strip().splitlines()[-1] if log.strip() else ''}")
        if i == 0:
            verdicts = Counter(r["verdict"] for r in rows)
            runs = len({(r["scenario"], r["context"]) for r in rows})
            rows_n = len(rows)
        print(f"run {i + 1}: {wall:.1f} s, exit {rc}", file=sys.stderr)
    p50, worst = statistics.median(walls), max(walls)
    floor = statistics.median(floors)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([
        BEGIN,
        "## Whole catalogue on one node (bench_catalogue)",
        "",
        f"- Date: {now}; kernel {platform.release()}, {os.cpu_count()} CPUs, CPython "
        f"{platform.python_version()}",
        f"- Command: `.venv/bin/python benchmarks/bench_catalogue.py --runs {args.runs}` (as root, "
        "from the repository root): each run is `python -m harness run --results FILE` over the "
        "bundled catalogue with the configured sensors (auditd + bpftrace), sensor start and stop "
        "included",
        f"- Catalogue: {runs} (scenario, context) runs, {rows_n} verdict rows per run: "
        + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())),
        "",
        "| measure | p50 s | max s | runs |",
        "|---|---|---|---|",
        f"| whole catalogue (wall, CLI start to exit) | {p50:.1f} | {worst:.1f} | {len(walls)} |",
        f"| floor: CLI start + collection only (`-- --collect-only`) | {floor:.1f} | {max(floors):.1f} "
        f"| {len(floors)} |",
        "",
        f"Goal: under {GOAL_S:.0f} s including sensor start: **{'met' if worst < GOAL_S else 'NOT met'}** "
        f"(worst run {worst:.1f} s, {worst / GOAL_S:.0%} of the budget; "
        f"{(p50 - floor) / max(runs, 1):.2f} s per (scenario, context) run above the floor).",
        *(["", "Failed runs (the wall time still counts):", *[f"- {f}" for f in failures]]
          if failures else []),
        END,
    ])
    write_section(args.out, section, BEGIN, END)
    print(section)
    return 0 if worst < GOAL_S and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
