"""pytest11 entry point: options, ini keys, markers, hooks. Logic lives elsewhere.

Inert unless asked: installed but not switched on with ``--shadowtest`` (``shadowtest run``
passes it), the plugin registers its options and markers and does nothing else — no
collection, no signal handler, no option rewrite, no configuration read.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from harness.core.errors import ShadowtestError
from harness.engine.config import load_settings
from harness.engine.safety import check_nodes_allowed
from harness.pytest import allure as allure_report
from harness.pytest.baseline import apply_baseline, load_baseline
from harness.pytest.collect import SCENARIO, ScenarioFile, is_scenario_file
from harness.pytest.interrupt import InterruptReport
from harness.pytest.session import (
    ROWS_PROPERTY,
    RUNNER,
    ScenarioRunner,
    check_markers,
    rows_of,
    runner_of,
)
from harness.report import summary
from harness.report.diff import Entry, Key
from harness.report.results import append_rows
from harness.sensors.base import Sensor

ROWS = pytest.StashKey[list[dict[str, Any]]]()
BASELINE = pytest.StashKey[Mapping[Key, Entry]]()
OVER_BUDGET = pytest.StashKey[list[str]]()
SIGTERM_HANDLER = pytest.StashKey[Callable[[int, FrameType | None], None] | None]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from harness.pytest import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shadowtest", "shadowtest: attack scenarios judged per sensor")
    group.addoption("--shadowtest", action="store_true", default=False,
                    help="collect the configured scenarios and run them: attacks the nodes "
                         "in allowed_nodes (without it the plugin does nothing)")
    group.addoption("--shadowtest-scenarios", metavar="PATH", action="append", default=None,
                    help="scenario files or directories to collect besides the configured "
                         "ones (repeatable)")
    group.addoption("--shadowtest-results", metavar="FILE", default=None,
                    help="append one JSON line per (run, sensor) to FILE")
    group.addoption("--shadowtest-config", metavar="FILE", default=None,
                    help="shadowtest.toml or pyproject.toml to read [tool.shadowtest] from")
    group.addoption("--shadowtest-sensors", metavar="NAMES", default=None,
                    help="comma-separated sensors to judge (default: all configured)")
    group.addoption("--shadowtest-baseline", metavar="FILE", default=None,
                    help="a results file of an earlier run: a test fails only on regressions "
                         "against it (a verdict equal to the baseline's does not fail)")


MARKERS = (
    "shadowtest_kernel(requirement): skip unless the node's kernel satisfies it, e.g. '>=5.8'",
    "shadowtest_requires(*features): skip unless the node has them (btf, bpf_lsm, kprobes)",
    "shadowtest_technique(id): the ATT&CK technique a scenario exercises",
    "shadowtest_sensor(*names): the sensors judged for this test",
)
OPTIONS = ("--shadowtest-results", "--shadowtest-config", "--shadowtest-sensors",
           "--shadowtest-baseline", "--shadowtest-scenarios")


def active(config: pytest.Config) -> bool:
    """The user asked for shadowtest in this session (``--shadowtest``)."""
    return bool(config.getoption("--shadowtest", default=False))


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    if not active(config):
        given = [o for o in OPTIONS if config.getoption(o) is not None]
        if given:
            raise pytest.UsageError(
                f"{', '.join(given)} given without --shadowtest: shadowtest collects and runs "
                f"scenarios (attacks nodes) only when asked; add --shadowtest or use "
                f"`shadowtest run`")
        return
    explicit = config.getoption("--shadowtest-config")
    try:
        settings = load_settings(config.rootpath, Path(explicit) if explicit else None)
        sensors = config.getoption("--shadowtest-sensors")
        if sensors:
            settings = settings.with_sensors(tuple(s for s in sensors.split(",") if s))
        session = ScenarioRunner(settings, config)
        session.fleet.build()  # every node and sensor, not started: a bad one stops here
        session.scenario_paths = _scenario_paths(config, settings.scenarios)
    except ShadowtestError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.addinivalue_line(
        "markers", "xdist_group(name): pytest-xdist --dist loadgroup runs a group on one worker")
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"  # honour the per-node xdist_group of scenario items
    config.stash[RUNNER] = session
    config.stash[ROWS] = []
    baseline = config.getoption("--shadowtest-baseline")
    if baseline:
        try:
            config.stash[BASELINE] = load_baseline(Path(baseline))
        except (OSError, ValueError) as exc:
            raise pytest.UsageError(str(exc)) from exc
    allure_report.register(config)  # labels, parameters, attachments when --alluredir
    config.pluginmanager.register(InterruptReport(), "shadowtest-interrupt")
    if _on_controller(config):
        config.stash[SIGTERM_HANDLER] = _install_sigterm()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave the process as it was: the SIGTERM handler goes with the session."""
    handler = config.stash.get(SIGTERM_HANDLER, None)
    if handler is not None and signal.getsignal(signal.SIGTERM) is handler:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _scenario_paths(config: pytest.Config, configured: tuple[Path, ...]) -> tuple[Path, ...]:
    """Paths whose YAML files are scenarios: the configured ones and the ones given with
    ``--shadowtest-scenarios``. With no path on the command line, the configured ones are
    collected too (``pytest --shadowtest`` runs the project's scenarios)."""
    given = tuple(Path(p).resolve() for p in config.getoption("--shadowtest-scenarios") or ())
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        known = [Path(a).resolve() for a in config.args]
        config.args.extend(str(p) for p in (*configured, *given)
                           if p.exists() and not any(p.resolve().is_relative_to(k) for k in known))
    return (*configured, *given)


