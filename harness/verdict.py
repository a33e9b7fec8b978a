"""Verdicts and the pure ``judge``: no I/O, tested by tables of cases."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.correlate import correlate
from harness.detection import Detection
from harness.run import Run


class Verdict(enum.StrEnum):
    """The outcome for one (run, sensor), exactly as DESIGN.md defines it."""

    DETECTED = "DETECTED"
    MISSED = "MISSED"
    BLOCKED = "BLOCKED"
    RACED = "RACED"
    NOT_EXECUTED = "NOT_EXECUTED"
    SENSOR_DOWN = "SENSOR_DOWN"
    UNEXPECTED = "UNEXPECTED"
    #: a benign control on which no sensor fired: the expected outcome (not in DESIGN.md's
    #: seven, which name no verdict for a quiet control; added so a grid never says
    #: DETECTED for a control)
    CLEAN = "CLEAN"

    @property
    def failed(self) -> bool:
        """MISSED and UNEXPECTED fail a test; the others do not (RACED fails only enforcement)."""
        return self in (Verdict.MISSED, Verdict.UNEXPECTED)


@dataclass(frozen=True, slots=True)
class Expectation:
    """What one sensor must report for one scenario; ``None`` technique = benign (nothing).

    ``gap`` (a reason) declares a known gap: the sensor is not expected to catch the
    scenario. A miss is then reported with the reason and does not fail; a detection of
    ``technique`` is still DETECTED (the gap closed)."""

    technique: str | None
    rule: Any = None
    severity: Any = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    gap: str | None = None

    @property
    def benign(self) -> bool:
        return self.technique is None


@dataclass(frozen=True, slots=True)
class Health:
    """A sensor's health over a run's window."""

    up: bool
    reason: str = ""
    lost: int = 0
    malformed: int = 0
    synced: bool = False


@dataclass(frozen=True, slots=True)
class Mismatch:
    field: str
    expected: Any
    got: Any


@dataclass(frozen=True, slots=True)
class NearMiss:
    detection: Detection
    mismatches: tuple[Mismatch, ...]
    correlated_by: str | None


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verdict with what supports it."""

    sensor: str
    verdict: Verdict
    reason: str = ""
    detection: Detection | None = None
    correlated_by: str | None = None
    latency_ms: float | None = None
    near_misses: tuple[NearMiss, ...] = ()
    #: the expectation was a known gap: its reason (a MISSED that does not fail; on a
    #: DETECTED, the gap closed)
    gap: str | None = None

    @property
    def failed(self) -> bool:
        """The verdict fails the test: MISSED or UNEXPECTED, except a known gap's MISSED."""
        return self.verdict.failed and not (self.gap and self.verdict is Verdict.MISSED)


def matches(expected: Any, got: Any) -> bool:
    """Scalar = exact; one-key mapping = operator (prefix, contains, regex); list = any-of."""
    if isinstance(got, tuple | list) and not isinstance(expected, tuple | list):
        return any(matches(expected, g) for g in got)
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(expected) is type(got) and expected == got  # true never matches 1
    if isinstance(expected, Mapping):
        ((op, arg),) = expected.items()
        text = "" if got is None else str(got)
        if op == "prefix":
            return text.startswith(str(arg))
        if op == "contains":
            return str(arg) in text
        if op == "regex":
            return re.search(str(arg), text) is not None
        raise ValueError(f"unknown operator {op!r}: expected prefix, contains or regex")
    return bool(expected == got)


def compare(expectation: Expectation, detection: Detection) -> tuple[Mismatch, ...]:
    """Every (field, expected, got) that differs, technique first."""
    out: list[Mismatch] = []
    if expectation.technique is not None and not _technique_matches(
        expectation.technique, detection.technique
    ):
        out.append(Mismatch("technique", expectation.technique, list(detection.technique)))
    if expectation.rule is not None and not matches(expectation.rule, detection.rule):
        out.append(Mismatch("rule", expectation.rule, detection.rule))
    if expectation.severity is not None and not matches(expectation.severity, detection.severity):
        out.append(Mismatch("severity", expectation.severity, detection.severity))
    for path, want in expectation.fields.items():
        got = detection.value(path)
        if not matches(want, got):
            out.append(Mismatch(path, want, got))
    return tuple(out)


