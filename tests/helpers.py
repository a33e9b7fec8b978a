"""What several test modules share: a SIGALRM hang guard, a bounded wait for a condition,
and a fake target whose session runs nothing (for ``harness.engine.execute`` without a node)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from harness.core.run import StageResult
from harness.targets.base import TargetBase


def until(cond: Callable[[], bool], what: str, seconds: float = 10.0,
          poll: float = 0.02) -> None:
    """Wait until ``cond()`` holds; AssertionError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for: {what}")
        time.sleep(poll)


@contextmanager
def hang_guard(seconds: float, what: str) -> Iterator[None]:
    """Raise ``TimeoutError`` in the code under test when it is still going after ``seconds``:
    a guard against an infinite loop (or a wait that must not happen), not a speed
    measurement. SIGALRM, so main thread only; the previous handler is restored."""

    def fire(_sig: int, _frame: object) -> None:
        __tracebackhide__ = True
        raise TimeoutError(f"{what}: still going after {seconds:g} s (hang guard)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _nothing() -> None:
    pass


class FakeSession:
    """A stage-runner session that runs nothing: every stage ends at once with exit code
    ``exits.get(name, 0)``; the action (the ``command`` stage) calls ``on_command`` first.
    ``stages`` records the names of the stages run, in order."""

    def __init__(self, pids: frozenset[int] = frozenset({4242}),
                 exits: Mapping[str, int] | None = None,
                 on_command: Callable[[], None] = _nothing) -> None:
        self.pids = pids
        self.cgroup_id: int | None = None
        self.container_id: str | None = None
        self.variables: dict[str, Any] = {}
        self.exits = dict(exits or {})
        self.on_command = on_command
        self.stages: list[str] = []

    def arm_cleanup(self, argv: Any, env: Any) -> None:
        pass

    def stage(self, name: str, argv: Any, env: Any, timeout: float) -> StageResult:
        self.stages.append(name)
        now = time.time()
        if name == "command":
            self.on_command()
        return StageResult(name, self.exits.get(name, 0), started_at=now, ended_at=now)

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeTarget(TargetBase):
    """Node ``local``; every ``open`` hands out the same session (a fresh one by default)."""

    node = "local"

    def __init__(self, session: FakeSession | None = None) -> None:
        self.session = session if session is not None else FakeSession()

    def open(self, context: str, run_id: str) -> FakeSession:
        return self.session
