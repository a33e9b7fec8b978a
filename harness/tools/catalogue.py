"""``shadowtest catalogue``: docs/catalogue.md, generated from the bundled scenarios and
atomics — every scenario with its technique, contexts, what its atomic touches and the
verdict each sensor must give, plus a techniques x sensors coverage view. The output is
deterministic (sorted, no timestamps) so ``--check`` can fail CI when it is stale."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.core.errors import ScenarioError, ShadowtestError
from harness.core.expectation import explicit, resolve, sources
from harness.core.expectation import sensors as expect_sensors
from harness.core.mitre import attack_version, full_name, techniques
from harness.core.scenario import Scenario, check_scenario, load_atomics, scenario_files
from harness.core.verdict import Expectation
from harness.engine.config import load_settings

DEFAULT_OUT = Path("docs/catalogue.md")
REGENERATE = "run `shadowtest catalogue` to regenerate it"


@dataclass(frozen=True, slots=True)
class Cell:
    """The expected verdict of one (scenario, sensor)."""
    verdict: str          # DETECTED | BLOCKED | GAP | CLEAN
    text: str             # for people: rule, technique, fields, enforcement or the gap's reason

    def short(self) -> str:
        return {"DETECTED": "DETECTED", "BLOCKED": "BLOCKED", "GAP": "known gap",
                "CLEAN": "CLEAN"}[self.verdict]

    @property
    def gap(self) -> str | None:
        """A known gap's reason (what a results row's ``known_gap`` carries on its MISSED),
        else None."""
        return self.text if self.verdict == "GAP" else None

    def accepts(self, verdict: str, *, closed_gap: bool = False) -> bool:
        """A run's verdict is the one the cell documents (a known gap: MISSED; a gap that
        closed, DETECTED, passes a run but means the catalogue is out of date: accepted only
        with ``closed_gap``). NOT_EXECUTED and SENSOR_DOWN prove nothing either way and are
        the caller's to judge."""
        if closed_gap and self.verdict == "GAP" and verdict == "DETECTED":
            return True
        return verdict == {"GAP": "MISSED"}.get(self.verdict, self.verdict)


def expected_cell(scenario: Scenario, sensor: str,
                  facts: Mapping[str, Any] | None = None) -> Cell:
    """What ``sensor`` must report for ``scenario`` on a node with ``facts`` (None: the
    scenario's own expectations, no override), read by ``harness.core.expectation``."""
    return _cell_of(scenario, sensor, resolve(scenario, sensor, facts))


def _cell_of(scenario: Scenario, sensor: str, exp: Expectation) -> Cell:
    if exp.benign:
        return Cell("CLEAN", "none expected (benign control)")
    if exp.gap is not None:
        return Cell("GAP", exp.gap)
    parts = [f"technique {exp.technique}"]
    if exp.rule is not None:
        parts.insert(0, f"rule {_matcher(exp.rule)}")
    if exp.severity is not None:
        parts.append(f"severity {_matcher(exp.severity)}")
    if exp.fields:
        parts.append("fields " + ", ".join(f"{k} {_matcher(v)}"
                                           for k, v in sorted(exp.fields.items())))
    if exp.enforce:
        parts.append(f"enforce {exp.enforce} before the side effect")
    if exp.requires:
        kernel, features = exp.requires
        needs = [f"kernel {kernel}"] * bool(kernel) + list(features)
        parts.append(f"needs {', '.join(needs)} (else not runnable for this sensor)")
    if not explicit(scenario, sensor):
        parts.append("(no expect block: the scenario's technique)")
    return Cell("BLOCKED" if exp.enforce else "DETECTED", "; ".join(parts))


def _matcher(value: Any) -> str:
    if isinstance(value, Mapping) and len(value) == 1:
        (op, arg), = value.items()
        return f"{op} `{arg}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True, slots=True)
class Catalogue:
    root: Path
    scenarios: tuple[Scenario, ...]
    sensors: tuple[str, ...]
    sources: Mapping[str, Mapping[str, Any]]   # atomic id -> its ``source`` block, if any


