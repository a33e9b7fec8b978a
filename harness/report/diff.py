"""``shadowtest diff BASELINE CURRENT``: what changed between two results files, and the
baseline rule of ``--shadowtest-baseline``.

Rows are compared per key (scenario, context, kernel, sensor). A key with several rows
(repeated runs, several nodes on one kernel) is represented by its worst verdict (order
``harness.core.policy.WORST``; the last such row in file order), and its latency by the
median over its DETECTED rows.

A change from baseline ``b`` to current ``c`` (``classify``) is decided by
``harness.core.policy.change`` (the one policy table, which also reads ``known_gap``):

- a **regression** when ``c`` fails as a rule (MISSED without a declared known gap,
  UNEXPECTED, RACED) and ``b`` differs: DETECTED->MISSED, CLEAN->UNEXPECTED,
  NOT_EXECUTED->MISSED, BLOCKED->RACED, ...; a key only in CURRENT with such a verdict is a
  regression too (nothing excuses it); MISSED/UNEXPECTED->RACED is an improvement (the
  detection now passes);
- **sensor down** when ``c`` is SENSOR_DOWN and ``b`` was not: not a regression of the
  rules, reported on its own (a regression cannot be ruled out);
- **new** for a key only in CURRENT that does not fail: a pass, NOT_EXECUTED, or a MISSED
  with a declared known gap (e.g. a kernel added to the matrix);
- an **improvement** when ``b`` failed (or was a known gap's MISSED) and ``c`` passes;
- **other** for any other change (e.g. DETECTED->NOT_EXECUTED, SENSOR_DOWN->DETECTED);
- **known** when ``b == c`` and ``c`` fails: reported, never failing.

Exit codes (``run_diff``): 0 no regression and no new SENSOR_DOWN; 1 at least one
regression; 3 no regression but a sensor went down (SENSOR_DOWN where the baseline had
another verdict); 2 usage error (a results file missing or unreadable, a bad threshold).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core import policy
from harness.core.policy import Outcome
from harness.core.verdict import Verdict
from harness.report.results import read_rows
from harness.sensors.rulepack import describe, identity

Key = tuple[str, str, str, str]  # scenario, context, kernel, sensor
DEFAULT_THRESHOLDS = ("50%", "10ms")
EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_SENSOR_DOWN = 0, 1, 2, 3


def key_of(row: Mapping[str, Any]) -> Key:
    return (str(row.get("scenario")), str(row.get("context")), str(row.get("kernel")),
            str(row.get("sensor")))


def classify(baseline: Outcome | str | None, current: Outcome | str) -> str:
    """regression | sensor_down | improvement | other | known | same | new (see module doc);
    a verdict given as a string has no known gap."""
    def outcome(o: Outcome | str) -> Outcome:
        return o if isinstance(o, Outcome) else Outcome(Verdict(o))

    return policy.change(None if baseline is None else outcome(baseline), outcome(current)).value


@dataclass
class Entry:
    """All rows of one key in one results file."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def row(self) -> dict[str, Any]:
        """The row that represents the key: the worst verdict (``policy.WORST``)."""
        return policy.worst(self.rows)

    @property
    def verdict(self) -> str:
        return str(self.row.get("verdict"))

    @property
    def outcome(self) -> Outcome:
        """The representing row's verdict and known-gap flag."""
        return policy.outcome_of_row(self.row)

    @property
    def latency(self) -> float | None:
        values = [float(r["latency_ms"]) for r in self.rows
                  if r.get("verdict") == "DETECTED" and r.get("latency_ms") is not None]
        return statistics.median(values) if values else None


def index(rows: Iterable[Mapping[str, Any]]) -> dict[Key, Entry]:
    out: dict[Key, Entry] = defaultdict(Entry)
    for row in rows:
        if isinstance(row, Mapping) and "verdict" in row:
            policy.verdict_of(row["verdict"])  # an unknown verdict is an error, not a pass
            out[key_of(row)].rows.append(dict(row))
    return dict(out)


