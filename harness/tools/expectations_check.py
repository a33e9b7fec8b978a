"""``shadowtest expectations check``: do the scenarios' expectations hold for the rule packs
a user actually runs?

**Packs.** Falco rules files (``--falco-rules``: loaded, in load order; ``--falco-available``:
known but not loaded, e.g. the incubating and sandbox files) and the maturity levels
loaded (``--falco-maturity``, default every level); Tetragon TracingPolicy files or
directories (``--tetragon-policies``); Tracee's detectors index (``--tracee-detectors``, a
JSON list of ``{id, event, technique, scope_filters, data_filters, source}``). Each is read
by a pure ``parse_*`` function into :class:`Rule` rows: the name a detection reports as its
``rule`` (Falco rule, Tetragon policy, Tracee event), the ATT&CK ids it carries (Falco
``T*`` tags, Tetragon ``mitre.T*`` hook tags or the sensor's ``techniques`` option, Tracee
``technique``), whether it is loaded, and where it can fire: ``host`` and/or ``container``
(Falco ``host``/``container`` tags; Tracee ``container=started``; Tetragon ``podSelector``,
a namespaced policy or a ``matchNamespaces`` selector).

**Expectations** are read by the harness's loader (``check_scenario`` and
``harness.core.expectation``), per sensor (the product's name and every configured sensor of
that ``type``), for the scenario and for each ``overrides[]`` entry. Contexts: ``host`` is a
host process; every other context (``namespace`` runs in a cgroup named by a 64-hex
container id, ``container-*``, ``pod*``) is a container.

**Findings**: a rule the pack lacks; a rule outside the loaded files or maturity; a rule
that does not carry the expected technique; a rule scoped where a context of the scenario
can never match; a technique expectation (explicit, or implicit: no block) that no loaded
rule carries in scope; a gap that a loaded rule carrying the technique in scope covers,
unless the note names that rule and says why it does not fire; a gap note that names a
file, a rule or a Tracee detector the packs do not have, or that lists fewer of a cited
detector's request constants than it has. Benign controls have no expectation; a Tetragon
policy that fires on every dynamically linked exec is printed as a pack warning.

Exit codes: 0 no finding; 1 findings; 2 usage error (no pack, a missing path, a scenario that
does not load: ``shadowtest validate``); 3 a malformed pack file (``file:line: message``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.errors import ScenarioError, ShadowtestError
from harness.core.expectation import sources
from harness.core.scenario import Scenario, check_scenario, load_atomics, scenario_files
from harness.core.schema import validate
from harness.core.verdict import Expectation, matches, technique_matches
from harness.core.yamlfile import LinedDocument, load_lined
from harness.engine.config import load_settings
from harness.sensors.tetragon import tag_technique
from harness.tools.coverage import read_config, tetragon_sensors
from harness.tools.tracingpolicy import KINDS, load_documents, policy_files

PRODUCTS = ("falco", "tetragon", "tracee")
MATURITIES = ("stable", "incubating", "sandbox", "deprecated")
BOTH = frozenset({"host", "container"})
_FALCO_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
_QUOTED = re.compile(r"(?<!\w)'([^']{3,})'(?!\w)")
_FILE = re.compile(r"\b([\w.-]+\.(?:ya?ml|json|go))\b")
_DIR = re.compile(r"\b[\w.-]+/[\w.-]+/?")     # a cited location: examples/tracingpolicy
#: a gap note's claim that the rule it names is not loaded ("is not in the default ...")
_NOT_LOADED = re.compile(r"(?:\bnot (?:in\b|loaded\b)|\bis in falco-(?:incubating|sandbox))")
_TRC = re.compile(r"\bTRC-\d+\b")
_CONSTANT = re.compile(r"\b(PTRACE_[A-Z]+)\b")
#: "matches A and B requests;" / "matches A only": what a gap note claims a rule matches
_CLAIM = re.compile(r"\bmatch(?:es)?\b(.*?)(?:\bonly\b|\bnot\b|;|$)")
_LOADER = "/etc/ld.so.cache"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a pack, as a detection names it."""

    product: str
    name: str                        # Falco rule, Tetragon policy, Tracee event
    techniques: tuple[str, ...]
    file: str
    line: int | None = None
    loaded: bool = True
    why_not: str = ""                # why it is not loaded
    scope: frozenset[str] = BOTH     # host and/or container
    aliases: tuple[str, ...] = ()    # Tracee detector id
    constants: tuple[str, ...] = ()  # request constants in its filters (Tracee)
    noisy: str = ""                  # why it fires on benign work (Tetragon)

    def describe(self) -> str:
        ids = f" {'/'.join(self.aliases)}" if self.aliases else ""
        state = "" if self.loaded else f", not loaded: {self.why_not}"
        where = "/".join(sorted(self.scope))
        return (f"{self.name!r}{ids} [{', '.join(self.techniques) or 'no technique'}] "
                f"({where}; {Path(self.file).name}:{self.line or '?'}{state})")


