"""The ATT&CK technique table shipped with shadowtest, and technique id checks."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

TECHNIQUE_ID = re.compile(r"^T\d{4}(\.\d{3})?$")


@dataclass(frozen=True, slots=True)
class Technique:
    id: str
    name: str
    tactics: tuple[str, ...]
    deprecated: bool = False
    replaced_by: str | None = None


@cache
def techniques() -> dict[str, Technique]:
    raw = json.loads(files("harness").joinpath("schemas/techniques.json").read_text("utf-8"))
    return {
        t["id"]: Technique(
            t["id"], t["name"], tuple(t["tactics"]), t.get("deprecated", False),
            t.get("replaced_by"),
        )
        for t in raw["techniques"]
    }


def check_technique(value: str) -> str | None:
    """None when ``value`` is a current technique id; else what is wrong and how to fix."""
    if not TECHNIQUE_ID.match(value):
        return f"expected an ATT&CK id like T1611 or T1055.008, got {value!r}"
    known = techniques().get(value)
    if known is None:
        return (
            f"{value} is not in shadowtest's technique table (harness/schemas/techniques.json); "
            "check the id or add it to the table"
        )
    if known.deprecated:
        return f"{value} ({known.name}) is deprecated in ATT&CK; use {known.replaced_by}"
    return None
