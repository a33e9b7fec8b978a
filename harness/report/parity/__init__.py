"""``shadowtest parity``: per-rule parity of a candidate sensor against an incumbent.

Both sides' detections (recorded files read through the adapters' normalisation, results
rows, or a configured sensor's recording) are matched one to one on the chosen keys with
timestamps within the tolerance (``harness.report.parity.match``: a maximum matching per key
group, deterministic). Per incumbent rule: matched / total = its parity. The gate passes
when every incumbent rule of the chosen severities has parity >= the gate.

Keys: ``cluster``, ``node``, ``container_id`` (compared on its first 12 characters, so
Falco's short ids meet full ids), ``cgroup_id``, ``pid``, ``technique`` (the detection's
first technique tag), ``rule``, ``comm``, or any field path of the detection
(``Detection.value``). A missing key value is a value of its own: null matches null only.

Exit codes: 0 gate passed; 1 gate failed; 2 usage or input error; 3 no incumbent rule of
the chosen severities in the window (nothing to gate).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.detection import Detection
from harness.core.errors import ConfigError
from harness.report.parity.match import match_sorted

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_EMPTY = 0, 1, 2, 3
DEFAULTS: dict[str, Any] = {"engine": "duckdb", "keys": "node,technique", "tolerance": "2s",
                            "gate": 0.95, "severity": "critical,high", "window": "30d"}
SEVERITY_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1, "info": 0}
_SEVERITY = {
    "critical": "critical", "emergency": "critical", "alert": "critical", "crit": "critical",
    "high": "high", "error": "high", "err": "high",
    "medium": "medium", "warning": "medium", "warn": "medium", "moderate": "medium",
    "low": "low", "notice": "low",
    "info": "info", "informational": "info", "debug": "info", "informative": "info",
}
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>us|ms|s|m|h|d|w)\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
LISTED = 100


def seconds(text: str, what: str) -> float:
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{what}: expected a duration like 2s, 500ms, 14d or 30d, got {text!r}")
    return float(m["n"]) * _UNITS[m["unit"]]


def severity_of(value: Any) -> str | None:
    """critical | high | medium | low | info from a product's severity (names, Falco
    priorities, Sysdig 0-7, CrowdStrike 0-100); None when unknown."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text.isdigit():
        n = int(text)
        if n > 7:  # CrowdStrike 0-100
            return "critical" if n >= 90 else "high" if n >= 70 else "medium" if n >= 50 else "low"
        return ("critical", "critical", "critical", "high", "medium", "low", "info", "info")[n]
    return _SEVERITY.get(text)


# ----------------------------------------------------------------- detections to columns
def key_value(d: Detection, name: str) -> str | None:
    if name == "technique":
        value: Any = d.technique[0] if d.technique else None
    elif name == "container_id":
        value = d.container_id[:12] if d.container_id else None
    elif name == "cluster":
        value = next((v for v in (d.value("cluster"), d.value("cluster_name"),
                                  d.value("k8s.cluster.name"), d.value("kubernetes.cluster.name"))
                      if v not in (None, "")), None)
    elif name in ("node", "cgroup_id", "pid", "rule", "comm", "severity"):
        value = getattr(d, name)
    else:
        value = d.value(name)
    return None if value in (None, "") else str(value)


def columns(incumbent: Sequence[Detection], candidate: Sequence[Detection],
            keys: Sequence[str]) -> dict[str, list[Any]]:
    """The event table both engines read: seq (load order, unique), side (0 incumbent, 1
    candidate), ts (integer microseconds), rule, severity, technique, node, container_id,
    pid, and k0..kN (the key values)."""
    cols: dict[str, list[Any]] = {c: [] for c in (
        "seq", "side", "ts", "rule", "severity", "technique", "node", "container_id", "pid",
        *(f"k{i}" for i in range(len(keys))))}
    seq = 0
    for side, dets in ((0, incumbent), (1, candidate)):
        for d in dets:
            cols["seq"].append(seq)
            seq += 1
            cols["side"].append(side)
            cols["ts"].append(round(d.observed_at * 1_000_000))
            cols["rule"].append(d.rule)
            cols["severity"].append(severity_of(d.severity))
            cols["technique"].append(",".join(d.technique) or None)
            cols["node"].append(d.node)
            cols["container_id"].append(d.container_id)
            cols["pid"].append(d.pid)
            for i, k in enumerate(keys):
                cols[f"k{i}"].append(key_value(d, k))
    return cols


def arrow_table(cols: Mapping[str, list[Any]]) -> Any:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    types = {"seq": pa.int64(), "side": pa.int8(), "ts": pa.int64(), "pid": pa.int64()}
    return pa.table({c: pa.array(v, type=types.get(c, pa.string())) for c, v in cols.items()})


