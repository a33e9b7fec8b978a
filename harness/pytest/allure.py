"""allure-pytest integration: ATT&CK labels, matrix parameters and evidence attachments on
each scenario test. Active only when allure-pytest is installed and ``--alluredir`` given;
importable without allure.

Per test: epic = tactic, feature = technique (id and name), story = scenario id, a tag per
sensor, severity from the expectations; parameters kernel, node and context (they enter
allure's historyId, so a kernel matrix merged into one report keeps one result per
(scenario, context, node, kernel) instead of collapsing them into retries) and run_id
(excluded from the historyId: it changes every run); attachments: the run record, the
matched detections and the near misses (JSON).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import pytest

from harness.core.expectation import resolve
from harness.core.mitre import techniques
from harness.core.secrets import redact

if TYPE_CHECKING:
    from harness.core.scenario import Scenario
    from harness.engine.execute import Outcome



def _load_allure() -> Any:
    """allure's API module, or None: the plugin works without allure (partly typed: Any)."""
    try:
        return importlib.import_module("allure")
    except ImportError:  # pragma: no cover - allure-pytest is a dependency, but optional here
        return None


allure: Any = _load_allure()

PLUGIN_NAME = "shadowtest-allure"

#: product severities (Falco priorities, Sysdig/CrowdStrike levels, syslog names) to
#: allure's five levels, highest first; unknown names are not mapped (no label)
SEVERITY = {
    "emergency": "blocker", "alert": "blocker",
    "critical": "critical", "high": "critical", "error": "critical",
    "medium": "normal", "warning": "normal", "moderate": "normal",
    "low": "minor", "notice": "minor",
    "informational": "trivial", "info": "trivial", "debug": "trivial",
}
_RANK = ["blocker", "critical", "normal", "minor", "trivial"]


def enabled(config: pytest.Config) -> bool:
    """allure-pytest is importable and writing results (``--alluredir``)."""
    return allure is not None and bool(getattr(config.option, "allure_report_dir", None))


def register(config: pytest.Config) -> None:
    """Register the hook implementation when allure is active (called at configure)."""
    if enabled(config) and not config.pluginmanager.has_plugin(PLUGIN_NAME):
        config.pluginmanager.register(AllureReporter(), PLUGIN_NAME)


def severity_of(scenario: Scenario, sensors: list[str]) -> str | None:
    """The highest allure severity among the sensors' expected severities (scalars only:
    an operator such as ``{prefix: ...}`` names no single level)."""
    found = []
    for sensor in sensors:
        expected = resolve(scenario, sensor).severity
        if isinstance(expected, str) and expected.lower() in SEVERITY:
            found.append(SEVERITY[expected.lower()])
    return min(found, key=_RANK.index) if found else None


def feature_of(technique: str | None) -> str:
    if not technique:
        return "benign control"
    known = techniques().get(technique)
    return f"{technique} {known.name}" if known else technique


def evidence(outcome: Outcome) -> dict[str, Any]:
    """The run record, the matched detections and the near misses, JSON-ready and redacted."""
    run = outcome.run
    record = asdict(run)
    record["pids"] = sorted(run.pids)
    record["judgements"] = [
        {"sensor": j.sensor, "verdict": j.verdict.value, "reason": j.reason,
         "latency_ms": j.latency_ms, "correlated_by": j.correlated_by,
         "health": asdict(outcome.health[j.sensor]) if j.sensor in outcome.health else None}
        for j in outcome.judgements
    ]
    matched = {j.sensor: {**j.detection.summary(), "correlated_by": j.correlated_by,
                          "latency_ms": j.latency_ms, "severity": j.detection.severity,
                          "action": j.detection.action, "fields": j.detection.fields}
               for j in outcome.judgements if j.detection is not None}
    near = {j.sensor: [{"detection": n.detection.summary(), "correlated_by": n.correlated_by,
                        "mismatches": [{"field": m.field, "expected": m.expected, "got": m.got}
                                       for m in n.mismatches]}
                       for n in j.near_misses]
            for j in outcome.judgements if j.near_misses}
    out: dict[str, Any] = json.loads(redact(json.dumps(
        {"run": record, "detections": matched, "near_misses": near}, default=str)))
    return out


class AllureReporter:
    """Adds labels, parameters and attachments to the allure result of each scenario test."""

    @pytest.hookimpl
    def pytest_shadowtest_run_finished(self, item: pytest.Item, outcome: Outcome) -> None:
        from harness.pytest.collect import SCENARIO

        if allure is None or SCENARIO not in item.stash:
            return
        scenario, context, node = item.stash[SCENARIO]
        sensors = [j.sensor for j in outcome.judgements]
        kernel = str(outcome.run.facts.get("kernel") or "unknown")
        dyn = allure.dynamic
        dyn.epic(scenario.tactic)
        dyn.feature(feature_of(scenario.technique))
        dyn.story(scenario.id)
        dyn.tag(*sensors)
        if (level := severity_of(scenario, sensors)) is not None:
            dyn.severity(allure.severity_level(level))
        dyn.parameter("kernel", kernel)
        dyn.parameter("node", node)
        dyn.parameter("context", context)
        dyn.parameter("run_id", outcome.run.run_id, excluded=True)
        for j in outcome.judgements:
            dyn.parameter(f"{j.sensor} verdict", j.verdict.value, excluded=True)
        ev = evidence(outcome)
        json_type = allure.attachment_type.JSON
        allure.attach(json.dumps(ev["run"], indent=2), name="run record", attachment_type=json_type)
        allure.attach(json.dumps(ev["detections"], indent=2), name="matched detections",
                      attachment_type=json_type)
        allure.attach(json.dumps(ev["near_misses"], indent=2), name="near misses",
                      attachment_type=json_type)
