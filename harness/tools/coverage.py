"""``shadowtest coverage POLICY_DIR...``: which Tetragon enforcement actions no scenario
exercises, before a policy is promoted to enforcement.

**Policies** are read by ``harness.tools.tracingpolicy`` (every TracingPolicy document
under each POLICY_DIR, validated; its **enforcement actions**: Sigkill, Override, Signal 9,
NotifyEnforcer entries of a hook selector).

**Scenarios.** The configured scenario directories (``[tool.shadowtest] scenarios``, the
bundled ones) plus ``--scenarios DIR...``, loaded by the harness's own loader
(``check_scenario``, with the configured atomics and any atomic beside the scenarios; a file
that does not load is an error): each block's expectation is read by
``harness.core.expectation.sources``, for ``expect`` and every ``overrides[].expect`` (any
kernel counts).

**Tetragon sensors.** Every ``[tool.shadowtest.sensors.<name>]`` with ``type =
"tetragon"``, plus the literal name ``tetragon``. A Tetragon detection's ``rule`` is the
event's ``policy_name`` (``metadata.name``); its technique comes from the hook's ``tags``
when one names an ATT&CK id, else from the sensor's ``techniques`` option
(``"<policy>:<function>"`` first, then ``"<policy>"``), as ``sensors/tetragon.py`` does.

**Matching.** A scenario *exercises* an action when one of its expect blocks ``B`` for a
Tetragon sensor ``N`` (a configured, enabled ``N`` without a block is judged against the
implicit block ``{technique: <scenario technique>}``; benign controls and ``{gap: ...}``
blocks exercise nothing) satisfies all of:

1. *it names the action's policy*, by one of (first that applies):
   ``rule`` -- the matcher (exact, or ``prefix``/``contains``/``regex``) matches the policy
   name (``how = rule``); else ``fields.policy_name`` matches it (``how = fields``); else,
   when ``B`` names no policy at all, its expected technique (``B.technique``, else the
   scenario's) is the technique a detection of this hook carries for ``N`` -- from the
   hook's ``tags`` (``how = tag``) or ``N``'s ``techniques`` (``how = technique``);
2. *nothing in it contradicts the action*: ``fields.function_name`` matches the hook's
   function (the call as written, and for syscalls with Tetragon's ``__x64_``/``__arm64_``
   prefixes), ``fields.event`` matches ``process_kprobe``/``process_tracepoint``/
   ``process_lsm``/``process_uprobe``/``process_usdt``, ``fields.action`` matches
   ``KPROBE_ACTION_<ACTION>`` (other fields cannot be known from a policy and are ignored);
3. when ``B`` has an ``enforce`` block (``enforce: {action: sigkill|deny|override}``), its
   action fits: ``sigkill`` a kill (Sigkill, Signal 9, NotifyEnforcer with ``argSig: 9``),
   ``deny``/``override`` a return-value override (Override, NotifyEnforcer with
   ``argError``); a NotifyEnforcer with neither fits both. Such a match is marked
   ``enforce``: it expects the enforcement, not only the detection. An ``enforce`` block
   names no policy by itself: rule 1 still decides which actions it exercises.

An enforcement action counts as **exercised** only by an ``enforce`` match: a scenario whose
expectation *for that Tetragon sensor* requires the enforcement action. Detection-only
matches are listed ("detection only") but do not count: a scenario that merely sees the
policy fire proves nothing about the kill. (``--require-enforce`` is kept for compatibility;
it is always on.) Technique matches are the weakest: every action whose detection carries the
technique is matched by such a scenario.

Exit codes: 0 coverage >= threshold (``--threshold``, else ``[tool.shadowtest.coverage]
threshold``, else 1.0); 1 below; 2 usage error (a directory missing, a bad threshold or
configuration); 3 a policy or scenario file is malformed (``file:line: key.path: message``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.builtin import ATOMICS
from harness.core.errors import ConfigError, ScenarioError, ShadowtestError
from harness.core.expectation import sensors as expect_sensors
from harness.core.expectation import sources
from harness.core.scenario import check_scenario, is_atomic_file, load_atomics, scenario_files
from harness.core.verdict import Expectation, matches, technique_matches
from harness.core.yamlfile import load_lined
from harness.engine.config import find_config, load_settings
from harness.sensors.tetragon import tag_technique
from harness.tools.tracingpolicy import Action, policy_files, read_policies

#: scenario ``enforce.action`` -> the effects it fits
ENFORCE_FITS = {"sigkill": {"kill"}, "deny": {"override"}, "override": {"override"}}
COVERAGE_KEYS = {"threshold": "minimum share of enforcement actions exercised (0.0-1.0), default 1.0"}


@dataclass(frozen=True, slots=True)
class Match:
    scenario: str
    sensor: str
    how: str                       # rule | fields | tag | technique
    enforce: bool

    def text(self) -> str:
        return f"{self.scenario} ({self.how}{', enforce' if self.enforce else ', detection only'})"


@dataclass(frozen=True, slots=True)
class ScenarioView:
    """What coverage needs of a scenario file."""

    id: str
    path: Path
    benign: bool
    technique: str | None
    blocks: tuple[tuple[str, Mapping[str, Any], int | None], ...]   # (sensor, block, line)


@dataclass
class Report:
    actions: list[tuple[Action, list[Match]]]
    threshold: float
    require_enforce: bool = False
    notes: list[str] = field(default_factory=list)

    def counted(self, found: list[Match]) -> bool:
        """Exercised: some scenario's expectation for the sensor requires the enforcement."""
        return any(m.enforce for m in found)

    @property
    def covered(self) -> int:
        return sum(1 for _, found in self.actions if self.counted(found))

    @property
    def ratio(self) -> float:
        return self.covered / len(self.actions) if self.actions else 1.0

    def summary(self) -> str:
        pct = f"{self.ratio * 100:.1f}".rstrip("0").rstrip(".")
        what = "enforcement actions exercised with an enforce expectation"
        return f"coverage: {self.covered}/{len(self.actions)} {what} ({pct}%)"



