"""Scenarios: an atomic + arguments + contexts + technique + per-sensor expectations."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core import expectation as reader
from harness.core.atomic import Atomic, check_atomic
from harness.core.errors import ScenarioError
from harness.core.mitre import check_technique
from harness.core.schema import parse_duration, validate
from harness.core.verdict import Expectation
from harness.core.yamlfile import LinedDocument, load_lined


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    name: str
    path: Path
    atomic: Atomic
    contexts: tuple[str, ...]
    technique: str | None
    tactic: str
    benign: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)
    window: float | None = None
    kernel: str | None = None
    features: tuple[str, ...] = ()
    expect: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    #: per-kernel expectations: (kernel requirement, required features, expect blocks)
    overrides: tuple[tuple[str | None, tuple[str, ...], Mapping[str, Mapping[str, Any]]], ...] = ()

    def expectation(self, sensor: str, facts: Mapping[str, Any] | None = None) -> Expectation:
        """What ``sensor`` must report on a node with ``facts`` (``NodeFacts.as_row()``;
        per-kernel ``overrides`` apply): ``harness.core.expectation.resolve``, the one
        reader of ``expect:`` blocks."""
        return reader.resolve(self, sensor, facts)

    @property
    def enforced(self) -> bool:
        """Some sensor's expect block (or an override's) expects enforcement."""
        return reader.enforced(self)


def _scenario_doc_errors(doc: LinedDocument, atomics: Mapping[str, Atomic]) -> list[ScenarioError]:
    d = doc.data
    errors: list[ScenarioError] = []
    if d["id"] != doc.path.stem:
        errors.append(doc.error(("id",), f"expected {doc.path.stem!r} (the file name), got {d['id']!r}"))
    benign = d.get("benign", False)
    if benign and "technique" in d:
        errors.append(doc.error(("technique",), "a benign control has no technique; remove it"))
    if benign and d.get("expect"):
        errors.append(doc.error(("expect",), "a benign control expects nothing; remove expect"))
    if not benign and "technique" not in d:
        errors.append(doc.error((), "'technique' is a required property; add it (or benign: true)"))
    if "technique" in d and (problem := check_technique(d["technique"])):
        errors.append(doc.error(("technique",), problem))
    for sensor, block in d.get("expect", {}).items():
        if "technique" in block and (problem := check_technique(block["technique"])):
            errors.append(doc.error(("expect", sensor, "technique"), problem))
    errors += _override_errors(doc, benign)
    atomic = atomics.get(d["atomic"])
    if atomic is not None and atomic.side_effect is None:
        errors += _enforce_errors(doc, atomic)
    if atomic is None:
        errors.append(doc.error(
            ("atomic",),
            f"unknown atomic {d['atomic']!r}: expected one of {', '.join(sorted(atomics)) or '(none)'}",
        ))
    else:
        errors += _argument_errors(doc, atomic)
    return errors


def _argument_errors(doc: LinedDocument, atomic: Atomic) -> list[ScenarioError]:
    """Every argument names an input argument of the atomic and has its type; every input
    argument without a default is given."""
    given: dict[str, Any] = doc.data.get("arguments", {})
    errors: list[ScenarioError] = []
    for name, value in given.items():
        arg = atomic.inputs.get(name)
        if arg is None:
            errors.append(doc.error(
                ("arguments", name),
                f"atomic {atomic.id!r} has no input argument {name!r}: expected one of "
                f"{', '.join(sorted(atomic.inputs)) or '(none)'}",
            ))
            continue
        try:
            arg.coerce(value)
        except ValueError as exc:
            errors.append(doc.error(("arguments", name), f"{exc} (input argument {name!r} of "
                                                         f"atomic {atomic.id!r}, type {arg.type})"))
    missing = sorted(n for n, a in atomic.inputs.items() if a.default is None and n not in given)
    errors += [doc.error(("arguments",) if "arguments" in doc.data else ("atomic",),
                         f"atomic {atomic.id!r} needs a value for its input argument {name!r} "
                         f"(it has no default): add arguments: {{{name}: ...}}")
               for name in missing]
    return errors


def _arguments(atomic: Atomic, given: Mapping[str, Any]) -> dict[str, Any]:
    """The atomic's defaults overridden by the scenario's (checked) values, normalised."""
    return {**atomic.arguments, **{k: atomic.inputs[k].coerce(v) for k, v in given.items()}}


def _override_errors(doc: LinedDocument, benign: bool) -> list[ScenarioError]:
    overrides = doc.data.get("overrides", ())
    if benign and overrides:
        return [doc.error(("overrides",), "a benign control expects nothing; remove overrides")]
    return [doc.error(("overrides", i, "expect", sensor, "technique"), problem)
            for i, o in enumerate(overrides) for sensor, block in o["expect"].items()
            if "technique" in block and (problem := check_technique(block["technique"]))]


def _enforce_errors(doc: LinedDocument, atomic: Atomic) -> list[ScenarioError]:
    """An ``enforce`` expectation needs the atomic's side-effect probe: without it a kill
    after the effect (RACED) looks like a kill before it (BLOCKED)."""
    d = doc.data
    keys: list[tuple[str | int, ...]] = [
        ("expect", s) for s, b in d.get("expect", {}).items() if "enforce" in b]
    keys += [("overrides", i, "expect", s) for i, o in enumerate(d.get("overrides", ()))
             for s, b in o["expect"].items() if "enforce" in b]
    return [doc.error((*k, "enforce"),
                      f"atomic {atomic.id!r} ({atomic.path.name}) has no side_effect: an "
                      "enforce expectation needs a probe that tells a kill before the effect "
                      "(BLOCKED) from a kill after it (RACED); add side_effect: {description, "
                      "command} to the atomic or remove enforce")
            for k in keys]


def check_scenario(path: Path, atomics: Mapping[str, Atomic]) -> tuple[list[ScenarioError], Scenario | None]:
    try:
        doc = load_lined(path)
    except ScenarioError as exc:
        return [exc], None
    errors = validate(doc, "scenario") or _scenario_doc_errors(doc, atomics)
    if errors:
        return errors, None
    d: dict[str, Any] = doc.data
    atomic = atomics[d["atomic"]]
    req = d.get("requires", {})
    return [], Scenario(
        id=d["id"], name=d["name"], path=path, atomic=atomic,
        contexts=tuple(d["contexts"]), technique=d.get("technique"),
        tactic=path.parent.name, benign=d.get("benign", False),
        arguments=_arguments(atomic, d.get("arguments", {})),
        window=parse_duration(d["window"]) if "window" in d else None,
        kernel=req.get("kernel"), features=tuple(req.get("features", ())),
        expect=d.get("expect", {}), description=d.get("description", ""),
        overrides=tuple((o.get("kernel"), tuple(o.get("features", ())), o["expect"])
                        for o in d.get("overrides", ())),
    )


def load_atomics(dirs: Iterable[Path]) -> tuple[dict[str, Atomic], list[ScenarioError]]:
    """Every ``*.yaml`` atomic under ``dirs`` by id, and every error found. The first
    directory that defines an id wins (a project's own atomics before the built-in ones)."""
    out: dict[str, Atomic] = {}
    errors: list[ScenarioError] = []
    for d in dirs:
        for path in sorted(d.glob("*.yaml")):
            errs, atomic = check_atomic(path)
            errors += errs
            if atomic is not None:
                out.setdefault(atomic.id, atomic)
    return out, errors


_ATOMIC_KEY = re.compile(r"^executor\s*:", re.MULTILINE)


def is_atomic_file(path: Path) -> bool:
    """An atomic (it has a top-level ``executor:``), wherever it lives; anything else in a
    catalogue is read as a scenario."""
    try:
        return bool(_ATOMIC_KEY.search(path.read_text("utf-8", errors="replace")))
    except OSError:
        return False


def scenario_files(dirs: Iterable[Path]) -> list[Path]:
    """``scenarios/<tactic>/<id>.yaml`` files, sorted (deterministic collection)."""
    out: list[Path] = []
    for d in dirs:
        out += [d] if d.is_file() else sorted(d.rglob("*.yaml"))
    return out
