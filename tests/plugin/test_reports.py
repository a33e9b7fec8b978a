"""Allure results and JUnit XML properties of real scenario runs, through pytester.

No attack and no root: the atomic appends "<run id> <technique> <rule>" to a file in the
test's tmp dir (host context), and ``filefake`` is a sensor that reads that file when
asked to sync: one scenario it DETECTS, one it MISSES (its rule differs: a near miss).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from allure_commons.utils import md5

from harness.sensors import base

QUIET = ("--shadowtest", "-W", "ignore::pytest.PytestAssertRewriteWarning", "-p", "no:cacheprovider")

FAKE_SENSOR = '''
import time
from pathlib import Path
from harness.core.detection import Detection
from harness.sensors.base import DetectionStream, SensorBase
from harness.core.health import Health


class FileSensor(SensorBase):
    """Detections from lines "<run id> <technique> <rule>" of a file, read at each sync."""

    NAME = "filefake"

    def __init__(self, name="filefake", path=None, node=None):
        self.name, self.path, self.node = name, path, node
        self.stream = DetectionStream(name)
        self.delay = 0.0
        self._read = 0
        self._syncs = 0

    def start(self):
        pass

    def stop(self):
        pass

    def health(self):
        return Health(True)

    def sync(self):
        try:
            lines = Path(self.path).read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines[self._read:]:
            run_id, technique, rule = line.split()
            now = time.time()
            self.stream.push(Detection(sensor=self.name, rule=rule, technique=(technique,),
                                       severity="critical", names=(run_id,), pid=1234,
                                       comm="sh", observed_at=now, received_at=now))
        self._read = len(lines)
        self._syncs += 1
        token = f"sync-{self._syncs}"
        self.stream.mark(token)
        return token

    def normalise(self, raw):
        return None
'''

ATOMIC = """
id: append-event
name: Append an event line
description: Appends one line naming the run to a file the fake sensor reads.
technique: T1611
supported_platforms: [linux]
touches:
  - {kind: file, what: "#{out} (one line appended)"}
input_arguments:
  out: {description: the events file, type: string, default: events.txt}
  rule: {description: the rule the fake sensor reports, type: string, default: escape}
executor:
  name: sh
  command: "printf '%s T1611 %s\\\\n' #{run_id} #{rule} >> #{out} && echo done"
  timeout: 5s
proof:
  stdout: done
"""

SCENARIO = """
id: {sid}
name: {sid}
description: fake escape, judged by the file sensor
technique: T1611
atomic: append-event
contexts: [host]
window: 2s
arguments: {{out: "{out}", rule: {rule}}}
expect:
  filefake: {{rule: escape, severity: critical}}