# ---------------------------------------------------------------- scenarios
def read_scenarios(roots: Iterable[Path], atomic_dirs: Iterable[Path] = (),
                   sensors: Iterable[str] | None = None) -> tuple[list[ScenarioView], list[ScenarioError]]:
    """Scenarios under ``roots`` through the harness's loader (atomics from ``atomic_dirs``, any
    beside the scenarios, and the built-in ones); each view holds, per sensor in
    ``sensors`` (default: every sensor) with a block (in ``expect`` or an override), the block of
    its expectation."""
    files = scenario_files(roots)
    atomic_files = [f for f in files if is_atomic_file(f)]
    dirs = dict.fromkeys([*(f.parent.resolve() for f in atomic_files),
                          *(d.resolve() for d in [*atomic_dirs, ATOMICS] if d.is_dir())])
    atomics, errors = load_atomics(dirs)
    out: list[ScenarioView] = []
    wanted = None if sensors is None else set(sensors)
    for path in files:
        if path in atomic_files:
            continue
        errs, scenario = check_scenario(path, atomics)
        if scenario is None:
            errors += errs
            continue
        line = load_lined(path).line
        found = [src for sensor in expect_sensors(scenario)
                 if wanted is None or sensor in wanted
                 for src in sources(scenario, sensor) if src.explicit]
        # the scenario's own blocks first, then each override's, sensors sorted within
        found.sort(key=lambda src: (-1 if src.key[0] == "expect" else int(src.key[1]),
                                    str(src.key[-1])))
        blocks = [(str(src.key[-1]), _block(src.expectation), line(src.key)) for src in found]
        out.append(ScenarioView(scenario.id, path, scenario.benign, scenario.technique, tuple(blocks)))
    return out, errors


def _block(exp: Expectation) -> dict[str, Any]:
    """An expectation as the expect block ``match_block`` reads."""
    if exp.gap is not None:
        return {"gap": exp.gap}
    return {"technique": exp.technique, "fields": dict(exp.fields),
            **({"rule": exp.rule} if exp.rule is not None else {}),
            **({"enforce": {"action": exp.enforce}} if exp.enforce else {})}


