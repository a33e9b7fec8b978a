"""Command line: ``shadowtest run | validate | init | report | diff | parity | vm |
import-art | catalogue | rejudge``.

Exit codes (public contract, README "Exit codes"): run returns pytest's (0 every verdict
passed, 1 a verdict failed, 2 interrupted, 3 internal error, 4 usage/config/safety error,
5 no scenario collected); validate returns 0 (valid) or 1 (errors printed as
file:line: key: message); report returns 0, or 1 when the results hold a failing verdict;
diff 0/1 regression/3 sensor down; parity 0 gate passed/1 failed/3 no rule in scope;
coverage 0 coverage >= threshold/1 below/3 malformed policy or scenario file;
enforcement-report 0 every kernel safe to promote/1 not safe or no enforcement rows;
init 0 written or up to date/1 a file exists with other content (kept);
2 is a usage error for every command but run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.core.errors import ConfigError, ShadowtestError
from harness.engine.config import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shadowtest", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run scenarios on the configured nodes and judge each sensor")
    run.add_argument("paths", nargs="*", type=Path, help="scenario files or directories "
                     "(default: [tool.shadowtest] scenarios)")
    run.add_argument("--results", type=Path, help="append JSON lines (one per run x sensor)")
    run.add_argument("--config", type=Path, help="shadowtest.toml or pyproject.toml")
    run.add_argument("--sensors", help="comma-separated sensors (default: all configured)")
    run.add_argument("-n", "--numprocesses", help="pytest-xdist workers, e.g. 2 or auto")
    run.epilog = "Arguments after -- go to pytest as they are, e.g. -- -k ptrace --junitxml=j.xml"
    val = sub.add_parser("validate", help="validate scenario and atomic files (no attack)")
    val.add_argument("paths", nargs="*", type=Path)
    val.add_argument("--config", type=Path)
    from harness.report import cli as report_cli
    from harness.report import diff, enforcement, parity
    from harness.targets.vmcli import add_vm_parser, run_vm
    from harness.tools import art, catalogue, coverage, expectations_check, scaffold

    report_cli.add_report_arguments(sub.add_parser(
        "report", help="the verdict grid of a results file; --html for a standalone report"))
    diff.add_diff_parser(sub)
    parity.add_parity_parser(sub)
    enforcement.add_parser(sub)
    add_vm_parser(sub)
    art.add_parser(sub)
    catalogue.add_parser(sub)
    coverage.add_parser(sub)
    expectations_check.add_parser(sub)
    scaffold.add_parser(sub)
    rj = sub.add_parser("rejudge", help="judge recorded runs again against recorded detections")
    rj.add_argument("results", type=Path, help="a results file written by shadowtest run")
    rj.add_argument("--sensor", action="append", required=True, metavar="NAME=FORMAT:PATH",
                    help="a recorded detection file and the adapter that reads it, e.g. "
                         "falco=falco:alerts.jsonl (repeatable)")
    rj.add_argument("--out", type=Path, help="append the new rows to this results file")
    rj.add_argument("--config", type=Path)
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:  # everything after -- goes to pytest untouched
        passthrough = argv[argv.index("--") + 1:]
        argv = argv[: argv.index("--")]
    args = parser.parse_args(argv)
    args.pytest_args = passthrough
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run, "validate": _validate, "rejudge": _rejudge, "report": report_cli.run_report,
        "diff": diff.run_diff, "parity": parity.run_parity, "vm": run_vm,
        "enforcement-report": enforcement.run,
        "import-art": art.run, "catalogue": catalogue.run, "coverage": coverage.run,
        "init": scaffold.run, "expectations": expectations_check.run,
    }
    try:
        return commands[args.command](args)
    except ShadowtestError as exc:
        print(f"shadowtest: error: {exc}", file=sys.stderr)
        return 4 if args.command == "run" else 2


def _run(args: argparse.Namespace) -> int:
    from harness.pytest.runner import pytest_argv, run_pytest

    settings = load_settings(Path.cwd(), args.config)
    for path in settings.scenarios if not args.paths else ():
        if not path.exists():
            raise ConfigError(f"{settings.where('', 'scenarios')}: scenarios: {path} does not "
                              f"exist: create it (shadowtest init scaffolds a project) or fix "
                              f"the path")
    argv = pytest_argv(settings, args.paths or settings.scenarios, explicit=bool(args.paths),
                       results=args.results, sensors=args.sensors,
                       numprocesses=args.numprocesses)
    return run_pytest([*argv, *args.pytest_args])


def _validate(args: argparse.Namespace) -> int:
    from harness.core.scenario import check_scenario, is_atomic_file, load_atomics, scenario_files

    settings = load_settings(Path.cwd(), args.config)
    paths = list(args.paths) or list(settings.scenarios)
    files = scenario_files(p for p in paths if p.exists())
    missing = [p for p in paths if not p.exists()]
    atomic_files = [f for f in files if is_atomic_file(f)]
    # atomics named on the command line first, then the configured ones (built-in last)
    atomic_dirs = dict.fromkeys([*(f.parent.resolve() for f in atomic_files),
                                 *(d.resolve() for d in settings.atomics if d.is_dir())])
    atomics, errors = load_atomics(atomic_dirs)
    count = len(atomics)
    for path in files:
        if path in atomic_files:
            continue
        errs, scenario = check_scenario(path, atomics)
        errors += errs
        count += scenario is not None
    for err in errors:
        print(err, file=sys.stderr)
    for path in missing:
        print(f"{path}: no such file or directory", file=sys.stderr)
    print(f"shadowtest validate: {count} valid file(s), {len(errors) + len(missing)} error(s)")
    return 1 if errors or missing else 0


def _rejudge(args: argparse.Namespace) -> int:
    from harness.core.policy import row_failed
    from harness.core.scenario import check_scenario, load_atomics, scenario_files
    from harness.report.rejudge import rejudge
    from harness.report.results import append_rows, read_rows
    from harness.report.summary import render
    from harness.sensors.replay import ReplaySensor

    settings = load_settings(Path.cwd(), args.config)
    sensors = {}
    for spec in args.sensor:
        name, _, rest = spec.partition("=")
        fmt, _, path = rest.partition(":")
        if not (name and fmt and path):
            print(f"shadowtest: error: --sensor {spec!r}: expected NAME=FORMAT:PATH", file=sys.stderr)
            return 2
        sensor = ReplaySensor(name=name, path=path, format=fmt)
        sensor.start()
        sensors[name] = sensor
    atomics, _ = load_atomics(d for d in settings.atomics if d.is_dir())
    scenarios = {}
    for path in scenario_files(d for d in settings.scenarios if d.exists()):
        _, scenario = check_scenario(path, atomics)
        if scenario is not None:
            scenarios[scenario.id] = scenario
    rows = rejudge(read_rows(args.results), sensors, scenarios)
    if args.out:
        append_rows(args.out, rows)
    print(render(rows), end="")
    return 1 if any(row_failed(r) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
