"""Parity matching on synthetic detections: exact one-to-one vs a plain DuckDB ASOF join.

Data (seeded, numpy): N incumbent detections over 30 days in 2000 key groups (200 nodes x
10 techniques), 20 rules, severities; the candidate side has 90 % of them with a clock skew
uniform in +-1.5 s, 5 % of those twice (duplicates), and N/10 unrelated detections.
Keys node,technique; tolerance 2 s.

Each measurement runs in its own process (fresh RSS), on the same Parquet file:

- floor: ``inc ASOF JOIN cand ON k0, k1 AND inc.ts >= cand.ts`` counted (DuckDB, the same
  threads), i.e. a nearest-earlier lookup, not one-to-one;
- ``match_duckdb``: the exact maximum one-to-one matching (harness/report/parity/match.py);
- ``parity`` end to end from the table: matching + per-rule summary + unmatched listing.

Reported: wall time (load excluded), peak RSS of the process (ru_maxrss, data included),
and the ratio to the floor. Goal: exact one-to-one <= 3x the ASOF join; 10M x 10M < 8 GB.

    .venv/bin/python benchmarks/bench_parity.py --sizes 1000000,10000000 --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results  # benchmarks/_results.py (scripts run from this folder)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BEGIN = "<!-- bench_parity:begin -->"
END = "<!-- bench_parity:end -->"
TOL_US = 2_000_000


def generate(n: int, path: Path, seed: int = 1) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    span = 30 * 86400 * 1_000_000
    t0 = 1_800_000_000 * 1_000_000
    nodes = np.array([f"node-{i:03d}" for i in range(200)])
    techs = np.array([f"T{1000 + i}" for i in range(10)])
    rules = np.array([f"rule-{i:02d}" for i in range(20)])
    sev = np.array(["critical", "high", "medium", "low"])
    node_i = rng.integers(0, 200, n)
    tech_i = rng.integers(0, 10, n)
    ts = t0 + rng.integers(0, span, n)
    rule_i = tech_i * 2 + rng.integers(0, 2, n)
    keep = rng.random(n) < 0.9
    dup = keep & (rng.random(n) < 0.05)
    skew = rng.integers(-1_500_000, 1_500_001, n)
    extra = n // 10
    c_node = np.concatenate([node_i[keep], node_i[dup], rng.integers(0, 200, extra)])
    c_tech = np.concatenate([tech_i[keep], tech_i[dup], rng.integers(0, 10, extra)])
    c_ts = np.concatenate([(ts + skew)[keep], (ts + skew)[dup] + 1000, t0 + rng.integers(0, span, extra)])
    m = len(c_ts)
    side = np.concatenate([np.zeros(n, np.int8), np.ones(m, np.int8)])
    # the candidate side is cut to N rows (N x N), its rows shuffled
    order = rng.permutation(m)[:n]
    c_node, c_tech, c_ts = c_node[order], c_tech[order], c_ts[order]
    side = side[: 2 * n]
    all_node = np.concatenate([node_i, c_node])
    all_tech = np.concatenate([tech_i, c_tech])
    table = pa.table({
        "seq": pa.array(np.arange(2 * n, dtype=np.int64)),
        "side": pa.array(side),
        "ts": pa.array(np.concatenate([ts, c_ts]).astype(np.int64)),
        "rule": pa.DictionaryArray.from_arrays(
            pa.array(np.concatenate([rule_i, c_tech * 2]).astype(np.int32)), pa.array(rules)),
        "severity": pa.DictionaryArray.from_arrays(
            pa.array(np.concatenate([rule_i % 4, np.zeros(n, np.int64)]).astype(np.int32)),
            pa.array(sev)),
        "technique": pa.DictionaryArray.from_arrays(pa.array(all_tech.astype(np.int32)), pa.array(techs)),
        "node": pa.DictionaryArray.from_arrays(pa.array(all_node.astype(np.int32)), pa.array(nodes)),
        "container_id": pa.nulls(2 * n, pa.string()),
        "pid": pa.nulls(2 * n, pa.int64()),
        "k0": pa.DictionaryArray.from_arrays(pa.array(all_node.astype(np.int32)), pa.array(nodes)),
        "k1": pa.DictionaryArray.from_arrays(pa.array(all_tech.astype(np.int32)), pa.array(techs)),
    })
    pq.write_table(table, path)


def measure(what: str, path: str) -> dict[str, float]:
    """One measurement in this (fresh) process."""
    import duckdb
    import pyarrow.parquet as pq

    from harness.report.parity import Options, match_duckdb, summarise

    table = pq.read_table(path)
    table = table.cast(table.schema)  # materialised before timing
    con = duckdb.connect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    out: dict[str, float] = {}
    if what == "asof":
        con.register("ev", table)
        for name, side in (("inc", 0), ("cand", 1)):
            con.execute(f"CREATE TEMP TABLE {name} AS SELECT k0::VARCHAR k0, k1::VARCHAR k1, ts, "  # noqa: S608
                        f"seq FROM ev WHERE side = {side}")
        t = time.perf_counter()  # the join alone (the exact path's time includes its own prep)
        row = con.execute("SELECT count(c.seq) FROM inc i ASOF JOIN cand c ON i.k0 = c.k0 AND "
                          "i.k1 = c.k1 AND i.ts >= c.ts").fetchone()
        out["pairs"] = float(row[0]) if row else 0.0
    elif what == "match":
        inc, _ = match_duckdb(table, TOL_US, con)
        out["pairs"] = float(len(inc))
    else:
        opts = Options(("node", "technique"), TOL_US, 0.95, ("critical", "high"))
        inc, cand = match_duckdb(table, TOL_US, con)
        report = summarise(table, inc, cand, opts, {})
        out["pairs"] = float(report["totals"]["matched"])
    out["seconds"] = time.perf_counter() - t
    out["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    out["rss_before_gb"] = rss0 / 1024 / 1024
    return out


def run_one(what: str, path: Path) -> dict[str, float]:
    res = subprocess.run([sys.executable, __file__, "--measure", what, str(path)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--measure", nargs=2, metavar=("WHAT", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    import duckdb

    lines = [BEGIN, "## Parity matching (bench_parity.py)", "",
             f"- Machine: {os.cpu_count()} CPUs, kernel {platform.release()}, CPython "
             f"{platform.python_version()}, DuckDB {duckdb.__version__}",
             "- Command: `.venv/bin/python benchmarks/bench_parity.py --sizes "
             f"{args.sizes} --reps {args.reps}{' --out ' + str(args.out) if args.out else ''}`",
             "- Keys node,technique (2000 groups), tolerance 2 s, 30 days; best of "
             f"{args.reps} runs, each in a fresh process; RSS = peak of that process "
             "(the Arrow table included)", "",
             "| incumbent x candidate | ASOF join s (floor) | exact one-to-one s | ratio | "
             "pairs (exact / ASOF) | full parity report s | peak RSS GB (ASOF / exact / report) |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"ev-{n}.parquet"
            generate(n, path)
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.reps):
                for what in ("asof", "match", "report"):
                    r = run_one(what, path)
                    if what not in best or r["seconds"] < best[what]["seconds"]:
                        best[what] = r
                    print(n, what, r, flush=True)
            a, m, rep = best["asof"], best["match"], best["report"]
            lines.append(
                f"| {n:,} x {n:,} | {a['seconds']:.2f} | {m['seconds']:.2f} | "
                f"{m['seconds'] / a['seconds']:.2f}x | {int(m['pairs']):,} / {int(a['pairs']):,} | "
                f"{rep['seconds']:.2f} | {a['rss_gb']:.2f} / {m['rss_gb']:.2f} / {rep['rss_gb']:.2f} |")
    lines += ["", "The ASOF join pairs every incumbent with the nearest earlier candidate of its "
              "group (no tolerance, not one-to-one: one candidate can serve many incumbents); the "
              "exact path numbers the groups, sorts, pairs segments of one incumbent and one "
              "candidate in numpy and sweeps only the denser segments in Python "
              "(harness/report/parity/match.py).", END]
    section = "\n".join(lines)
    print(section)
    if args.out:
        _results.write_section(args.out, section, BEGIN, END)


if __name__ == "__main__":
    main()
