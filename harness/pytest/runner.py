"""``shadowtest run``'s pytest session: the command line it hands pytest, and the call.

The CLI (``harness/__main__.py``) decides what to run; this module is the only place it
reaches pytest, so that only ``harness/pytest/`` imports pytest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.engine.config import Settings


def pytest_argv(settings: Settings, paths: Sequence[Path], *, explicit: bool,
                results: Path | None = None, sensors: str | None = None,
                numprocesses: str | None = None) -> list[str]:
    """pytest's arguments for a run of ``paths`` (named on the command line when
    ``explicit``, else the configured scenarios) under ``settings``."""
    # hypothesis's plugin (if installed) costs ~0.5 s at every run and has no use here
    argv = [*(str(p) for p in paths), "--shadowtest",
            *(f"--shadowtest-scenarios={p}" for p in (paths if explicit else ())),
            "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-o", "addopts=",
            "-o", "testpaths=",
            "-o", "filterwarnings=", "--strict-markers", "-rfEs",
            # the CLI imported harness before pytest could rewrite its asserts: nothing to
            # rewrite there (the plugin has no test asserts), so the warning is noise
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if results:
        argv += ["--shadowtest-results", str(results)]
    # the project is where its configuration is: pytest's rootdir and ini file follow it,
    # never a directory that merely holds one of the paths (e.g. the built-in catalogue's)
    argv += ["--rootdir", str(settings.root)]
    if settings.source is not None:
        argv += ["--shadowtest-config", str(settings.source), "-c", str(settings.source)]
    if sensors:
        argv += ["--shadowtest-sensors", sensors]
    if numprocesses:
        argv += ["-n", str(numprocesses)]
    return argv


def run_pytest(argv: Sequence[str]) -> int:
    """pytest's exit code for ``argv`` (0 passed, 1 failed, 2 interrupted, 3 internal
    error, 4 usage error, 5 nothing collected)."""
    return int(pytest.main(list(argv)))
