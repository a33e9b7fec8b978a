"""An interruption whose traceback has an entry without a line number (CPython 3.11: an
interrupt landing on an instruction with no line) ends a shadowtest session as
"interrupted" (exit 2) with its summary, not as an internal error (seen in CI: the
random-interrupt e2e test, SIGINT at 0.82 s, exit 1 from pytest's reporter)."""

from __future__ import annotations

import sys
import types

import pytest

from harness.pytest.interrupt import without_unknown_lines
from tests.plugin.test_reports import QUIET, make_catalog

# conftest of the session under test: a KeyboardInterrupt whose traceback holds an entry
# with tb_lineno None, as CPython builds it for an instruction without a line
LINELESS_INTERRUPT = """
from tests.plugin.test_interrupt import _lineless_traceback


def pytest_collection_finish(session):
    raise KeyboardInterrupt("signal 2").with_traceback(_lineless_traceback())
"""


def _lineless_traceback() -> types.TracebackType:
    with open(__file__):
        pass
    frame = sys._getframe()
    for lasti in range(0, len(frame.f_code.co_code), 2):
        tb = types.TracebackType(None, frame, lasti, -1)
        if tb.tb_lineno is None:
            return tb
    raise AssertionError("no instruction without a line in this function")


def test_the_lineless_traceback_is_what_breaks_pytest() -> None:
    """The oracle's premise: pytest's reporter fails on such a traceback."""
    try:
        raise KeyboardInterrupt("signal 2").with_traceback(_lineless_traceback())
    except KeyboardInterrupt:
        excinfo = pytest.ExceptionInfo[BaseException].from_current()
    with pytest.raises(TypeError):
        excinfo.getrepr(funcargs=True)


def test_entries_without_a_line_are_dropped_from_the_chain_too() -> None:
    try:
        try:
            raise ValueError("inner").with_traceback(_lineless_traceback())
        except ValueError:
            raise KeyboardInterrupt("signal 15").with_traceback(_lineless_traceback()) from None
    except KeyboardInterrupt:
        excinfo = pytest.ExceptionInfo[BaseException].from_current()
    assert isinstance(excinfo.value.__context__, ValueError)
    without_unknown_lines(excinfo)
    text = str(excinfo.getrepr(funcargs=True, chain=True))
    assert "KeyboardInterrupt: signal 15" in text
    assert "test_entries_without_a_line_are_dropped_from_the_chain_too" in text  # kept entry
    tb = excinfo.value.__context__.__traceback__
    while tb is not None:
        assert tb.tb_lineno is not None
        tb = tb.tb_next


def test_an_interrupted_session_exits_2_not_internal_error(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    make_catalog(pytester, monkeypatch)
    pytester.makeconftest(LINELESS_INTERRUPT)
    result = pytester.runpytest("scenarios", *QUIET, no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stderr.str()
    result.stdout.fnmatch_lines(["*KeyboardInterrupt*signal 2*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_without_shadowtest_the_plugin_does_not_touch_the_interruption(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inert when not asked: the same session without --shadowtest is pytest's own (and
    pytest's reporter fails on it) — the oracle that the fix above is the plugin's."""
    make_catalog(pytester, monkeypatch)
    pytester.makeconftest(LINELESS_INTERRUPT)
    result = pytester.runpytest("scenarios", *QUIET[1:], no_reraise_ctrlc=True)
    assert result.ret != pytest.ExitCode.INTERRUPTED
