"""An interrupted run reports its interruption instead of crashing on it.

A Ctrl-C or SIGTERM (made a KeyboardInterrupt by the plugin) lands between two bytecode
instructions; on CPython 3.11 some instructions carry no line number, so the traceback
entry for the interrupted frame has ``tb_lineno`` None. pytest's terminal reporter formats
the interruption with ``excinfo.getrepr()``, which then fails with ``TypeError`` and the run
ends with an internal error (exit 1) instead of "interrupted" (exit 2) — after the cleanup
ran, but with the wrong exit code and no summary. Seen in CI (random-interrupt e2e test).

Entries without a line are dropped from the interruption's traceback (and from the chained
exceptions' tracebacks) before any reporter sees it; they carry no location to show.
"""

from __future__ import annotations

from types import TracebackType

import pytest


def _known_lines(tb: TracebackType | None) -> TracebackType | None:
    """The traceback chain ``tb`` without the entries whose line number is unknown."""
    entries: list[TracebackType] = []
    while tb is not None:
        if tb.tb_lineno is not None:
            entries.append(tb)
        tb = tb.tb_next
    kept: TracebackType | None = None
    for entry in reversed(entries):
        kept = TracebackType(kept, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return kept


def without_unknown_lines(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Drop, in place, the traceback entries without a line number from ``excinfo`` and from
    every exception chained to it (``__cause__``/``__context__``)."""
    known = _known_lines(excinfo.tb)
    if known is not None:  # else nothing to show either way
        excinfo.traceback = type(excinfo.traceback)(known)
    seen = {id(excinfo.value)}
    chained = [excinfo.value.__cause__, excinfo.value.__context__]
    while chained:
        exc = chained.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = _known_lines(exc.__traceback__)
        chained += [exc.__cause__, exc.__context__]


class InterruptReport:
    """Registered by the plugin for a shadowtest session only."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        without_unknown_lines(excinfo)
