"""The one verdict policy: which verdicts fail, which pass, the worst-of order, and what a
change from a baseline to a current verdict is. ``run`` (the session's test outcome),
``report``, ``rejudge``, ``diff`` and ``--shadowtest-baseline`` all decide through this
module, so they cannot disagree.

The table (DESIGN.md "Verdicts"), per verdict, for a detection expectation and for an
enforcement one (``enforce``):

============  =========  ===========  ==================================================
verdict       detection  enforcement  why
============  =========  ===========  ==================================================
DETECTED      pass       pass         (an enforcement expectation never gives DETECTED)
CLEAN         pass       pass         a benign control, quiet
BLOCKED       pass       pass         killed/denied before the side effect
RACED         pass       FAIL         the kill landed after the side effect
NOT_EXECUTED  not run    not run      never a miss; a test of only these is skipped
SENSOR_DOWN   FAIL       FAIL         never a miss, but a miss cannot be ruled out
MISSED        FAIL       FAIL         a declared known gap's MISSED passes
UNEXPECTED    FAIL       FAIL         a benign control that fired or was stopped
============  =========  ===========  ==================================================

RACED is only ever given to an enforcement expectation (``judge``), so a RACED row fails;
its detection column decides what a change *to* RACED is (``change``): from MISSED or
UNEXPECTED it is an improvement (the detection now passes), from anything else a
regression.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.core.verdict import Judgement, Verdict


class State(enum.StrEnum):
    """What a verdict means for a test."""

    OK = "ok"              # passes
    FAIL = "fail"
    DOWN = "down"          # fails, but is not a rule failure (diff: sensor_down, exit 3)
    NOT_RUN = "not_run"    # neither: the action did not run


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of the table."""

    detection: State
    enforcement: State


#: the table (module docstring); a known gap's MISSED is ``State.OK`` (``state``)
TABLE: Mapping[Verdict, Rule] = {
    Verdict.DETECTED: Rule(State.OK, State.OK),
    Verdict.CLEAN: Rule(State.OK, State.OK),
    Verdict.BLOCKED: Rule(State.OK, State.OK),
    Verdict.RACED: Rule(State.OK, State.FAIL),
    Verdict.NOT_EXECUTED: Rule(State.NOT_RUN, State.NOT_RUN),
    Verdict.SENSOR_DOWN: Rule(State.DOWN, State.DOWN),
    Verdict.MISSED: Rule(State.FAIL, State.FAIL),
    Verdict.UNEXPECTED: Rule(State.FAIL, State.FAIL),
}

#: worst first: the verdict that represents several rows of one key (diff, baseline)
WORST: tuple[Verdict, ...] = (
    Verdict.MISSED, Verdict.UNEXPECTED, Verdict.SENSOR_DOWN, Verdict.RACED,
    Verdict.NOT_EXECUTED, Verdict.BLOCKED, Verdict.DETECTED, Verdict.CLEAN)


class Change(enum.StrEnum):
    """What a change from a baseline verdict to a current one is (``change``)."""

    REGRESSION = "regression"    # fails the diff (exit 1) and a baseline test
    SENSOR_DOWN = "sensor_down"  # fails a baseline test; diff exit 3
    IMPROVEMENT = "improvement"
    OTHER = "other"
    KNOWN = "known"              # the same failing verdict: reported, never failing
    SAME = "same"
    NEW = "new"                  # a key only in the current run that does not fail

    @property
    def fails(self) -> bool:
        """The change fails a test under ``--shadowtest-baseline``."""
        return self in (Change.REGRESSION, Change.SENSOR_DOWN)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One verdict with what the policy reads besides it: whether it is a declared known
    gap's (the row's ``known_gap``, the judgement's ``gap``)."""

    verdict: Verdict
    known_gap: bool = False


def verdict_of(value: Any) -> Verdict:
    """A row's ``verdict`` as a Verdict; raises ValueError naming the value otherwise."""
    try:
        return Verdict(str(value))
    except ValueError:
        raise ValueError(f"verdict {value!r}: expected one of "
                         f"{', '.join(v.value for v in Verdict)}") from None


def outcome_of_row(row: Mapping[str, Any]) -> Outcome:
    verdict = verdict_of(row.get("verdict"))
    return Outcome(verdict, bool(row.get("known_gap")) and verdict is Verdict.MISSED)


def known_gap(j: Judgement) -> str | None:
    """The results row's ``known_gap``: the gap's reason on a MISSED it excuses, else None."""
    return j.gap if j.verdict is Verdict.MISSED else None


def outcome_of(j: Judgement) -> Outcome:
    return Outcome(j.verdict, bool(j.gap) and j.verdict is Verdict.MISSED)


def state(o: Outcome) -> State:
    """The outcome's state: a RACED is an enforcement verdict (it fails); a known gap's
    MISSED passes."""
    if o.known_gap and o.verdict is Verdict.MISSED:
        return State.OK
    return TABLE[o.verdict].enforcement


def fails(o: Outcome) -> bool:
    """The outcome fails a test (and ``run``/``report``/``rejudge``'s exit code 1)."""
    return state(o) in (State.FAIL, State.DOWN)


def judgement_failed(j: Judgement) -> bool:
    return fails(outcome_of(j))