# ---------------------------------------------------------------- matching
def tetragon_sensors(sensors: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Tetragon-type sensor name -> its ``techniques`` map (the literal ``tetragon`` always)."""
    out: dict[str, dict[str, str]] = {"tetragon": {}}
    for name, opts in sensors.items():
        if isinstance(opts, dict) and (opts.get("type") == "tetragon" or name == "tetragon"):
            techniques = opts.get("techniques") or {}
            out[str(name)] = {str(k): str(v) for k, v in techniques.items()} \
                if isinstance(techniques, dict) else {}
    return out


def detection_techniques(action: Action, techniques: Mapping[str, str]) -> tuple[set[str], str]:
    """ATT&CK ids a detection of ``action``'s hook carries for a sensor with ``techniques``,
    and where they come from (``tag`` | ``technique``), as ``TetragonSensor._technique``."""
    tagged = {t for t in map(tag_technique, action.tags) if t}
    if tagged:
        return tagged, "tag"
    for function in action.functions:
        if f"{action.policy}:{function}" in techniques:
            return {techniques[f"{action.policy}:{function}"]}, "technique"
    return ({techniques[action.policy]} if action.policy in techniques else set()), "technique"


def match_block(action: Action, block: Mapping[str, Any], scenario_technique: str | None,
                techniques: Mapping[str, str]) -> tuple[str, bool] | None:
    """(how, enforce) when ``block`` exercises ``action`` (module docstring, rules 1-3).
    Raises ValueError on a malformed matcher."""
    raw = block.get("fields")
    fields: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    how = None if "gap" in block else _names(action, block, fields, scenario_technique, techniques)
    checks = {"policy_name": action.policy, "function_name": list(action.functions),
              "event": action.event, "action": f"KPROBE_ACTION_{action.action.upper()}"}
    if how is None or any(k in fields and not matches(fields[k], v) for k, v in checks.items()):
        return None
    enforce = block.get("enforce")
    if enforce is None:
        return how, False
    wanted = str(enforce.get("action", "")).lower() if isinstance(enforce, dict) else ""
    return None if wanted in ENFORCE_FITS and not ENFORCE_FITS[wanted] & action.effects \
        else (how, True)


def _names(action: Action, block: Mapping[str, Any], fields: Mapping[str, Any],
           scenario_technique: str | None, techniques: Mapping[str, str]) -> str | None:
    """Rule 1: how ``block`` names ``action``'s policy, or None."""
    if "rule" in block:
        return "rule" if matches(block["rule"], action.policy) else None
    if "policy_name" in fields:
        return "fields" if matches(fields["policy_name"], action.policy) else None
    found, how = detection_techniques(action, techniques)
    expected = block.get("technique", scenario_technique)
    return how if expected and technique_matches(str(expected), sorted(found)) else None


def cover(actions: Sequence[Action], scenarios: Sequence[ScenarioView],
          sensors: Mapping[str, Any]) -> tuple[list[tuple[Action, list[Match]]], list[ScenarioError]]:
    """Every action with the scenarios that exercise it (module docstring)."""
    tetragon = tetragon_sensors(sensors)
    enabled = {n for n in tetragon if isinstance(sensors.get(n), dict)
               and sensors[n].get("enabled", True)}
    errors: list[ScenarioError] = []
    out: list[tuple[Action, list[Match]]] = []
    for action in actions:
        found: list[Match] = []
        for sc in scenarios:
            if sc.benign:
                continue
            blocks = [(s, b, line) for s, b, line in sc.blocks if s in tetragon]
            blocks += [(s, {}, None) for s in sorted(enabled) if s not in {b[0] for b in blocks}]
            for sensor, block, line in blocks:
                try:
                    hit = match_block(action, block, sc.technique, tetragon[sensor])
                except (ValueError, re.error) as exc:
                    err = ScenarioError(str(sc.path), line, f"expect.{sensor}",
                                        f"unreadable matcher: {exc}; run `shadowtest validate`")
                    if str(err) not in {str(e) for e in errors}:
                        errors.append(err)
                    continue
                if hit and not any(m.scenario == sc.id and m.how == hit[0] and m.enforce == hit[1]
                                   for m in found):
                    found.append(Match(sc.id, sensor, *hit))
        out.append((action, found))
    return out, errors


# ---------------------------------------------------------------- output
def render(report: Report, width: int | None = None) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Tetragon enforcement actions", show_lines=False)
    for col in ("status", "policy", "hook", "sel", "action", "where", "exercised by"):
        table.add_column(col, overflow="fold")
    for action, found in report.actions:
        ok = report.counted(found)
        status = "[green]covered[/]" if ok else "[bold red]UNCOVERED[/]"
        mode = " [dim](monitor)[/]" if action.mode == "monitor" else ""
        table.add_row(status, action.name + mode, f"{action.kind} {action.hook}",
                      str(action.selector), action.describe(), f"{action.path}:{action.line}",
                      ", ".join(m.text() for m in found) or "-")
    width = width or shutil.get_terminal_size((160, 24)).columns
    console = Console(record=True, width=width, force_terminal=False, color_system=None)
    with console.capture() as capture:
        console.print(table)
    return capture.get() + report.summary() + "\n"


def as_json(report: Report) -> dict[str, Any]:
    return {
        "schema": 1, "threshold": report.threshold, "require_enforce": report.require_enforce,
        "covered": report.covered, "total": len(report.actions), "ratio": report.ratio,
        "notes": report.notes,
        "actions": [{
            "policy": a.policy, "namespace": a.namespace, "kind": a.kind, "hook": a.hook,
            "selector": a.selector, "index": a.index, "action": a.action, "args": dict(a.args),
            "effects": sorted(a.effects), "mode": a.mode, "file": str(a.path), "line": a.line,
            "key": a.key, "covered": report.counted(found),
            "exercised_by": [{"scenario": m.scenario, "sensor": m.sensor, "how": m.how,
                              "enforce": m.enforce} for m in found],
        } for a, found in report.actions],
    }


# ---------------------------------------------------------------- configuration
def read_config(config: Path | None, root: Path) -> tuple[list[Path], dict[str, Any], float | None]:
    """(bundled scenario dirs, sensors table, configured threshold) from ``[tool.shadowtest]``.
    Reads only the keys coverage needs (``shadowtest validate``/``run`` check the rest)."""
    source, table = find_config(root, config)
    base = source.parent if source else root
    where = str(source) if source else "<defaults>"
    scenarios = [base / str(p) for p in table.get("scenarios", ["scenarios"])]
    sensors = table.get("sensors", {})
    if not isinstance(sensors, dict):
        raise ConfigError(f"{where}: sensors: expected [tool.shadowtest.sensors.<name>] tables, "
                          f"got {sensors!r}")
    section = table.get("coverage", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: coverage: expected a [tool.shadowtest.coverage] table, "
                          f"got {section!r}")
    for key in section:
        if key not in COVERAGE_KEYS:
            raise ConfigError(f"{where}: [tool.shadowtest.coverage] unknown key {key!r}: "
                              f"expected one of {', '.join(COVERAGE_KEYS)}")
    threshold = section.get("threshold")
    if threshold is not None:
        threshold = check_threshold(threshold, f"{where}: [tool.shadowtest.coverage] threshold")
    return scenarios, sensors, threshold


def check_threshold(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: expected a number from 0.0 to 1.0 (e.g. 0.8 for 80 %), "
                          f"got {value!r}")
    return float(value)


# ---------------------------------------------------------------- command line
def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``coverage`` to the CLI's subparsers (``argparse._SubParsersAction``)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "coverage", help="list Tetragon enforcement actions (Sigkill, Override, ...) and the "
                         "scenarios that exercise them", description=__doc__.splitlines()[0])
    return _arguments(p)


