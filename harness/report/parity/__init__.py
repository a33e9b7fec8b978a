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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.core.detection import Detection
from harness.core.errors import ConfigError
from harness.report.parity.duck import match_duckdb, summarise
from harness.report.parity.frame import arrow_table, columns, in_window, iso, severity_of
from harness.report.parity.markdown import render_markdown
from harness.report.parity.options import (
    DEFAULTS,
    EXIT_EMPTY,
    EXIT_FAILED,
    EXIT_PASSED,
    EXIT_USAGE,
    Options,
    options,
    seconds,
)

__all__ = ["EXIT_EMPTY", "EXIT_FAILED", "EXIT_PASSED", "EXIT_USAGE", "Options",
           "add_parity_parser", "match_duckdb", "parity", "render_markdown", "run_parity",
           "severity_of", "summarise"]


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
            "window": {"start": iso(round(start * 1e6)), "end": iso(round(end * 1e6)),
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


def run_parity(args: argparse.Namespace) -> int:
    # the sources (configuration, results, the sensors' replay) load only when parity runs
    from harness.report.parity.sources import configured, load_source

    try:
        conf, settings = configured(args.config)
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
