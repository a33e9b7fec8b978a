"""Atomics: small, non-destructive attack actions with cleanup, precondition and proof.

Values reach an atomic's shell text (command, cleanup, precondition, proof and side-effect
commands) through ``#{name}`` placeholders, Atomic Red Team's syntax. Every value is typed
(``input_arguments``: string, integer, float, path, enum) and checked when the scenario is
loaded, and is quoted for the shell where it lands: a value is always one literal word,
never code. Only an input argument marked ``raw: true`` is pasted as it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import ScenarioError
from harness.core.mitre import check_technique
from harness.core.schema import parse_duration, validate
from harness.core.shellquote import UNQUOTABLE, Slot, placeholders, shell_quote
from harness.core.yamlfile import KeyPath, LinedDocument, load_lined

_PLACEHOLDER = re.compile(r"#\{([a-z][a-z0-9_]*)\}")  # Atomic Red Team's #{name}

_BIN_HELPER = re.compile(r"#\{bin\}/([A-Za-z0-9_.+-]+)")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")

#: the types an input argument may have (Atomic Red Team's string, integer, float and path,
#: plus enum with its ``values``); ART's url is not one: imported atomics never download
ARGUMENT_TYPES = ("string", "integer", "float", "path", "enum")


@dataclass(frozen=True, slots=True)
class InputArgument:
    """One of an atomic's ``input_arguments``: its type, default and whether it is raw.

    ``raw``: the value is pasted into the shell text unquoted, so it can carry shell syntax
    (a glob, ``$VAR``, a pipeline). Dangerous: whoever writes the scenario's value then
    writes code that runs as root on the node. Off unless the atomic says ``raw: true``.
    """

    name: str
    type: str = "string"
    description: str = ""
    default: str | int | float | None = None  # None: every scenario must give a value
    values: tuple[str | int, ...] = ()  # enum only
    raw: bool = False

    def coerce(self, value: object) -> str | int | float:  # noqa: PLR0912 - a branch per type
        """``value`` checked against the type and normalised (``"5"`` -> 5 for an integer);
        raises ValueError saying what was expected, what came, and how to fix it."""
        if isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
            raise ValueError(f"expected {self._kind()}, got {value!r}"
                             + (" (a YAML boolean: quote it)" if isinstance(value, bool) else ""))
        if self.type == "integer":
            if isinstance(value, int) or (isinstance(value, str) and _INTEGER.match(value)):
                return int(value)
            raise ValueError(f"expected {self._kind()}, got {value!r}")
        if self.type == "float":
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
            raise ValueError(f"expected {self._kind()}, got {value!r}")
        if self.type == "enum":
            for allowed in self.values:
                if value == allowed or str(value) == str(allowed):
                    return allowed
            raise ValueError(f"expected {self._kind()}, got {value!r}")
        text = str(value)
        if "\0" in text:
            raise ValueError(f"expected {self._kind()} without a NUL byte, got {text!r}")
        if self.type == "path" and not self.raw:
            if not text:
                raise ValueError("expected a path, got an empty string")
            if text.startswith("~") or "$" in text or "`" in text:
                raise ValueError(
                    f"expected a literal path, got {text!r}: values are shell-quoted, so ~, "
                    "$VAR and `...` are not expanded; give the path itself (e.g. /root/x)")
        return text

    def _kind(self) -> str:
        if self.type == "enum":
            return "one of " + ", ".join(repr(v) for v in self.values)
        return {"string": "a string", "integer": "an integer", "float": "a number",
                "path": "a path"}.get(self.type, self.type)


# ---------------------------------------------------------------- the atomic
@dataclass(frozen=True, slots=True)
class Precondition:
    description: str
    command: str


@dataclass(frozen=True, slots=True)
class SideEffect:
    """Enforcement validation: a probe run after the action, even a killed or denied one.
    Exit 0 = the side effect exists, 1 = it does not, anything else = unknown."""

    description: str
    command: str


@dataclass(frozen=True, slots=True)
class Atomic:
    id: str
    name: str
    technique: str
    path: Path
    command: str
    shell: str = "sh"
    cleanup: str = ""
    timeout: float = 30.0
    precondition: tuple[Precondition, ...] = ()
    proof_command: str | None = None
    proof_stdout: str | None = None
    touches: tuple[tuple[str, str], ...] = ()
    #: the input arguments' defaults (arguments without a default are absent)
    arguments: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    side_effect: SideEffect | None = None
    #: every input argument, typed
    inputs: Mapping[str, InputArgument] = field(default_factory=dict)

    def render(self, text: str, values: Mapping[str, Any],
               quote: Callable[[str], str] | None = None) -> str:
        """Fill ``#{name}`` placeholders (Atomic Red Team's syntax); unknown ones are errors.

        Shell text by default: each value becomes one literal word, quoted for where it
        sits (unquoted, "...", '...'); an input argument with ``raw: true`` is pasted as
        it is. ``quote`` instead escapes every value with one function (``re.escape`` for
        the proof regex, ``str`` for prose such as the side effect's description)."""
        slots = placeholders(text) if quote is None else tuple(
            Slot(m.start(), m.end(), m.group(1), "") for m in _PLACEHOLDER.finditer(text))
        out: list[str] = []
        last = 0
        for slot in slots:
            if slot.name not in values:
                raise ScenarioError(
                    str(self.path), None, "executor",
                    f"placeholder #{{{slot.name}}} has no value: expected one of "
                    f"{', '.join(sorted(values))}; declare it under input_arguments",
                )
            value = str(values[slot.name])
            if quote is not None:
                value = quote(value)
            elif not (slot.name in self.inputs and self.inputs[slot.name].raw):
                try:
                    value = shell_quote(value, slot.context)
                except ValueError as exc:
                    raise ScenarioError(str(self.path), None, "executor",
                                        f"#{{{slot.name}}}: {exc}") from None
            out += [text[last:slot.start], value]
            last = slot.end
        return "".join([*out, text[last:]])


def load_atomic(path: Path) -> Atomic:
    """Load and validate one atomic file; raises the first ScenarioError (all in ``check``)."""
    errors, atomic = check_atomic(path)
    if errors or atomic is None:
        raise errors[0]
    return atomic


def check_atomic(path: Path) -> tuple[list[ScenarioError], Atomic | None]:
    try:
        doc = load_lined(path)
    except ScenarioError as exc:
        return [exc], None
    errors = validate(doc, "atomic")
    if errors:
        return errors, None
    d: dict[str, Any] = doc.data
    if d["id"] != path.stem:
        errors.append(doc.error(("id",), f"expected {path.stem!r} (the file name), got {d['id']!r}"))
    if problem := check_technique(d["technique"]):
        errors.append(doc.error(("technique",), problem))
    ex = d["executor"]
    inputs, arg_errors = _inputs(doc)
    errors += arg_errors
    known = {*inputs, *RUNTIME_VALUES}
    shell: list[tuple[KeyPath, str]] = [
        (("executor", k), ex.get(k, "")) for k in ("command", "cleanup_command")]
    shell += [(("precondition", i, "command"), p["command"])
              for i, p in enumerate(d.get("precondition", []))]
    shell += [(("proof", "command"), d["proof"]["command"])] if "command" in d["proof"] else []
    shell += [(("side_effect", "command"), d["side_effect"]["command"])] if "side_effect" in d else []
    prose: list[tuple[KeyPath, str]] = [(("proof", "stdout"), d["proof"].get("stdout", ""))]
    prose += [(("side_effect", "description"), d["side_effect"]["description"])] \
        if "side_effect" in d else []
    for key, text in [*shell, *prose]:
        for name in _PLACEHOLDER.findall(text):
            if name not in known:
                errors.append(doc.error(key, _unknown_placeholder(name, known)))
        for helper in _BIN_HELPER.findall(text):
            if not (path.parent / "bin" / helper).is_file():
                errors.append(doc.error(key, (
                    f"helper #{{bin}}/{helper} does not exist: expected the file "
                    f"{path.parent / 'bin' / helper} (#{{bin}} is the bin/ folder next to the "
                    f"atomic); add it there or fix the name")))
    for key, text in shell:
        errors += [doc.error(key, _unquotable(slot)) for slot in placeholders(text)
                   if slot.context in UNQUOTABLE and slot.name in known
                   and not (slot.name in inputs and inputs[slot.name].raw)]
    if errors:
        return errors, None
    proof = d["proof"]
    return [], Atomic(
        id=d["id"], name=d["name"], technique=d["technique"], path=path,
        command=ex["command"], shell=ex["name"], cleanup=ex.get("cleanup_command", ""),
        timeout=parse_duration(ex.get("timeout", "30s")),
        precondition=tuple(Precondition(p["description"], p["command"])
                           for p in d.get("precondition", [])),
        proof_command=proof.get("command"), proof_stdout=proof.get("stdout"),
        touches=tuple((t["kind"], t["what"]) for t in d["touches"]),
        arguments={k: a.default for k, a in inputs.items() if a.default is not None},
        description=d.get("description", ""),
        side_effect=SideEffect(d["side_effect"]["description"], d["side_effect"]["command"])
        if "side_effect" in d else None,
        inputs=inputs,
    )


def _inputs(doc: LinedDocument) -> tuple[dict[str, InputArgument], list[ScenarioError]]:
    """The typed input arguments, and the errors of their declarations and defaults."""
    out: dict[str, InputArgument] = {}
    errors: list[ScenarioError] = []
    for name, spec in doc.data.get("input_arguments", {}).items():
        key: KeyPath = ("input_arguments", name)
        arg = InputArgument(name=name, type=spec["type"], description=spec["description"],
                            values=tuple(spec.get("values", ())), raw=spec.get("raw", False))
        if name in RUNTIME_VALUES:
            errors.append(doc.error(key, f"{name!r} is a value the harness sets at run time "
                                         f"({RUNTIME_VALUES[name]}): rename the input argument"))
        if arg.type == "enum" and not arg.values:
            errors.append(doc.error((*key, "type"), "an enum argument lists its allowed values: "
                                                    "add values: [a, b, ...]"))
        if arg.type != "enum" and "values" in spec:
            errors.append(doc.error((*key, "values"), f"values are for type enum, got type "
                                                      f"{arg.type!r}: use type: enum or remove values"))
        if "default" in spec and (arg.values or arg.type != "enum"):
            try:
                arg = InputArgument(name, arg.type, arg.description, arg.coerce(spec["default"]),
                                    arg.values, arg.raw)
            except ValueError as exc:
                errors.append(doc.error((*key, "default"), str(exc)))
        out[name] = arg
    return out, errors


def _unquotable(slot: Slot) -> str:
    where, fix = UNQUOTABLE[slot.context]
    return (f"#{{{slot.name}}} is inside {where}, where its value cannot be shell-quoted "
            f"(values are quoted so that each is one literal word): {fix.replace('NAME', slot.name)}")


# Values every atomic may use besides its input arguments.
RUNTIME_VALUES = {
    "run_id": "the run's id (put it in every name the atomic creates)",
    "bin": "the absolute path of atomic/bin",
    "python": "the node's python3",
    "host_mntns_fd": "namespace context: fd of the host mount namespace (leaked into the context)",
    "host_pidns": "the host's pid namespace (readlink /proc/self/ns/pid on the host)",
    "host_mntns": "the host's mount namespace (readlink /proc/self/ns/mnt on the host)",
    "ns_init_pid": "namespace context: host pid of the context's PID 1",
}


def _unknown_placeholder(name: str, known: set[str]) -> str:
    return (
        f"placeholder #{{{name}}} is not an input argument: expected one of "
        f"{', '.join(sorted(known))}; add it under input_arguments"
    )