def _arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("policies", nargs="+", type=Path, metavar="POLICY_DIR",
                   help="directories (or files) of TracingPolicy YAML")
    p.add_argument("--scenarios", nargs="+", type=Path, default=[], metavar="DIR",
                   help="scenario directories in addition to [tool.shadowtest] scenarios")
    p.add_argument("--config", type=Path, help="shadowtest.toml or pyproject.toml")
    p.add_argument("--threshold", type=float, help="minimum share exercised, 0.0-1.0 (default: "
                   "[tool.shadowtest.coverage] threshold, else 1.0)")
    p.add_argument("--require-enforce", action="store_true",
                   help="count only scenarios whose expect block has an enforce expectation")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    """0 coverage >= threshold; 1 below; 2 usage error; 3 a policy/scenario file is malformed."""
    def fail(message: str) -> int:
        print(f"shadowtest coverage: error: {message}", file=sys.stderr)
        return 2

    try:
        _, sensors, configured = read_config(args.config, Path.cwd())
        settings = load_settings(Path.cwd(), args.config)
        threshold = (check_threshold(args.threshold, "--threshold") if args.threshold is not None
                     else configured if configured is not None else 1.0)
    except ShadowtestError as exc:
        return fail(str(exc))
    for p in [*args.policies, *args.scenarios]:
        if not p.exists():
            kind = "POLICY_DIR" if p in args.policies else "--scenarios"
            return fail(f"{kind} {p}: no such file or directory; pass an existing path")
    files = policy_files(args.policies)
    if not files:
        return fail(f"no .yaml/.yml file under {', '.join(map(str, args.policies))}; pass the "
                    "directories holding the TracingPolicy files")
    actions, errors, notes = read_policies(args.policies)
    scenarios, scenario_errors = read_scenarios(
        [*(d for d in settings.scenarios if d.exists()), *args.scenarios], settings.atomics,
        tetragon_sensors(sensors))
    errors += scenario_errors
    covered, match_errors = cover(actions, scenarios, sensors)
    errors += match_errors
    for note in notes:
        print(note, file=sys.stderr)
    if errors:
        for err in sorted(errors, key=lambda e: (e.path, e.line or 0)):
            print(err, file=sys.stderr)
        print(f"shadowtest coverage: {len(errors)} malformed file error(s); fix them and run again",
              file=sys.stderr)
        return 3
    report = Report(covered, threshold, args.require_enforce, notes)
    if not actions:
        report.notes.append("no enforcement action (Sigkill, Override, Signal 9, NotifyEnforcer) "
                            f"in {len(files)} policy file(s)")
        print(report.notes[-1], file=sys.stderr)
    print(render(report), end="")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(as_json(report), indent=2) + "\n", encoding="utf-8")
    if report.ratio < threshold:
        print(f"shadowtest coverage: below the threshold {threshold * 100:g}%: exercise the UNCOVERED "
              "actions with a scenario whose expect.<tetragon sensor> names the policy and requires "
              "the enforcement (rule: <policy>, enforce: {action: sigkill|override})",
              file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_arguments(argparse.ArgumentParser(prog="shadowtest coverage")).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
