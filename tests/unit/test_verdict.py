"""``harness.core.verdict``: matching, comparison and the pure ``judge``, as tables of cases."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.core.detection import Detection
from harness.core.health import Health
from harness.core.policy import judgement_failed, row_failed
from harness.core.run import Run, StageResult
from harness.core.verdict import (
    Expectation,
    Mismatch,
    NearMiss,
    Verdict,
    compare,
    enforcement_action,
    judge,
    matches,
)

# Epoch seconds with binary-exact offsets (.25, .5, .75), so latencies are exact.
T0 = 1_700_000_000.0
RUN_ID = "st0123456789ab"
RUN_PID = 4242
OTHER_PID = 9999

PTRACE = Expectation(technique="T1055.008", rule="ptrace-pid1", severity="high")
BENIGN = Expectation(technique=None)
UP = Health(up=True)
DOWN = Health(up=False, reason="bpftrace exited with code 1")
LOSSY = Health(up=True, lost=3)


def _run(executed: bool = True, **kw: Any) -> Run:
    values: dict[str, Any] = {
        "run_id": RUN_ID, "scenario": "ptrace-pid1", "context": "namespace", "node": "local",
        "started_at": T0, "ended_at": T0 + 2.0, "executed": executed,
        "pids": frozenset({RUN_PID}),
        "stages": (
            StageResult("precondition", 0, started_at=T0, ended_at=T0 + 0.25),
            StageResult("command", 0, started_at=T0 + 0.5, ended_at=T0 + 0.75),
            StageResult("proof", 0, started_at=T0 + 0.75, ended_at=T0 + 1.0),
        ),
    }
    values.update(kw)
    return Run(**values)


def _detection(pid: int = RUN_PID, **kw: Any) -> Detection:
    values: dict[str, Any] = {
        "sensor": "bpftrace", "rule": "ptrace-pid1", "technique": ("T1055.008",),
        "severity": "high", "pid": pid, "ppid": pid - 1, "comm": "python3",
        "observed_at": T0 + 0.625, "received_at": T0 + 0.75,
    }
    values.update(kw)
    return Detection(**values)


HIT = _detection()
STRAY = _detection(pid=OTHER_PID)  # matches the expectation, not tied to the run
WRONG_RULE = _detection(rule="ptrace-own-child")


# ---------------------------------------------------------------- matches
@pytest.mark.parametrize(
    ("expected", "got", "result"),
    [
        ("ptrace", "ptrace", True),
        ("ptrace", "ptrace2", False),
        (131072, 131072, True),
        (131072, "131072", False),
        ("T1098", ["T1611", "T1098"], True),
        ("T1098", ("T1611", "T1055"), False),
        ({"prefix": "/etc/"}, "/etc/shadowtest-st1.conf", True),
        ({"prefix": "/etc/"}, "/tmp/etc/x", False),
        ({"prefix": "131"}, 131072, True),
        ({"contains": "shadowtest"}, "/etc/shadowtest-st1.conf", True),
        ({"contains": "shadowtest"}, "/etc/passwd", False),
        ({"contains": "x"}, None, False),
        ({"regex": r"^/etc/shadowtest-st[0-9a-f]+\.conf$"}, "/etc/shadowtest-st0a.conf", True),
        ({"regex": r"^/etc/shadowtest-st[0-9a-f]+\.conf$"}, "/etc/shadowtest-stZZ.conf", False),
        ({"regex": "etc"}, "/etc/x", True),  # search, not fullmatch
        ({"prefix": "/etc/"}, ["/tmp/a", "/etc/b"], True),
        ({"prefix": "/etc/"}, ["/tmp/a", "/var/b"], False),
    ],
)
def test_matches_table(expected: Any, got: Any, result: bool) -> None:
    assert matches(expected, got) is result


def test_matches_unknown_operator_raises_value_error() -> None:
    with pytest.raises(ValueError, match="unknown operator 'glob'"):
        matches({"glob": "/etc/*"}, "/etc/x")


# ---------------------------------------------------------------- compare
@pytest.mark.parametrize(
    ("expected", "got", "ok"),
    [
        ("T1055", ("T1055.008",), True),
        ("T1055", ("T1055",), True),
        ("T1055.008", ("T1055.008",), True),
        ("T1055.008", ("T1055",), False),
        ("T1055.008", ("T1055.009",), False),
        ("T1055", ("T10550",), False),
        ("T1611", ("T1098", "T1611"), True),
        ("T1611", (), False),
    ],
)
def test_compare_technique_parent_is_satisfied_by_subtechnique(
    expected: str, got: tuple[str, ...], ok: bool
) -> None:
    mismatches = compare(Expectation(technique=expected), _detection(technique=got))
    assert mismatches == (() if ok else (Mismatch("technique", expected, list(got)),))


def test_compare_lists_every_mismatch_technique_first() -> None:
    expectation = Expectation(
        technique="T1611", rule="container-setns-mnt", severity="high",
        fields={"nstype": 131072, "comm": {"prefix": "runc"}, "path": {"prefix": "/etc/"}},
    )
    detection = _detection(
        rule="etc-file-create", technique=("T1098",), severity="medium",
        fields={"nstype": 0},
    )
    assert compare(expectation, detection) == (
        Mismatch("technique", "T1611", ["T1098"]),
        Mismatch("rule", "container-setns-mnt", "etc-file-create"),
        Mismatch("severity", "high", "medium"),
        Mismatch("nstype", 131072, 0),
        Mismatch("comm", {"prefix": "runc"}, "python3"),
        Mismatch("path", {"prefix": "/etc/"}, None),
    )


def test_compare_matching_detection_has_no_mismatch() -> None:
    expectation = Expectation(
        technique="T1098", rule={"regex": "^etc-"}, severity="medium",
        fields={"path": {"prefix": "/etc/shadowtest-"}, "proc.exe": {"contains": "python"}},
    )
    detection = _detection(
        rule="etc-file-create", technique=("T1098",), severity="medium",
        fields={"path": "/etc/shadowtest-st1.conf", "proc": {"exe": "/usr/bin/python3"}},
    )
    assert compare(expectation, detection) == ()


def test_compare_benign_expectation_checks_no_technique() -> None:
    assert compare(BENIGN, _detection(technique=("T1098",))) == ()


# ---------------------------------------------------------------- judge: one case per verdict
@pytest.mark.parametrize(
    ("run", "detections", "expectation", "health", "verdict"),
    [
        pytest.param(_run(executed=False), [HIT], PTRACE, UP, Verdict.NOT_EXECUTED,
                     id="not-executed-despite-hit"),
        pytest.param(_run(executed=False), [], PTRACE, UP, Verdict.NOT_EXECUTED,
                     id="not-executed-nothing-seen"),
        pytest.param(_run(executed=False), [], PTRACE, DOWN, Verdict.NOT_EXECUTED,
                     id="not-executed-sensor-down"),
        pytest.param(_run(executed=False), [HIT], BENIGN, UP, Verdict.NOT_EXECUTED,
                     id="not-executed-benign"),
        pytest.param(_run(), [HIT], PTRACE, UP, Verdict.DETECTED, id="detected"),
        pytest.param(_run(), [STRAY, WRONG_RULE, HIT], PTRACE, UP, Verdict.DETECTED,
                     id="detected-among-others"),
        pytest.param(_run(), [HIT], PTRACE, DOWN, Verdict.DETECTED, id="detected-sensor-down"),
        pytest.param(_run(), [HIT], PTRACE, LOSSY, Verdict.DETECTED, id="detected-lossy"),
        pytest.param(_run(), [], PTRACE, UP, Verdict.MISSED, id="missed-nothing"),
        pytest.param(_run(), [WRONG_RULE], PTRACE, UP, Verdict.MISSED, id="missed-wrong-rule"),
        pytest.param(_run(), [STRAY], PTRACE, UP, Verdict.MISSED, id="missed-uncorrelated"),
        pytest.param(_run(), [], PTRACE, DOWN, Verdict.SENSOR_DOWN, id="down-not-missed"),
        pytest.param(_run(), [WRONG_RULE], PTRACE, DOWN, Verdict.SENSOR_DOWN,
                     id="down-with-near-miss"),
        pytest.param(_run(), [], PTRACE, LOSSY, Verdict.SENSOR_DOWN, id="lossy-not-missed"),
        pytest.param(_run(), [HIT], BENIGN, UP, Verdict.UNEXPECTED, id="benign-correlated"),
        pytest.param(_run(), [HIT], BENIGN, DOWN, Verdict.UNEXPECTED,
                     id="benign-correlated-sensor-down"),
        pytest.param(_run(), [STRAY], BENIGN, UP, Verdict.CLEAN, id="benign-uncorrelated"),
        pytest.param(_run(), [], BENIGN, UP, Verdict.CLEAN, id="benign-quiet"),
        pytest.param(_run(), [], BENIGN, DOWN, Verdict.SENSOR_DOWN, id="benign-sensor-down"),
        pytest.param(_run(), [STRAY], BENIGN, LOSSY, Verdict.SENSOR_DOWN, id="benign-lossy"),
    ],
)
def test_judge_table(
    run: Run, detections: list[Detection], expectation: Expectation, health: Health,
    verdict: Verdict,
) -> None:
    judgement = judge(run, detections, expectation, health, "bpftrace")
    assert (judgement.sensor, judgement.verdict) == ("bpftrace", verdict)


def test_judge_not_executed_carries_the_run_reason() -> None:
    run = _run(executed=False, reason="precondition failed: /etc is writable here")
    judgement = judge(run, [HIT], PTRACE, UP, "auditd")
    assert judgement.reason == "precondition failed: /etc is writable here"
    assert judgement.detection is None


def test_judge_detected_carries_detection_key_and_latency() -> None:
    judgement = judge(_run(), [STRAY, HIT], PTRACE, UP, "bpftrace")
    assert (judgement.detection, judgement.correlated_by) == (HIT, "process_tree")
    # received T0+0.75 - observed T0+0.625 (after the command stage started)
    assert judgement.latency_ms == 125.0
    assert judgement.near_misses == ()


@pytest.mark.parametrize(
    ("observed_at", "received_at", "stages", "latency_ms"),
    [
        # the sensor's clock says before the action started (audit clocks lag): from start
        pytest.param(T0 + 0.25, T0 + 0.75, None, 250.0, id="observed-before-command"),
        pytest.param(T0 + 0.625, T0 + 0.75, None, 125.0, id="observed-after-command"),
        pytest.param(T0 - 5.0, T0 + 1.5, (), 1500.0, id="no-command-stage-uses-run-start"),
        pytest.param(T0 + 0.75, T0 + 0.5, None, 0.0, id="never-negative"),
        pytest.param(T0 + 0.625, 0.0, None, None, id="not-received"),
    ],
)
def test_judge_latency_from_max_of_observed_and_command_start(
    observed_at: float, received_at: float, stages: tuple[StageResult, ...] | None,
    latency_ms: float | None,
) -> None:
    run = _run() if stages is None else _run(stages=stages)
    detection = _detection(observed_at=observed_at, received_at=received_at)
    judgement = judge(run, [detection], PTRACE, UP, "bpftrace")
    assert (judgement.verdict, judgement.latency_ms) == (Verdict.DETECTED, latency_ms)


def test_judge_missed_ranks_near_misses_by_mismatch_count() -> None:
    three = _detection(rule="x", technique=("T1098",), severity="low")
    one = _detection(rule="ptrace-own-child")
    two = _detection(rule="x", severity="low")
    judgement = judge(_run(), [three, one, two], PTRACE, UP, "bpftrace")
    assert judgement.verdict is Verdict.MISSED
    assert [n.detection for n in judgement.near_misses] == [one, two, three]
    assert [len(n.mismatches) for n in judgement.near_misses] == [1, 2, 3]
    assert {n.correlated_by for n in judgement.near_misses} == {"process_tree"}


@pytest.mark.parametrize(("near", "count"), [(0, 0), (1, 1), (2, 2), (3, 3), (10, 3)])
def test_judge_missed_caps_near_misses(near: int, count: int) -> None:
    detections = [_detection(rule="a"), _detection(rule="b"), _detection(rule="c")]
    judgement = judge(_run(), detections, PTRACE, UP, "bpftrace", near=near)
    assert len(judgement.near_misses) == count


def test_judge_missed_lists_uncorrelated_match_with_run_mismatch() -> None:
    judgement = judge(_run(), [STRAY, WRONG_RULE], PTRACE, UP, "bpftrace")
    assert judgement.verdict is Verdict.MISSED
    assert judgement.near_misses == (
        NearMiss(WRONG_RULE, (Mismatch("rule", "ptrace-pid1", "ptrace-own-child"),),
                 "process_tree"),
        NearMiss(STRAY, (Mismatch("run", RUN_ID, None),), None),
    )


def test_judge_missed_ignores_uncorrelated_non_matching_detections() -> None:
    unrelated = _detection(pid=OTHER_PID, rule="etc-file-create", technique=("T1098",))
    judgement = judge(_run(), [unrelated], PTRACE, UP, "bpftrace")
    assert (judgement.verdict, judgement.near_misses) == (Verdict.MISSED, ())


def test_judge_missed_reason_names_technique_run_and_counts() -> None:
    judgement = judge(_run(), [STRAY, WRONG_RULE], PTRACE, Health(up=True, synced=True), "x")
    assert judgement.reason == (
        f"no T1055.008 detection correlated to run {RUN_ID} "
        "(1 correlated, 2 seen in the window, sensor synced past the window)"
    )


@pytest.mark.parametrize(
    ("health", "reason"),
    [
        (DOWN, "bpftrace exited with code 1"),
        (Health(up=False), "sensor not running"),
        (LOSSY, "sensor lost 3 events during the window: a miss cannot be proved"),
    ],
)
def test_judge_sensor_down_says_why(health: Health, reason: str) -> None:
    judgement = judge(_run(), [WRONG_RULE], PTRACE, health, "bpftrace")
    assert (judgement.verdict, judgement.reason, judgement.near_misses) == (
        Verdict.SENSOR_DOWN, reason, ())


def test_judge_unexpected_carries_the_false_positive() -> None:
    judgement = judge(_run(), [STRAY, HIT], BENIGN, UP, "bpftrace")
    assert judgement.verdict is Verdict.UNEXPECTED
    assert (judgement.detection, judgement.correlated_by, judgement.latency_ms) == (
        HIT, "process_tree", 125.0)
    assert judgement_failed(judgement)


# ---------------------------------------------------------------- judge: property
_pids = st.sampled_from([0, 1, RUN_PID, RUN_PID + 1, OTHER_PID])
_detections = st.builds(
    Detection,
    sensor=st.just("bpftrace"),
    rule=st.sampled_from(["ptrace-pid1", "ptrace-own-child", "etc-file-create"]),
    technique=st.lists(st.sampled_from(["T1055", "T1055.008", "T1098"]), max_size=2).map(tuple),
    severity=st.sampled_from([None, "high", "medium"]),
    container_id=st.sampled_from([None, "a" * 64, "b" * 12]),
    cgroup_id=st.sampled_from([None, 1, 77]),
    pid=st.none() | _pids,
    ppid=st.none() | _pids,
    ancestors=st.lists(_pids, max_size=3).map(tuple),
    names=st.lists(st.sampled_from([RUN_ID, "/etc/x"]), max_size=1).map(tuple),
    observed_at=st.sampled_from([0.0, T0, T0 + 0.625]),
    received_at=st.sampled_from([0.0, T0 + 0.75]),
)
_runs = st.builds(
    _run,
    executed=st.booleans(),
    pids=st.frozensets(_pids, max_size=2),
    cgroup_id=st.sampled_from([None, 77]),
    container_id=st.sampled_from([None, "a" * 64]),
)
_expectations = st.builds(
    Expectation,
    technique=st.sampled_from([None, "T1055", "T1055.008", "T1098"]),
    rule=st.sampled_from([None, "ptrace-pid1", {"prefix": "etc-"}]),
)
_healths = st.builds(Health, up=st.booleans(), lost=st.integers(0, 2), synced=st.booleans())


@settings(database=None, max_examples=300)
@given(
    run=_runs, detections=st.lists(_detections, max_size=4), expectation=_expectations,
    health=_healths, near=st.integers(0, 4),
)
def test_judge_is_deterministic_and_never_misses_an_unexecuted_run(
    run: Run, detections: list[Detection], expectation: Expectation, health: Health, near: int,
) -> None:
    first = judge(run, detections, expectation, health, "bpftrace", near=near)
    assert first == judge(run, list(detections), expectation, health, "bpftrace", near=near)
    if not run.executed:
        assert first.verdict is Verdict.NOT_EXECUTED
    if first.verdict is Verdict.MISSED:
        assert health.up
        assert not health.lost
        assert len(first.near_misses) <= near


# ---------------------------------------------------------------- known gaps
GAP = Expectation(technique="T1055.008", gap="no default rule for PTRACE_SEIZE")


@pytest.mark.parametrize(
    ("detections", "health", "verdict", "failed"),
    [
        pytest.param([], UP, Verdict.MISSED, False, id="gap-missed-passes"),
        pytest.param([STRAY], UP, Verdict.MISSED, False, id="gap-uncorrelated-passes"),
        pytest.param([HIT], UP, Verdict.DETECTED, False, id="gap-closed-detected"),
        # a gap excuses a MISSED only: a sensor down fails (a miss cannot be ruled out)
        pytest.param([], DOWN, Verdict.SENSOR_DOWN, True, id="gap-sensor-down"),
        pytest.param([], LOSSY, Verdict.SENSOR_DOWN, True, id="gap-lossy"),
    ],
)
def test_judge_known_gap_table(
    detections: list[Detection], health: Health, verdict: Verdict, failed: bool
) -> None:
    judgement = judge(_run(), detections, GAP, health, "falco")
    assert (judgement.verdict, judgement_failed(judgement)) == (verdict, failed)


def test_judge_known_gap_missed_carries_the_reason_and_does_not_fail() -> None:
    judgement = judge(_run(), [], GAP, UP, "falco")
    assert judgement.verdict is Verdict.MISSED
    assert judgement.gap == "no default rule for PTRACE_SEIZE"
    assert judgement.reason.startswith("known gap: no default rule for PTRACE_SEIZE (no T1055.008")
    assert not judgement_failed(judgement)


def test_judge_known_gap_detected_is_reported_as_closed() -> None:
    judgement = judge(_run(), [HIT], GAP, UP, "falco")
    assert judgement.verdict is Verdict.DETECTED
    assert judgement.gap == "no default rule for PTRACE_SEIZE"
    assert "known gap closed: no default rule for PTRACE_SEIZE" in judgement.reason


def test_judge_gap_not_executed_is_not_executed() -> None:
    judgement = judge(_run(executed=False, reason="no proof"), [], GAP, UP, "falco")
    assert (judgement.verdict, judgement.reason, judgement_failed(judgement)) == (
        Verdict.NOT_EXECUTED, "no proof", False)


def test_judgement_failed_without_gap_follows_the_verdict() -> None:
    missed = judge(_run(), [], PTRACE, UP, "bpftrace")
    assert (missed.verdict, missed.gap, judgement_failed(missed)) == (Verdict.MISSED, None, True)


@pytest.mark.parametrize(
    ("row", "failed"),
    [
        ({"verdict": "MISSED"}, True),
        ({"verdict": "MISSED", "known_gap": None}, True),
        ({"verdict": "MISSED", "known_gap": "no rule"}, False),
        ({"verdict": "UNEXPECTED", "known_gap": "no rule"}, True),
        ({"verdict": "SENSOR_DOWN"}, True),
        ({"verdict": "RACED"}, True),
        ({"verdict": "BLOCKED"}, False),
        ({"verdict": "DETECTED", "known_gap": "no rule"}, False),
        ({"verdict": "NOT_EXECUTED"}, False),
        ({"verdict": "CLEAN"}, False),
    ],
)
def test_row_failed_excepts_a_known_gaps_miss(row: dict[str, Any], failed: bool) -> None:
    assert row_failed(row) is failed


# ---------------------------------------------------------------- judge: enforcement
ETC = Expectation(technique="T1098", rule="etc-file-create", enforce="sigkill")
ETC_DENY = Expectation(technique="T1098", rule="etc-file-create", enforce="deny")
FILE = "the file /etc/shadowtest-st0123456789ab.conf"


def _stopped(observed: str, side_effect: bool | None = True, **kw: Any) -> Run:
    """A run whose action was killed / denied / completed, with the side-effect probe."""
    how: dict[str, Any] = {
        "killed": {"killed_by": "SIGKILL", "exit_code": -9},
        "denied": {"denied": True, "exit_code": 1},
        "completed": {"exit_code": 0},
    }[observed]
    return _run(**{**how, "side_effect": side_effect, "side_effect_what": FILE, **kw})


def _etc(action: str | None = "sigkill", **kw: Any) -> Detection:
    values: dict[str, Any] = {"rule": "etc-file-create", "technique": ("T1098",),
                              "severity": "medium", "fields": {"path": "/etc/x"}}
    if action is not None:
        values["fields"] = {**values["fields"], "action": action}
    values.update(kw)
    return _detection(**values)


@pytest.mark.parametrize(
    ("run", "detections", "expectation", "verdict", "reason", "enforcement"),
    [
        pytest.param(_stopped("killed", side_effect=False), [_etc()], ETC, Verdict.BLOCKED,
                     f"etc-file-create sigkill: the action was killed by SIGKILL (exit -9) and "
                     f"{FILE} is absent",
                     ("sigkill", "sigkill", "killed", False), id="killed-before-effect"),
        pytest.param(_stopped("killed"), [_etc()], ETC, Verdict.RACED,
                     f"etc-file-create sigkill landed after the side effect: the action was "
                     f"killed by SIGKILL (exit -9) but {FILE} exists; detection passed, "
                     "enforcement did not land before the effect",
                     ("sigkill", "sigkill", "killed", True), id="killed-after-effect"),
        pytest.param(_stopped("killed", exit_code=137), [_etc()], ETC, Verdict.RACED,
                     None, ("sigkill", "sigkill", "killed", True), id="shell-exit-137"),
        pytest.param(_stopped("completed"), [_etc(action=None)], ETC, Verdict.MISSED,
                     "monitor-only: etc-file-create fired without enforcing (policy in "
                     "monitor mode?)", ("sigkill", None, "completed", True), id="monitor-only"),
        pytest.param(_stopped("completed"), [_etc(action="KPROBE_ACTION_POST")], ETC,
                     Verdict.MISSED, "monitor-only: etc-file-create fired without enforcing "
                     "(policy in monitor mode?)", ("sigkill", None, "completed", True),
                     id="tetragon-post-is-monitor-only"),
        pytest.param(_stopped("completed"), [], ETC, Verdict.MISSED,
                     "no enforcement: the action completed normally (exit 0) and bpftrace "
                     f"reported no T1098 etc-file-create detection for run {RUN_ID}",
                     ("sigkill", None, "completed", True), id="nothing-at-all"),
        pytest.param(_stopped("completed"), [_etc()], ETC, Verdict.MISSED,
                     "bpftrace reports sigkill by etc-file-create but the action completed "
                     "normally (exit 0): the enforcement did not happen",
                     ("sigkill", "sigkill", "completed", True), id="claims-kill-but-completed"),
        pytest.param(_stopped("killed", side_effect=False), [], ETC, Verdict.MISSED,
                     "the action was killed by SIGKILL (exit -9), but bpftrace reported no "
                     "T1098 etc-file-create detection claiming it: something else stopped it; "
                     "bpftrace's sigkill is unproven",
                     ("sigkill", None, "killed", False), id="killed-but-nobody-claims"),
        pytest.param(_stopped("killed", side_effect=False), [_etc(action=None)], ETC,
                     Verdict.MISSED, "monitor-only: etc-file-create fired without enforcing "
                     "(policy in monitor mode?); the action was killed by SIGKILL (exit -9) by "
                     "something else", ("sigkill", None, "killed", False),
                     id="killed-by-someone-else-while-monitoring"),
        pytest.param(_stopped("denied", side_effect=False), [_etc()], ETC, Verdict.MISSED,
                     "bpftrace reports sigkill by etc-file-create but the action was denied "
                     "(exit 1, EPERM/EACCES): not what sigkill does (another enforcer?); "
                     "bpftrace's sigkill is unproven", ("sigkill", "sigkill", "denied", False),
                     id="claims-kill-but-denied"),
        pytest.param(_stopped("denied", side_effect=False), [_etc(action="deny")], ETC,
                     Verdict.MISSED, "etc-file-create enforced with deny, expected sigkill: not "
                     "the policy under validation (the action denied (exit 1, EPERM/EACCES))",
                     ("sigkill", "deny", "denied", False), id="wrong-action"),
        pytest.param(_stopped("denied", side_effect=False), [_etc(action="deny")], ETC_DENY,
                     Verdict.BLOCKED, None, ("deny", "deny", "denied", False),
                     id="lsm-deny-before-effect"),
        pytest.param(_stopped("denied", side_effect=True), [_etc(action="deny")], ETC_DENY,
                     Verdict.RACED, None, ("deny", "deny", "denied", True),
                     id="lsm-file-open-deny-after-create"),
        pytest.param(_stopped("killed", side_effect=False), [_etc(action="deny")], ETC_DENY,
                     Verdict.BLOCKED, None, ("deny", "deny", "killed", False),
                     id="deny-with-kill-is-compatible"),
        pytest.param(_stopped("killed", side_effect=None), [_etc()], ETC, Verdict.NOT_EXECUTED,
                     "etc-file-create sigkill: the action was killed by SIGKILL (exit -9), but "
                     "the side-effect probe gave no answer: BLOCKED cannot be proved",
                     ("sigkill", "sigkill", "killed", None), id="side-effect-unknown"),
        pytest.param(_stopped("killed"), [_etc(action="KPROBE_ACTION_SIGKILL")], ETC,
                     Verdict.RACED, None, ("sigkill", "sigkill", "killed", True),
                     id="tetragon-sigkill"),
    ],
)
def test_judge_enforcement_table(run: Run, detections: list[Detection],
                                 expectation: Expectation, verdict: Verdict, reason: str | None,
                                 enforcement: tuple[Any, ...]) -> None:
    judgement = judge(run, detections, expectation, UP, "bpftrace")
    assert judgement.verdict is verdict
    if reason is not None:
        assert judgement.reason == reason
    assert judgement.enforcement is not None
    assert tuple(judgement.enforcement[k] for k in
                 ("expected", "reported", "observed", "side_effect")) == enforcement
    assert judgement_failed(judgement) is (verdict in (Verdict.MISSED, Verdict.RACED))


def test_judge_enforcement_sensor_down_is_never_missed() -> None:
    judgement = judge(_stopped("killed"), [], ETC, DOWN, "bpftrace")
    assert (judgement.verdict, judgement.reason) == (Verdict.SENSOR_DOWN, DOWN.reason)


def test_judge_enforcement_precondition_failed_is_not_executed() -> None:
    run = _run(executed=False, reason="precondition failed: /etc is writable here (exit 1)")
    assert judge(run, [_etc()], ETC, UP, "bpftrace").verdict is Verdict.NOT_EXECUTED


def test_judge_enforcement_needs_a_correlated_detection() -> None:
    stray = _etc(pid=OTHER_PID)  # another process's kill: not this run's
    judgement = judge(_stopped("killed"), [stray], ETC, UP, "bpftrace")
    assert judgement.verdict is Verdict.MISSED
    assert [n.correlated_by for n in judgement.near_misses] == [None]


@pytest.mark.parametrize(
    ("run", "detections", "enforcer", "verdict", "reason"),
    [
        pytest.param(_stopped("killed", side_effect=None),
                     [_etc(rule="tmp-create-overbroad")], False, Verdict.UNEXPECTED,
                     "benign control killed by SIGKILL (exit -9) by bpftrace policy/rule "
                     "'tmp-create-overbroad' (sigkill): the policy stops legitimate work",
                     id="killed-by-a-claimed-rule"),
        pytest.param(_stopped("killed", side_effect=None), [], True, Verdict.UNEXPECTED,
                     "benign control killed by SIGKILL (exit -9) while bpftrace enforces, and "
                     "no bpftrace detection claims the kill: a policy of bpftrace stops "
                     "legitimate work, or another enforcer does", id="killed-under-an-enforcer"),
        pytest.param(_stopped("killed", side_effect=None), [], False, Verdict.NOT_EXECUTED,
                     "the control's action was killed by SIGKILL (exit -9) and bpftrace "
                     "reports no enforcement: not a valid control run",
                     id="killed-no-enforcer-here"),
        pytest.param(_stopped("denied", side_effect=None), [_etc(action="deny", rule="r")], True,
                     Verdict.UNEXPECTED, "benign control denied (exit 1, EPERM/EACCES) by "
                     "bpftrace policy/rule 'r' (deny): the policy stops legitimate work",
                     id="denied-by-a-claimed-rule"),
        pytest.param(_run(), [_etc()], True, Verdict.UNEXPECTED,
                     "benign control produced 'etc-file-create' ['T1098'] (correlated by "
                     "process_tree); it reports sigkill but the action completed normally",
                     id="claims-a-kill-of-a-completed-control"),
        pytest.param(_run(), [], True, Verdict.CLEAN, "no detection, as expected",
                     id="quiet-control-under-an-enforcer"),
    ],
)
def test_judge_benign_control_under_enforcement(run: Run, detections: list[Detection],
                                                enforcer: bool, verdict: Verdict,
                                                reason: str) -> None:
    judgement = judge(run, detections, BENIGN, UP, "bpftrace", enforcer=enforcer)
    assert (judgement.verdict, judgement.reason) == (verdict, reason)


@pytest.mark.parametrize(
    ("action", "fields", "normalised"),
    [
        ("KPROBE_ACTION_SIGKILL", {}, "sigkill"), ("KPROBE_ACTION_OVERRIDE", {}, "override"),
        ("KPROBE_ACTION_POST", {}, None), ("capture,container_killed", {}, "sigkill"),
        ("drift_prevented", {}, "deny"), (None, {"action": "sigkill"}, "sigkill"),
        (None, {"action": "deny"}, "deny"), (None, {}, None), ("capture", {}, None),
    ],
)
def test_enforcement_action_normalises_products(action: str | None, fields: dict[str, Any],
                                                normalised: str | None) -> None:
    assert enforcement_action(_detection(action=action, fields=fields)) == normalised


@settings(max_examples=200, deadline=None)
@given(
    observed=st.sampled_from(["killed", "denied", "completed"]),
    side_effect=st.sampled_from([True, False, None]),
    claim=st.sampled_from([None, "sigkill", "deny", "override", "KPROBE_ACTION_POST"]),
    want=st.sampled_from(["sigkill", "deny", "override"]),
    correlated=st.booleans(),
    up=st.booleans(),
)
def test_judge_enforcement_property(observed: str, side_effect: bool | None, claim: str | None,
                                    want: str, correlated: bool, up: bool) -> None:
    """An enforce expectation is never DETECTED; BLOCKED needs the sensor's own claim of
    the expected action, agreeing with what happened, and no side effect."""
    run = _stopped(observed, side_effect=side_effect)
    d = _etc(action=claim, pid=RUN_PID if correlated else OTHER_PID)
    expectation = Expectation(technique="T1098", rule="etc-file-create", enforce=want)
    judgement = judge(run, [d], expectation, UP if up else DOWN, "bpftrace")
    assert judgement.verdict is not Verdict.DETECTED
    if judgement.verdict in (Verdict.BLOCKED, Verdict.RACED):
        assert correlated
        assert enforcement_action(d) == want
        assert observed != "completed"
        assert side_effect is (judgement.verdict is Verdict.RACED)
    if judgement.verdict is Verdict.BLOCKED:
        assert not judgement_failed(judgement)
    if judgement.verdict is Verdict.SENSOR_DOWN:
        assert not up


# ---------------------------------------------------------------- what a MISSED row names
def test_missed_names_the_setting_an_uncorrelated_near_miss_lacks() -> None:
    hint = "turn on X"
    near = _detection(pid=OTHER_PID, sensor="tetragon", fields={"correlation_hint": hint})
    j = judge(_run(), [near], PTRACE, UP, "tetragon")
    assert j.verdict is Verdict.MISSED
    assert j.reason.endswith(f"cannot be tied to the run: {hint}")
    assert f"(pid {OTHER_PID})" in j.reason
    # a near-miss that differs in more than the run says nothing about correlation
    other = _detection(pid=OTHER_PID, rule="other", fields={"correlation_hint": hint})
    assert hint not in judge(_run(), [other], PTRACE, UP, "tetragon").reason


def test_missed_of_a_healthy_unsynced_sensor_carries_its_health_reason() -> None:
    j = judge(_run(), [], PTRACE, Health(up=True, reason="not synced: load the sync policy"),
              "tetragon")
    assert (j.verdict, j.reason.endswith("; not synced: load the sync policy")) == (
        Verdict.MISSED, True)
    synced = judge(_run(), [], PTRACE, Health(up=True, reason="x", synced=True), "t")
    assert not synced.reason.endswith("; x")


@pytest.mark.parametrize(("action", "fields", "expected"), [
    ("KPROBE_ACTION_NOTIFYENFORCER", {}, "enforcer"),       # Tetragon NotifyEnforcer
    (None, {"action_taken": "process_killed"}, "sigkill"),  # CrowdStrike disposition
    (None, {"action_taken": "operation_blocked"}, "deny"),
    (None, {"action_taken": "allowed"}, None),
])
def test_enforcement_action_of_other_products(action: str | None, fields: dict[str, Any],
                                              expected: str | None) -> None:
    assert enforcement_action(_detection(action=action, fields=fields)) == expected


def test_notify_enforcer_satisfies_an_expected_sigkill_when_the_action_was_killed() -> None:
    enforce = Expectation(technique="T1055.008", rule="ptrace-pid1", enforce="sigkill")
    run = _run(killed_by="SIGKILL", exit_code=-9, side_effect=False)
    j = judge(run, [_detection(action="KPROBE_ACTION_NOTIFYENFORCER")], enforce, UP, "tetragon")
    assert j.verdict is Verdict.BLOCKED
    completed = judge(_run(side_effect=True), [_detection(action="KPROBE_ACTION_NOTIFYENFORCER")],
                      enforce, UP, "tetragon")
    assert completed.verdict is Verdict.MISSED


# ---------------------------------------------------------------- a sensor's own requires
NO_KPROBES = {"node": "local", "kernel": "6.18.44-x", "kprobes": False,
              "reasons": {"kprobes": "no kprobe_events in tracefs"}}
KPROBE_RULE = Expectation(technique="T1055.008", rule="ptrace-pid1",
                          requires=(None, ("kprobes",)))


@pytest.mark.parametrize(("expectation", "facts", "detections", "verdict", "reason"), [
    # the node cannot show this sensor the scenario: its row only is not runnable
    (KPROBE_RULE, NO_KPROBES, (), Verdict.NOT_EXECUTED,
     "not runnable for bpftrace: kprobes not usable on local (6.18.44-x): "
     "no kprobe_events in tracefs"),
    (KPROBE_RULE, NO_KPROBES, (HIT,), Verdict.NOT_EXECUTED, None),
    (Expectation(technique="T1055.008", requires=(">=99.0", ())), NO_KPROBES, (),
     Verdict.NOT_EXECUTED, "not runnable for bpftrace: kernel 6.18.44-x on local does not "
                           "satisfy >=99.0"),
    # met, or no facts to hold against it: judged as ever
    (KPROBE_RULE, {**NO_KPROBES, "kprobes": True}, (HIT,), Verdict.DETECTED, None),
    (KPROBE_RULE, {**NO_KPROBES, "kprobes": True}, (), Verdict.MISSED, None),
    (KPROBE_RULE, {}, (HIT,), Verdict.DETECTED, None),
])
def test_a_sensors_own_requires(expectation: Expectation, facts: dict[str, Any],
                                detections: tuple[Detection, ...], verdict: Verdict,
                                reason: str | None) -> None:
    j = judge(_run(facts=facts), list(detections), expectation, UP, "bpftrace")
    assert j.verdict is verdict
    if reason is not None:
        assert j.reason == reason
    assert j.expected == expectation


def test_a_run_that_did_not_run_keeps_its_own_reason() -> None:
    j = judge(_run(executed=False, reason="precondition failed: x", facts=NO_KPROBES), [],
              KPROBE_RULE, UP, "bpftrace")
    assert (j.verdict, j.reason) == (Verdict.NOT_EXECUTED, "precondition failed: x")