@dataclass(frozen=True, slots=True)
class Finding:
    path: Path
    line: int | None
    sensor: str
    problem: str
    has: str
    fix: str

    def __str__(self) -> str:
        return (f"{self.path}:{self.line or 1}: {self.sensor}: {self.problem}\n"
                f"    pack has: {self.has}\n    fix: {self.fix}")


# ---------------------------------------------------------------- packs (pure parsers)
def parse_falco(doc: LinedDocument, loaded: bool = True,
                maturities: Iterable[str] = MATURITIES) -> list[Rule]:
    """Rules of one Falco rules file (a YAML list of ``rule``/``macro``/``list`` items).
    ``enabled: false`` and a maturity tag outside ``maturities`` leave a rule not loaded.
    Raises ScenarioError (file:line) on a malformed file."""
    if doc.data is None:
        return []
    if not isinstance(doc.data, list):
        raise doc.error((), "expected a Falco rules file: a list of '- rule:', '- macro:', "
                            "'- list:' items")
    allowed = {m.removeprefix("maturity_") for m in maturities}
    out: dict[str, Rule] = {}
    for i, item in enumerate(doc.data):
        if not isinstance(item, dict):
            raise doc.error((i,), f"expected a mapping ('- rule: ...'), got {item!r}")
        if "rule" not in item:
            continue
        name = item["rule"]
        tags = item.get("tags", [])
        if not isinstance(name, str) or not isinstance(tags, list):
            raise doc.error((i, "rule" if not isinstance(name, str) else "tags"),
                            "expected a rule name (string) and tags (a list)")
        prior = out.get(name)
        if prior is not None and ("condition" not in item or "override" in item or item.get("append")):
            enabled = item.get("enabled")  # an override/append/enable entry of an earlier rule
            techniques = tuple(dict.fromkeys([*prior.techniques, *_falco_techniques(tags)]))
            out[name] = dataclasses.replace(
                prior, techniques=techniques,
                loaded=prior.loaded if enabled is None else bool(enabled) and loaded,
                why_not=prior.why_not if enabled is None or enabled else "enabled: false")
            continue
        maturity = next((t.removeprefix("maturity_") for t in tags if str(t).startswith("maturity_")), None)
        why = ("file not loaded" if not loaded else "enabled: false" if item.get("enabled") is False
               else f"maturity_{maturity} not loaded" if maturity and maturity not in allowed else "")
        scope = frozenset(t for t in tags if t in BOTH) or BOTH
        out[name] = Rule("falco", name, _falco_techniques(tags), str(doc.path), doc.line((i,)),
                         not why, why, scope)
    return list(out.values())


def _falco_techniques(tags: Sequence[Any]) -> tuple[str, ...]:
    return tuple(str(t).upper() for t in tags if _FALCO_TECHNIQUE.match(str(t).upper()))


