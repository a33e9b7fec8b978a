"""Verdicts and the pure ``judge``: no I/O, tested by tables of cases."""

from __future__ import annotations

import enum
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.core.correlate import correlate
from harness.core.detection import Detection
from harness.core.health import Health
from harness.core.node import unmet
from harness.core.run import Run


class Verdict(enum.StrEnum):
    """The outcome for one (run, sensor), exactly as DESIGN.md defines it. Which verdicts
    fail, and what a change between two is: ``harness.core.policy``."""

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


@dataclass(frozen=True, slots=True)
class Expectation:
    """What one sensor must report for one scenario; ``None`` technique = benign (nothing).

    ``gap`` (a reason) declares a known gap: the sensor is not expected to catch the
    scenario. A miss is then reported with the reason and does not fail; a detection of
    ``technique`` is still DETECTED (the gap closed).

    ``enforce`` (``sigkill``, ``deny`` or ``override``) expects the sensor to *stop* the
    action with that action, before its side effect: BLOCKED, RACED or MISSED, never
    DETECTED (see ``judge``)."""

    technique: str | None
    rule: Any = None
    severity: Any = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    gap: str | None = None
    enforce: str | None = None
    #: what this sensor needs of the node to observe the scenario (its expect block's
    #: ``requires``: kernel requirement, features); unmet: NOT_EXECUTED for this sensor
    requires: tuple[str | None, tuple[str, ...]] | None = None

    @property
    def benign(self) -> bool:
        return self.technique is None


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
    #: enforcement runs: {expected, reported, observed, side_effect} (the results row's
    #: ``enforcement``); None when the run was not judged for enforcement
    enforcement: Mapping[str, Any] | None = None
    #: what the sensor was judged against (the results row's ``expected``)
    expected: Expectation | None = None


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
    if expectation.technique is not None and not technique_matches(
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


def technique_matches(expected: str, got: Sequence[str]) -> bool:
    """T1055.008 is satisfied by T1055.008 only; a parent id T1055 by any of its sub-techniques."""
    return any(t == expected or t.startswith(expected + ".") for t in got)


def judge(
    run: Run,
    detections: Sequence[Detection],
    expectation: Expectation,
    health: Health,
    sensor: str,
    near: int = 3,
    enforcer: bool = False,
) -> Judgement:
    """Decide one sensor's verdict for one run. Pure: same inputs, same verdict.

    ``enforcer``: the sensor is configured to enforce (e.g. bpftrace with ``enforce``), so
    a benign control that was killed or denied is laid at its door even when none of its
    detections claims the kill. The judgement carries ``expectation`` (``expected``)."""
    why = unmet(run.facts, *expectation.requires) if expectation.requires else ""
    if run.executed and why:  # the node cannot show this sensor the scenario
        verdict = Judgement(sensor, Verdict.NOT_EXECUTED, f"not runnable for {sensor}: {why}")
    else:
        verdict = _judge(run, detections, expectation, health, sensor, near, enforcer)
    return replace(verdict, expected=expectation)


def _judge(run: Run, detections: Sequence[Detection], expectation: Expectation,
           health: Health, sensor: str, near: int, enforcer: bool) -> Judgement:
    if not run.executed:
        return Judgement(sensor, Verdict.NOT_EXECUTED, run.reason or "the action did not run")
    correlated = [(d, key) for d in detections if (key := correlate(run, d)) is not None]
    if expectation.benign:
        return _judge_control(run, correlated, health, sensor, enforcer)
    if expectation.enforce:
        return _judge_enforcement(run, detections, correlated, expectation, health, sensor, near)
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
    nearest = _nearest(run, detections, correlated, expectation, near)
    reason = (
        f"no {expectation.technique} detection correlated to run {run.run_id} "
        f"({len(correlated)} correlated, {len(detections)} seen in the window"
        + (", sensor synced past the window)" if health.synced else ")")
    )
    if health.reason and not health.synced:  # e.g. why the window was waited out
        reason += f"; {health.reason}"
    reason += _correlation_hint(nearest)
    if expectation.gap:
        reason = f"known gap: {expectation.gap} ({reason})"
    return Judgement(sensor, Verdict.MISSED, reason, near_misses=nearest, gap=expectation.gap)


def _correlation_hint(nearest: Sequence[NearMiss]) -> str:
    """A near-miss that matched everything but the run, from a sensor whose adapter says
    what it lacked to tie it to the run (``fields['correlation_hint']``, e.g. Tetragon
    without ancestry): the setting to turn on."""
    for n in nearest:
        hint = n.detection.fields.get("correlation_hint")
        if n.correlated_by is None and hint and len(n.mismatches) == 1:
            return (f"; the nearest {n.detection.rule!r} (pid {n.detection.pid}) matches but "
                    f"cannot be tied to the run: {hint}")
    return ""


def _nearest(run: Run, detections: Sequence[Detection],
             correlated: Sequence[tuple[Detection, str]], expectation: Expectation,
             near: int) -> tuple[NearMiss, ...]:
    ranked = sorted(
        (NearMiss(d, compare(expectation, d), key) for d, key in correlated),
        key=lambda n: len(n.mismatches),
    )
    uncorrelated = [
        NearMiss(d, (*compare(expectation, d), Mismatch("run", run.run_id, None)), None)
        for d in detections
        if correlate(run, d) is None and not compare(expectation, d)
    ]
    return tuple((ranked + uncorrelated)[:near])


# ---------------------------------------------------------------- enforcement
#: products' names for what they did -> sigkill | deny | override (lower-cased; anything
#: else, e.g. Tetragon's KPROBE_ACTION_POST or Sysdig's "capture", is no enforcement)
ACTIONS: Mapping[str, str] = {
    "sigkill": "sigkill", "kill": "sigkill", "killed": "sigkill",
    "kprobe_action_sigkill": "sigkill",          # Tetragon matchActions: Sigkill
    "container_killed": "sigkill",               # Sysdig Secure actions[].type
    "deny": "deny", "denied": "deny", "block": "deny", "blocked": "deny",
    "prevented": "deny", "drift_prevented": "deny",  # Sysdig drift control
    "override": "override", "kprobe_action_override": "override",  # Tetragon Override
    # Tetragon NotifyEnforcer: the enforcer program kills (argSig) or fails the syscall
    # (argError), whichever the policy set: either agrees with an expected sigkill/override
    "kprobe_action_notifyenforcer": "enforcer", "notifyenforcer": "enforcer",
    # CrowdStrike Falcon dispositions (``action_taken`` / pattern disposition words)
    "process_killed": "sigkill", "kill_process": "sigkill",
    "process_blocked": "deny", "operation_blocked": "deny",
}
#: what each reported action may look like from the action's side: a SIGKILL is a
#: signal; a deny or an override is an error return (the program may then exit non-zero,
#: or the enforcer may also kill it, as a BPF-LSM program sending SIGKILL and -EPERM does)
COMPATIBLE: Mapping[str, frozenset[str]] = {
    "sigkill": frozenset({"killed"}),
    "deny": frozenset({"denied", "killed"}),
    "override": frozenset({"denied", "killed"}),
    "enforcer": frozenset({"denied", "killed"}),
}


def enforcement_action(d: Detection) -> str | None:
    """The enforcement a detection reports, normalised to sigkill | deny | override (None:
    the sensor only observed). Reads ``action`` (Tetragon ``KPROBE_ACTION_SIGKILL``,
    Sysdig ``actions[].type`` joined with commas) or the product field ``action``
    (bpftrace enforce lines ``"action":"sigkill"``, the LSM enforcer's ``"deny"``)."""
    raw = d.action if d.action else (d.fields.get("action") or d.fields.get("action_taken"))
    for part in str(raw or "").split(","):
        if found := ACTIONS.get(part.strip().lower()):
            return found
    return None


@dataclass(frozen=True, slots=True)
class Claim:
    """A sensor's detection, correlated to a run, saying its product acted on the action
    (``enforcement_action``), with the product's own exit record for that process when it
    has one (Tetragon ``process_exit.signal``)."""

    sensor: str
    action: str
    detection: Detection
    exit_record: str | None = None


#: how far before the run's start a claim's own time may be (sensor clocks)
CLAIM_SKEW = 1.0


def enforcement_claims(run: Run, seen: Mapping[str, Sequence[Detection]], until: float,
                       exit_records: Mapping[str, Callable[[Detection], str | None]]
                       | None = None) -> tuple[Claim, ...]:
    """Every detection in ``seen`` (per sensor) correlated to ``run``, inside the run's
    window (``started_at`` - ``CLAIM_SKEW`` .. ``until``; an unknown time counts), whose
    product says it acted. Pure; ``exit_records`` reads each sensor's exit record of the
    detection's process (``TetragonSensor.exit_record``)."""
    out: list[Claim] = []
    for sensor, detections in seen.items():
        lookup = (exit_records or {}).get(sensor)
        for d in detections:
            action = enforcement_action(d)
            if action is None or correlate(run, d) is None:
                continue
            if d.observed_at and not run.started_at - CLAIM_SKEW <= d.observed_at <= until:
                continue
            out.append(Claim(sensor, action, d, lookup(d) if lookup else None))
    return tuple(out)


def stop_of(run: Run) -> tuple[str | None, bool]:
    """(signal, denied) that stopped the action: the run's own, else read from its exit
    code (-9 as Python reports a SIGKILL, 137 as a shell does; rows written before
    ``killed_by`` was recorded for non-enforcement runs)."""
    if run.killed_by or run.denied:
        return run.killed_by, run.denied
    code = run.exit_code
    num = -code if code is not None and code < 0 else (
        code - 128 if code is not None and code - 128 in (signal.SIGKILL, signal.SIGSYS) else None)
    if num is None:
        return None, False
    try:
        return signal.Signals(num).name, False
    except ValueError:
        return f"signal {num}", False


def with_claims(run: Run, claims: Sequence[Claim]) -> Run:
    """The run to judge once the sensors' claims are in: an action the harness saw stopped
    (killed, denied) without knowing in advance that enforcement was in play (no enforce
    expectation, no enforcing sensor) is NOT_EXECUTED only while no sensor claims the stop.
    A claim that agrees with what happened (``COMPATIBLE``), and that the product's own
    exit record does not contradict, makes it an enforcement run: executed, killed/denied,
    judged for every sensor (BLOCKED/RACED/MISSED where a sensor expects enforcement, its
    detection verdict otherwise). Pure: the one home of this rule for the live path
    (``harness.engine.execute``) and ``rejudge``."""
    if run.executed or not claims:
        return run
    killed_by, denied = stop_of(run)
    observed = "killed" if killed_by else "denied" if denied else None
    if observed is None:
        return run
    agreeing = [c for c in claims if observed in COMPATIBLE.get(c.action, frozenset())
                and (c.exit_record is None or c.action != "sigkill"
                     or c.exit_record == killed_by)]
    if not agreeing:
        return run
    c = agreeing[0]
    how = f"killed by {killed_by}" if killed_by else "denied"
    record = f"; its exit record says {c.exit_record}" if c.exit_record else ""
    return replace(run, executed=True, killed_by=killed_by, denied=denied, reason=(
        f"the action was {how} (exit {run.exit_code}): {c.sensor} claims it ({c.detection.rule}:"
        f" {c.action}){record}"))


def _how(run: Run) -> str:
    if run.killed_by:
        return f"killed by {run.killed_by} (exit {run.exit_code})"
    if run.denied:
        return f"denied (exit {run.exit_code}, EPERM/EACCES)"
    return f"completed normally (exit {run.exit_code if run.exit_code is not None else 0})"


def _judge_control(run: Run, correlated: Sequence[tuple[Detection, str]], health: Health,
                   sensor: str, enforcer: bool) -> Judgement:
    """A benign control: any correlated detection is UNEXPECTED; so is a kill or deny."""
    if run.observed in ("killed", "denied"):
        return _judge_stopped_control(run, correlated, sensor, enforcer)
    if correlated:
        d, key = correlated[0]
        claim = enforcement_action(d)
        mismatch = (f"; it reports {claim} but the action completed normally"
                    if claim else "")
        return Judgement(
            sensor, Verdict.UNEXPECTED,
            f"benign control produced {d.rule!r} {list(d.technique)} (correlated by {key})"
            f"{mismatch}", detection=d, correlated_by=key, latency_ms=_latency(run, d),
        )
    return _healthy_or_down(sensor, health, Verdict.CLEAN, "no detection, as expected")


def _judge_stopped_control(run: Run, correlated: Sequence[tuple[Detection, str]], sensor: str,
                           enforcer: bool) -> Judgement:
    """A benign control that was killed or denied: the policy would break legitimate work."""
    how = _how(run)
    enforcement = {"expected": None, "reported": None, "observed": run.observed,
                   "side_effect": run.side_effect, "effect": run.side_effect_what or None}
    for d, key in correlated:
        if action := enforcement_action(d):
            return Judgement(
                sensor, Verdict.UNEXPECTED,
                f"benign control {how} by {sensor} policy/rule {d.rule!r} ({action}): the "
                "policy stops legitimate work", detection=d, correlated_by=key,
                latency_ms=_latency(run, d),
                enforcement={**enforcement, "reported": action, "rule": d.rule},
            )
    if enforcer:
        seen = f" (it reported {correlated[0][0].rule!r} without an action)" if correlated else ""
        return Judgement(
            sensor, Verdict.UNEXPECTED,
            f"benign control {how} while {sensor} enforces, and no {sensor} detection claims "
            f"the kill{seen}: a policy of {sensor} stops legitimate work, or another enforcer "
            "does", enforcement=enforcement,
        )
    if correlated:
        d, key = correlated[0]
        return Judgement(
            sensor, Verdict.UNEXPECTED,
            f"benign control produced {d.rule!r} {list(d.technique)} (correlated by {key}); "
            f"the action was {how}", detection=d, correlated_by=key,
            latency_ms=_latency(run, d), enforcement=enforcement,
        )
    return Judgement(sensor, Verdict.NOT_EXECUTED,
                     f"the control's action was {how} and {sensor} reports no enforcement: "
                     "not a valid control run", enforcement=enforcement)


def _judge_enforcement(run: Run, detections: Sequence[Detection],
                       correlated: Sequence[tuple[Detection, str]], expectation: Expectation,
                       health: Health, sensor: str, near: int) -> Judgement:
    """BLOCKED / RACED / MISSED for an ``enforce`` expectation, never DETECTED.

    BLOCKED and RACED need the sensor's own matching detection to report the expected
    action, and that action to agree with what happened to the action (COMPATIBLE); any
    disagreement is MISSED with the mismatch in the reason: the enforcement under
    validation was not observed. The side effect then decides: absent -> BLOCKED,
    present -> RACED, unknown -> NOT_EXECUTED (BLOCKED cannot be proved)."""
    matched = [(d, key) for d, key in correlated if not compare(expectation, d)]
    enforcement = {"expected": expectation.enforce, "reported": None,
                   "observed": run.observed, "side_effect": run.side_effect,
                   "effect": run.side_effect_what or None}
    if not matched:
        return _enforcement_unclaimed(run, detections, correlated, expectation, health,
                                      sensor, near, enforcement)
    d, key = matched[0]
    reported = enforcement_action(d)
    enforcement["reported"] = reported
    how = _how(run)
    what = run.side_effect_what or "the side effect"
    reason = _enforcement_mismatch(run, d, expectation, sensor, reported)
    if reason:
        verdict = Verdict.MISSED  # the enforcement under validation was not observed
    elif run.side_effect is False:
        verdict, reason = Verdict.BLOCKED, (f"{d.rule} {reported}: the action was {how} and "
                                            f"{what} is absent")
    elif run.side_effect is True:
        verdict, reason = Verdict.RACED, (
            f"{d.rule} {reported} landed after the side effect: the action was {how} but "
            f"{what} exists; detection passed, enforcement did not land before the effect")
    else:
        verdict, reason = Verdict.NOT_EXECUTED, (
            f"{d.rule} {reported}: the action was {how}, but the side-effect probe gave no "
            "answer: BLOCKED cannot be proved")
    return Judgement(sensor, verdict, reason, detection=d, correlated_by=key,
                     latency_ms=_latency(run, d), enforcement=enforcement)


def _enforcement_mismatch(run: Run, d: Detection, expectation: Expectation, sensor: str,
                          reported: str | None) -> str:
    """Why the sensor's report of its enforcement does not agree with the expectation or
    with what happened ('' when it does)."""
    want, observed, how = expectation.enforce, run.observed, _how(run)
    if reported is None:
        tail = "" if observed == "completed" else f"; the action was {how} by something else"
        return f"monitor-only: {d.rule} fired without enforcing (policy in monitor mode?){tail}"
    if reported != want and not (reported == "enforcer"
                                 and observed in COMPATIBLE.get(want or "", frozenset())):
        return (f"{d.rule} enforced with {reported}, expected {want}: not the policy under "
                f"validation (the action {how})")
    if observed == "completed":
        return (f"{sensor} reports {reported} by {d.rule} but the action {how}: the "
                "enforcement did not happen")
    if observed not in COMPATIBLE.get(reported, frozenset()):
        return (f"{sensor} reports {reported} by {d.rule} but the action was {how}: not what "
                f"{reported} does (another enforcer?); {sensor}'s {want} is unproven")
    return ""


def _enforcement_unclaimed(run: Run, detections: Sequence[Detection],
                           correlated: Sequence[tuple[Detection, str]],
                           expectation: Expectation, health: Health, sensor: str, near: int,
                           enforcement: dict[str, Any]) -> Judgement:
    """No matching detection of the sensor: SENSOR_DOWN when it cannot be proved, else
    MISSED (the action completed, or something else stopped it)."""
    down = _healthy_or_down(sensor, health, Verdict.MISSED, "")
    if down.verdict is Verdict.SENSOR_DOWN:
        return Judgement(sensor, Verdict.SENSOR_DOWN, down.reason, enforcement=enforcement)
    target = f"{expectation.technique}" + (f" {expectation.rule}" if expectation.rule else "")
    nearest = _nearest(run, detections, correlated, expectation, near)
    how = _how(run)
    if run.observed == "completed":
        reason = (f"no enforcement: the action {how} and {sensor} reported no {target} "
                  f"detection for run {run.run_id}")
    else:
        reason = (f"the action was {how}, but {sensor} reported no {target} detection "
                  f"claiming it: something else stopped it; {sensor}'s {expectation.enforce} "
                  "is unproven")
    return Judgement(sensor, Verdict.MISSED, reason, near_misses=nearest,
                     enforcement=enforcement)


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
