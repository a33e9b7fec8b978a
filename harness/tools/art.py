"""``shadowtest import-art``: Atomic Red Team technique files -> shadowtest atomics.

Only what is clearly safe is converted: Linux/containers tests run by ``sh`` or ``bash``
whose commands (after their input arguments are frozen at their defaults) use known
commands only, write only new literal paths under /tmp, /var/tmp or /dev/shm, and reach
no network, kernel module, service, account, firewall, audit rule or other process.
Everything else is refused with the reason and the file:line it comes from. Dependencies'
``prereq_command`` becomes a precondition when it only checks; ``get_prereq_command``
(downloads, installs) is never run and is dropped with a note.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.core.atomic import check_atomic
from harness.core.errors import ScenarioError
from harness.core.mitre import check_technique
from harness.core.schema import validate
from harness.core.yamlfile import KeyPath, dotted, load_lined
from harness.tools.artsafety import Effects, Unsafe, analyse, quote, scratch_root

_ART_NAME = re.compile(r"^T\d{4}(\.\d{3})?\.ya?ml$")
_ART_ARG = re.compile(r"#\{([^}]*)\}")
DONE = "shadowtest-art: action completed"
MARKER = "/tmp/shadowtest-art-#{run_id}.ran"  # noqa: S108 - a run-id-named file, rendered per run


@dataclass(frozen=True, slots=True)
class Refusal:
    """One ART test that was not converted, and why."""
    path: str
    line: int | None
    key: str
    test: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.key}: refused {self.test!r}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Converted:
    """One ART test converted into a shadowtest atomic (``data``)."""
    id: str
    path: str
    line: int | None
    test: str
    data: dict[str, Any]
    notes: tuple[str, ...] = ()


@dataclass
class ImportReport:
    converted: list[Converted] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    errors: list[ScenarioError] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


class _Refuse(Exception):
    def __init__(self, key: KeyPath, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


# ---------------------------------------------------------------- reading ART files
def art_files(paths: Iterable[Path]) -> list[Path]:
    """Files named like ART's ``atomics/T1070.003/T1070.003.yaml`` under ``paths`` (a file
    given by name is taken whatever its name), sorted."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and _ART_NAME.match(f.name))
        else:
            out.append(p)
    return out


def convert_file(path: Path, techniques: Sequence[str] = ()) -> ImportReport:
    """Convert every test of one ART file; nothing is written."""
    report = ImportReport()
    try:
        doc = load_lined(path)
    except ScenarioError as exc:
        report.errors.append(exc)
        return report
    errors = validate(doc, "art")
    if errors:
        report.errors += errors
        return report
    d: dict[str, Any] = doc.data
    technique = d["attack_technique"]
    if techniques and not any(technique == t or technique.startswith(t + ".") for t in techniques):
        return report
    problem = check_technique(technique)
    for i, test in enumerate(d["atomic_tests"]):
        key: KeyPath = ("atomic_tests", i)
        if problem:
            report.refused.append(Refusal(str(path), doc.line(("attack_technique",)),
                                          "attack_technique", test["name"].strip(), problem))
            continue
        try:
            data, notes = convert_test(test, technique, i + 1)
        except _Refuse as exc:
            full = (*key, *exc.key)
            report.refused.append(Refusal(str(path), doc.line(full), dotted(full),
                                          test["name"].strip(), exc.reason))
            continue
        report.converted.append(Converted(data["id"], str(path), doc.line(key), test["name"].strip(),
                                          data, tuple(notes)))
    return report


