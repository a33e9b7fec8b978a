"""``shadowtest report RESULTS.jsonl [--html OUT] [--diff DIFF.json] [--parity PARITY.json]``:
the verdict counts and the scenario x kernel x sensor grid in the terminal, and optionally
one standalone HTML report."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` sub-command's arguments."""
    parser.add_argument("results", type=Path, help="a results file (JSON lines) written by run")
    parser.add_argument("--html", type=Path, metavar="OUT",
                        help="also write one standalone, offline HTML report to OUT")
    parser.add_argument("--diff", type=Path, metavar="DIFF.json",
                        help="add the diff view (the JSON of shadowtest diff --json) to --html")
    parser.add_argument("--parity", type=Path, metavar="PARITY.json",
                        help="add the parity view (the JSON of shadowtest parity --out) to --html")
    parser.add_argument("--no-grid", dest="grid", action="store_false",
                        help="print only the counts by kernel and sensor, not the grid")


def run_report(args: argparse.Namespace) -> int:
    """0: no failing verdict; 1: at least one (``harness.core.policy``: MISSED but a known
    gap's, UNEXPECTED, SENSOR_DOWN, RACED); 2: usage (also a row with an unknown verdict)."""
    from harness.report.results import read_rows
    from harness.report.summary import failing, render

    if not args.results.is_file():
        print(f"shadowtest: error: {args.results}: no such results file", file=sys.stderr)
        return 2
    extra: dict[str, dict[str, Any] | None] = {"diff": None, "parity": None}
    for kind in extra:
        path: Path | None = getattr(args, kind, None)
        if path is None:
            continue
        if getattr(args, "html", None) is None:
            print(f"shadowtest: error: --{kind} is shown in the HTML report: add --html OUT",
                  file=sys.stderr)
            return 2
        try:
            doc = json.loads(path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"shadowtest: error: --{kind} {path}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(doc, dict):
            print(f"shadowtest: error: --{kind} {path}: expected a JSON object, got "
                  f"{type(doc).__name__}", file=sys.stderr)
            return 2
        extra[kind] = doc
    rows = list(read_rows(args.results))
    width = shutil.get_terminal_size((132, 24)).columns
    try:
        text = render(rows, width=width, color=sys.stdout.isatty(), grid=getattr(args, "grid", True))
    except (KeyError, ValueError) as exc:  # a row shadowtest did not write
        print(f"shadowtest: error: {args.results}: {exc}: expected a results file written by "
              "shadowtest run --results", file=sys.stderr)
        return 2
    print(text, end="")
    if getattr(args, "html", None) is not None:
        from harness.report.html import write_html

        out = write_html(rows, args.html, diff=extra["diff"], parity=extra["parity"],
                         title=f"shadowtest report: {args.results.name}")
        print(f"shadowtest: HTML report written to {out}")
    return 1 if failing(rows) else 0
