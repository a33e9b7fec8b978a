"""The terminal summary and the scenario x kernel x sensor grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.report.results import read_rows
from harness.report.sortkey import natural_key
from harness.report.summary import build_grid, failing, render

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results" / "matrix.jsonl"


def row(**kw: Any) -> dict[str, Any]:
    base = {"scenario": "ptrace-pid1", "context": "host", "node": "n1", "kernel": "6.1.0",
            "sensor": "auditd", "verdict": "DETECTED", "latency_ms": 12.0, "reason": "",
            "tactic": "privilege-escalation"}
    return {**base, **kw}


def test_natural_key_orders_kernel_releases() -> None:
    kernels = ["6.12.9", "5.10.0-28-amd64", "6.1.0", "5.4.0"]
    assert sorted(kernels, key=natural_key) == ["5.4.0", "5.10.0-28-amd64", "6.1.0", "6.12.9"]


def test_build_grid_rows_columns_and_cells() -> None:
    rows = [row(), row(kernel="5.10.0", sensor="falco", verdict="MISSED", latency_ms=None),
            row(context="namespace"), row(node="n2", verdict="MISSED", latency_ms=None)]
    grid = build_grid(rows)
    assert grid.rows == [("ptrace-pid1", "host"), ("ptrace-pid1", "namespace")]
    assert grid.columns == [("5.10.0", "falco"), ("6.1.0", "auditd")]
    assert [r["node"] for r in grid.cell("ptrace-pid1", "host", "6.1.0", "auditd")] == ["n1", "n2"]
    assert grid.nodes("ptrace-pid1", "host", "6.1.0") == {"n1", "n2"}
    assert grid.cell("ptrace-pid1", "namespace", "5.10.0", "falco") == []


def test_render_prints_grid_with_short_verdicts_latency_and_nodes() -> None:
    out = render([row(), row(node="n2", verdict="MISSED", latency_ms=None)], width=200)
    assert "shadowtest verdicts by kernel, then sensor" in out
    assert "shadowtest scenario x kernel x sensor" in out
    assert "DET 12 ms n1" in out
    assert "MISS n2" in out
    assert "DET=DETECTED" in out


def test_render_splits_grid_per_kernel_when_too_wide() -> None:
    rows = list(read_rows(RESULTS))
    wide = render(rows, width=400)
    narrow = render(rows, width=120)
    assert "scenario x kernel x sensor" in wide
    assert "scenario x sensor on kernel" not in wide
    for kernel in ("5.10.0-28-amd64", "6.1.0-18-amd64", "6.12.9-cloud"):
        assert f"scenario x sensor on kernel {kernel}" in narrow
    assert "…" not in narrow  # nothing truncated


def test_failing_counts_missed_unexpected_sensor_down_raced_only() -> None:
    assert failing([row(verdict="SENSOR_DOWN")])
    assert failing([row(verdict="RACED")])  # the kill landed after the side effect
    assert not failing([row(verdict="NOT_EXECUTED"), row(verdict="BLOCKED"), row(verdict="CLEAN")])
