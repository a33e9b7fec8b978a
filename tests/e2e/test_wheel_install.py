"""Installed as users install it: the wheel of this checkout in a clean virtualenv, then
``shadowtest --help``, ``shadowtest init`` in an empty directory and ``shadowtest run``
there — the example scenario and the built-in catalogue against this node with auditd and
bpftrace. Nothing of the checkout is on the path: what runs is what the wheel ships."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.builtin import BUILTIN
from harness.core.scenario import check_scenario, load_atomics, scenario_files
from harness.tools.scaffold import FILES

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.node


def _env() -> dict[str, str]:
    """A user's environment: no project path, no pytest or shadowtest variables."""
    drop = ("PYTHONPATH", "PYTEST_", "SHADOWTEST_", "VIRTUAL_ENV", "COV_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _sh(*argv: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv with the wheel of this checkout (locked dependency versions)."""
    root = tmp_path_factory.mktemp("wheel")
    built = _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "dist",
                REPO, cwd=root)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("shadowtest-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"harness/builtin/{p.relative_to(BUILTIN).as_posix()}"
               for p in BUILTIN.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped - names == set()  # every scenario, atomic, helper and template
    venv = root / "venv"
    assert _sh(sys.executable, "-m", "venv", venv, cwd=root).returncode == 0
    pip = _sh(venv / "bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
              "-c", REPO / "ci/constraints.txt", wheel, cwd=root)
    assert pip.returncode == 0, pip.stderr
    return venv


def test_help_lists_every_command(installed: Path, tmp_path: Path) -> None:
    res = _sh(installed / "bin/shadowtest", "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for command in ("run", "validate", "init", "report", "diff", "parity", "rejudge", "coverage"):
        assert command in res.stdout
    where = _sh(installed / "bin/python", "-c", "import harness; print(harness.__file__)",
                cwd=tmp_path)
    assert str(installed) in where.stdout  # the wheel's copy, not the checkout's


def test_init_then_run_in_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    init = _sh(installed / "bin/shadowtest", "init", cwd=project)
    assert init.returncode == 0, init.stderr
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == \
        sorted(FILES.values())
    valid = _sh(installed / "bin/shadowtest", "validate", cwd=project)
    assert valid.returncode == 0, valid.stderr
    run = _sh(installed / "bin/shadowtest", "run", cwd=project, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    rows = [json.loads(line) for line in (project / "results.jsonl").read_text().splitlines()]
    got = {(r["scenario"], r["context"], r["sensor"]): r["verdict"] for r in rows}
    # the example: detected by both sensors in both contexts
    for context in ("host", "namespace"):
        for sensor in ("auditd", "bpftrace"):
            assert got[("example-shadow-read", context, sensor)] == "DETECTED", out[-4000:]
    # the built-in catalogue: a row per scenario, context and sensor
    atomics, _ = load_atomics([BUILTIN / "atomic"])
    expected = set()
    for path in scenario_files([BUILTIN / "scenarios"]):
        _, scenario = check_scenario(path, atomics)
        assert scenario is not None
        expected |= {(scenario.id, c, s) for c in scenario.contexts for s in ("auditd", "bpftrace")}
    assert expected - set(got) == set()
    assert "shadowtest verdicts by kernel, then sensor" in run.stdout
