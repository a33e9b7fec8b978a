"""A ``Run``: one execution of a scenario on one node, and what proves it happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StageResult:
    """One stage of an atomic (precondition, command, proof, cleanup) as the node ran it."""

    stage: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    pid: int | None = None
    error: str | None = None

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True, slots=True)
class Run:
    """What the harness knows about one execution.

    ``pids`` are host pids the harness started for this run (the process tree's roots);
    ``executed`` is True only when the atomic's proof showed the action happened, or, in an
    enforcement run, when the action was stopped by enforcement (killed by a signal or
    denied with EPERM/EACCES): then ``killed_by`` / ``exit_code`` say how and
    ``side_effect`` what the atomic's side-effect probe found afterwards (True: the effect
    exists; False: it does not; None: unknown or not probed).
    """

    run_id: str
    scenario: str
    context: str
    node: str
    started_at: float
    ended_at: float
    executed: bool
    reason: str = ""
    pids: frozenset[int] = frozenset()
    cgroup_id: int | None = None
    container_id: str | None = None
    stages: tuple[StageResult, ...] = ()
    names: tuple[str, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: the signal that ended the action (``SIGKILL``), None when it exited by itself
    killed_by: str | None = None
    #: the action's exit code as the node reported it (-9 / 137 for a SIGKILL)
    exit_code: int | None = None
    #: the side-effect probe's answer (enforcement runs only)
    side_effect: bool | None = None
    #: the atomic's ``side_effect.description`` (for reasons)
    side_effect_what: str = ""
    #: the action was stopped with EPERM / EACCES (a deny), not by a signal
    denied: bool = False

    @property
    def observed(self) -> str | None:
        """What happened to the action: ``killed`` (by a signal), ``denied`` (EPERM/EACCES),
        ``completed`` (exited 0 with its proof), None when it did not run."""
        if not self.executed:
            return None
        if self.killed_by:
            return "killed"
        return "denied" if self.denied else "completed"

    @property
    def action_seconds(self) -> float:
        """The atomic's own time: its command stage (what the harness does not add)."""
        return sum(s.seconds for s in self.stages if s.stage == "command")