# ----------------------------------------------------------------- DuckDB engine
def _key_cols(table: Any) -> list[str]:
    return [c for c in table.column_names if re.fullmatch(r"k\d+", c)]


def match_duckdb(table: Any, tol_us: int, con: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(incumbent seq, candidate seq) of every pair: DuckDB numbers the key groups and
    sorts; ``match_sorted`` pairs."""
    import duckdb

    con = con or duckdb.connect()
    con.register("ev", table)
    keys = _key_cols(table)
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


# ----------------------------------------------------------------- the report
@dataclass(frozen=True)
class Options:
    keys: tuple[str, ...]
    tolerance_us: int
    gate: float
    severities: tuple[str, ...]  # empty: every rule (also unrated ones)
    listed: int = LISTED


def summarise(table: Any, inc_seq: np.ndarray, cand_seq: np.ndarray, opts: Options,
              meta: Mapping[str, Any]) -> dict[str, Any]:
    """The deterministic report (JSON-able) from the events and the pairs."""
    import duckdb
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    con = duckdb.connect()
    con.register("ev", table)
    con.register("m", pa.table({"inc_seq": np.asarray(inc_seq, dtype=np.int64),
                                "cand_seq": np.asarray(cand_seq, dtype=np.int64)}))
    keys = _key_cols(table)
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
        listed[name] = [{"ts": _iso(r[0]), "rule": r[1], "technique": r[2], "severity": r[3],
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


def _iso(ts_us: int) -> str:
    return dt.datetime.fromtimestamp(ts_us / 1e6, dt.UTC).isoformat(timespec="microseconds")


def render_markdown(report: Mapping[str, Any]) -> str:
    g, t = report["gate"], report["totals"]
    verdict = "PASSED" if g["passed"] else "NOTHING TO GATE" if g["exit_code"] == EXIT_EMPTY else "FAILED"
    lines = [
        f"# Parity: `{report['candidate']}` against `{report['incumbent']}`", "",
        f"- Window: {report['window']['start']} .. {report['window']['end']} "
        f"({report['window']['length']})",
        f"- Keys: {', '.join(report['keys']) or '(none)'}; tolerance ±{report['tolerance_ms']:g} ms; "
        "one-to-one (maximum matching per key group, harness/report/parity/match.py)",
        f"- Detections: incumbent {t['incumbent']}, candidate {t['candidate']}, matched "
        f"{t['matched']}; with a null key: incumbent {t['incumbent_null_keys']}, candidate "
        f"{t['candidate_null_keys']}; |Δt| of pairs mean {t['mean_abs_dt_ms']} ms, max "
        f"{t['max_abs_dt_ms']} ms",
        f"- Gate: parity >= {g['threshold']:.2%} on every rule of severity "
        f"{', '.join(g['severities'])}: **{verdict}** ({g['rules_in_scope']} rule(s) in scope"
        + (f"; below: {', '.join(g['rules_below'])}" if g["rules_below"] else "") + ")", "",
        "## Incumbent rules", "", "| rule | severity | incumbent | matched | parity | gated | passed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rules"]:
        passed = "" if r["passed"] is None else "yes" if r["passed"] else "**no**"
        lines.append(f"| {r['rule']} | {r['severity'] or ''} | {r['incumbent']} | {r['matched']} "
                     f"| {r['parity']:.2%} | {'yes' if r['gated'] else 'no'} | {passed} |")
    lines += ["", "## Candidate rules", "", "| rule | candidate | matched |", "|---|---|---|"]
    lines += [f"| {r['rule']} | {r['candidate']} | {r['matched']} |" for r in report["candidate_rules"]]
    for name, title in (("unmatched_incumbent", "Unmatched incumbent detections"),
                        ("unmatched_candidate", "Unmatched candidate detections")):
        items = report[name]
        lines += ["", f"## {title} (first {report['listed_limit']})", ""]
        if not items:
            lines.append("none")
            continue
        lines += ["| ts | rule | technique | node | container_id | pid |", "|---|---|---|---|---|---|"]
        lines += [f"| {i['ts']} | {i['rule']} | {i['technique'] or ''} | {i['node'] or ''} | "
                  f"{i['container_id'] or ''} | {i['pid'] if i['pid'] is not None else ''} |"
                  for i in items]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- top level
def in_window(dets: Iterable[Detection], start: float, end: float) -> list[Detection]:
    return [d for d in dets if start <= d.observed_at <= end]


def parity(incumbent: Sequence[Detection], candidate: Sequence[Detection], opts: Options,
           window_s: float, until: float | None = None, engine: str = "duckdb",
           names: tuple[str, str] = ("incumbent", "candidate"),
           window_text: str | None = None) -> dict[str, Any]:
    """The parity report of two detection lists (the window ends at ``until``, else at the
    latest detection of either side)."""
    stamps = [d.observed_at for d in (*incumbent, *candidate)]
    end = until if until is not None else (max(stamps) if stamps else 0.0)
    start = end - window_s
    inc, cand = in_window(incumbent, start, end), in_window(candidate, start, end)
    table = arrow_table(columns(inc, cand, opts.keys))
    if engine == "spark":
        try:
            from harness.report.parity.spark import match_spark

            inc_seq, cand_seq = match_spark(table, opts.tolerance_us)
        except ModuleNotFoundError as exc:
            from harness.core.extras import missing_extra

            raise missing_extra(exc, "parity --engine spark") from exc
    elif engine == "duckdb":
        inc_seq, cand_seq = match_duckdb(table, opts.tolerance_us)
    else:
        raise ConfigError(f"parity engine {engine!r}: expected duckdb or spark")
    meta = {"incumbent": names[0], "candidate": names[1],
            "window": {"start": _iso(round(start * 1e6)), "end": _iso(round(end * 1e6)),
                       "length": window_text or f"{window_s:g}s"}}
    return summarise(table, inc_seq, cand_seq, opts, meta)


def add_parity_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "parity", help="per-rule parity of a candidate sensor against an incumbent, with a gate")
    p.add_argument("--incumbent", required=True, metavar="SRC",
                   help="TYPE:PATH (e.g. falco:events.jsonl, auditd:audit.log), "
                        "results:FILE.jsonl[#SENSOR], or a configured sensor name")
    p.add_argument("--candidate", required=True, metavar="SRC", help="as --incumbent")
    p.add_argument("--window", help="how far back from the latest detection (default 30d)")
    p.add_argument("--until", help="end of the window, ISO 8601 (default: latest detection)")
    p.add_argument("--keys", help="comma-separated match keys (default node,technique)")
    p.add_argument("--tolerance", help="max |Δt| of a pair, inclusive (default 2s)")
    p.add_argument("--gate", type=float, help="minimum parity per gated rule (default 0.95)")
    p.add_argument("--severity", help="severities gated (default critical,high; 'any' = all)")
    p.add_argument("--engine", choices=("duckdb", "spark"),
                   help="duckdb (one machine) or spark (pyspark); default from "
                        "[tool.shadowtest.parity] engine, else duckdb")
    p.add_argument("--out", type=Path, metavar="DIR", help="write parity.json and parity.md here")
    p.add_argument("--config", type=Path, help="shadowtest.toml or pyproject.toml")
    return p


def options(pick: Mapping[str, Any]) -> Options:
    """Options from the command line over ``[tool.shadowtest.parity]`` over the defaults."""
    keys = tuple(k.strip() for k in str(pick["keys"]).split(",") if k.strip())
    sev = tuple(s.strip().lower() for s in str(pick["severity"]).split(",") if s.strip())
    unknown = [s for s in sev if s not in (*SEVERITY_RANK, "any")]
    if unknown:
        raise ValueError(f"--severity {','.join(unknown)}: expected any or some of "
                         f"{', '.join(SEVERITY_RANK)}")
    gate = float(pick["gate"])
    if not 0.0 <= gate <= 1.0:
        raise ValueError(f"--gate {gate}: expected a fraction from 0 to 1, e.g. 0.95")
    return Options(keys, round(seconds(str(pick["tolerance"]), "--tolerance") * 1e6), gate,
                   () if "any" in sev else sev)


def run_parity(args: argparse.Namespace) -> int:
    from harness.report.parity.sources import configured, load_source

    try:
        conf, settings = configured(getattr(args, "config", None))
        pick: dict[str, Any] = {k: getattr(args, k, None) if getattr(args, k, None) is not None
                                else conf[k] for k in DEFAULTS}
        opts = options(pick)
        window_s = seconds(str(pick["window"]), "--window")
        until = dt.datetime.fromisoformat(args.until).timestamp() if args.until else None
        inc = load_source(args.incumbent, settings)
        cand = load_source(args.candidate, settings)
        report = parity(inc, cand, opts, window_s, until, str(pick["engine"]),
                        (args.incumbent, args.candidate), str(pick["window"]))
    except (ValueError, ConfigError, OSError) as exc:
        print(f"shadowtest parity: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = render_markdown(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "parity.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n",
                                              "utf-8")
        (args.out / "parity.md").write_text(text, "utf-8")
    print(text, end="")
    return int(report["gate"]["exit_code"])