def row_failed(row: Mapping[str, Any]) -> bool:
    """A results row whose verdict fails: MISSED (a known gap's excepted), UNEXPECTED,
    SENSOR_DOWN, RACED."""
    return fails(outcome_of_row(row))


def any_failed(rows: Iterable[Mapping[str, Any]]) -> bool:
    return any(row_failed(r) for r in rows)


def clean_pass(o: Outcome) -> bool:
    """A pass with nothing to say: DETECTED, CLEAN, BLOCKED (a summary lists every other
    row: failures, NOT_EXECUTED, known gaps)."""
    return state(o) is State.OK and not o.known_gap


def session_fails(outcomes: Iterable[Outcome]) -> bool:
    """A scenario test fails when one of its sensors' outcomes fails."""
    return any(fails(o) for o in outcomes)


def session_skips(outcomes: Iterable[Outcome]) -> bool:
    """A scenario test is skipped when nothing ran: every sensor's verdict NOT_EXECUTED."""
    verdicts = {o.verdict for o in outcomes}
    return verdicts == {Verdict.NOT_EXECUTED}


def rank(verdict: Any) -> int:
    """Index in ``WORST`` (0 = worst); an unknown verdict ranks after every known one."""
    try:
        return WORST.index(Verdict(str(verdict)))
    except ValueError:
        return len(WORST)


def worst(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The row that represents several rows of one key: the worst verdict, the last such
    row in order. Raises ValueError on no rows."""
    items = [dict(r) for r in rows]
    if not items:
        raise ValueError("worst(): no rows")
    best = min(rank(r.get("verdict")) for r in items)
    return [r for r in items if rank(r.get("verdict")) == best][-1]


def change(base: Outcome | None, current: Outcome) -> Change:
    """What the change from ``base`` (None: the key is new) to ``current`` is:

    - the same verdict (and known-gap flag): KNOWN when it fails, else SAME;
    - ``current`` fails as a rule (MISSED without a gap, UNEXPECTED, RACED): REGRESSION
      (also for a new key: nothing excuses it), except a failing base whose detection
      failed and whose current detection passes (MISSED/UNEXPECTED -> RACED): IMPROVEMENT;
    - ``current`` is SENSOR_DOWN: SENSOR_DOWN (not a rule regression; one cannot be ruled
      out);
    - a new key otherwise (a pass, NOT_EXECUTED, a declared known gap's MISSED): NEW;
    - a failing base (or a known gap's MISSED) to a pass: IMPROVEMENT;
    - anything else (DETECTED -> NOT_EXECUTED, SENSOR_DOWN -> DETECTED, ...): OTHER."""
    now = state(current)
    if base == current:
        kind = Change.KNOWN if fails(current) else Change.SAME
    elif now is State.FAIL:
        better = (base is not None and state(base) is State.FAIL
                  and TABLE[base.verdict].detection is State.FAIL
                  and TABLE[current.verdict].detection is State.OK)
        kind = Change.IMPROVEMENT if better else Change.REGRESSION
    elif now is State.DOWN:
        kind = Change.SENSOR_DOWN
    elif base is None:
        kind = Change.NEW
    elif now is State.OK and (state(base) is State.FAIL or base.known_gap):
        kind = Change.IMPROVEMENT
    else:
        kind = Change.OTHER
    return kind


# ---------------------------------------------------------------- NOT_EXECUTED budget
#: an allowed_not_executed entry: a scenario id (``*`` globs) and optionally ``[context]``
BUDGET_ENTRY = re.compile(r"^(?P<scenario>[^\[\]\s]+)(?:\[(?P<context>[^\[\]\s]+)\])?$")


@dataclass(frozen=True, slots=True)
class NotExecutedBudget:
    """How many runs may end NOT_EXECUTED before a session fails (``max_not_executed``;
    None: any number, as without a budget), not counting the runs ``allowed`` names
    (``allowed_not_executed``: ``scenario`` or ``scenario[context]``, ``*`` globs). A run
    is one (scenario, context, node), whatever the number of sensors: coverage that erodes
    (an atomic whose precondition stopped holding, a node that lost a feature) fails CI
    instead of passing as skips."""

    limit: int | None = None
    allowed: tuple[str, ...] = ()

    def allows(self, scenario: str, context: str) -> bool:
        for entry in self.allowed:
            m = BUDGET_ENTRY.match(entry)
            if m and fnmatch.fnmatchcase(scenario, m["scenario"]) and (
                    m["context"] is None or fnmatch.fnmatchcase(context, m["context"])):
                return True
        return False

    def spent(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """The runs that count against the budget: ``scenario[context-node]: reason``."""
        runs: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
        for row in rows:
            key = (str(row.get("scenario")), str(row.get("context")), str(row.get("node")))
            runs.setdefault(key, []).append(row)
        out = []
        for (scenario, context, node), mine in sorted(runs.items()):
            if all(verdict_of(r.get("verdict")) is Verdict.NOT_EXECUTED for r in mine) \
                    and not self.allows(scenario, context):
                out.append(f"{scenario}[{context}-{node}]: {mine[0].get('reason') or ''}")
        return out

    def exceeded(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """The counted runs when there are more than ``limit`` of them, else []."""
        if self.limit is None:
            return []
        spent = self.spent(rows)
        return spent if len(spent) > self.limit else []