def parse_tetragon(doc: LinedDocument, techniques: Mapping[str, str] | None = None) -> Rule | None:
    """One TracingPolicy document as a rule (its name), or None for another kind. Techniques
    come from the effective hooks' tags (of two hooks on one tracepoint only the last is
    effective), else from ``techniques`` (the sensor option). Raises ScenarioError on a
    malformed policy."""
    d = doc.data
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in KINDS:
        return None
    errors = validate(doc, "tracingpolicy")
    if errors:
        raise errors[0]
    spec, name = d["spec"], str(d["metadata"]["name"])
    effective: dict[str, Mapping[str, Any]] = {}
    for key in ("kprobes", "tracepoints", "lsmhooks", "uprobes", "usdts"):
        for n, hook in enumerate(spec.get(key, ())):
            ident = f"{hook.get('subsystem')}:{hook.get('event')}" if key == "tracepoints" else f"{key}:{n}"
            effective[ident] = hook
    tagged = [t for h in effective.values() for t in map(tag_technique, map(str, h.get("tags", ()))) if t]
    mapped = [v for k, v in (techniques or {}).items() if k == name or k.startswith(name + ":")]
    container = (kind == "TracingPolicyNamespaced" or "podSelector" in spec or "containerSelector" in spec
                 or any(ns.get("namespace") in ("Pid", "Mnt") and ns.get("operator") == "NotIn"
                        for h in effective.values() for s in h.get("selectors") or ()
                        for ns in s.get("matchNamespaces", ())))
    return Rule("tetragon", name, tuple(dict.fromkeys(tagged or mapped)), str(doc.path), doc.line(()),
                scope=frozenset({"container"}) if container else BOTH,
                noisy=next(filter(None, map(_loader_noise, effective.values())), ""))


def _loader_noise(hook: Mapping[str, Any]) -> str:
    """Why a hook fires on every dynamically linked exec (the loader opens and maps
    /etc/ld.so.cache), or ''."""
    for s in hook.get("selectors") or ():
        args = s.get("matchArgs", ())
        ops = {a.get("operator") for a in args}
        hit = any(a.get("operator") == "Prefix"
                  and any(_LOADER.startswith(str(v)) for v in a.get("values", ())) for a in args)
        if hit and not ops & {"Mask", "NotPrefix", "NotEqual", "NotPostfix"} and not any(
                a.get("operator") == "Equal" and a.get("index") != 0 for a in args):
            return (f"a selector of {hook.get('call') or hook.get('event')} matches {_LOADER}, "
                    "which the loader opens on every dynamically linked exec")
    return ""


def parse_tracee(doc: LinedDocument) -> list[Rule]:
    """Tracee's detectors index. Raises ScenarioError (file:line) on a malformed entry."""
    if not isinstance(doc.data, list):
        raise doc.error((), "expected a JSON list of detectors ({id, event, technique, ...})")
    out: list[Rule] = []
    for i, item in enumerate(doc.data):
        if not isinstance(item, dict) or not isinstance(item.get("event"), str) \
                or not isinstance(item.get("id"), str):
            raise doc.error((i,), "expected a detector with string 'id' and 'event'")
        for key in ("scope_filters", "data_filters"):
            if not isinstance(item.get(key, []), list):
                raise doc.error((i, key), f"expected a list of filters, got {item[key]!r}")
        technique = item.get("technique")
        scoped = any(str(f).startswith("container") for f in item.get("scope_filters", []))
        constants = _CONSTANT.findall(" ".join(map(str, item.get("data_filters", []))))
        out.append(Rule("tracee", item["event"], (str(technique),) if technique else (), str(doc.path),
                        doc.line((i,)), scope=frozenset({"container"}) if scoped else BOTH,
                        aliases=(item["id"],), constants=tuple(dict.fromkeys(constants))))
    return out


def load_packs(args: argparse.Namespace,
               techniques: Mapping[str, str]) -> tuple[dict[str, list[Rule]], set[str]]:
    """(product -> rules, names of every pack file and upstream source) from the command line.
    Raises ScenarioError on a malformed file."""
    packs: dict[str, list[Rule]] = {}
    files: set[str] = set()
    if args.falco_rules or args.falco_available:
        levels = [m.strip() for m in args.falco_maturity.split(",") if m.strip()]
        packs["falco"] = []
        for path, loaded in [*((p, True) for p in args.falco_rules),
                             *((p, False) for p in args.falco_available)]:
            files.add(path.name)
            packs["falco"] += parse_falco(load_lined(path), loaded, levels)
    if args.tetragon_policies:
        packs["tetragon"] = []
        for path in policy_files(args.tetragon_policies):
            files.add(path.name)
            for doc in load_documents(path):
                rule = parse_tetragon(doc, techniques)
                packs["tetragon"] += [rule] if rule else []
    if args.tracee_detectors:
        files.add(args.tracee_detectors.name)
        packs["tracee"] = parse_tracee(load_lined(args.tracee_detectors))
        files |= {Path(str(d.get("source", ""))).name for d in load_lined(args.tracee_detectors).data
                  if isinstance(d, dict)}
    return packs, files


