"""shadowtest parity: hand-built cases with known answers, sources, gate and exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.core.detection import Detection
from harness.report.parity import (
    EXIT_EMPTY,
    EXIT_FAILED,
    EXIT_PASSED,
    EXIT_USAGE,
    Options,
    add_parity_parser,
    parity,
    run_parity,
    severity_of,
)

DATA = Path(__file__).resolve().parents[1] / "data"
DAY = 86400.0


def det(rule: str, t: float, technique: str = "T1611", node: str | None = "n1",
        severity: str | None = "high", container: str | None = None, sensor: str = "s") -> Detection:
    return Detection(sensor, rule, (technique,) if technique else (), severity, node=node,
                     container_id=container, observed_at=1_800_000_000.0 + t)


def run(inc: list[Detection], cand: list[Detection], keys: tuple[str, ...] = ("node", "technique"),
        tol: float = 2.0, gate: float = 0.95, severities: tuple[str, ...] = ()) -> dict:
    return parity(inc, cand, Options(keys, round(tol * 1e6), gate, severities), 30 * DAY)


def rules(report: dict) -> dict[str, tuple[int, int]]:
    return {r["rule"]: (r["matched"], r["incumbent"]) for r in report["rules"]}


def test_parity_clock_skew_exactly_at_tolerance_matches() -> None:
    report = run([det("a", 0.0)], [det("x", 2.0)])
    assert rules(report) == {"a": (1, 1)}
    report = run([det("a", 0.0)], [det("x", 2.000001)])
    assert rules(report) == {"a": (0, 1)}


def test_parity_duplicates_are_one_to_one() -> None:
    report = run([det("a", 0.0), det("a", 0.0), det("a", 0.0)], [det("x", 0.5), det("x", 0.5)])
    assert rules(report) == {"a": (2, 3)}
    assert report["totals"]["matched"] == 2
    assert len(report["unmatched_incumbent"]) == 1


def test_parity_ties_pick_the_earliest_loaded_incumbent() -> None:
    report = run([det("first", 1.0), det("second", 1.0)], [det("x", 1.0)])
    assert rules(report) == {"first": (1, 1), "second": (0, 1)}


def test_parity_null_key_matches_null_only() -> None:
    inc = [det("a", 0.0, node=None), det("b", 0.0, node="n1")]
    cand = [det("x", 0.1, node=None), det("y", 0.1, node="n2")]
    report = run(inc, cand)
    assert rules(report) == {"a": (1, 1), "b": (0, 1)}
    assert report["totals"]["incumbent_null_keys"] == 1


def test_parity_container_id_compares_short_and_full_ids() -> None:
    full = "3f4e9a0c1b2d" + "e" * 52
    report = run([det("a", 0.0, container=full)], [det("x", 0.2, container=full[:12])],
                 keys=("container_id", "technique"))
    assert rules(report) == {"a": (1, 1)}


def test_parity_technique_is_a_key() -> None:
    report = run([det("a", 0.0, technique="T1611")], [det("x", 0.0, technique="T1098")])
    assert rules(report) == {"a": (0, 1)}
    assert report["unmatched_candidate"][0]["rule"] == "x"


def test_parity_one_sided_and_empty() -> None:
    assert rules(run([det("a", 0.0)], [])) == {"a": (0, 1)}
    report = run([], [det("x", 0.0)])
    assert report["rules"] == []
    assert report["gate"]["exit_code"] == EXIT_EMPTY


def test_parity_gate_over_chosen_severities_only() -> None:
    inc = [det("crit", 0.0, severity="Critical"), det("low", 10.0, severity="notice")]
    cand = [det("x", 0.0)]
    report = run(inc, cand, severities=("critical", "high"))
    assert report["gate"]["passed"] is True
    assert [r["gated"] for r in report["rules"]] == [True, False]
    report = run(inc, cand, severities=())
    assert report["gate"]["rules_below"] == ["low"]
    assert report["gate"]["exit_code"] == EXIT_FAILED


def test_parity_window_drops_older_detections() -> None:
    inc = [det("old", -31 * DAY), det("new", 0.0)]
    report = run(inc, [det("x", 0.0)])
    assert rules(report) == {"new": (1, 1)}


def test_parity_report_is_deterministic() -> None:
    inc = [det("a", float(i)) for i in range(20)]
    cand = [det("x", i + 0.5) for i in range(0, 20, 2)]
    assert json.dumps(run(inc, cand)) == json.dumps(run(list(inc), list(cand)))


@pytest.mark.parametrize(("raw", "want"), [("Critical", "critical"), ("WARNING", "medium"),
                                            ("error", "high"), ("70", "high"), ("0", "critical"),
                                            (None, None), ("weird", None)])
def test_severity_of_products(raw: str | None, want: str | None) -> None:
    assert severity_of(raw) == want


def _cli(tmp_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_parity_parser(sub)
    return run_parity(parser.parse_args(["parity", *argv]))


def _results(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(sensor: str, rule: str, technique: str, t: float) -> dict:
    return {"schema": 1, "sensor": sensor, "node": "local", "verdict": "DETECTED", "rule": rule,
            "detection": {"sensor": sensor, "rule": rule, "technique": [technique], "pid": 7,
                          "comm": "sh", "cgroup_id": None, "container_id": None, "names": [],
                          "observed_at": 1_800_000_000.0 + t}}


def test_run_parity_results_source_writes_report_and_gates(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _results(tmp_path / "r.jsonl", [_row("auditd", "T1611", "T1611", 0.0),
                                    _row("auditd", "T1098", "T1098", 5.0),
                                    _row("bpftrace", "container-setns-mnt", "T1611", 0.4)])
    common = ("--incumbent", "results:r.jsonl#auditd", "--candidate", "results:r.jsonl#bpftrace",
              "--severity", "any")
    assert _cli(tmp_path, *common, "--out", "out") == EXIT_FAILED
    report = json.loads((tmp_path / "out/parity.json").read_text())
    assert {r["rule"]: r["parity"] for r in report["rules"]} == {"T1098": 0.0, "T1611": 1.0}
    first = (tmp_path / "out/parity.md").read_text()
    assert "| T1611 |  | 1 | 1 | 100.00% | yes | yes |" in first
    assert _cli(tmp_path, *common, "--out", "out") == EXIT_FAILED
    assert (tmp_path / "out/parity.md").read_text() == first  # deterministic
    assert _cli(tmp_path, *common, "--gate", "0") == EXIT_PASSED


def test_run_parity_recorded_adapter_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = f"bpftrace:{DATA / 'bpftrace/session.jsonl'}"
    assert _cli(tmp_path, "--incumbent", src, "--candidate", src, "--keys", "technique,pid",
                "--severity", "any", "--tolerance", "0s", "--out", "o") == EXIT_PASSED
    report = json.loads((tmp_path / "o/parity.json").read_text())
    assert report["totals"]["matched"] == report["totals"]["incumbent"] > 0


def test_run_parity_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert _cli(tmp_path, "--incumbent", "nosuch:x", "--candidate", "falco:y") == EXIT_USAGE
    assert "expected TYPE:PATH" in capsys.readouterr().err
    assert _cli(tmp_path, "--incumbent", "falco:missing.jsonl", "--candidate", "falco:y") == EXIT_USAGE
    assert _cli(tmp_path, "--incumbent", "a", "--candidate", "b", "--tolerance", "2 parsecs") == EXIT_USAGE
    assert _cli(tmp_path, "--incumbent", "a", "--candidate", "b", "--gate", "95") == EXIT_USAGE


def test_parity_engine_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.report.parity.sources import configured

    (tmp_path / "shadowtest.toml").write_text('[tool.shadowtest.parity]\nengine = "spark"\ngate = 0.9\n')
    monkeypatch.chdir(tmp_path)
    conf, _ = configured(None)
    assert (conf["engine"], conf["gate"]) == ("spark", 0.9)
    (tmp_path / "shadowtest.toml").write_text('[tool.shadowtest.parity]\nengin = "spark"\n')
    with pytest.raises(Exception, match="unknown key 'engin'"):
        configured(None)
