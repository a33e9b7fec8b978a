"""Files generated from a table and committed (the bundled bpftrace programs, the compiled
sensor's C): the staleness check and the ``[--check]`` command line their generators share."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Outputs = Callable[[], Mapping[Path, str]]


def stale(outputs: Outputs) -> list[Path]:
    """Generated files whose committed text differs from what the table generates (a
    missing one counts)."""
    return [p for p, text in outputs().items()
            if not p.exists() or p.read_text(encoding="utf-8") != text]


def main(outputs: Outputs, command: str, description: str,
         argv: Sequence[str] | None = None) -> int:
    """Write every generated file, or with ``--check`` write nothing and exit 1 when one is
    stale (naming it and the command that regenerates it)."""
    parser = argparse.ArgumentParser(prog=command, description=description)
    parser.add_argument("--check", action="store_true",
                        help="do not write: exit 1 if a generated file is stale")
    args = parser.parse_args(argv)
    if args.check:
        old = stale(outputs)
        for path in old:
            print(f"stale: {path} (regenerate: {command})", file=sys.stderr)
        return 1 if old else 0
    for path, text in outputs().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0