# ---------------------------------------------------------------- checking
def contexts_scope(contexts: Iterable[str]) -> set[str]:
    """Where a scenario's contexts run: ``host`` for the host context, else ``container``."""
    return {"host" if c == "host" else "container" for c in contexts}


def expectations(scenario: Scenario, sensor: str) -> list[tuple[tuple[str | int, ...], Expectation, bool]]:
    """(key path, expectation, explicit) of ``sensor`` for the scenario and each override
    that has a block for it (``harness.core.expectation.sources``)."""
    return [(src.key, src.expectation, src.explicit) for src in sources(scenario, sensor)]


def check(scenario: Scenario, sensor: str, product: str, rules: Sequence[Rule],
          files: set[str], line_of: Any) -> list[Finding]:
    """Every finding for one scenario's expectations of one sensor (module docstring)."""
    out: list[Finding] = []
    where = contexts_scope(scenario.contexts)
    loaded = [r for r in rules if r.loaded]
    for key, exp, explicit in ([] if scenario.benign else expectations(scenario, sensor)):
        def finding(problem: str, has: str, fix: str, key: tuple[str | int, ...] = key,
                    explicit: bool = explicit) -> None:
            out.append(Finding(scenario.path, line_of(key if explicit else ("expect",)),
                               sensor, problem, has, fix))
        technique = str(exp.technique)
        in_scope = [r for r in loaded if technique_matches(technique, r.techniques) and where <= r.scope]
        if exp.gap is not None:
            _check_gap(exp.gap, technique, in_scope, rules, files, finding, product)
            continue
        if exp.rule is None:
            if not in_scope:
                carriers = [r for r in rules if technique_matches(technique, r.techniques)]
                finding(f"{'expects' if explicit else 'no expect block: must report'} {technique}, "
                        f"which no loaded {product} rule carries for context(s) "
                        f"{', '.join(scenario.contexts)}",
                        "; ".join(r.describe() for r in carriers[:4]) or f"no rule tagged {technique}",
                        f"add expect.{sensor}: {{gap: \"<file>: no rule ... (name the rule and why)\"}}"
                        + (", or load the rule" if carriers else "")
                        + (", or load harness/rulepacks/tetragon (hooks tagged mitre.<id>) or map the "
                           "policy in the sensor's techniques option" if product == "tetragon" else ""))
            continue
        named = [r for r in rules if _rule_matches(exp.rule, r)]
        live = [r for r in named if r.loaded]
        if not named:
            close = difflib.get_close_matches(str(exp.rule), [r.name for r in rules], n=3, cutoff=0.5)
            finding(f"rule {exp.rule!r} is not in the {product} pack",
                    f"closest: {', '.join(map(repr, close))}" if close else f"{len(rules)} rules, none close",
                    "name an existing rule, load the pack that has it, or declare a gap naming the "
                    "upstream file and rule" + _project_hint(product, [str(exp.rule)]))
        elif not live:
            finding(f"rule {exp.rule!r} is not loaded", "; ".join(r.describe() for r in named),
                    "load its file/maturity, or declare a gap naming the file the rule is in")
        elif not any(technique_matches(technique, r.techniques) for r in live):
            finding(f"rule {exp.rule!r} does not carry {technique}",
                    "; ".join(r.describe() for r in live),
                    "expect a technique the rule carries (technique: ...) or another rule")
        elif not any(where <= r.scope for r in live):
            r = live[0]
            finding(f"rule {exp.rule!r} fires only in {'/'.join(sorted(r.scope))} processes; context(s) "
                    f"{', '.join(c for c in scenario.contexts if contexts_scope([c]) - r.scope)} can "
                    "never match", r.describe(),
                    "declare a gap naming the rule and its scope (it closes where the scope fits), or "
                    "restrict contexts")
    return out


#: the project's own Tetragon pack: a name from it means "load it", not a wrong citation
PROJECT_TETRAGON = Path(__file__).resolve().parents[1] / "rulepacks" / "tetragon"


