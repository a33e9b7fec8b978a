"""``harness.tools.catalogue``: docs/catalogue.md is generated, deterministic and never stale."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from harness.builtin import BUILTIN
from harness.core.atomic import Atomic
from harness.core.errors import ScenarioError
from harness.core.scenario import Scenario
from harness.core.verdict import Verdict
from harness.tools.catalogue import DEFAULT_OUT, check, expected_cell, load_catalogue, render, run, write

REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
[tool.shadowtest]
scenarios = ["scenarios"]
atomics = ["atomic"]
allowed_nodes = ["local"]

[tool.shadowtest.nodes.local]
url = "local://"

[tool.shadowtest.sensors.auditd]
type = "auditd"

[tool.shadowtest.sensors.bpftrace]
type = "bpftrace"
"""


def test_catalogue_in_the_repository_is_up_to_date() -> None:
    """CI gate: fails when a scenario or atomic changed and docs/catalogue.md was not
    regenerated with `shadowtest catalogue`."""
    fresh, message = check(REPO, DEFAULT_OUT)
    assert fresh, message


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(BUILTIN / "atomic", tmp_path / "atomic")
    shutil.copytree(BUILTIN / "scenarios", tmp_path / "scenarios")
    (tmp_path / "shadowtest.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_render_is_deterministic_and_names_every_scenario(repo: Path) -> None:
    cat = load_catalogue(repo)
    text = render(cat)
    assert text == render(load_catalogue(repo))
    for s in cat.scenarios:
        assert f"#### `{s.id}` — {s.name}" in text
    assert "\n| technique | tactics | scenarios | auditd | bpftrace |" in text
    (t1611,) = [ln for ln in text.splitlines() if ln.startswith("| T1611 Escape to Host | ")]
    assert "`container-escape-setns`" in t1611
    assert "known gap" in t1611
    assert "| bpftrace | DETECTED | rule `ptrace-pid1`; technique T1055.008; fields target `1` |" in text
    assert "UTC" not in text
    assert "20" + "26-" not in text


def test_check_reports_stale_and_missing_files(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(check=True, out=DEFAULT_OUT, config=None)
    assert run(args) == 1
    err = capsys.readouterr().err
    assert "docs/catalogue.md does not exist: run `shadowtest catalogue` to regenerate it" in err
    assert run(argparse.Namespace(check=False, out=DEFAULT_OUT, config=None)) == 0
    assert run(args) == 0
    path = repo / "scenarios" / "benign" / "read-etc-hostname.yaml"
    path.write_text(path.read_text().replace("Benign: read /etc/hostname", "Benign: read the host name"))
    assert run(args) == 1
    err = capsys.readouterr().err
    assert ("docs/catalogue.md is stale (it differs from the scenario files): "
            "run `shadowtest catalogue`") in err
    assert "+#### `read-etc-hostname` — Benign: read the host name" in err


def test_catalogue_refuses_invalid_scenarios_with_file_line(repo: Path) -> None:
    path = repo / "scenarios" / "persistence" / "etc-write.yaml"
    path.write_text(path.read_text().replace("technique: T1098\natomic", "technique: T1089\natomic"))
    with pytest.raises(ScenarioError, match=r"etc-write.yaml:\d+: technique: T1089 .* use T1562.001"):
        write(repo, DEFAULT_OUT)


@pytest.mark.parametrize("gap", ['""', '"   "', "true", "null"])
def test_check_fails_on_a_gap_without_a_reason(repo: Path, gap: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15: a declared gap is a limit of the sensor, with the reason; one without a
    reason fails `shadowtest catalogue --check`, naming the file, line and key."""
    assert run(argparse.Namespace(check=False, out=DEFAULT_OUT, config=None)) == 0
    path = repo / "scenarios" / "privilege-escalation" / "core-pattern-write.yaml"
    text = path.read_text()
    start = text.index("  auditd: {gap: ")
    end = text.index("\n", start)
    path.write_text(text[:start] + f"  auditd: {{gap: {gap}}}" + text[end:])
    capsys.readouterr()
    assert run(argparse.Namespace(check=True, out=DEFAULT_OUT, config=None)) == 1
    err = capsys.readouterr().err
    assert "core-pattern-write.yaml:" in err
    assert "gap" in err


def _scenario(expect: dict[str, dict[str, object]], benign: bool = False) -> Scenario:
    atomic = Atomic(id="a", name="a", technique="T1611", path=Path("atomic/a.yaml"), command="true")
    return Scenario(id="s", name="s", path=Path("scenarios/x/s.yaml"), atomic=atomic,
                    contexts=("host",), technique=None if benign else "T1611", tactic="x",
                    benign=benign, expect=expect)


@pytest.mark.parametrize(("expect", "sensor", "verdict", "text"), [
    ({"falco": {"gap": "no rule for setns from a leaked fd"}}, "falco", "GAP",
     "no rule for setns from a leaked fd"),
    ({"auditd": {"rule": "T1611"}}, "auditd", "DETECTED", "rule `T1611`; technique T1611"),
    ({"bpftrace": {"rule": {"prefix": "container-"}, "technique": "T1611"}}, "bpftrace", "DETECTED",
     "rule prefix `container-`; technique T1611"),
    ({}, "tetragon", "DETECTED", "technique T1611; (no expect block: the scenario's technique)"),
    ({"lsm": {"rule": "r", "enforce": {"action": "deny"}}}, "lsm", "BLOCKED",
     "rule `r`; technique T1611; enforce deny before the side effect"),
])
def test_expected_cell(expect: dict[str, dict[str, object]], sensor: str, verdict: str, text: str) -> None:
    cell = expected_cell(_scenario(expect), sensor)
    assert (cell.verdict, cell.text) == (verdict, text)


def test_expected_cell_benign_is_clean() -> None:
    assert expected_cell(_scenario({}, benign=True), "auditd").short() == "CLEAN"


def test_expected_cell_reads_overrides_for_a_node() -> None:
    """The catalogue reads expectations through harness.core.expectation: an override
    applies on a node that meets it, never without facts."""
    atomic = Atomic(id="a", name="a", technique="T1611", path=Path("atomic/a.yaml"), command="true")
    scenario = Scenario(id="s", name="s", path=Path("scenarios/x/s.yaml"), atomic=atomic,
                        contexts=("host",), technique="T1611", tactic="x",
                        expect={"auditd": {"rule": "new"}},
                        overrides=((">=6.0", (), {"auditd": {"gap": "old rule pack"}}),))
    assert expected_cell(scenario, "auditd").verdict == "DETECTED"
    assert expected_cell(scenario, "auditd", {"kernel": "6.1.0"}).verdict == "GAP"
    assert expected_cell(scenario, "auditd", {"kernel": "5.4.0"}).verdict == "DETECTED"
    gap = expected_cell(scenario, "auditd", {"kernel": "6.1.0"})
    assert gap.accepts("MISSED")
    assert not gap.accepts("DETECTED")
    assert expected_cell(scenario, "auditd").accepts("DETECTED")



@pytest.mark.parametrize(("expect", "benign", "accepted", "closed_gap_adds"), [
    ({"auditd": {"gap": "no watch"}}, False, {"MISSED"}, {"DETECTED"}),
    ({"auditd": {"rule": "r"}}, False, {"DETECTED"}, set()),
    ({"auditd": {"rule": "r", "enforce": {"action": "sigkill"}}}, False, {"BLOCKED"}, set()),
    ({}, True, {"CLEAN"}, set()),
])
def test_cell_accepts_only_its_verdict_and_a_closed_gap_on_request(
        expect: dict[str, dict[str, object]], benign: bool, accepted: set[str],
        closed_gap_adds: set[str]) -> None:
    """The e2e oracles judge rows with ``accepts``: RACED, SENSOR_DOWN, NOT_EXECUTED,
    UNEXPECTED and every other verdict are refused; ``closed_gap`` adds only a known gap's
    DETECTED."""
    cell = expected_cell(_scenario(expect, benign=benign), "auditd")
    everything = {v.value for v in Verdict}
    assert {v for v in everything if cell.accepts(v)} == accepted
    assert {v for v in everything if cell.accepts(v, closed_gap=True)} == accepted | closed_gap_adds


def test_cell_gap_is_the_declared_reason() -> None:
    assert expected_cell(_scenario({"auditd": {"gap": "no watch"}}), "auditd").gap == "no watch"
    assert expected_cell(_scenario({"auditd": {"rule": "r"}}), "auditd").gap is None
    assert expected_cell(_scenario({}, benign=True), "auditd").gap is None

def test_overrides_are_rendered(repo: Path) -> None:
    path = repo / "scenarios" / "persistence" / "etc-write.yaml"
    path.write_text(path.read_text() + "overrides:\n  - kernel: '<5.8'\n    expect:\n"
                    "      auditd: {gap: no rule before 5.8}\n")
    text = render(load_catalogue(repo))
    assert "On a node with kernel <5.8 (the first override that applies" in text
    assert "| auditd | known gap | no rule before 5.8 |" in text
