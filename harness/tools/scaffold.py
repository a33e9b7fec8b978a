"""``shadowtest init``: scaffold a project that uses shadowtest (config, one example
scenario + atomic + helper, CI jobs for GitHub Actions and GitLab CI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.builtin import BUILTIN

TEMPLATES = BUILTIN / "project"
# template file (under harness/builtin/project) -> where it goes in the project
FILES = {
    "shadowtest.toml": "shadowtest.toml",
    "scenarios/credential-access/example-shadow-read.yaml":
        "scenarios/credential-access/example-shadow-read.yaml",
    "atomic/example-shadow-read.yaml": "atomic/example-shadow-read.yaml",
    "atomic/bin/read_one_byte.py": "atomic/bin/read_one_byte.py",
    "github-workflow.yml": ".github/workflows/shadowtest.yml",
    "gitlab-ci.yml": ".gitlab-ci.yml",
}


def scaffold(root: Path, force: bool = False) -> tuple[list[Path], list[Path], list[Path]]:
    """Write the project files under ``root``: (written, unchanged, kept). A file that
    exists with other content is kept unless ``force`` (idempotent: a second run writes
    nothing)."""
    written: list[Path] = []
    unchanged: list[Path] = []
    kept: list[Path] = []
    for src, dst in FILES.items():
        text = (TEMPLATES / src).read_bytes()
        path = root / dst
        if path.exists():
            if path.read_bytes() == text:
                unchanged.append(path)
                continue
            if not force:
                kept.append(path)
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
        written.append(path)
    return written, unchanged, kept


def add_parser(sub: Any) -> None:
    """Add ``init`` to the CLI's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "init", help="scaffold a project: shadowtest.toml, an example scenario and atomic, "
                     "CI jobs (GitHub Actions, GitLab CI)")
    p.add_argument("directory", nargs="?", type=Path, default=Path(),
                   help="the project's directory (default: the current one)")
    p.add_argument("--force", action="store_true",
                   help="overwrite files that exist with other content")


def run(args: argparse.Namespace) -> int:
    root: Path = args.directory
    root.mkdir(parents=True, exist_ok=True)
    written, unchanged, kept = scaffold(root, args.force)
    for path in written:
        print(f"wrote {path}")
    for path in unchanged:
        print(f"up to date {path}")
    for path in kept:
        print(f"kept {path}: it exists with other content (--force overwrites it)",
              file=sys.stderr)
    print("next: review allowed_nodes in shadowtest.toml, then, as root: shadowtest run")
    return 1 if kept else 0