def _technique_matches(expected: str, got: Sequence[str]) -> bool:
    """T1055.008 is satisfied by T1055.008 only; a parent id T1055 by any of its sub-techniques."""
    return any(t == expected or t.startswith(expected + ".") for t in got)


def judge(
    run: Run,
    detections: Sequence[Detection],
    expectation: Expectation,
    health: Health,
    sensor: str,
    near: int = 3,
) -> Judgement:
    """Decide one sensor's verdict for one run. Pure: same inputs, same verdict."""
    if not run.executed:
        return Judgement(sensor, Verdict.NOT_EXECUTED, run.reason or "the action did not run")
    correlated = [(d, key) for d in detections if (key := correlate(run, d)) is not None]
    if expectation.benign:
        if correlated:
            d, key = correlated[0]
            return Judgement(
                sensor, Verdict.UNEXPECTED,
                f"benign control produced {d.rule!r} {list(d.technique)} (correlated by {key})",
                detection=d, correlated_by=key, latency_ms=_latency(run, d),
            )
        return _healthy_or_down(sensor, health, Verdict.CLEAN, "no detection, as expected")
    for d, key in correlated:
        if not compare(expectation, d):
            closed = f" (known gap closed: {expectation.gap})" if expectation.gap else ""
            return Judgement(
                sensor, Verdict.DETECTED, f"{d.rule} {list(d.technique)}{closed}",
                detection=d, correlated_by=key, latency_ms=_latency(run, d),
                gap=expectation.gap,
            )
    down = _healthy_or_down(sensor, health, Verdict.MISSED, "")
    if down.verdict is Verdict.SENSOR_DOWN:
        return down
    ranked = sorted(
        (NearMiss(d, compare(expectation, d), key) for d, key in correlated),
        key=lambda n: len(n.mismatches),
    )
    uncorrelated = [
        NearMiss(d, (*compare(expectation, d), Mismatch("run", run.run_id, None)), None)
        for d in detections
        if correlate(run, d) is None and not compare(expectation, d)
    ]
    nearest = tuple((ranked + uncorrelated)[:near])
    reason = (
        f"no {expectation.technique} detection correlated to run {run.run_id} "
        f"({len(correlated)} correlated, {len(detections)} seen in the window"
        + (", sensor synced past the window)" if health.synced else ")")
    )
    if expectation.gap:
        reason = f"known gap: {expectation.gap} ({reason})"
    return Judgement(sensor, Verdict.MISSED, reason, near_misses=nearest, gap=expectation.gap)


def row_failed(row: Mapping[str, Any]) -> bool:
    """A results row whose verdict fails (MISSED, UNEXPECTED, SENSOR_DOWN), a known gap's
    MISSED excepted."""
    if row.get("known_gap") and row.get("verdict") == Verdict.MISSED.value:
        return False
    return row.get("verdict") in ("MISSED", "UNEXPECTED", "SENSOR_DOWN")


def _healthy_or_down(sensor: str, health: Health, verdict: Verdict, reason: str) -> Judgement:
    if not health.up:
        return Judgement(sensor, Verdict.SENSOR_DOWN, health.reason or "sensor not running")
    if health.lost:
        return Judgement(
            sensor, Verdict.SENSOR_DOWN,
            f"sensor lost {health.lost} events during the window: a miss cannot be proved",
        )
    if health.malformed and verdict is Verdict.MISSED:
        return Judgement(
            sensor, Verdict.SENSOR_DOWN,
            f"{health.malformed} unreadable sensor line(s) during the window (one may be the "
            "detection): a miss cannot be proved",
        )
    return Judgement(sensor, verdict, reason)


def _latency(run: Run, d: Detection) -> float | None:
    """From the event (the sensor's own time, but never before the action started: audit
    clocks lag) to the harness reading the detection, in ms."""
    action = [s for s in run.stages if s.stage == "command"]
    start = action[0].started_at if action else run.started_at
    if not d.received_at:
        return None
    return round(max(0.0, d.received_at - max(d.observed_at, start)) * 1000.0, 3)