# ----------------------------------------------------------------- thresholds
@dataclass(frozen=True)
class Threshold:
    relative: float | None = None  # 0.5 = 50 %
    absolute_ms: float | None = None

    def exceeded(self, before: float, after: float) -> bool:
        delta = abs(after - before)
        if self.relative is not None and delta <= self.relative * before:
            return False
        return not (self.absolute_ms is not None and delta <= self.absolute_ms)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_thresholds(specs: Sequence[str]) -> Threshold:
    """``50%`` (relative to the baseline's latency) and/or ``200ms`` / ``0.2s`` (absolute); a
    shift is reported when it exceeds every threshold given."""
    rel: float | None = None
    absolute: float | None = None
    for spec in specs:
        for part in str(spec).replace("+", ",").split(","):
            text = part.strip().lower()
            number = _number(text.rstrip("%ms"))
            if number is None or not text.endswith(("%", "ms", "s")):
                raise ValueError(
                    f"--latency-threshold {spec!r}: expected a percentage like 50% or a duration "
                    f"like 200ms or 0.2s, got {part.strip()!r}")
            if text.endswith("%"):
                rel = number / 100.0
            elif text.endswith("ms"):
                absolute = number
            else:
                absolute = number * 1000.0
            if (rel is not None and rel < 0) or (absolute is not None and absolute < 0):
                raise ValueError(f"--latency-threshold {spec!r}: must not be negative")
    return Threshold(rel, absolute)


# ----------------------------------------------------------------- the diff
def _ident(key: Key) -> dict[str, str]:
    return dict(zip(("scenario", "context", "kernel", "sensor"), key, strict=True))


def _change(key: Key, b: Entry | None, c: Entry | None, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {**_ident(key), "kind": kind}
    for side, entry in (("baseline", b), ("current", c)):
        row = entry.row if entry else None
        out[side] = row.get("verdict") if row else None
        out[f"{side}_rule"] = row.get("rule") if row else None
        out[f"{side}_runs"] = len(entry.rows) if entry else 0
    out["reason"] = c.row.get("reason", "") if c else ""
    return out


def _techniques(row: Mapping[str, Any]) -> list[str]:
    det = row.get("detection") or {}
    return sorted(str(t) for t in det.get("technique") or ())


def diff(baseline: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]],
         threshold: Threshold | None = None) -> dict[str, Any]:
    """Every change between two sets of results rows, sorted, deterministic."""
    threshold = threshold or parse_thresholds(DEFAULT_THRESHOLDS)
    base, cur = index(baseline), index(current)
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "regressions", "sensor_down", "improvements", "other_changes", "known_failing",
        "rule_changes", "technique_changes", "latency_shifts", "rulepack_changes",
        "only_baseline", "only_current")}
    for key in sorted(set(base) | set(cur)):
        b, c = base.get(key), cur.get(key)
        if c is None:
            assert b is not None
            out["only_baseline"].append(_change(key, b, None, "only-baseline"))
            continue
        kind = classify(b.outcome if b else None, c.outcome)
        if b is None:
            out["only_current"].append(_change(key, None, c, "only-current"))
        bucket = {"regression": "regressions", "sensor_down": "sensor_down",
                  "improvement": "improvements", "other": "other_changes",
                  "known": "known_failing"}.get(kind)
        if bucket:
            label = f"{b.verdict if b else 'absent'}->{c.verdict}"
            out[bucket].append(_change(key, b, c, label))
        if b is None:
            continue
        brow, crow = b.row, c.row
        if brow.get("rule") and crow.get("rule") and brow["rule"] != crow["rule"]:
            out["rule_changes"].append({**_ident(key), "baseline": brow["rule"],
                                        "current": crow["rule"]})
        bt, ct = _techniques(brow), _techniques(crow)
        if brow.get("detection") and crow.get("detection") and bt != ct:
            out["technique_changes"].append({**_ident(key), "baseline": bt, "current": ct})
        bl, cl = b.latency, c.latency
        if bl is not None and cl is not None and threshold.exceeded(bl, cl):
            out["latency_shifts"].append({**_ident(key), "baseline_ms": round(bl, 3),
                                          "current_ms": round(cl, 3),
                                          "delta_ms": round(cl - bl, 3)})
    out["rulepack_changes"] = _rulepack_changes(base, cur)
    code = (EXIT_REGRESSION if out["regressions"] else
            EXIT_SENSOR_DOWN if out["sensor_down"] else EXIT_OK)
    summary = {k: len(v) for k, v in out.items()}
    summary["keys_baseline"], summary["keys_current"] = len(base), len(cur)
    return {"summary": summary, **out, "exit_code": code}


