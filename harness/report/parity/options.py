"""``shadowtest parity``'s options: exit codes, defaults, durations and the gate's settings
(the command line over ``[tool.shadowtest.parity]`` over ``DEFAULTS``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.report.parity.frame import SEVERITY_RANK

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_EMPTY = 0, 1, 2, 3
DEFAULTS: dict[str, Any] = {"engine": "duckdb", "keys": "node,technique", "tolerance": "2s",
                            "gate": 0.95, "severity": "critical,high", "window": "30d"}
LISTED = 100
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>us|ms|s|m|h|d|w)\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


@dataclass(frozen=True)
class Options:
    keys: tuple[str, ...]
    tolerance_us: int
    gate: float
    severities: tuple[str, ...]  # empty: every rule (also unrated ones)
    listed: int = LISTED


def seconds(text: str, what: str) -> float:
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{what}: expected a duration like 2s, 500ms, 14d or 30d, got {text!r}")
    return float(m["n"]) * _UNITS[m["unit"]]


def options(pick: Mapping[str, Any]) -> Options:
    """Options from the command line over ``[tool.shadowtest.parity]`` over the defaults."""
    keys = tuple(k.strip() for k in str(pick["keys"]).split(",") if k.strip())
    sev = tuple(s.strip().lower() for s in str(pick["severity"]).split(",") if s.strip())
    unknown = [s for s in sev if s not in (*SEVERITY_RANK, "any")]
    if unknown:
        raise ValueError(f"--severity {','.join(unknown)}: expected any or some of "
                         f"{', '.join(SEVERITY_RANK)}")
    gate = float(pick["gate"])
    if not 0.0 <= gate <= 1.0:
        raise ValueError(f"--gate {gate}: expected a fraction from 0 to 1, e.g. 0.95")
    return Options(keys, round(seconds(str(pick["tolerance"]), "--tolerance") * 1e6), gate,
                   () if "any" in sev else sev)