def load_catalogue(root: Path, config: Path | None = None) -> Catalogue:
    """The configured scenarios and atomics under ``root``; raises the first file:line error."""
    settings = load_settings(root, config)
    atomic_dirs = [d for d in settings.atomics if d.is_dir()]
    atomics, errors = load_atomics(atomic_dirs)
    scenarios: list[Scenario] = []
    for path in scenario_files(d for d in settings.scenarios if d.exists()):
        errs, scenario = check_scenario(path, atomics)
        errors += errs
        if scenario is not None:
            scenarios.append(scenario)
    if errors:
        raise errors[0]
    sensors = set(settings.sensors) | {s for sc in scenarios for s in expect_sensors(sc)}
    sources = {}
    for a in atomics.values():
        raw = yaml.safe_load(a.path.read_text(encoding="utf-8"))
        if isinstance(raw, dict) and isinstance(raw.get("source"), dict):
            sources[a.id] = raw["source"]
    scenarios.sort(key=lambda s: (s.benign, s.tactic, s.id))
    return Catalogue(root, tuple(scenarios), tuple(sorted(sensors)), sources)


def render(cat: Catalogue) -> str:
    """docs/catalogue.md for ``cat``."""
    attacks = [s for s in cat.scenarios if not s.benign]
    benign = [s for s in cat.scenarios if s.benign]
    techs = sorted({s.technique for s in attacks if s.technique}, key=_tkey)
    out = [
        "# Scenario catalogue",
        "",
        "<!-- Generated by `shadowtest catalogue` from the scenario and atomic files; do not edit: "
        f"{REGENERATE}. CI runs `shadowtest catalogue --check`. -->",
        "",
        f"{len(cat.scenarios)} scenarios ({len(attacks)} attacks, {len(benign)} benign controls) "
        f"covering {len(techs)} ATT&CK techniques, judged by {len(cat.sensors)} sensors "
        f"({', '.join(cat.sensors)}). Technique names and tactics: MITRE ATT&CK Enterprise "
        f"v{attack_version()} (`harness/schemas/techniques.json`).",
        "",
        "Expected verdicts: **DETECTED** — the sensor must report the technique (and the rule "
        "and fields named); **BLOCKED** — the sensor must stop the action (its enforce "
        "action) before the side effect; **known gap** — the sensor is known not to see this action, for the "
        "reason given (a miss is expected and reported as such); **CLEAN** — a benign control: "
        "the sensor must report nothing. A sensor without an `expect` block must report the "
        "scenario's technique.",
        "",
        "## Coverage: techniques x sensors",
        "",
        "| technique | tactics | scenarios | " + " | ".join(cat.sensors) + " |",
        "|---|---|---|" + "---|" * len(cat.sensors),
    ]
    for t in techs:
        group = [s for s in attacks if s.technique == t]
        cells = []
        for sensor in cat.sensors:
            counts: dict[str, int] = {}
            for s in group:
                short = expected_cell(s, sensor).short()
                counts[short] = counts.get(short, 0) + 1
            cells.append(" / ".join(f"{k} {v}" if len(group) > 1 else k for k, v in sorted(counts.items())))
        tactics = ", ".join(techniques()[t].tactics) if t in techniques() else "?"
        out.append(f"| {t} {_cell(full_name(t))} | {tactics} | "
                   f"{', '.join(f'`{s.id}`' for s in group)} | " + " | ".join(cells) + " |")
    if benign:
        out.append(f"| benign controls | — | {', '.join(f'`{s.id}`' for s in benign)} | "
                   + " | ".join("CLEAN" for _ in cat.sensors) + " |")
    out += ["", "## Scenarios", ""]
    tactic = None
    for s in cat.scenarios:
        heading = "benign controls" if s.benign else s.tactic
        if heading != tactic:
            tactic = heading
            out += [f"### {heading}", ""]
        out += _scenario(cat, s)
    return "\n".join(out).rstrip("\n") + "\n"


