"""diff and parity end to end, as root, with the real auditd and bpftrace and the real CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.builtin import BUILTIN
from tests.e2e.conftest import REPO, Catalog

pytestmark = pytest.mark.node

SCENARIOS = {"ptrace-pid1": "privilege-escalation", "etc-write": "persistence",
             "container-escape-setns": "privilege-escalation", "read-etc-hostname": "discovery"}
PTRACE_RULE = "/* ---------------------------------------------------------------- ptrace */"
NEXT_RULE = "/* ----------------------------------------------------------------- setns */"


def _copy_scenarios(catalog: Catalog) -> None:
    for path in (BUILTIN / "scenarios").rglob("*.yaml"):
        if path.stem in SCENARIOS:
            dest = catalog.root / "scenarios" / path.parent.name / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)


def _programs(catalog: Catalog) -> tuple[Path, Path]:
    """The bundled sensor.bt, and a copy without its ptrace-pid1 rule."""
    text = (REPO / "harness/sensors/bpftrace/sensor.bt").read_text()
    head, _, rest = text.partition(PTRACE_RULE)
    _, _, tail = rest.partition(NEXT_RULE)
    assert head, "sensor.bt layout changed: update PTRACE_RULE"
    assert tail, "sensor.bt layout changed: update NEXT_RULE"
    full = catalog.root / "full.bt"
    full.write_text(text)
    reduced = catalog.root / "no-ptrace.bt"
    reduced.write_text(head + NEXT_RULE + tail)
    return full, reduced


def _config(catalog: Catalog, program: Path, record: str) -> None:
    catalog.config(f"""
        [tool.shadowtest]
        allowed_nodes = ["local"]
        [tool.shadowtest.nodes.local]
        url = "local://"
        [tool.shadowtest.sensors.auditd]
        type = "auditd"
        [tool.shadowtest.sensors.bpftrace]
        type = "bpftrace"
        program = "{program}"
        record = "{record}"
    """)


def test_diff_reports_exactly_the_removed_bpftrace_rule(catalog: Catalog) -> None:
    _copy_scenarios(catalog)
    full, reduced = _programs(catalog)
    _config(catalog, full, "b1.jsonl")
    first = catalog.run("run", "--results", "before.jsonl")
    assert first.returncode == 0, first.stdout + first.stderr
    _config(catalog, reduced, "b2.jsonl")
    second = catalog.run("run", "--results", "after.jsonl")
    assert second.returncode == 1, second.stdout
    res = catalog.run("diff", "before.jsonl", "after.jsonl", "--json", "diff.json",
                      "--markdown", "diff.md")
    assert res.returncode == 1, res.stdout + res.stderr
    out = json.loads((catalog.root / "diff.json").read_text())
    kernel = os.uname().release
    assert [(r["scenario"], r["context"], r["kernel"], r["sensor"], r["kind"])
            for r in out["regressions"]] == [
        ("ptrace-pid1", "namespace", kernel, "bpftrace", "DETECTED->MISSED")]
    assert (out["sensor_down"], out["only_baseline"], out["only_current"]) == ([], [], [])
    changes = {c["sensor"]: c for c in out["rulepack_changes"]}
    assert set(changes) == {"bpftrace"}  # auditd's rules did not change
    assert changes["bpftrace"]["baseline"][0].startswith("file-digest full.bt")
    assert changes["bpftrace"]["current"][0].startswith("file-digest no-ptrace.bt")
    assert "REGRESSION   ptrace-pid1[namespace]" in res.stdout
    # a third run against the second as baseline: the same MISSED is known, not failed
    third = catalog.run("run", "--results", "again.jsonl", "--", "--shadowtest-baseline", "after.jsonl")
    assert third.returncode == 0, third.stdout + third.stderr
    assert not list(Path("/etc").glob("shadowtest-*"))


def test_parity_gate_auditd_incumbent_bpftrace_candidate(catalog: Catalog) -> None:
    _copy_scenarios(catalog)
    full, reduced = _programs(catalog)
    gate = ("--incumbent", "results:{}#auditd", "--candidate", "bpftrace", "--keys", "node,technique",
            "--severity", "any", "--gate", "0.95", "--tolerance", "2s")
    _config(catalog, full, "full.jsonl")
    assert catalog.run("run", "--results", "r1.jsonl").returncode == 0
    res = catalog.run("parity", *(a.format("r1.jsonl") for a in gate), "--out", "p1")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((catalog.root / "p1/parity.json").read_text())
    assert {r["rule"]: r["parity"] for r in report["rules"]} == {
        "T1055.008": 1.0, "T1098": 1.0, "T1611": 1.0}
    assert report["totals"]["max_abs_dt_ms"] <= 2000
    assert (catalog.root / "p1/parity.md").read_text().count("| yes | yes |") == 3

    _config(catalog, reduced, "reduced.jsonl")
    assert catalog.run("run", "--results", "r2.jsonl").returncode == 1
    res = catalog.run("parity", *(a.format("r2.jsonl") for a in gate), "--out", "p2")
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads((catalog.root / "p2/parity.json").read_text())
    rules = {r["rule"]: r for r in report["rules"]}
    assert rules["T1055.008"]["parity"] == 0.0
    assert rules["T1098"]["parity"] == 1.0
    assert report["gate"]["rules_below"] == ["T1055.008"]
    assert [u["rule"] for u in report["unmatched_incumbent"]] == ["T1055.008"]
