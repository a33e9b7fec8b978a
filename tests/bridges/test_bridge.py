"""The bpftrace bridge's pure parts, offline: what it emits is what the adapters read, and a
sensor.bt rule it has no product mapping for is skipped, never fatal."""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.core.correlate import correlate
from harness.core.run import Run
from harness.sensors.falco import FalcoSensor
from tests.bridges.bpftrace_bridge import Bridge

DETECTION: dict[str, Any] = {
    "kind": "detection", "rule": "ptrace-pid1", "technique": "T1055.008", "severity": "high",
    "pid": 4242, "tid": 4242, "ppid": 4241, "ancestors": [4240, 4200, 1, 0, 0, 0],
    "comm": "python3", "cgroup": 1, "wall_ns": 1_796_656_000_000_000_000,
}


def _bridge(**kw: Any) -> Bridge:
    args = argparse.Namespace(falco_url=None, tetragon_file=None, sysdig_url=None,
                              crowdstrike_url=None, **kw)
    return Bridge(args)


def test_bridge_skips_a_rule_it_has_no_product_mapping_for() -> None:
    _bridge().emit({**DETECTION, "rule": "cron-write"})  # no KeyError: nothing emitted


def test_bridge_falco_alert_carries_the_readme_append_output_ancestry() -> None:
    alert = _bridge().falco(DETECTION, None, DETECTION["wall_ns"])
    det = FalcoSensor(path="x").normalise(alert)
    assert det is not None
    assert (det.pid, det.ppid, det.ancestors) == (4242, 4241, (4240, 4200, 1))


def test_bridge_falco_alert_correlates_by_process_tree_outside_containers() -> None:
    alert = _bridge().falco(DETECTION, None, DETECTION["wall_ns"])
    det = FalcoSensor(path="x").normalise(alert)
    assert det is not None
    run = Run(run_id="st000000000004", scenario="s", context="host", node="n", started_at=0,
              ended_at=1, executed=True, pids=frozenset({4200}))
    assert correlate(run, det) == "process_tree"


def test_bridge_metrics_snapshots_prove_no_loss_to_the_falco_adapter() -> None:
    bridge = _bridge()
    sensor = FalcoSensor(path="x")
    sensor.on_line(json.dumps(bridge.metrics_snapshot()))
    sensor.on_line(json.dumps(bridge.metrics_snapshot()))
    assert (sensor.stream.lost, sensor.loss.stretches) == (0, [])