def _scenario(cat: Catalogue, s: Scenario) -> list[str]:
    a = s.atomic
    lines = [f"#### `{s.id}` — {s.name}", ""]
    if s.description:
        lines += [" ".join(s.description.split()), ""]
    if s.technique:
        tactics = ", ".join(techniques()[s.technique].tactics) if s.technique in techniques() else "?"
        lines.append(f"- technique: {s.technique} {full_name(s.technique)} ({tactics})")
    else:
        lines.append("- technique: none (benign control)")
    lines.append(f"- contexts: {', '.join(s.contexts)}")
    lines.append(f"- file: `{_rel(cat.root, s.path)}`; atomic: `{a.id}` ({a.name}, "
                 f"`{_rel(cat.root, a.path)}`)")
    src = cat.sources.get(a.id)
    if src:
        lines.append(f"- source: Atomic Red Team {src.get('technique')} test "
                     f"#{src.get('number', '?')} {src.get('name', '')!r}"
                     f"{' (' + str(src['guid']) + ')' if src.get('guid') else ''}")
    req = [f"kernel {s.kernel}"] if s.kernel else []
    req += [f"feature {f}" for f in s.features]
    if req:
        lines.append(f"- requires: {', '.join(req)} (skipped with the reason where unmet)")
    if s.window is not None:
        lines.append(f"- window: {s.window:g} s")
    lines.append("- touches:")
    lines += [f"  - {kind}: {what}" for kind, what in a.touches]
    lines += ["", "| sensor | expected | what |", "|---|---|---|"]
    for sensor in cat.sensors:
        cell = expected_cell(s, sensor)
        lines.append(f"| {sensor} | {cell.short()} | {_cell(cell.text)} |")
    lines.append("")
    for i, (kernel, features, expect) in enumerate(s.overrides):
        on = [f"kernel {kernel}"] if kernel else []
        on += [f"feature {f}" for f in features]
        lines += [f"On a node with {', '.join(on) or 'any kernel'} (the first override that "
                  "applies replaces the sensor's expectation):", "",
                  "| sensor | expected | what |", "|---|---|---|"]
        for sensor in sorted(expect):
            found = next(x for x in sources(s, sensor) if x.key[:2] == ("overrides", i))
            cell = _cell_of(s, sensor, found.expectation)
            lines.append(f"| {sensor} | {cell.short()} | {_cell(cell.text)} |")
        lines.append("")
    return lines


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _tkey(tid: str) -> tuple[int, int]:
    base, _, sub = tid[1:].partition(".")
    return int(base), int(sub or 0)


def check(root: Path, out: Path, config: Path | None = None) -> tuple[bool, str]:
    """(fresh, message): whether ``out`` equals what ``render`` makes now."""
    want = render(load_catalogue(root, config))
    path = out if out.is_absolute() else root / out
    have = path.read_text(encoding="utf-8") if path.exists() else ""
    if have == want:
        return True, f"{_rel(root, path)} is up to date"
    diff = list(difflib.unified_diff(have.splitlines(), want.splitlines(), str(path) + " (committed)",
                                     "generated", lineterm="", n=1))
    shown = "\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else "")
    what = "does not exist" if not path.exists() else "is stale (it differs from the scenario files)"
    return False, f"{_rel(root, path)} {what}: {REGENERATE}\n{shown}"


def write(root: Path, out: Path, config: Path | None = None) -> Path:
    path = out if out.is_absolute() else root / out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(load_catalogue(root, config)), encoding="utf-8")
    return path


# ---------------------------------------------------------------- command line
def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``catalogue`` to the CLI's subparsers (``argparse._SubParsersAction``)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "catalogue", help="generate docs/catalogue.md from the scenarios (--check: fail if stale)",
        description=__doc__.splitlines()[0])
    return _arguments(p)


def _arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the file differs from what would be generated")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: docs/catalogue.md")
    p.add_argument("--config", type=Path, help="shadowtest.toml or pyproject.toml")
    return p


def run(args: argparse.Namespace) -> int:
    """0: written / up to date; 1: stale (--check) or a scenario/atomic file has errors."""
    root = Path.cwd()
    try:
        if args.check:
            fresh, message = check(root, args.out, args.config)
            print(f"shadowtest catalogue: {message}", file=sys.stdout if fresh else sys.stderr)
            return 0 if fresh else 1
        path = write(root, args.out, args.config)
    except ScenarioError as exc:
        print(f"shadowtest catalogue: error: {exc}", file=sys.stderr)
        return 1
    except ShadowtestError as exc:
        print(f"shadowtest catalogue: error: {exc}", file=sys.stderr)
        return 2
    print(f"shadowtest catalogue: wrote {_rel(root, path)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _arguments(argparse.ArgumentParser(prog="shadowtest catalogue"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