"""


def make_catalog(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = pytester.path
    events = root / "events.txt"
    pytester.makepyfile(fakesensor=FAKE_SENSOR)
    pytester.syspathinsert()
    monkeypatch.setitem(base.BUILTIN, "filefake", "fakesensor:FileSensor")
    (root / "atomic").mkdir()
    (root / "atomic" / "append-event.yaml").write_text(ATOMIC.lstrip())
    tactic = root / "scenarios" / "privilege-escalation"
    tactic.mkdir(parents=True)
    for sid, rule in (("fake-escape", "escape"), ("fake-escape-missed", "other-rule")):
        (tactic / f"{sid}.yaml").write_text(SCENARIO.format(sid=sid, out=events, rule=rule).lstrip())
    pytester.makefile(".toml", shadowtest="""
        [tool.shadowtest]
        scenarios = ["scenarios"]
        atomics = ["atomic"]
        allowed_nodes = ["local"]
        [tool.shadowtest.nodes.local]
        url = "local://"
        [tool.shadowtest.sensors.filefake]
        type = "filefake"
        path = "{events}"
    """.replace("{events}", str(events)))
    return root


def parse_junit(path: Path) -> ET.ElementTree[ET.Element]:
    return ET.parse(path)  # noqa: S314 - pytest's own output, written by this test


def allure_results(alluredir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in alluredir.glob("*-result.json"):
        result = json.loads(path.read_text())
        out[result["name"]] = result
    return out


def labels(result: dict[str, Any], name: str) -> list[str]:
    return [lb["value"] for lb in result["labels"] if lb["name"] == name]


def test_allure_results_carry_attack_labels_matrix_parameters_and_evidence(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_catalog(pytester, monkeypatch)
    alluredir = root / "allure-results"
    result = pytester.runpytest("scenarios", f"--alluredir={alluredir}", *QUIET)
    result.assert_outcomes(passed=1, failed=1)
    results = allure_results(alluredir)
    assert set(results) == {"fake-escape[host-local]", "fake-escape-missed[host-local]"}
    detected = results["fake-escape[host-local]"]
    assert detected["status"] == "passed"
    assert labels(detected, "epic") == ["privilege-escalation"]
    assert labels(detected, "feature") == ["T1611 Escape to Host"]
    assert labels(detected, "story") == ["fake-escape"]
    assert "filefake" in labels(detected, "tag")
    assert labels(detected, "severity") == ["critical"]
    params = {p["name"]: p for p in detected["parameters"]}
    assert {"kernel", "node", "context", "run_id"} <= set(params)
    assert params["node"]["value"] == "'local'"
    assert params["context"]["value"] == "'host'"
    assert params["run_id"].get("excluded") is True
    assert not params["kernel"].get("excluded")
    # kernel, node and context enter the historyId (a kernel matrix stays one result per
    # kernel); run_id and the verdicts do not (history links runs across launches)
    included = sorted((p for p in detected["parameters"] if not p.get("excluded")),
                      key=lambda p: p["name"])
    assert [p["name"] for p in included] == ["context", "kernel", "node"]
    assert detected["historyId"] == md5(detected["fullName"], *(p["value"] for p in included))
    assert detected["testCaseId"] != results["fake-escape-missed[host-local]"]["testCaseId"]
    attachments = {a["name"]: json.loads((alluredir / a["source"]).read_text())
                   for a in detected["attachments"] if a["type"] == "application/json"}
    run_id = params["run_id"]["value"].strip("'")
    assert attachments["run record"]["run_id"] == run_id
    assert attachments["run record"]["judgements"][0]["verdict"] == "DETECTED"
    assert attachments["matched detections"]["filefake"]["rule"] == "escape"
    assert attachments["near misses"] == {}
    missed = results["fake-escape-missed[host-local]"]
    assert missed["status"] == "failed"
    near = {a["name"]: json.loads((alluredir / a["source"]).read_text())
            for a in missed["attachments"] if a["type"] == "application/json"}["near misses"]
    assert near["filefake"][0]["mismatches"] == [
        {"field": "rule", "expected": "escape", "got": "other-rule"}]


@pytest.mark.parametrize("family", ["xunit2", "xunit1", "legacy"])
def test_junit_xml_carries_verdict_properties(pytester: pytest.Pytester,
                                              monkeypatch: pytest.MonkeyPatch, family: str) -> None:
    root = make_catalog(pytester, monkeypatch)
    junit = root / "junit.xml"
    result = pytester.runpytest("scenarios", f"--junitxml={junit}", "-o",
                                f"junit_family={family}", "--shadowtest-results=r.jsonl", *QUIET)
    result.assert_outcomes(passed=1, failed=1)
    cases = {c.get("name"): c for c in parse_junit(junit).getroot().iter("testcase")}
    props = {p.get("name"): p.get("value")
             for p in cases["fake-escape[host-local]"].iter("property")}
    assert props["shadowtest.filefake.verdict"] == "DETECTED"
    assert float(props["shadowtest.filefake.latency_ms"]) >= 0
    assert props["shadowtest.filefake.rule"] == "escape"
    assert props["shadowtest.filefake.correlated_by"] == "run_id"
    assert props["shadowtest.run_id"].startswith("st")
    assert props["shadowtest.node"] == "local"
    assert props["shadowtest.context"] == "host"
    assert props["shadowtest.technique"] == "T1611"
    assert props["shadowtest.kernel"]
    assert not any(name.startswith("shadowtest_") for name in props)  # rows stay out of JUnit
    rows = [json.loads(line) for line in (root / "r.jsonl").read_text().splitlines()]
    assert sorted(r["verdict"] for r in rows) == ["DETECTED", "MISSED"]  # still reach results
    missed = {p.get("name"): p.get("value")
              for p in cases["fake-escape-missed[host-local]"].iter("property")}
    assert missed["shadowtest.filefake.verdict"] == "MISSED"
    assert "shadowtest.filefake.latency_ms" not in missed


def test_junit_and_results_under_xdist(pytester: pytest.Pytester,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows travel worker -> controller in user_properties, reach the results file, and
    stay out of the JUnit XML the controller writes."""
    root = make_catalog(pytester, monkeypatch)
    pytester.makeconftest(f"""
        import sys
        sys.path.insert(0, {str(root)!r})
        from harness.sensors import base
        base.BUILTIN["filefake"] = "fakesensor:FileSensor"
    """)
    junit = root / "junit.xml"
    result = pytester.runpytest_subprocess("scenarios", "-n", "2", f"--junitxml={junit}",
                                           "--shadowtest-results=r.jsonl", *QUIET)
    result.assert_outcomes(passed=1, failed=1)
    names = {p.get("name") for p in parse_junit(junit).getroot().iter("property")}
    assert "shadowtest.filefake.verdict" in names
    assert "shadowtest_rows" not in names
    rows = [json.loads(line) for line in (root / "r.jsonl").read_text().splitlines()]
    assert sorted(r["verdict"] for r in rows) == ["DETECTED", "MISSED"]
