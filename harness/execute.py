"""Run one scenario in one context on one node, once, and judge it for every sensor."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from harness.correlate import correlate
from harness.detection import Detection
from harness.node import NodeFacts
from harness.run import Run, StageResult
from harness.scenario import Scenario
from harness.sensors.base import Sensor, Subscription
from harness.targets.base import Session, Target
from harness.verdict import Expectation, Health, Judgement, compare, judge


def new_run_id() -> str:
    """``st`` + 12 hex: short enough for file and host names, unique per run."""
    return "st" + secrets.token_hex(6)


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
    before = {name: s.health() for name, s in sensors.items()}
    subs = {name: s.stream.subscribe() for name, s in sensors.items()}  # before acting
    atomic = scenario.atomic
    bin_dir = atomic.path.parent / "bin"
    stage_bin = getattr(target, "stage_bin", None)  # remote nodes get a copy of bin/
    bin_path = stage_bin(bin_dir) if callable(stage_bin) else str(bin_dir)
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
        run = _act(scenario, context, target.node, facts, session, values, env, run_id)
        judgements, health = _judge_all(run, scenario, sensors, subs, before, window)
    except BaseException:
        session.abort()  # Ctrl-C, SIGTERM or a crash mid-stage: the runner cleans up itself
        raise
    try:
        if cleanup:
            session.stage("cleanup", [shell, "-c", cleanup], env, atomic.timeout)
    finally:
        session.close()
    return Outcome(run, judgements, health)


def _act(scenario: Scenario, context: str, node: str, facts: NodeFacts, session: Session,
         values: dict[str, Any], env: dict[str, str], run_id: str) -> Run:
    atomic = scenario.atomic
    stages: list[StageResult] = []
    started = time.time()

    def finish(executed: bool, reason: str) -> Run:
        return Run(
            run_id=run_id, scenario=scenario.id, context=context, node=node,
            started_at=started, ended_at=time.time(), executed=executed, reason=reason,
            pids=session.pids, cgroup_id=session.cgroup_id, container_id=session.container_id,
            stages=tuple(stages), names=(run_id,), facts=facts.as_row(),
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
    return finish(True, "")


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


def _judge_all(run: Run, scenario: Scenario, sensors: Mapping[str, Sensor],
               subs: Mapping[str, Subscription], before: Mapping[str, Health],
               window: float) -> tuple[tuple[Judgement, ...], dict[str, Health]]:
    markers = {name: s.sync() for name, s in sensors.items()} if run.executed else {}
    out: list[Judgement] = []
    healths: dict[str, Health] = {}
    for name, sensor in sensors.items():
        expectation = scenario.expectation(name, run.facts)
        sub = subs[name]
        seen: list[Detection] = []
        synced = False
        if run.executed:
            deadline = run.ended_at + window + getattr(sensor, "delay", 0.0)
            seen, synced = sub.wait(partial(decided, run, expectation), markers.get(name),
                                    deadline, until=run.ended_at)
        now = sensor.health()
        start = before[name]
        # synced past the run = everything it caused was delivered: healthy for this window
        # even if the backend blipped; a sensor that can sync but did not is not proven
        up = (start.up and now.up) or synced
        reason = start.reason if not start.up else now.reason
        can_sync = markers.get(name) is not None or sensor.stream.watermark > 0
        if up and run.executed and can_sync and not synced:
            up, reason = False, (f"{name} did not deliver up to the end of the run within the "
                                 f"window ({window:g} s + {getattr(sensor, 'delay', 0.0):g} s "
                                 "ingestion delay): a miss cannot be proved")
        health = Health(up=up, reason=reason, lost=sub.lost(), malformed=sub.malformed(),
                        synced=synced)
        healths[name] = health
        out.append(judge(run, seen, expectation, health, name))
    return tuple(out), healths
