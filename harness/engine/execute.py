"""Run one scenario in one context on one node, once, and judge it for every sensor."""

from __future__ import annotations

import re
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from harness.core.atomic import Atomic
from harness.core.correlate import correlate
from harness.core.detection import Detection
from harness.core.health import Health
from harness.core.node import NodeFacts
from harness.core.run import Run, StageResult
from harness.core.scenario import Scenario
from harness.core.verdict import (
    Expectation,
    Judgement,
    compare,
    enforcement_action,
    enforcement_claims,
    judge,
    with_claims,
)
from harness.nodes.remote.stagerunner import loss_scope
from harness.nodes.runner import RunnerSession
from harness.sensors.base import Quiet, Sensor, Subscription, expect_key
from harness.targets.base import Target


def new_run_id() -> str:
    """``st`` + 12 hex: short enough for file and host names, unique per run."""
    return "st" + secrets.token_hex(6)


def _health(sensor: Sensor) -> Health:
    """The sensor's health; down with the reason whenever its stream was closed (it did not
    start, or its reader ended), whatever the sensor's own ``health()`` says: a row it
    judges is then SENSOR_DOWN with that reason, never MISSED or CLEAN."""
    closed = sensor.stream.closed
    return Health(False, closed) if closed is not None else sensor.health()


@dataclass(frozen=True)
class Outcome:
    run: Run
    judgements: tuple[Judgement, ...]
    health: Mapping[str, Health]


def execute(scenario: Scenario, context: str, target: Target, facts: NodeFacts,
            sensors: Mapping[str, Sensor], window: float = 5.0,
            run_id: str | None = None) -> Outcome:
    """Subscribe every sensor, run the atomic once, then judge each sensor; cleanup always."""
    run_id = run_id or new_run_id()
    before = {name: _health(s) for name, s in sensors.items()}
    subs = {name: s.stream.subscribe() for name, s in sensors.items()}  # before acting
    atomic = scenario.atomic
    bin_dir = atomic.path.parent / "bin"
    bin_path = target.stage_bin(bin_dir)  # remote nodes get a copy of bin/
    session = target.open(context, run_id)
    values: dict[str, Any] = {
        **scenario.arguments, "run_id": run_id, "bin": bin_path,
        "python": "python3", **session.variables,
    }
    env = {"SHADOWTEST_RUN_ID": run_id}
    shell = atomic.shell
    cleanup = atomic.render(atomic.cleanup, values) if atomic.cleanup else ""
    try:
        if cleanup:
            session.arm_cleanup([shell, "-c", cleanup], env)
        enforcing = enforcement_run(scenario, sensors, facts.as_row())
        run = _act(scenario, context, target.node, facts, session, values, env, run_id,
                   enforcing)
        run, judgements, health = _judge_all(run, scenario, sensors, subs, before, window)
    except BaseException:
        session.abort()  # Ctrl-C, SIGTERM or a crash mid-stage: the runner cleans up itself
        raise
    try:
        if cleanup:
            session.stage("cleanup", [shell, "-c", cleanup], env, atomic.timeout)
    finally:
        session.close()
    return Outcome(run, judgements, health)


def enforcer(sensor: Sensor) -> bool:
    """The sensor is configured to enforce (bpftrace ``enforce = true``, an enforcer such
    as the BPF-LSM sensor setting ``enforces``)."""
    return bool(sensor.enforces)


def enforcement_run(scenario: Scenario, sensors: Mapping[str, Sensor],
                    facts: Mapping[str, Any]) -> bool:
    """A killed or denied action is an outcome to judge, not NOT_EXECUTED: some judged
    sensor has an ``enforce`` expectation for the scenario on this node, or the scenario
    is a benign control and a judged sensor enforces. (A benign control killed by a signal
    is judged in any case: a sensor's detection may claim the kill. Any other stopped action
    is judged when a sensor's detection claims the stop: ``verdict.with_claims``.)"""
    if scenario.benign:
        return any(enforcer(s) for s in sensors.values())
    return any(scenario.expectation(expect_key(name, s), facts).enforce
               for name, s in sensors.items())


