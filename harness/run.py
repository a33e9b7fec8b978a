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
    ``executed`` is True only when the atomic's proof showed the action happened.
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

    @property
    def action_seconds(self) -> float:
        """The atomic's own time: its command stage (what the harness does not add)."""
        return sum(s.seconds for s in self.stages if s.stage == "command")
