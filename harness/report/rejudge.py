"""Judge recorded runs again, offline, against a recorded detection file of any adapter."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from harness.core.expectation import of_row, resolve
from harness.core.health import Health
from harness.core.policy import known_gap
from harness.core.scenario import Scenario
from harness.core.verdict import enforcement_claims, judge, with_claims
from harness.engine.execute import Outcome, exit_records
from harness.report.results import rows_for, run_of
from harness.sensors.base import Quiet, Sensor, expect_key

#: a recorded run's window when its scenario file does not set one (the run default)
DEFAULT_WINDOW = 5.0


def rejudge(rows: Iterable[dict[str, Any]], sensors: Mapping[str, Sensor],
            scenarios: Mapping[str, Scenario]) -> list[dict[str, Any]]:
    """One new row per (recorded run, sensor). Expectations come from the scenario files
    when found by id (on the recorded node's facts, as the live judge), else from the
    ``expected`` of that sensor's recorded row (the run's first row when it has none)."""
    runs: dict[str, dict[str, Any]] = {}
    recorded: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        runs.setdefault(row["run_id"], row)
        recorded.setdefault((row["run_id"], str(row.get("sensor"))), row)
    detections = {name: s.stream.snapshot() for name, s in sensors.items()}
    records = exit_records(sensors)
    out: list[dict[str, Any]] = []
    for row in runs.values():
        run = run_of(row)
        scenario = scenarios.get(row["scenario"])
        if not run.executed:  # stopped by a sensor that claims it: judged (as live)
            window = (scenario.window if scenario and scenario.window else DEFAULT_WINDOW)
            until = run.ended_at + window + max(
                (s.delay for s in sensors.values()), default=0.0)
            run = with_claims(run, enforcement_claims(run, detections, until, records))
        judgements = []
        own: dict[str, dict[str, Any]] = {}  # each sensor's recorded row of this run
        for name, sensor in sensors.items():
            key = expect_key(name, sensor)
            own[name] = recorded.get((row["run_id"], name)) or recorded.get(
                (row["run_id"], key)) or row
            expectation = (resolve(scenario, key, run.facts) if scenario
                           else of_row(own[name]))
            health = Health(sensor.health().up, sensor.health().reason, synced=True)
            if health.up and isinstance(sensor, Quiet):  # no sign of life: never MISSED
                why = sensor.silence(run.started_at,
                                     run.ended_at + sensor.delay)
                if why:
                    health = Health(False, why)
            judgements.append(judge(run, detections[name], expectation, health, name))
        outcome = Outcome(run, tuple(judgements), {n: s.health() for n, s in sensors.items()})
        out += rows_for(outcome, scenario) if scenario else recorded_rows(outcome, row, own)
    return out


def recorded_rows(outcome: Outcome, row: dict[str, Any],
                  own: Mapping[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Rows for a run whose scenario file is not at hand: the recorded row's identity (that
    sensor's own row in ``own`` when recorded) with the new verdicts."""
    out = []
    for j in outcome.judgements:
        new = dict((own or {}).get(j.sensor, row))
        new.update(sensor=j.sensor, verdict=j.verdict.value, latency_ms=j.latency_ms,
                   rule=j.detection.rule if j.detection else None, reason=j.reason,
                   correlated_by=j.correlated_by,
                   detection=j.detection.summary() if j.detection else None, near_misses=[],
                   known_gap=known_gap(j))
        out.append(new)
    return out