def _project_hint(product: str, names: Iterable[str]) -> str:
    """", or load harness/rulepacks/tetragon ..." when a name that is not loaded is one of
    the project's Tetragon pack (a shadowtest-* policy or one of its files)."""
    if product != "tetragon":
        return ""
    ours = {p.name for p in PROJECT_TETRAGON.rglob("*.yaml")}
    if any(str(n).startswith("shadowtest-") or str(n) in ours for n in names):
        return "; or load the project's pack, harness/rulepacks/tetragon, which has it"
    return ""


def _rule_matches(expected: Any, rule: Rule) -> bool:
    try:
        return matches(expected, rule.name) or any(matches(expected, a) for a in rule.aliases)
    except (ValueError, re.error):
        return False


def _check_gap(note: str, technique: str, in_scope: Sequence[Rule], rules: Sequence[Rule],
               files: set[str], finding: Any, product: str) -> None:
    names = {r.name for r in rules} | {a for r in rules for a in r.aliases}
    cited = {r for r in rules if f"'{r.name}'" in note or r.name in _words(note)
             or any(a in _TRC.findall(note) for a in r.aliases)}
    missing_files = [f for f in _FILE.findall(note) if f not in files]
    missing_rules = [q for q in _QUOTED.findall(note) if q not in names]
    missing_rules += [t for t in _TRC.findall(note) if t not in names]
    if missing_files or missing_rules:
        more = " ..." if len(files) > 8 else ""
        finding(f"gap note cites {', '.join(map(repr, missing_files + missing_rules))}, not in the "
                f"{product} packs", f"files: {', '.join(sorted(files)[:8]) or '-'}{more}",
                "cite the upstream file and rule the note refers to as they are named there"
                + _project_hint(product, missing_files + missing_rules))
    claimed = {c for m in _CLAIM.finditer(note) for c in _CONSTANT.findall(m.group(1))}
    for r in sorted(cited, key=lambda r: r.name):
        if r.constants and claimed and claimed != set(r.constants):
            finding(f"gap note says {'/'.join(r.aliases) or r.name} matches "
                    f"{', '.join(sorted(claimed))}", r.describe() + f" filters: {', '.join(r.constants)}",
                    "name every request it matches; if the scenario's is among them, expect the rule")
    loaded_after_all = [r for r in in_scope if r in cited and re.search(
        re.escape(f"'{r.name}'") + r"[^;'(]*?" + _NOT_LOADED.pattern, note)]
    if loaded_after_all:
        finding("gap note says a rule is not loaded, but the pack loads it and it carries "
                f"{technique} in every context of the scenario",
                "; ".join(r.describe() for r in loaded_after_all),
                f"expect it (rule: {loaded_after_all[0].name!r}) for this pack, or load the pack the "
                "catalogue is written for (the default files and maturity)")
    uncovered = [r for r in in_scope if r not in cited]
    if uncovered:
        finding(f"gap, but loaded rule(s) carrying {technique} can fire in every context of the "
                "scenario", "; ".join(r.describe() for r in uncovered),
                f"expect it (rule: {uncovered[0].name!r}), or name it in the note with why it does "
                "not fire")
    if not cited and not _FILE.findall(note) and not _DIR.search(note) and not in_scope:
        finding("gap note names no upstream file or rule", note,
                "name the file (e.g. falco_rules.yaml, detectors.json) and the rule(s) it refers to")


def _words(note: str) -> set[str]:
    return set(re.findall(r"[\w.-]+", note))