def convert_test(test: dict[str, Any], technique: str, number: int) -> tuple[dict[str, Any], list[str]]:
    """One ART test as a shadowtest atomic document and notes; raises _Refuse."""
    notes: list[str] = []
    platforms = [p for p in ("linux", "containers") if p in test["supported_platforms"]]
    if not platforms:
        raise _Refuse(("supported_platforms",), f"supported only on "
                      f"{', '.join(test['supported_platforms'])}: shadowtest's nodes are Linux")
    ex = test["executor"]
    if ex["name"] == "manual":
        raise _Refuse(("executor", "name"), "manual executor: steps for a person, nothing to run")
    if ex["name"] not in ("sh", "bash"):
        raise _Refuse(("executor", "name"), f"{ex['name']} executor (a Windows shell): shadowtest "
                      "runs sh or bash")
    if not ex.get("command"):
        raise _Refuse(("executor",), "no command to run")
    values = _frozen_arguments(test)
    command = _fill(ex["command"], values)
    cleanup = _fill(ex.get("cleanup_command") or "", values)
    act = _effects(command, ("executor", "command"))
    undo = _effects(cleanup, ("executor", "cleanup_command"))
    preconditions = _preconditions(test, values, ex["name"], notes)
    roots = sorted({scratch_root(p) for e in (act, undo) for p in (*e.writes, *e.removes)})
    created = [w for w in act.writes if w not in act.removes]
    owned = [{"description": f"{r} does not exist yet (the atomic only touches paths it creates)",
              "command": f"test ! -e {quote(r)} && test ! -L {quote(r)}"} for r in roots]
    preconditions = owned + preconditions
    atomic_id = f"art-{technique.lower().replace('.', '-')}-{number}"
    guid = test.get("auto_generated_guid")
    desc = test["description"].strip()
    desc += (f"\n\nImported from Atomic Red Team {technique} test #{number}"
             f"{f' ({guid})' if guid else ''} by shadowtest import-art.")
    if values:
        desc += " Input arguments frozen at their vetted defaults: " + ", ".join(
            f"{k}={v}" for k, v in sorted(values.items())) + "."
    marked = bool(roots or cleanup.strip())
    executor = _executor(ex, command, cleanup, roots, marked)
    touches = [{"kind": "file", "what": f"{r} (created by the run, removed in cleanup)"} for r in roots]
    if marked:
        touches.append({"kind": "file", "what": f"{MARKER} (run marker, removed in cleanup)"})
    reads = [p for p in act.reads if not any(p == r or p.startswith(r + "/") for r in roots)]
    touches += [{"kind": "file", "what": f"{p} (read only)"} for p in reads[:8]]
    touches.append({"kind": "process", "what": "runs " + ", ".join(act.commands or ["the shell"])})
    proof: dict[str, Any] = {"stdout": f"^{DONE}$"}  # DONE has no regex metacharacters
    if created:
        proof["command"] = f"test -e {quote(created[-1])}"
    data: dict[str, Any] = {
        "id": atomic_id, "name": test["name"].strip(), "description": desc,
        "technique": technique, "supported_platforms": platforms,
        "source": {"kind": "art", "technique": technique, **({"guid": guid} if guid else {}),
                   "name": test["name"].strip(), "number": number},
        "touches": touches,
    }
    if preconditions:
        data["precondition"] = preconditions
    data["executor"] = executor
    data["proof"] = proof
    return data, notes


def _executor(ex: dict[str, Any], command: str, cleanup: str, roots: list[str],
              marked: bool) -> dict[str, Any]:
    """``set -e`` + the command + a completion line; the cleanup runs the ART cleanup and
    removes the run's scratch roots only when the run marker says the command ran (its
    preconditions, which prove the roots were new, passed)."""
    body = ["set -e"] + ([f": > {MARKER}"] if marked else []) + [command.rstrip("\n"), f"echo '{DONE}'"]
    executor: dict[str, Any] = {"name": ex["name"], "command": "\n".join(body) + "\n"}
    if marked:
        undo = ([f"if [ -e {MARKER} ]; then"] + [f"  {ln}" for ln in cleanup.strip().splitlines()]
                + ([f"  rm -rf -- {' '.join(quote(r) for r in roots)}"] if roots else [])
                + ["fi", f"rm -f -- {MARKER}"])
        executor["cleanup_command"] = "\n".join(undo) + "\n"
    if ex.get("elevation_required"):
        executor["elevation_required"] = True
    executor["timeout"] = "30s"
    return executor


def _frozen_arguments(test: dict[str, Any]) -> dict[str, str]:
    args: dict[str, Any] = test.get("input_arguments") or {}
    texts = [test["executor"].get("command") or "", test["executor"].get("cleanup_command") or ""]
    texts += [dep.get("prereq_command") or "" for dep in test.get("dependencies") or []]
    values: dict[str, str] = {}
    for name in sorted({n for t in texts for n in _ART_ARG.findall(t)}):
        spec = args.get(name)
        if spec is None:
            raise _Refuse(("input_arguments",), f"#{{{name}}} is used but not declared under "
                          "input_arguments: add it with a default")
        if spec.get("default") is None:
            raise _Refuse(("input_arguments", name), f"#{{{name}}} has no default: an imported atomic "
                          "needs a value the importer can vet")
        if str(spec["type"]).lower() == "url":
            raise _Refuse(("input_arguments", name), f"#{{{name}}} is a URL ({spec['default']}): "
                          "downloads or network access are refused")
        values[name] = str(spec["default"])
    return values


def _fill(text: str, values: dict[str, str]) -> str:
    return _ART_ARG.sub(lambda m: values[m.group(1)], text)


def _effects(text: str, key: KeyPath) -> Effects:
    if not text.strip():
        return Effects()
    try:
        return analyse(text)
    except Unsafe as exc:
        raise _Refuse(key, str(exc)) from exc


