"""Results rows (one JSON line per run x sensor) and the file they are appended to.

The row is a public contract: keys are only added, never renamed (CHANGELOG.md).
``ROW_KEYS`` documents every key of schema 1.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.core.detection import Detection
from harness.core.expectation import resolve
from harness.core.policy import known_gap
from harness.core.run import Run
from harness.core.scenario import Scenario
from harness.core.secrets import redact
from harness.core.verdict import Judgement, NearMiss
from harness.engine.execute import Outcome
from harness.sensors.rulepack import for_row

SCHEMA = 1

#: every key of a schema-1 row and what it holds (the public contract; keys are only added)
ROW_KEYS: dict[str, str] = {
    "schema": "1",
    "run_id": "the run's id (st + 12 hex), stamped into the run's environment and names",
    "scenario": "scenario id", "technique": "the scenario's ATT&CK technique (null: benign)",
    "tactic": "the scenario's tactic", "benign": "true for a benign control",
    "context": "the context the run ran in (host, namespace, container-*, pod-*)",
    "node": "node name", "kernel": "the node's kernel release",
    "sensor": "sensor name (its [tool.shadowtest.sensors.<name>] table)",
    "verdict": "DETECTED MISSED BLOCKED RACED NOT_EXECUTED SENSOR_DOWN UNEXPECTED CLEAN",
    "latency_ms": "event to harness, ms (null unless a detection matched)",
    "rule": "the matched detection's rule", "reason": "why this verdict",
    "started_at": "ISO 8601 UTC", "ended_at": "ISO 8601 UTC",
    "correlated_by": "run_id | container_id | cgroup_id | process_tree",
    "expected": "{technique, rule}", "detection": "the matched detection (summary)",
    "near_misses": "[{detection, correlated_by, mismatches: [{field, expected, got}]}]",
    "lost_events": "events the sensor lost", "malformed_lines": "unreadable sensor lines",
    "action_ms": "the atomic's own time", "container_id": "the run's container id",
    "cgroup_id": "the run's cgroup id", "executed": "the action provably ran",
    "pids": "processes the harness started for the run", "facts": "node facts",
    "rulepack": "the sensor's rule-pack identity: {kind, name, version, sha256, files, "
                "policies, seen, reason} (harness/sensors/rulepack.py)",
    "enforcement": "enforcement runs (an enforce expectation, or a stopped benign control): "
                   "{expected: sigkill|deny|override|null, reported: what the sensor says it "
                   "did (normalised) or null, observed: killed|denied|completed, side_effect: "
                   "true|false|null, effect: the side effect's description}; a stopped benign control adds "
                   "rule (the claiming detection's); null otherwise",
    "killed_by": "the signal that ended the action (SIGKILL), null when it exited by itself",
    "exit_code": "the action's exit code (-9 or 137 for a SIGKILL), null when it did not run",
    "side_effect": "the atomic's side-effect probe after the action: true (the effect exists), "
                   "false (absent), null (not probed or unknown)",
}


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def rows_for(outcome: Outcome, scenario: Scenario,
             rulepacks: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per sensor for one run; ``rulepacks`` = each sensor's rule-pack identity
    (``harness.sensors.rulepack.rulepacks_of``), completed with what this run's detections
    report."""
    run = outcome.run
    facts = run.facts
    action_ms = round(run.action_seconds * 1000.0, 3)
    out = []
    for j in outcome.judgements:
        health = outcome.health.get(j.sensor)
        exp = j.expected or resolve(scenario, j.sensor, facts)
        out.append({
            "schema": SCHEMA,
            "run_id": run.run_id,
            "scenario": scenario.id,
            "technique": scenario.technique,
            "tactic": scenario.tactic,
            "benign": scenario.benign,
            "context": run.context,
            "node": run.node,
            "kernel": facts.get("kernel"),
            "sensor": j.sensor,
            "verdict": j.verdict.value,
            "latency_ms": j.latency_ms,
            "rule": j.detection.rule if j.detection else None,
            "reason": j.reason,
            "started_at": iso(run.started_at),
            "ended_at": iso(run.ended_at),
            "correlated_by": j.correlated_by,
            "expected": {"technique": exp.technique, "rule": exp.rule, "gap": exp.gap,
                         "enforce": exp.enforce},
            "known_gap": known_gap(j),
            "detection": j.detection.summary() if j.detection else None,
            "near_misses": [near_row(n) for n in j.near_misses],
            "lost_events": health.lost if health else 0,
            "malformed_lines": health.malformed if health else 0,
            "action_ms": action_ms,
            "container_id": run.container_id,
            "cgroup_id": run.cgroup_id,
            "executed": run.executed,
            "pids": sorted(run.pids),
            "facts": facts,
            "rulepack": for_row((rulepacks or {}).get(j.sensor), _detections_of(j)),
            "enforcement": dict(j.enforcement) if j.enforcement is not None else None,
            "killed_by": run.killed_by,
            "exit_code": run.exit_code,
            "side_effect": run.side_effect,
        })
    return out


