"""The compiled reference sensor (type ``libbpf``) on this node, for real: built by
ci/libbpf-sensor.sh, loaded with libbpf, run beside bpftrace on the bundled catalogue.

Both run the same rule table (sensors/bpftrace/rules.py), so on every (scenario, context)
the compiled sensor must give bpftrace's verdict and rule — while both are judged by the
scenarios' bpftrace expectations (``expect_as``), whose outcome the run's exit code states.
A harness killed with SIGKILL leaves no loader and no BPF program behind."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.builtin import BUILTIN
from harness.sensors.libbpf import SOURCES
from tests.e2e.conftest import NOTHING_LEFT, Catalog, Leftovers, leftovers, snapshot

pytestmark = pytest.mark.node

BOTH = """
[tool.shadowtest]
scenarios = ["scenarios"]
atomics = ["atomic"]
allowed_nodes = ["local"]
window = "5s"

[tool.shadowtest.nodes.local]
url = "local://"

[tool.shadowtest.sensors.bpftrace]
type = "bpftrace"

[tool.shadowtest.sensors.libbpf]
type = "libbpf"
"""


def _programs() -> set[str]:
    """Names of the BPF programs loaded on this machine."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=False).stdout
    return {p.get("name", "") for p in json.loads(out or "[]")}


def _loaders() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "shadowtest-sensor --object"], capture_output=True,
                         text=True, check=False).stdout
    return [ln for ln in out.splitlines() if "pgrep" not in ln]


def test_compiled_sensor_gives_bpftrace_verdicts_on_the_bundled_catalogue(
        catalog: Catalog, clean_node: Callable[[], Leftovers]) -> None:
    shutil.rmtree(catalog.root / "scenarios")
    shutil.copytree(BUILTIN / "scenarios", catalog.root / "scenarios")
    catalog.config(BOTH)
    res = catalog.run("run", "--results", "results.jsonl", timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    rows = catalog.rows()
    by = {(r["scenario"], r["context"], r["sensor"]): r for r in rows}
    keys = {(s, c) for s, c, _ in by}
    assert {sensor for _, _, sensor in by} == {"bpftrace", "libbpf"}
    differ = [(s, c, by[s, c, "bpftrace"]["verdict"], by[s, c, "libbpf"]["verdict"],
               by[s, c, "bpftrace"]["rule"], by[s, c, "libbpf"]["rule"])
              for s, c in sorted(keys)
              if (by[s, c, "bpftrace"]["verdict"], by[s, c, "bpftrace"]["rule"])
              != (by[s, c, "libbpf"]["verdict"], by[s, c, "libbpf"]["rule"])]
    assert differ == []
    compiled = [r for r in rows if r["sensor"] == "libbpf"]
    detected = [r for r in compiled if r["verdict"] == "DETECTED"]
    assert len(detected) >= 30, [(r["scenario"], r["verdict"]) for r in compiled]
    assert all(r["expected"] == by[r["scenario"], r["context"], "bpftrace"]["expected"]
               for r in compiled)  # judged by bpftrace's expect blocks
    assert {Path(f["path"]).name for f in compiled[0]["rulepack"]["files"]} == {
        p.name for p in SOURCES}
    assert clean_node() == NOTHING_LEFT
    assert _loaders() == []


def test_sigkill_leaves_no_loader_and_no_bpf_program(catalog: Catalog) -> None:
    shutil.rmtree(catalog.root / "scenarios")
    shutil.copytree(BUILTIN / "scenarios", catalog.root / "scenarios")
    catalog.config(BOTH.replace('[tool.shadowtest.sensors.bpftrace]\ntype = "bpftrace"\n', ""))
    before = snapshot()
    programs_before = _programs()
    proc = catalog.popen("run", "--results", "results.jsonl")
    try:
        deadline = time.monotonic() + 120
        while not (catalog.root / "results.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # a row: the sensor is up and runs are judged
        assert _loaders(), "the loader is not running while rows are written"
        assert "st_openat" in _programs()
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
    def ours() -> set[str]:  # the kernel frees a program once its last fd is closed (deferred)
        return {p for p in _programs() - programs_before if p.startswith("st_")}

    deadline = time.monotonic() + 150  # the reaper's grace for the run cgroup, then cleanup
    left = leftovers(before, catalog.owner)
    while (left != NOTHING_LEFT or _loaders() or ours()) and time.monotonic() < deadline:
        time.sleep(0.5)
        left = leftovers(before, catalog.owner)
    assert _loaders() == []
    assert ours() == set()
    assert left == NOTHING_LEFT
