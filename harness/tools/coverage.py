"""``shadowtest coverage POLICY_DIR...``: which Tetragon enforcement actions no scenario
exercises, before a policy is promoted to enforcement.

**Policies.** Every ``*.yaml``/``*.yml`` file under each POLICY_DIR (or the file itself) is
read, all of its YAML documents. Documents of kind ``TracingPolicy`` and
``TracingPolicyNamespaced`` (apiVersion ``cilium.io/v1alpha1``) are validated against
``schemas/tracingpolicy.schema.json`` (Tetragon's CRD field names and action enum); a
document of any other kind (a ConfigMap, a CiliumNetworkPolicy) is skipped with a note,
unless its kind looks like a misspelt tracing-policy kind, which is an error. An
**enforcement action** is one ``matchActions``/``matchReturnActions`` entry of a hook
selector (``spec.kprobes`` / ``tracepoints`` / ``lsmhooks`` / ``uprobes`` / ``usdts``) whose
action is ``Sigkill``, ``Override``, ``Signal`` with ``argSig: 9`` (a kill), or
``NotifyEnforcer`` (the policy's ``enforcers`` act on it). It is identified by (policy
name, hook kind, call/event/hook/symbol, selector index, action index).

A document without a ``kind`` (an agent configuration, a compose file) is skipped with a
note, unless it looks like a tracing policy (a ``cilium.io`` apiVersion or hooks under
``spec``), which is an error.

**Scenarios.** The configured scenario directories (``[tool.shadowtest] scenarios``, the
bundled ones) plus ``--scenarios DIR...``, loaded by the harness's own loader
(``check_scenario``, with the configured atomics and any atomic beside the scenarios; a file
that does not load is an error): each block's expectation is ``Scenario.expectation`` of
``expect`` and of every ``overrides[].expect`` (any kernel counts).

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
import dataclasses
import json
import re
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.builtin import ATOMICS
from harness.core.errors import ConfigError, ScenarioError, ShadowtestError
from harness.core.scenario import check_scenario, is_atomic_file, load_atomics, scenario_files
from harness.core.schema import validate
from harness.core.verdict import Expectation, matches, technique_matches
from harness.core.yamlfile import LinedDocument, convert_node, dotted, load_lined
from harness.engine.config import find_config, load_settings
from harness.sensors.tetragon import tag_technique

KINDS = ("TracingPolicy", "TracingPolicyNamespaced")
#: spec key -> (hook kind, the key naming what it is attached to, event kind in Tetragon's export)
HOOKS = {"kprobes": ("kprobe", "call", "process_kprobe"),
         "tracepoints": ("tracepoint", "event", "process_tracepoint"),
         "lsmhooks": ("lsmhook", "hook", "process_lsm"),
         "uprobes": ("uprobe", "symbols", "process_uprobe"),
         "usdts": ("usdt", "name", "process_usdt")}
#: scenario ``enforce.action`` -> the effects it fits
ENFORCE_FITS = {"sigkill": {"kill"}, "deny": {"override"}, "override": {"override"}}
COVERAGE_KEYS = {"threshold": "minimum share of enforcement actions exercised (0.0-1.0), default 1.0"}
_HINTS = {"selectors": "write the selectors as a list: 'selectors:' then '- matchArgs: ...'",
          "matchActions": "write the actions as a list: 'matchActions:' then '- action: Sigkill'",
          "action": "use an action name spelt as in Tetragon's CRD, e.g. Sigkill, Override, Signal",
          "kind": "fix the spelling, or drop the document if it is not a tracing policy"}
_SYSCALL_PREFIXES = ("__x64_", "__arm64_", "__ia32_")


@dataclass(frozen=True, slots=True)
class Action:
    """One enforcement action of one hook selector of one policy."""

    policy: str
    namespace: str | None
    kind: str                      # kprobe | tracepoint | lsmhook | uprobe | usdt
    hook: str                      # call / subsystem:event / hook / path:symbol / provider:name
    functions: tuple[str, ...]     # what Tetragon reports as the hook's function
    event: str                     # process_kprobe ...
    selector: int
    index: int
    action: str                    # Sigkill | Override | Signal | NotifyEnforcer
    args: Mapping[str, Any]
    effects: frozenset[str]        # {"kill"} | {"override"} | both (NotifyEnforcer unspecified)
    tags: tuple[str, ...]
    path: Path
    line: int | None
    key: str                       # key path in the document, e.g. spec.kprobes[0].selectors[1]...
    mode: str | None = None        # spec.options policy-mode (monitor: enforcement elided)

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.policy}" if self.namespace else self.policy

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.action}({args})" if args else self.action


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


# ---------------------------------------------------------------- policies
def load_documents(path: Path) -> list[LinedDocument]:
    """Every YAML document of ``path``, lines counted from the top of the file (``load_lined``
    reads one document; this reads a ``---``-separated stream)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), None, "", f"cannot read file: {exc}") from exc
    docs: list[LinedDocument] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is None:
                continue
            lines: dict[tuple[str | int, ...], int] = {(): node.start_mark.line + 1}
            data = convert_node(node, (), lines, path)
            if data is not None:  # an empty document (a trailing ---)
                docs.append(LinedDocument(path, data, lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ScenarioError(str(path), mark.line + 1 if mark else None, "",
                            f"invalid YAML: {exc.problem or exc}; fix the syntax "
                            "(indentation, a missing ':' or '-')") from exc
    return docs


def policy_files(roots: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        out += [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    return out


def read_policies(roots: Iterable[Path]) -> tuple[list[Action], list[ScenarioError], list[str]]:
    """(enforcement actions, errors, notes) of every policy document under ``roots``."""
    actions: list[Action] = []
    errors: list[ScenarioError] = []
    notes: list[str] = []
    for path in policy_files(roots):
        try:
            docs = load_documents(path)
        except ScenarioError as exc:
            errors.append(exc)
            continue
        for doc in docs:
            kind = doc.data.get("kind") if isinstance(doc.data, dict) else None
            if kind is None and not _looks_like_policy(doc.data):
                notes.append(f"{path}:{doc.line(())}: note: a document without a kind (an agent "
                             "configuration, a compose file?) is not a tracing policy; skipped")
                continue
            if isinstance(kind, str) and kind not in KINDS and "tracingpolic" not in kind.lower():
                notes.append(f"{path}:{doc.line(())}: note: kind {kind!r} is not a tracing "
                             "policy; skipped")
                continue
            errs = [_hinted(e) for e in validate(doc, "tracingpolicy")]
            if errs:
                errors += errs
                continue
            actions += _actions(doc)
    return actions, errors, notes


def _looks_like_policy(data: Any) -> bool:
    """A kind-less document that is still meant as a tracing policy (a missing ``kind``)."""
    if not isinstance(data, dict):
        return False
    spec = data.get("spec")
    return str(data.get("apiVersion", "")).startswith("cilium.io") or (
        isinstance(spec, dict) and any(k in spec for k in HOOKS))


def _hinted(err: ScenarioError) -> ScenarioError:
    last = err.key.rsplit(".", 1)[-1].split("[", 1)[0]
    hint = _HINTS.get(last)
    if hint is None or "how to fix" in err.message or "add it" in err.message:
        return err
    return ScenarioError(err.path, err.line, err.key, f"{err.message}; {hint}")


def _actions(doc: LinedDocument) -> list[Action]:
    d: dict[str, Any] = doc.data
    spec = d["spec"]
    name = d["metadata"]["name"]
    namespace = d["metadata"].get("namespace") if d["kind"] == "TracingPolicyNamespaced" else None
    mode = next((str(o.get("value")) for o in spec.get("options", ())
                 if o.get("name") == "policy-mode"), None)
    out: list[Action] = []
    for spec_key, (kind, attr, event) in HOOKS.items():
        for h, hook in enumerate(spec.get(spec_key, ())):
            label, functions = _hook_name(kind, attr, hook)
            tags = tuple(str(t) for t in hook.get("tags", ()))
            for s, selector in enumerate(hook.get("selectors") or ()):
                for list_key in ("matchActions", "matchReturnActions"):
                    for i, act in enumerate(selector.get(list_key, ())):
                        effects = _effects(act)
                        if not effects:
                            continue
                        key = ("spec", spec_key, h, "selectors", s, list_key, i)
                        out.append(Action(
                            name, namespace, kind, label, functions, event, s, i, act["action"],
                            {k: v for k, v in act.items() if k != "action"}, effects, tags,
                            doc.path, doc.line(key), dotted(key), mode))
    return out


def _hook_name(kind: str, attr: str, hook: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    if kind == "tracepoint":
        return f"{hook['subsystem']}:{hook['event']}", (hook["event"],)
    if kind == "uprobe":
        symbols = [*hook.get("symbols", ()), *([hook["symbol"]] if "symbol" in hook else [])]
        return f"{hook['path']}:{','.join(symbols)}", tuple(symbols)
    if kind == "usdt":
        return f"{hook['provider']}:{hook['name']}", (hook["name"],)
    call = str(hook[attr])
    functions = [call]
    if kind == "kprobe" and (hook.get("syscall", True) or call.startswith("sys_")):
        functions += [p + call for p in _SYSCALL_PREFIXES if not call.startswith("__")]
    return call, tuple(functions)


def _effects(act: Mapping[str, Any]) -> frozenset[str]:
    name = act["action"]
    if name == "Sigkill" or (name == "Signal" and act.get("argSig") == 9):
        return frozenset({"kill"})
    if name == "Override":
        return frozenset({"override"})
    if name == "NotifyEnforcer":
        found = ({"kill"} if act.get("argSig") == 9 else set()) | (
            {"override"} if "argError" in act else set())
        return frozenset(found or {"kill", "override"})
    return frozenset()


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
        blocks: list[tuple[str, Mapping[str, Any], int | None]] = []
        sources = [(("expect",), scenario.expect)] + [
            (("overrides", i, "expect"), expect) for i, (_, _, expect) in enumerate(scenario.overrides)]
        for key, expect in sources:
            for sensor in sorted(set(expect) if wanted is None else set(expect) & wanted):
                alone = dataclasses.replace(scenario, expect={**scenario.expect, sensor: expect[sensor]},
                                            overrides=())
                blocks.append((sensor, _block(alone.expectation(sensor)), line((*key, sensor))))
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