def _detections_of(j: Judgement) -> list[Detection]:
    """The run's own detections: the matched one and the correlated near misses."""
    out = [j.detection] if j.detection else []
    return out + [n.detection for n in j.near_misses if n.correlated_by]


def near_row(n: NearMiss) -> dict[str, Any]:
    return {
        "detection": n.detection.summary(),
        "correlated_by": n.correlated_by,
        "mismatches": [{"field": m.field, "expected": m.expected, "got": m.got}
                       for m in n.mismatches],
    }


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows as JSON lines, under an exclusive lock, flushed: an interrupted run keeps
    every row written before the interrupt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = redact("".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
    with path.open("a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(data)
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_UN)


def run_of(row: dict[str, Any]) -> Run:
    """The Run a results row was judged on (for judging again offline)."""
    return Run(
        run_id=row["run_id"], scenario=row["scenario"], context=row["context"], node=row["node"],
        started_at=dt.datetime.fromisoformat(row["started_at"]).timestamp(),
        ended_at=dt.datetime.fromisoformat(row["ended_at"]).timestamp(),
        executed=bool(row.get("executed", row["verdict"] != "NOT_EXECUTED")),
        reason=row["reason"] if row["verdict"] == "NOT_EXECUTED" else "",
        pids=frozenset(int(p) for p in row.get("pids", ())),
        cgroup_id=row.get("cgroup_id"), container_id=row.get("container_id"),
        names=(row["run_id"],), facts=dict(row.get("facts") or {}),
        killed_by=row.get("killed_by"), exit_code=row.get("exit_code"),
        side_effect=row.get("side_effect"),
        denied=(row.get("enforcement") or {}).get("observed") == "denied",
    )


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a results file; a torn last line (crash mid-write) is skipped."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def explain(scenario: str, context: str, node: str, kernel: str, run_id: str,
            judgements: Iterable[Judgement]) -> str:
    """The failure message: each sensor's verdict; for MISSED, nearest detections as
    (field, expected, got)."""
    lines = [f"{scenario}[{context}-{node}] on kernel {kernel} (run {run_id}):"]
    for j in judgements:
        extra = f" ({j.correlated_by}, {j.latency_ms} ms)" if j.latency_ms is not None else ""
        lines.append(f"  {j.sensor:<10} {j.verdict.value:<13} {j.reason}{extra}")
        if j.near_misses:
            lines.append("      nearest detections:")
        for i, n in enumerate(j.near_misses, 1):
            d = n.detection
            lines.append(f"      #{i} {d.rule} pid={d.pid} comm={d.comm} "
                         f"(correlated by {n.correlated_by or 'nothing'})")
            lines.append(f"         {'field':<12} {'expected':<24} got")
            lines.extend(f"         {m.field:<12} {m.expected!s:<24} {m.got}" for m in n.mismatches)
        if j.verdict.value == "MISSED" and not j.near_misses:
            lines.append("      nearest detections: none in the window")
    return redact("\n".join(lines))
