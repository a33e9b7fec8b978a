"""End-to-end helpers: a scenario catalogue in tmp_path and the real ``shadowtest`` CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.builtin import BUILTIN

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Catalog:
    root: Path

    def scenario(self, tactic: str, sid: str, text: str) -> Path:
        path = self.root / "scenarios" / tactic / f"{sid}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def atomic(self, aid: str, text: str) -> Path:
        path = self.root / "atomic" / f"{aid}.yaml"
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def config(self, text: str) -> None:
        (self.root / "shadowtest.toml").write_text(textwrap.dedent(text).lstrip())

    def run(self, *args: str, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness", *args], cwd=self.root, capture_output=True,
            text=True, timeout=timeout, check=False, env={**os.environ, **(env or {})},
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "harness", *args], cwd=self.root, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )

    def rows(self, name: str = "results.jsonl") -> list[dict[str, Any]]:
        path = self.root / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


DEFAULT_CONFIG = """
[tool.shadowtest]
scenarios = ["scenarios"]
atomics = ["atomic"]
allowed_nodes = ["local"]
window = "5s"

[tool.shadowtest.nodes.local]
url = "local://"

[tool.shadowtest.sensors.auditd]
type = "auditd"

[tool.shadowtest.sensors.bpftrace]
type = "bpftrace"
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    """The bundled atomics (with atomic/bin) and an empty scenarios/ tree."""
    shutil.copytree(BUILTIN / "atomic", tmp_path / "atomic")
    (tmp_path / "scenarios").mkdir()
    cat = Catalog(tmp_path)
    cat.config(DEFAULT_CONFIG)
    return cat


def verdicts(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    return {(r["scenario"], r["context"], r["sensor"]): r["verdict"] for r in rows}


def leftovers() -> dict[str, list[str]]:
    """What a run may leave behind on this node; every list must be empty after a run."""
    ps = subprocess.run(["ps", "-eo", "pid=,comm=,args="], capture_output=True, text=True,
                        check=True).stdout
    procs = [ln.strip() for ln in ps.splitlines()
             if any(k in ln for k in (" bpftrace ", " auditd ", "_stagerunner.py", " unshare "))]
    cg = Path("/sys/fs/cgroup/unified/shadowtest")
    rules = subprocess.run(["auditctl", "-l"], capture_output=True, text=True, check=False).stdout
    return {
        "etc_files": sorted(str(p) for p in Path("/etc").glob("shadowtest-*")),
        "processes": procs,
        "cgroups": sorted(str(p) for p in cg.iterdir() if p.is_dir()) if cg.is_dir() else [],
        "audit_rules": [ln for ln in rules.splitlines() if "-k T1" in ln or "shadowtest" in ln],
    }


NOTHING_LEFT: dict[str, list[str]] = {"etc_files": [], "processes": [], "cgroups": [],
                                      "audit_rules": []}


@pytest.fixture
def clean_node() -> Callable[[], dict[str, list[str]]]:
    """Asserts the node is clean before the test, and gives the check for after."""
    before = leftovers()
    assert before == NOTHING_LEFT, f"node not clean before the test: {before}"
    return leftovers
