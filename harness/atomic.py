"""Atomics: small, non-destructive attack actions with cleanup, precondition and proof."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness._schema import parse_duration, validate
from harness._yaml import load_lined
from harness.errors import ScenarioError
from harness.mitre import check_technique

_PLACEHOLDER = re.compile(r"#\{([a-z][a-z0-9_]*)\}")
_BIN_HELPER = re.compile(r"#\{bin\}/([A-Za-z0-9_.+-]+)")


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
    arguments: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    side_effect: SideEffect | None = None

    def render(self, text: str, values: Mapping[str, Any],
               quote: Callable[[str], str] = str) -> str:
        """Fill ``#{name}`` placeholders (Atomic Red Team's syntax); unknown ones are errors.
        ``quote`` escapes each value (``re.escape`` for a proof regex)."""

        def fill(m: re.Match[str]) -> str:
            key = m.group(1)
            if key not in values:
                raise ScenarioError(
                    str(self.path), None, "executor",
                    f"placeholder #{{{key}}} has no value: expected one of "
                    f"{', '.join(sorted(values))}; declare it under input_arguments",
                )
            return quote(str(values[key]))

        return _PLACEHOLDER.sub(fill, text)


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
    args = d.get("input_arguments", {})
    known = {*args, *RUNTIME_VALUES}
    texts: list[tuple[tuple[str | int, ...], str]] = [
        (("executor", k), ex.get(k, "")) for k in ("command", "cleanup_command")]
    texts += [(("precondition", i, "command"), p["command"])
              for i, p in enumerate(d.get("precondition", []))]
    texts += [(("proof", k), v) for k, v in d["proof"].items()]
    texts += [(("side_effect", k), v) for k, v in d.get("side_effect", {}).items()]
    for key, text in texts:
        for name in _PLACEHOLDER.findall(text):
            if name not in known:
                errors.append(doc.error(key, _unknown_placeholder(name, known)))
        for helper in _BIN_HELPER.findall(text):
            if not (path.parent / "bin" / helper).is_file():
                errors.append(doc.error(key, (
                    f"helper #{{bin}}/{helper} does not exist: expected the file "
                    f"{path.parent / 'bin' / helper} (#{{bin}} is the bin/ folder next to the "
                    f"atomic); add it there or fix the name")))
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
        arguments={k: v.get("default") for k, v in args.items()},
        description=d.get("description", ""),
        side_effect=SideEffect(d["side_effect"]["description"], d["side_effect"]["command"])
        if "side_effect" in d else None,
    )


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
