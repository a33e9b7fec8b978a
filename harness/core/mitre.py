"""The ATT&CK technique table shipped with shadowtest, and technique id checks.

``harness/schemas/techniques.json`` holds every Enterprise ATT&CK technique and
sub-technique whose platforms include Linux or Containers (current, revoked and
deprecated ones; a revoked id names the technique that replaced it), plus the ids and
names of the other Enterprise techniques (``elsewhere``) so an id for another platform
gets a precise error. It is built from MITRE's STIX 2.1 bundle by ``build_table``::

    python -m harness.core.mitre build enterprise-attack-18.1.json --version 18.1 \\
        --out harness/schemas/techniques.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

TECHNIQUE_ID = re.compile(r"^T\d{4}(\.\d{3})?$")
PLATFORMS = ("Linux", "Containers")


@dataclass(frozen=True, slots=True)
class Technique:
    id: str
    name: str
    tactics: tuple[str, ...]
    deprecated: bool = False
    replaced_by: str | None = None
    platforms: tuple[str, ...] = ()
    revoked: bool = False

    @property
    def current(self) -> bool:
        return not (self.deprecated or self.revoked)


@cache
def _raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        files("harness").joinpath("schemas/techniques.json").read_text("utf-8"))
    return data


@cache
def techniques() -> dict[str, Technique]:
    """Every Linux/Containers technique of the table by id (revoked/deprecated included)."""
    return {
        t["id"]: Technique(
            t["id"], t["name"], tuple(t["tactics"]),
            t.get("deprecated", False) or t.get("revoked", False), t.get("replaced_by"),
            tuple(t.get("platforms", ())), t.get("revoked", False),
        )
        for t in _raw()["techniques"]
    }


def attack_version() -> str:
    """The ATT&CK release the table was built from, e.g. ``"18.1"``."""
    return str(_raw().get("attack_version", "?"))


def full_name(technique_id: str) -> str:
    """``T1055.008`` -> ``Process Injection: Ptrace System Calls``; the id when unknown."""
    known = techniques().get(technique_id)
    if known is None:
        return technique_id
    parent = techniques().get(technique_id.partition(".")[0]) if "." in technique_id else None
    return f"{parent.name}: {known.name}" if parent else known.name


def check_technique(value: str) -> str | None:
    """None when ``value`` is a current technique id; else what is wrong and how to fix."""
    if not TECHNIQUE_ID.match(value):
        return f"expected an ATT&CK id like T1611 or T1055.008, got {value!r}"
    known = techniques().get(value)
    if known is None:
        other = _raw().get("elsewhere", {}).get(value)
        if other is not None:
            old = (f", deprecated in ATT&CK (replaced by {other.get('replaced_by') or 'nothing'})"
                   if other.get("deprecated") else "")
            return (
                f"{value} ({other['name']}) is an ATT&CK technique for "
                f"{', '.join(other['platforms']) or 'no platform'}{old}, not Linux or containers: "
                "shadowtest's nodes are Linux; pick a Linux or Containers technique from "
                "harness/schemas/techniques.json"
            )
        return (
            f"{value} is not in shadowtest's technique table (harness/schemas/techniques.json, "
            f"ATT&CK v{attack_version()}); check the id or add it to the table"
        )
    if known.replaced_by:
        return (
            f"{value} ({known.name}) is deprecated in ATT&CK; use {known.replaced_by} "
            f"({full_name(known.replaced_by)}), which replaced it"
        )
    if not known.current:
        return (
            f"{value} ({known.name}) is deprecated in ATT&CK with no replacement; pick a "
            "current technique from harness/schemas/techniques.json"
        )
    return None


# ---------------------------------------------------------------- building the table
def _attack_id(obj: Mapping[str, Any]) -> str | None:
    for ref in obj.get("external_references", ()):
        if ref.get("source_name") == "mitre-attack" and TECHNIQUE_ID.match(str(ref.get("external_id", ""))):
            return str(ref["external_id"])
    return None


def build_table(objects: Iterable[Mapping[str, Any]], version: str,
                platforms: Sequence[str] = PLATFORMS) -> dict[str, Any]:
    """The techniques.json document from the objects of an Enterprise ATT&CK STIX 2.1
    bundle (``attack-pattern`` and ``relationship`` objects; others are ignored)."""
    patterns: dict[str, Mapping[str, Any]] = {}
    revoked_by: dict[str, str] = {}
    for obj in objects:
        if obj.get("type") == "attack-pattern" and _attack_id(obj):
            patterns[str(obj["id"])] = obj
        elif obj.get("type") == "relationship" and obj.get("relationship_type") == "revoked-by":
            revoked_by[str(obj["source_ref"])] = str(obj["target_ref"])

    def successor(stix_id: str) -> str | None:
        seen: set[str] = set()
        while stix_id in revoked_by and stix_id not in seen:  # follow chains, stop on loops
            seen.add(stix_id)
            stix_id = revoked_by[stix_id]
        target = patterns.get(stix_id)
        return _attack_id(target) if target and not target.get("revoked") else None

    rows: list[dict[str, Any]] = []
    elsewhere: dict[str, dict[str, Any]] = {}
    for stix_id, obj in patterns.items():
        tid = _attack_id(obj)
        assert tid is not None
        plats = list(obj.get("x_mitre_platforms", ()))
        if not set(plats) & set(platforms):
            other: dict[str, Any] = {"name": obj["name"], "platforms": sorted(plats)}
            if obj.get("revoked"):
                other["replaced_by"] = successor(stix_id)
            if obj.get("revoked") or obj.get("x_mitre_deprecated"):
                other["deprecated"] = True
            elsewhere[tid] = other
            continue
        row: dict[str, Any] = {
            "id": tid, "name": obj["name"],
            "tactics": [p["phase_name"] for p in obj.get("kill_chain_phases", ())
                        if p.get("kill_chain_name") == "mitre-attack"],
            "platforms": sorted(p for p in plats if p in platforms),
        }
        if obj.get("revoked"):
            row["revoked"] = True
            row["replaced_by"] = successor(stix_id)
        if obj.get("x_mitre_deprecated"):
            row["deprecated"] = True
        rows.append(row)
    rows.sort(key=lambda r: _id_key(r["id"]))
    return {
        "source": f"MITRE ATT&CK Enterprise v{version} (STIX 2.1, enterprise-attack-{version}.json): "
                  f"techniques and sub-techniques whose platforms include {' or '.join(platforms)}",
        "attack_version": version,
        "platforms": list(platforms),
        "techniques": rows,
        "elsewhere": {k: elsewhere[k] for k in sorted(elsewhere, key=_id_key)},
    }


def _id_key(tid: str) -> tuple[int, int]:
    base, _, sub = tid[1:].partition(".")
    return int(base), int(sub or 0)


def dump_table(table: Mapping[str, Any]) -> str:
    """techniques.json text: one technique per line, so a new ATT&CK release diffs well."""
    head = {k: v for k, v in table.items() if k not in ("techniques", "elsewhere")}
    lines = ["{"]
    lines += [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    lines.append('  "techniques": [')
    rows = [f"    {json.dumps(t, ensure_ascii=False)}" for t in table["techniques"]]
    lines.append(",\n".join(rows))
    lines.append("  ],")
    lines.append('  "elsewhere": {')
    other = [f"    {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
             for k, v in table.get("elsewhere", {}).items()]
    lines.append(",\n".join(other))
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.core.mitre",
                                     description="rebuild harness/schemas/techniques.json")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="from an Enterprise ATT&CK STIX 2.1 bundle")
    build.add_argument("bundle", type=Path, help="enterprise-attack-<version>.json")
    build.add_argument("--version", required=True, help="the ATT&CK release, e.g. 18.1")
    build.add_argument("--out", type=Path, help="default: stdout")
    args = parser.parse_args(argv)
    try:
        bundle = json.loads(args.bundle.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"{args.bundle}: cannot read the STIX bundle: {exc}", file=sys.stderr)
        return 1
    text = dump_table(build_table(bundle.get("objects", ()), args.version))
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
