"""The built-in catalogue, shipped in the wheel: ``scenarios/``, ``atomic/`` and the atomics'
helpers in ``atomic/bin/``. Configuration names it ``builtin`` (``scenarios = ["builtin"]``);
its atomics are always available to every project's scenarios, after the project's own."""

from __future__ import annotations

from pathlib import Path

NAME = "builtin"
BUILTIN = Path(__file__).resolve().parent
SCENARIOS = BUILTIN / "scenarios"
ATOMICS = BUILTIN / "atomic"

__all__ = ["ATOMICS", "BUILTIN", "NAME", "SCENARIOS"]
