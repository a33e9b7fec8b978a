"""Pre-enforcement validation: is a kill/deny policy safe to promote, kernel by kernel?

``shadowtest enforcement-report RESULTS.jsonl [--json OUT]`` and a section of the terminal
summary. Rows of enforcement runs (an ``enforce`` expectation, ``expected.enforce``, or a
benign control stopped under an enforcing sensor, ``enforcement``) are counted per
(policy/rule, sensor) x kernel: BLOCKED, RACED, MISSED and not runnable (NOT_EXECUTED,
SENSOR_DOWN, with the reasons). A rule is safe to promote on a kernel when it was BLOCKED
at least once there and nothing else happened: no RACED, no MISSED, nothing not runnable,
and no benign control killed or denied by it (a stopped control that no detection claims
counts against every rule of that sensor on that kernel).

Exit codes: 0 every kernel is safe for every rule, 1 otherwise (also: no enforcement rows,
nothing is proven), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.report.sortkey import natural_key

NOT_RUNNABLE = ("NOT_EXECUTED", "SENSOR_DOWN")
COLUMNS = ("BLOCKED", "RACED", "MISSED", "not runnable", "benign stopped")


@dataclass
class Cell:
    """One (rule, sensor, kernel): verdict counts and why it is not safe."""

    rule: str
    sensor: str
    kernel: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    because: list[str] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return self.counts["BLOCKED"] > 0 and not self.because

    def add(self, why: str) -> None:
        if why not in self.because:
            self.because.append(why)

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "sensor": self.sensor, "kernel": self.kernel,
                "counts": self.counts, "safe": self.safe, "because": self.because}


def _rule_of(row: dict[str, Any]) -> str:
    rule = (row.get("expected") or {}).get("rule")
    if isinstance(rule, dict):  # a matcher: {prefix: ...}
        ((op, arg),) = rule.items()
        return f"{op}:{arg}"
    return str(rule or row.get("rule") or row.get("scenario"))


def _raced_why(row: dict[str, Any]) -> str:
    effect = (row.get("enforcement") or {}).get("effect") or "the side effect"
    how = (row.get("enforcement") or {}).get("reported") or "the enforcement"
    verb = "kill" if how == "sigkill" else how
    return f"RACED: the {verb} landed after the side effect ({effect} exists)"


def _missed_why(row: dict[str, Any]) -> str:
    reason = str(row.get("reason") or "")
    if reason.startswith("monitor-only"):
        return "MISSED: monitor-only (the rule fired without enforcing)"
    return f"MISSED: {reason}"


def cells_of(rows: Iterable[dict[str, Any]]) -> list[Cell]:
    """The (rule, sensor, kernel) cells of the enforcement rows, in a stable order."""
    all_rows = list(rows)
    cells: dict[tuple[str, str, str], Cell] = {}
    enforcing = {(str(r.get("sensor")), str(r.get("kernel"))) for r in all_rows
                 if (r.get("expected") or {}).get("enforce")}

    def cell(rule: str, sensor: str, kernel: str) -> Cell:
        return cells.setdefault((rule, sensor, kernel), Cell(rule, sensor, kernel))

    stopped_controls: list[dict[str, Any]] = []
    for r in all_rows:
        sensor, kernel, verdict = str(r.get("sensor")), str(r.get("kernel")), r.get("verdict")
        if r.get("benign"):
            if r.get("enforcement") and verdict == "UNEXPECTED":
                stopped_controls.append(r)
            continue
        if not (r.get("expected") or {}).get("enforce"):
            continue
        c = cell(_rule_of(r), sensor, kernel)
        if verdict in ("BLOCKED", "RACED", "MISSED"):
            c.counts[str(verdict)] += 1
        elif verdict in NOT_RUNNABLE:
            c.counts["not runnable"] += 1
        if verdict == "RACED":
            c.add(_raced_why(r))
        elif verdict == "MISSED":
            c.add(_missed_why(r))
        elif verdict in NOT_RUNNABLE:
            c.add(f"not runnable: {verdict} {r.get('reason')}")
    for r in stopped_controls:
        sensor, kernel = str(r.get("sensor")), str(r.get("kernel"))
        rule = (r.get("enforcement") or {}).get("rule") or r.get("rule")
        targets = [cell(str(rule), sensor, kernel)] if rule else \
            [c for c in cells.values() if (c.sensor, c.kernel) == (sensor, kernel)]
        if not targets and (sensor, kernel) in enforcing:
            targets = [cell("(unattributed)", sensor, kernel)]
        for c in targets:
            c.counts["benign stopped"] += 1
            by = f"{rule} of {sensor}" if rule else f"a policy of {sensor} (no detection claims it)"
            c.add(f"a benign control ({r.get('scenario')}[{r.get('context')}]) was "
                  f"{(r.get('enforcement') or {}).get('observed') or 'stopped'} by {by}")
    return sorted(cells.values(), key=lambda c: (natural_key(c.kernel), c.rule, c.sensor))


def sentences(cells: Sequence[Cell]) -> list[str]:
    """One plain sentence per (kernel, rule, sensor)."""
    out = []
    for c in cells:
        if c.safe:
            out.append(f"safe to promote {c.rule} ({c.sensor}) on kernel {c.kernel}: yes")
        else:
            why = "; ".join(c.because) or "nothing was BLOCKED (no enforcement run proved it)"
            out.append(f"safe to promote {c.rule} ({c.sensor}) on kernel {c.kernel}: "
                       f"no, because {why}")
    return out


def has_enforcement(rows: Iterable[dict[str, Any]]) -> bool:
    return any((r.get("expected") or {}).get("enforce") or r.get("enforcement") for r in rows)


def render(rows: Iterable[dict[str, Any]]) -> str:
    """The counts table and the sentences, as plain text ('' without enforcement rows)."""
    cells = cells_of(rows)
    if not cells:
        return ""
    head = ("kernel", "rule", "sensor", *COLUMNS)
    table = [head, *((c.kernel, c.rule, c.sensor, *(str(c.counts[k]) for k in COLUMNS))
                     for c in cells)]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["shadowtest pre-enforcement validation (rule, sensor) x kernel"]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
              for row in table]
    lines += sentences(cells)
    return "\n".join(lines) + "\n"


def report_json(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    cells = cells_of(rows)
    kernels: dict[str, dict[str, Any]] = defaultdict(lambda: {"safe": True, "rules": []})
    for c in cells:
        kernels[c.kernel]["rules"].append(c.as_json())
        kernels[c.kernel]["safe"] = kernels[c.kernel]["safe"] and c.safe
    return {"kernels": dict(kernels), "sentences": sentences(cells),
            "safe": bool(cells) and all(c.safe for c in cells)}


# ---------------------------------------------------------------- CLI
def add_parser(sub: Any) -> argparse.ArgumentParser:
    """``shadowtest enforcement-report RESULTS.jsonl [--json OUT]`` on an argparse
    sub-parsers object."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "enforcement-report",
        help="is a kill/deny policy safe to promote, kernel by kernel (pre-enforcement "
             "validation)",
        description="Counts BLOCKED / RACED / MISSED / not runnable per (rule, sensor) x "
                    "kernel of the enforcement runs in a results file, and says per kernel "
                    "whether each rule is safe to promote. Exit 0: every kernel safe; 1: not; "
                    "2: usage.")
    parser.add_argument("results", type=Path, help="a results file (JSON lines) written by run")
    parser.add_argument("--json", type=Path, metavar="OUT", dest="json_out",
                        help="also write the report as JSON to OUT")
    return parser


def run(args: argparse.Namespace) -> int:
    from harness.report.results import read_rows

    path: Path = args.results
    if not path.is_file():
        print(f"shadowtest: error: {path}: no such results file", file=sys.stderr)
        return 2
    rows = list(read_rows(path))
    doc = report_json(rows)
    out: Path | None = getattr(args, "json_out", None)
    if out is not None:
        out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    text = render(rows)
    if not text:
        print(f"{path}: no enforcement runs (no row with expected.enforce or enforcement): "
              "nothing is proven safe to promote")
        return 1
    print(text, end="")
    return 0 if doc["safe"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.report.enforcement RESULTS.jsonl [--json OUT]`` (the same as
    ``shadowtest enforcement-report``)."""
    parser = argparse.ArgumentParser(prog="shadowtest")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["enforcement-report", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