def stopped(res: StageResult) -> tuple[str | None, bool]:
    """(signal name, denied) of an action stage: killed by a signal (exit -N as Python
    reports it, or 128+N as a shell does) or denied (non-zero exit, EPERM/EACCES said)."""
    code = res.exit_code
    if code is not None and code < 0:
        return _signame(-code), False
    if code is not None and code > 128 and code - 128 in (signal.SIGKILL, signal.SIGSYS):
        return _signame(code - 128), False
    if code and re.search(r"Operation not permitted|Permission denied|\bEPERM\b|\bEACCES\b",
                          res.stderr + res.stdout):
        return None, True
    return None, False


def _signame(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _act(scenario: Scenario, context: str, node: str, facts: NodeFacts, session: RunnerSession,
         values: dict[str, Any], env: dict[str, str], run_id: str,
         enforcing: bool = False) -> Run:
    atomic = scenario.atomic
    stages: list[StageResult] = []
    started = time.time()
    outcome: dict[str, Any] = {}

    def finish(executed: bool, reason: str) -> Run:
        return Run(
            run_id=run_id, scenario=scenario.id, context=context, node=node,
            started_at=started, ended_at=time.time(), executed=executed, reason=reason,
            pids=session.pids, cgroup_id=session.cgroup_id, container_id=session.container_id,
            stages=tuple(stages), names=(run_id,), facts=facts.as_row(), **outcome,
        )

    def step(stage: str, command: str) -> StageResult:
        res = session.stage(stage, [atomic.shell, "-c", atomic.render(command, values)], env,
                            atomic.timeout)
        stages.append(res)
        return res

    for pre in atomic.precondition:
        res = step("precondition", pre.command)
        if res.exit_code != 0:
            return finish(False, f"precondition failed: {pre.description} "
                                 f"(exit {res.exit_code}{_tail(res.stderr)})")
    res = step("command", atomic.command)
    outcome["exit_code"] = res.exit_code
    killed_by, denied = stopped(res) if res.exit_code != 0 and not res.error else (None, False)
    if (killed_by == "SIGKILL" and (enforcing or scenario.benign)) or (enforcing and denied):
        # stopped by enforcement (or a benign control killed): judged, not NOT_EXECUTED
        outcome.update(killed_by=killed_by, denied=denied)
        if enforcing:
            outcome.update(_probe_side_effect(atomic, step, values))
        return finish(True, f"the action was {'killed by ' + killed_by if killed_by else 'denied'}"
                            f" (exit {res.exit_code}){_tail(res.stderr)}")
    if killed_by or denied:
        # stopped, and no sensor was known to enforce: NOT_EXECUTED unless a sensor's
        # detection claims the stop (``with_claims`` in _judge_all); probe the side effect
        # now so that a claimed kill is judged BLOCKED/RACED from it
        outcome.update(killed_by=killed_by, denied=denied)
        outcome.update(_probe_side_effect(atomic, step, values))
    if res.error or res.exit_code != 0:
        return finish(False, f"the action failed: exit {res.exit_code}"
                             f"{' (' + res.error + ')' if res.error else ''}{_tail(res.stderr)}")
    proof_re = atomic.render(atomic.proof_stdout, values, re.escape) if atomic.proof_stdout else None
    if proof_re and not re.search(proof_re, res.stdout, re.MULTILINE):
        return finish(False, f"no proof: the action's stdout does not match {proof_re!r}"
                             f"{_tail(res.stdout)}")
    if atomic.proof_command and (proof := step("proof", atomic.proof_command)).exit_code != 0:
        return finish(False, f"no proof the action happened: proof exited {proof.exit_code}"
                             f"{_tail(proof.stderr)}")
    if enforcing:
        outcome.update(_probe_side_effect(atomic, step, values))
    return finish(True, "")


def _probe_side_effect(atomic: Atomic, step: Callable[[str, str], StageResult],
                       values: Mapping[str, Any]) -> dict[str, Any]:
    """Run the atomic's side-effect probe: exit 0 = the effect exists, 1 = it does not,
    anything else (or no probe) = unknown."""
    if atomic.side_effect is None:
        return {"side_effect": None}
    res = step("side_effect", atomic.side_effect.command)
    found = None if res.error or res.exit_code is None else {0: True, 1: False}.get(res.exit_code)
    return {"side_effect": found,
            "side_effect_what": atomic.render(atomic.side_effect.description, values, str)}


def _tail(text: str) -> str:
    text = text.strip()
    return f": {text.splitlines()[-1][:200]}" if text else ""


def decided(run: Run, expectation: Expectation, seen: list[Detection]) -> bool:
    """A verdict can be given now: a benign run saw a correlated detection, or an attack
    run saw its expected one."""
    for d in seen:
        if correlate(run, d) is None:
            continue
        if expectation.benign or not compare(expectation, d):
            return True
    return False


def claims_stop(run: Run, seen: list[Detection]) -> bool:
    """Some detection correlated to ``run`` says its product acted (a kill, a deny)."""
    return any(enforcement_action(d) and correlate(run, d) is not None for d in seen)


def exit_records(sensors: Mapping[str, Sensor]) -> dict[str, Callable[[Detection], str | None]]:
    """Each sensor's reader of its product's own exit record (``exit_record``), if any."""
    return {name: sensor.exit_record for name, sensor in sensors.items()}


def _claimed(run: Run, sensors: Mapping[str, Sensor], subs: Mapping[str, Subscription],
             markers: Mapping[str, str | None], window: float) -> Run:
    """A stopped action no sensor was known to enforce: wait (inside the window) for a
    sensor's claim of the stop, then ``with_claims`` decides whether it is judged."""
    seen: dict[str, list[Detection]] = {}
    until = run.ended_at + window
    for name, sensor in sensors.items():
        delay = sensor.delay
        seen[name], _ = subs[name].wait(partial(claims_stop, run), markers.get(name),
                                        until + delay, until=run.ended_at)
    return with_claims(run, enforcement_claims(run, seen, until + max(
        (s.delay for s in sensors.values()), default=0.0),
        exit_records(sensors)))


def _judge_all(run: Run, scenario: Scenario, sensors: Mapping[str, Sensor],
               subs: Mapping[str, Subscription], before: Mapping[str, Health],
               window: float) -> tuple[Run, tuple[Judgement, ...], dict[str, Health]]:
    stopped_run = not run.executed and bool(run.killed_by or run.denied)
    markers = ({name: s.sync() for name, s in sensors.items()}
               if run.executed or stopped_run else {})
    if stopped_run:
        run = _claimed(run, sensors, subs, markers, window)
    out: list[Judgement] = []
    healths: dict[str, Health] = {}
    for name, sensor in sensors.items():
        expectation = scenario.expectation(expect_key(name, sensor), run.facts)
        sub = subs[name]
        seen: list[Detection] = []
        synced = False
        down: Health | None = None  # down when the run ended: judged on that, at once
        if run.executed:
            deadline = run.ended_at + window + sensor.delay
            if not (at_end := _health(sensor)).up:  # what it had is in; nothing to wait for
                down, deadline = at_end, min(deadline, time.time())
            seen, synced = sub.wait(partial(decided, run, expectation), markers.get(name),
                                    deadline, until=run.ended_at)
        # the reading the wait was decided on: a row judged without waiting is never
        # healthy (a later reading of "up" would turn what was not waited for into MISSED)
        now = down if down is not None else _health(sensor)
        start = before[name]
        # synced past the run = everything it caused was delivered: healthy for this window
        # even if the backend blipped; a sensor that can sync but did not is not proven
        up = (start.up and now.up) or synced
        reason = start.reason if not start.up else now.reason
        can_sync = markers.get(name) is not None or sensor.stream.watermark > 0
        if up and run.executed and can_sync and not synced:
            up, reason = False, (f"{name} did not deliver up to the end of the run within the "
                                 f"window ({window:g} s + {sensor.delay:g} s "
                                 "ingestion delay): a miss cannot be proved")
        if up and run.executed and not synced and isinstance(sensor, Quiet):
            # a producer that cannot be synced must show a sign of life in the window
            silent = sensor.silence(sub.opened_at, time.time())
            if silent:
                up, reason = False, silent
        hint = sensor.sync_hint
        if up and run.executed and not synced and hint:
            reason = hint  # a healthy sensor that could not be synced: the row says so
        health = Health(up=up, reason=reason, lost=sub.lost(loss_scope(run.run_id)),
                        malformed=sub.malformed(),
                        synced=synced)
        healths[name] = health
        out.append(judge(run, seen, expectation, health, name, enforcer=enforcer(sensor)))
    return run, tuple(out), healths