def _install_sigterm() -> Callable[[int, FrameType | None], None] | None:
    """SIGTERM becomes KeyboardInterrupt so teardown (cleanup) runs as for Ctrl-C (only when
    nobody else handles SIGTERM); returns the handler installed, if any."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, raise_interrupt)
    return raise_interrupt


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if RUNNER not in parent.config.stash:
        return None
    if is_scenario_file(file_path, runner_of(parent.config).scenario_paths):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Refuse, before any atomic runs, every node that is not explicitly allowed."""
    if RUNNER not in config.stash:
        return
    nodes = {item.stash[SCENARIO][2] for item in items if SCENARIO in item.stash}
    try:
        check_nodes_allowed(nodes, runner_of(config).settings)
    except ShadowtestError as exc:
        raise pytest.UsageError(str(exc)) from exc


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """``shadowtest_kernel`` / ``shadowtest_requires`` skip at setup with the reason, for
    scenario items (their node) and for users' own tests (the first configured node)."""
    if not any(item.iter_markers("shadowtest_kernel")) and not any(
        item.iter_markers("shadowtest_requires")
    ):
        return
    if SCENARIO in item.stash:
        return  # scenario items: run_item records NOT_EXECUTED rows with the reason
    if RUNNER not in item.config.stash:
        pytest.skip("shadowtest markers need --shadowtest (node facts are read only when "
                    "shadowtest is asked for)")
    st = runner_of(item.config)
    check_markers(item, st.fleet.facts(next(iter(st.settings.nodes))))


@pytest.fixture(scope="session")
def shadowtest_sensors(pytestconfig: pytest.Config) -> Iterator[Callable[[str], dict[str, Sensor]]]:
    """``shadowtest_sensors(node)``: that node's configured sensors, started (live) on first
    use, once per process; every sensor, context and target is stopped at the end."""
    if RUNNER not in pytestconfig.stash:
        pytest.skip("shadowtest_sensors needs --shadowtest: sensors start only when shadowtest "
                    "is asked for")
    st = runner_of(pytestconfig)
    try:
        yield st.fleet.sensors_for
    finally:
        st.fleet.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                               call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """``--shadowtest-baseline``: a test passes or fails on regressions against the baseline
    (harness.pytest.baseline, through harness.core.policy.change)."""
    outcome = yield
    if call.when != "call" or BASELINE not in item.config.stash:
        return
    verdict_failure = call.excinfo is not None and call.excinfo.errisinstance(pytest.fail.Exception)
    apply_baseline(outcome.get_result(), verdict_failure, item.config.stash[BASELINE])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Controller side (also under xdist): append this test's rows as soon as it ends. The
    rows then leave the report's user_properties, so ``--junitxml`` (which runs after)
    writes the ``shadowtest.*`` properties only, not a repr of every row."""
    rows = rows_of(report)
    config = _config_of(report)
    if not rows or config is None or not _on_controller(config):
        return
    report.user_properties = [p for p in report.user_properties if p[0] != ROWS_PROPERTY]
    if report.when != "call":
        return
    config.stash[ROWS].extend(rows)
    path = config.getoption("--shadowtest-results") or runner_of(config).settings.results
    if path:
        append_rows(Path(path), rows)


_CONFIG: list[pytest.Config] = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG[:] = [session.config]


def _config_of(report: pytest.TestReport) -> pytest.Config | None:
    return _CONFIG[0] if _CONFIG else None


def _on_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """More runs NOT_EXECUTED than ``max_not_executed`` allows: the session fails (exit 1)."""
    config = session.config
    if RUNNER not in config.stash or not _on_controller(config):
        return
    rows: list[dict[str, Any]] = config.stash.get(ROWS, [])
    over = runner_of(config).settings.not_executed.exceeded(rows)
    config.stash[OVER_BUDGET] = over
    if over and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    terminalreporter.section("shadowtest")
    width = int(os.environ.get("COLUMNS", "0") or 0) or config.get_terminal_writer().fullwidth
    terminalreporter.write(summary.render(rows, width=width, color=terminalreporter.hasmarkup))
    over = config.stash.get(OVER_BUDGET, [])
    if over:
        budget = runner_of(config).settings.not_executed
        terminalreporter.write_line(
            f"FAILED: {len(over)} runs NOT_EXECUTED, more than max_not_executed = "
            f"{budget.limit} (allowed_not_executed excepted); add the expected ones to "
            f"allowed_not_executed or fix what stopped them:", red=True)
        for line in over:
            terminalreporter.write_line(f"  {line}")