def _preconditions(test: dict[str, Any], values: dict[str, str], shell: str,
                   notes: list[str]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    deps = test.get("dependencies") or []
    runner = test.get("dependency_executor_name", shell)
    if deps and runner not in ("sh", "bash"):
        raise _Refuse(("dependency_executor_name",), f"dependencies run by the {runner} executor: "
                      "only sh or bash prerequisite checks can become preconditions")
    for j, dep in enumerate(deps):
        key: KeyPath = ("dependencies", j, "prereq_command")
        check = _fill(dep["prereq_command"], values)
        effects = _effects(check, key)
        if effects.writes or effects.removes:
            raise _Refuse(key, f"prereq_command changes the node ({(effects.writes or effects.removes)[0]}): "
                          "a precondition must only check")
        out.append({"description": " ".join(dep["description"].split()), "command": check.strip()})
        if (dep.get("get_prereq_command") or "").strip():
            notes.append(f"dependencies[{j}].get_prereq_command dropped (it downloads or installs "
                         "and is never run): a missing prerequisite makes the run NOT_EXECUTED")
    return out


# ---------------------------------------------------------------- writing atomics
class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_atomic(data: dict[str, Any]) -> str:
    head = "# Generated by `shadowtest import-art` from Atomic Red Team; review before use.\n"
    return head + yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def import_art(paths: Iterable[Path], out: Path, techniques: Sequence[str] = (),
               dry_run: bool = False, force: bool = False) -> ImportReport:
    """Convert every ART file under ``paths``; write valid atomics to ``out`` (not when
    ``dry_run``). Every atomic is validated by the atomic loader before it is written."""
    report = ImportReport()
    for path in art_files(paths):
        part = convert_file(path, techniques)
        report.refused += part.refused
        report.errors += part.errors
        report.converted += part.converted
    with tempfile.TemporaryDirectory(prefix="shadowtest-art-") as tmp:
        for conv in report.converted:
            text = render_atomic(conv.data)
            staged = Path(tmp) / f"{conv.id}.yaml"
            staged.write_text(text, encoding="utf-8")
            errs, atomic = check_atomic(staged)
            if errs or atomic is None:
                report.errors += [ScenarioError(conv.path, conv.line, "", f"converted atomic {conv.id} "
                                                f"is invalid ({e.key}: {e.message}); please report this")
                                  for e in errs]
                continue
            dest = out / f"{conv.id}.yaml"
            if dest.exists() and dest.read_text(encoding="utf-8") != text and not force:
                report.errors.append(ScenarioError(str(dest), None, "", "exists with other content: "
                                                   "pass --force to overwrite it"))
                continue
            if not dry_run:
                out.mkdir(parents=True, exist_ok=True)
                dest.write_text(text, encoding="utf-8")
                report.written.append(dest)
    return report


def format_report(report: ImportReport, dry_run: bool = False) -> str:
    lines = [f"import-art: {len(report.converted)} converted, {len(report.refused)} refused, "
             f"{len(report.errors)} error(s){' (dry run: nothing written)' if dry_run else ''}"]
    for conv in sorted(report.converted, key=lambda c: c.id):
        lines.append(f"  converted {conv.id}  <- {conv.path}:{conv.line} {conv.test!r}")
        lines += [f"      note: {n}" for n in conv.notes]
    lines += [f"  refused   {r}" for r in report.refused]
    lines += [f"  error     {e}" for e in report.errors]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- command line
def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``import-art`` to the CLI's subparsers (``argparse._SubParsersAction``)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "import-art", help="convert Atomic Red Team Linux/container tests into atomics",
        description=__doc__.splitlines()[0])
    return _arguments(p)


def _arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR",
                   help="ART technique files (Txxxx.yaml) or directories (e.g. atomics/)")
    p.add_argument("--out", type=Path, default=Path("atomic"), help="where atomics go (default: atomic)")
    p.add_argument("--technique", action="append", default=[], metavar="ID",
                   help="only these techniques (a parent id includes its sub-techniques; repeatable)")
    p.add_argument("--dry-run", action="store_true", help="convert and validate, write nothing")
    p.add_argument("--force", action="store_true", help="overwrite atomics that exist with other content")
    return p


def run(args: argparse.Namespace) -> int:
    """0: done (refusals are listed, not failures); 1: an input could not be read or
    validated, or an output could not be written."""
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"shadowtest import-art: error: {missing[0]}: no such file or directory", file=sys.stderr)
        return 2
    report = import_art(args.paths, args.out, args.technique, args.dry_run, args.force)
    print(format_report(report, args.dry_run), end="")
    return 1 if report.errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _arguments(argparse.ArgumentParser(prog="shadowtest import-art",
                                                description=__doc__.splitlines()[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