def _rulepack_changes(base: Mapping[Key, Entry], cur: Mapping[Key, Entry]) -> list[dict[str, Any]]:
    """Per sensor: the distinct rule-pack identities on each side, when they differ."""
    packs: dict[str, dict[str, dict[tuple[Any, ...], Any]]] = defaultdict(
        lambda: {"baseline": {}, "current": {}})
    for side, entries in (("baseline", base), ("current", cur)):
        for key, entry in entries.items():
            for row in entry.rows:
                pack = row.get("rulepack")
                packs[key[3]][side].setdefault(identity(pack), pack)
    out = []
    for sensor in sorted(packs):
        b, c = packs[sensor]["baseline"], packs[sensor]["current"]
        if b and c and set(b) != set(c):
            out.append({"sensor": sensor,
                        "baseline": sorted(describe(p) for p in b.values()),
                        "current": sorted(describe(p) for p in c.values()),
                        "baseline_sha256": sorted(str(i[3]) for i in b),
                        "current_sha256": sorted(str(i[3]) for i in c)})
    return out


# ----------------------------------------------------------------- rendering
_SECTIONS = (
    ("regressions", "Regressions", ("scenario", "context", "kernel", "sensor", "kind",
                                    "baseline_rule", "reason")),
    ("sensor_down", "Sensor down (not a rule regression; a regression cannot be ruled out)",
     ("scenario", "context", "kernel", "sensor", "kind", "reason")),
    ("improvements", "Improvements", ("scenario", "context", "kernel", "sensor", "kind",
                                      "current_rule")),
    ("other_changes", "Other verdict changes", ("scenario", "context", "kernel", "sensor", "kind")),
    ("known_failing", "Failing in both (known, not a regression)",
     ("scenario", "context", "kernel", "sensor", "kind")),
    ("rule_changes", "Changed rule names", ("scenario", "context", "kernel", "sensor", "baseline",
                                            "current")),
    ("technique_changes", "Changed technique tags", ("scenario", "context", "kernel", "sensor",
                                                     "baseline", "current")),
    ("rulepack_changes", "Rule-pack changes", ("sensor", "baseline", "current")),
    ("latency_shifts", "Latency shifts", ("scenario", "context", "kernel", "sensor", "baseline_ms",
                                          "current_ms", "delta_ms")),
    ("only_baseline", "Only in the baseline", ("scenario", "context", "kernel", "sensor", "baseline")),
    ("only_current", "Only in the current results", ("scenario", "context", "kernel", "sensor",
                                                     "current")),
)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(result: Mapping[str, Any], baseline: str, current: str) -> str:
    s = result["summary"]
    lines = [f"# shadowtest diff: `{baseline}` -> `{current}`", "",
             f"{s['regressions']} regression(s), {s['sensor_down']} sensor down, "
             f"{s['improvements']} improvement(s), {s['rule_changes']} rule change(s), "
             f"{s['technique_changes']} technique change(s), {s['rulepack_changes']} rule-pack "
             f"change(s), {s['latency_shifts']} latency shift(s); {s['only_baseline']} key(s) only "
             f"in the baseline, {s['only_current']} only in the current results. "
             f"Exit code {result['exit_code']}.", ""]
    for name, title, cols in _SECTIONS:
        items = result[name]
        if not items:
            continue
        lines += [f"## {title} ({len(items)})", "", "| " + " | ".join(cols) + " |",
                  "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(i.get(c)) for c in cols) + " |" for i in items]
        lines.append("")
    return "\n".join(lines)


def render_text(result: Mapping[str, Any]) -> str:
    """The terminal view: one line per regression / sensor-down / improvement."""
    out = []
    for name, label in (("regressions", "REGRESSION"), ("sensor_down", "SENSOR DOWN"),
                        ("improvements", "improved"), ("rulepack_changes", "rule pack")):
        for i in result[name]:
            if name == "rulepack_changes":
                out.append(f"{label:<12} {i['sensor']}: {', '.join(i['baseline'])} -> "
                           f"{', '.join(i['current'])}")
            else:
                out.append(f"{label:<12} {i['scenario']}[{i['context']}] kernel {i['kernel']} "
                           f"{i['sensor']}: {i['kind']}")
    s = result["summary"]
    out.append(f"shadowtest diff: {s['regressions']} regression(s), {s['sensor_down']} sensor "
               f"down, {s['improvements']} improvement(s), {s['other_changes']} other change(s) "
               f"(exit {result['exit_code']})")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------- --shadowtest-baseline
def against_baseline(rows: Iterable[Mapping[str, Any]],
                     baseline: Mapping[Key, Entry]) -> list[tuple[dict[str, Any], str]]:
    """(row, classification) for a test's rows (``harness.pytest.baseline`` fails a test on
    a ``regression`` or ``sensor_down``; ``known`` failures, the same verdict as the
    baseline's, do not). A key absent from the baseline is classified as new: it fails as
    it would without a baseline, except SENSOR_DOWN (``sensor_down``, fails too)."""
    out = []
    for row in rows:
        entry = baseline.get(key_of(row))
        out.append((dict(row), classify(entry.outcome if entry else None,
                                        policy.outcome_of_row(row))))
    return out


# ----------------------------------------------------------------- CLI
def add_diff_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "diff", help="compare two results files: regressions, rule / technique / rule-pack "
                     "changes, latency shifts",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("baseline", type=Path, help="the baseline results file (JSON lines)")
    p.add_argument("current", type=Path, help="the current results file (JSON lines)")
    p.add_argument("--latency-threshold", action="append", metavar="50%|200ms",
                   help="report a latency shift beyond this (relative to the baseline, or "
                        "absolute); repeatable, all must be exceeded (default: 50%% and 10ms)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the diff as JSON")
    p.add_argument("--markdown", type=Path, metavar="OUT", help="write the diff as Markdown")
    return p


def run_diff(args: argparse.Namespace) -> int:
    for path in (args.baseline, args.current):
        if not Path(path).is_file():
            print(f"shadowtest diff: error: {path}: no such results file (expected a JSON-lines "
                  "file written by shadowtest run --results)", file=sys.stderr)
            return EXIT_USAGE
    try:
        threshold = parse_thresholds(args.latency_threshold or DEFAULT_THRESHOLDS)
    except ValueError as exc:
        print(f"shadowtest diff: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = diff(read_rows(Path(args.baseline)), read_rows(Path(args.current)), threshold)
    except ValueError as exc:  # a row with a verdict shadowtest never writes
        print(f"shadowtest diff: error: {exc} (expected a results file written by shadowtest "
              "run --results)", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", "utf-8")
    if args.markdown:
        Path(args.markdown).write_text(render_markdown(result, str(args.baseline),
                                                       str(args.current)), "utf-8")
    print(render_text(result), end="")
    return int(result["exit_code"])