def run_check(scenarios: Sequence[Scenario], packs: Mapping[str, Sequence[Rule]], files: set[str],
              sensors: Mapping[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    for scenario in scenarios:
        lined = load_lined(scenario.path)
        for product, rules in packs.items():
            names = {product} | {str(n) for n, o in sensors.items()
                                 if isinstance(o, dict) and o.get("type") == product}
            for sensor in sorted(names):
                out += check(scenario, sensor, product, rules, files, lined.line)
    return out


def pack_warnings(packs: Mapping[str, Sequence[Rule]], benign: Sequence[Scenario]) -> list[str]:
    return [f"{r.file}:{r.line}: warning: tetragon policy {r.name!r}: {r.noisy}: every benign control "
            f"({', '.join(s.id for s in benign)}) would be UNEXPECTED; filter on write flags (Mask) or "
            f"exclude {_LOADER}" for r in packs.get("tetragon", ()) if r.noisy and benign]


# ---------------------------------------------------------------- command line
def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``expectations check`` to the CLI's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "expectations", help="check the scenarios' expectations against the rule packs you run")
    cmds = p.add_subparsers(dest="expectations_command", required=True)
    c = cmds.add_parser("check", help="report every expectation the given rule packs cannot meet",
                        description="Report every expectation of the configured scenarios that the "
                                    "given Falco, Tetragon and Tracee rule packs cannot meet. Exit "
                                    "codes: 0 no finding, 1 findings, 2 usage error, 3 a malformed "
                                    "pack file.")
    c.add_argument("--falco-rules", type=Path, action="append", default=[], metavar="FILE",
                   help="a Falco rules file Falco loads (repeatable, load order)")
    c.add_argument("--falco-available", type=Path, action="append", default=[], metavar="FILE",
                   help="a Falco rules file you do not load (for hints; repeatable)")
    c.add_argument("--falco-maturity", default=",".join(MATURITIES), metavar="LEVELS",
                   help="loaded maturity levels, comma-separated (default: all)")
    c.add_argument("--tetragon-policies", type=Path, action="append", default=[], metavar="DIR",
                   help="a TracingPolicy file or directory (repeatable)")
    c.add_argument("--tracee-detectors", type=Path, metavar="FILE", help="Tracee's detectors list (JSON)")
    c.add_argument("--scenarios", type=Path, action="append", default=[], metavar="PATH",
                   help="scenario files/directories (default: [tool.shadowtest] scenarios)")
    c.add_argument("--config", type=Path, help="shadowtest.toml or pyproject.toml")
    c.add_argument("--json", type=Path, metavar="OUT", help="also write the findings as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    """0 no finding; 1 findings; 2 usage error; 3 a malformed pack file."""
    def fail(message: str, code: int = 2) -> int:
        print(f"shadowtest expectations check: error: {message}", file=sys.stderr)
        return code

    given = [*args.falco_rules, *args.falco_available, *args.tetragon_policies,
             *([args.tracee_detectors] if args.tracee_detectors else [])]
    if not given:
        return fail("no rule pack given: pass --falco-rules, --tetragon-policies and/or --tracee-detectors")
    missing = [p for p in [*given, *args.scenarios] if not p.exists()]
    if missing:
        return fail(f"{missing[0]}: no such file or directory; pass an existing path")
    try:
        settings = load_settings(Path.cwd(), args.config)
        sensors = read_config(args.config, Path.cwd())[1]
    except ShadowtestError as exc:
        return fail(str(exc))
    techniques = {k: v for m in tetragon_sensors(sensors).values() for k, v in m.items()}
    try:
        packs, files = load_packs(args, techniques)
    except ScenarioError as exc:
        return fail(f"malformed pack file: {exc}", 3)
    atomics, errors = load_atomics(d for d in settings.atomics if d.is_dir())
    scenarios: list[Scenario] = []
    for path in scenario_files(p for p in (args.scenarios or settings.scenarios) if p.exists()):
        errs, scenario = check_scenario(path, atomics)
        errors += errs
        scenarios += [scenario] if scenario else []
    if errors:
        for err in errors:
            print(err, file=sys.stderr)
        return fail(f"{len(errors)} scenario/atomic error(s); fix them (shadowtest validate) first")
    for warning in pack_warnings(packs, [s for s in scenarios if s.benign]):
        print(warning, file=sys.stderr)
    findings = run_check(scenarios, packs, files, sensors)
    for f in findings:
        print(f)
    counts = ", ".join(f"{p} {len(r)} rules ({sum(x.loaded for x in r)} loaded)" for p, r in packs.items())
    print(f"expectations check: {len(findings)} finding(s) in {len(scenarios)} scenario(s); {counts}")
    if args.json:
        args.json.write_text(json.dumps([{**dataclasses.asdict(f), "path": str(f.path)} for f in findings],
                                        indent=2) + "\n", encoding="utf-8")
    return 1 if findings else 0
