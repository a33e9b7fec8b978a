"""The DuckDB parity engine (one machine): the key groups numbered and sorted in DuckDB,
paired by ``harness.report.parity.match``; and the per-rule report of the pairs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.report.parity.frame import SEVERITY_RANK, iso
from harness.report.parity.match import match_sorted
from harness.report.parity.options import EXIT_EMPTY, EXIT_FAILED, EXIT_PASSED, Options


def key_cols(table: Any) -> list[str]:
    return [c for c in table.column_names if re.fullmatch(r"k\d+", c)]


def match_duckdb(table: Any, tol_us: int, con: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(incumbent seq, candidate seq) of every pair: DuckDB numbers the key groups and
    sorts; ``match_sorted`` pairs."""
    import duckdb

    con = con or duckdb.connect()
    con.register("ev", table)
    keys = key_cols(table)
    if keys:
        on = " AND ".join(f"ev.{k} IS NOT DISTINCT FROM g.{k}" for k in keys)
        # S608: the only interpolated names are this module's own columns k0..kN
        con.execute(f"CREATE OR REPLACE TEMP TABLE g AS SELECT {', '.join(keys)}, "  # noqa: S608
                    f"(row_number() OVER ()) - 1 AS gid FROM (SELECT DISTINCT {', '.join(keys)} "
                    "FROM ev)")
        sql = (f"SELECT g.gid, ev.ts, ev.side, ev.seq FROM ev JOIN g ON {on} "  # noqa: S608
               "ORDER BY g.gid, ev.ts, ev.side, ev.seq")
    else:
        sql = "SELECT 0::BIGINT AS gid, ts, side, seq FROM ev ORDER BY ts, side, seq"
    arrays = con.execute(sql).fetchnumpy()
    con.unregister("ev")
    seq = np.asarray(arrays["seq"], dtype=np.int64)
    inc, cand = match_sorted(np.asarray(arrays["gid"]), np.asarray(arrays["ts"], dtype=np.int64),
                             np.asarray(arrays["side"], dtype=np.int8), tol_us)
    return seq[inc], seq[cand]



def summarise(table: Any, inc_seq: np.ndarray, cand_seq: np.ndarray, opts: Options,
              meta: Mapping[str, Any]) -> dict[str, Any]:
    """The deterministic report (JSON-able) from the events and the pairs."""
    import duckdb
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    con = duckdb.connect()
    con.register("ev", table)
    con.register("m", pa.table({"inc_seq": np.asarray(inc_seq, dtype=np.int64),
                                "cand_seq": np.asarray(cand_seq, dtype=np.int64)}))
    keys = key_cols(table)
    nulls = " OR ".join(f"{k} IS NULL" for k in keys) or "false"
    per_rule = con.execute(
        "SELECT ev.rule, ev.severity, count(*), count(m.inc_seq) FROM ev "
        "LEFT JOIN m ON ev.seq = m.inc_seq WHERE ev.side = 0 GROUP BY ALL").fetchall()
    cand_rule = con.execute(
        "SELECT ev.rule, count(*), count(m.cand_seq) FROM ev LEFT JOIN m ON ev.seq = m.cand_seq "
        "WHERE ev.side = 1 GROUP BY ALL ORDER BY ev.rule").fetchall()
    totals = con.execute(
        f"SELECT side, count(*), count(*) FILTER (WHERE {nulls}) FROM ev "  # noqa: S608
        "GROUP BY side").fetchall()
    dts = con.execute("SELECT coalesce(max(abs(a.ts - b.ts)), 0), coalesce(avg(abs(a.ts - b.ts)), 0) "
                      "FROM m JOIN ev a ON a.seq = m.inc_seq JOIN ev b ON b.seq = m.cand_seq"
                      ).fetchone() or (0, 0)
    listed = {}
    for side, name, col in ((0, "unmatched_incumbent", "inc_seq"), (1, "unmatched_candidate",
                                                                     "cand_seq")):
        rows = con.execute(
            f"SELECT ts, rule, technique, severity, node, container_id, pid, "  # noqa: S608
            f"{', '.join(keys) or 'NULL'} FROM ev ANTI JOIN m ON ev.seq = m.{col} "
            f"WHERE side = {side} ORDER BY ts, seq LIMIT {int(opts.listed)}").fetchall()
        listed[name] = [{"ts": iso(r[0]), "rule": r[1], "technique": r[2], "severity": r[3],
                         "node": r[4], "container_id": r[5], "pid": r[6],
                         "keys": dict(zip(opts.keys, r[7:], strict=False))} for r in rows]
    rules: dict[str, dict[str, Any]] = {}
    for rule, sev, n, matched in per_rule:
        r = rules.setdefault(rule, {"rule": rule, "severity": None, "incumbent": 0, "matched": 0})
        r["incumbent"] += n
        r["matched"] += matched
        if sev is not None and SEVERITY_RANK[sev] > SEVERITY_RANK.get(r["severity"] or "", -1):
            r["severity"] = sev
    for r in rules.values():
        r["parity"] = round(r["matched"] / r["incumbent"], 6)
        r["gated"] = not opts.severities or r["severity"] in opts.severities
        r["passed"] = r["parity"] >= opts.gate if r["gated"] else None
    ordered = [rules[k] for k in sorted(rules)]
    gated = [r for r in ordered if r["gated"]]
    below = [r["rule"] for r in gated if not r["passed"]]
    code = EXIT_EMPTY if not gated else EXIT_FAILED if below else EXIT_PASSED
    count = {s: (n, nn) for s, n, nn in totals}
    matched_total = len(inc_seq)
    return {
        **meta,
        "keys": list(opts.keys),
        "tolerance_ms": opts.tolerance_us / 1000.0,
        "totals": {"incumbent": count.get(0, (0, 0))[0], "candidate": count.get(1, (0, 0))[0],
                   "matched": matched_total,
                   "incumbent_null_keys": count.get(0, (0, 0))[1],
                   "candidate_null_keys": count.get(1, (0, 0))[1],
                   "max_abs_dt_ms": round(float(dts[0]) / 1000.0, 3),
                   "mean_abs_dt_ms": round(float(dts[1]) / 1000.0, 3)},
        "rules": ordered,
        "candidate_rules": [{"rule": r, "candidate": n, "matched": m} for r, n, m in cand_rule],
        **listed,
        "listed_limit": opts.listed,
        "gate": {"threshold": opts.gate, "severities": list(opts.severities) or ["any"],
                 "rules_in_scope": len(gated), "rules_below": below,
                 "passed": code == EXIT_PASSED, "exit_code": code},
    }
