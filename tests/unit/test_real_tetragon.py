"""Replay contract on REAL product output: ``shadowtest rejudge`` of every recording folder
gives, for every row of the product's sensor, exactly the folder's ``truth.jsonl``.

Data: ``tests/data/real/<product>/<folder>/`` = ``export.jsonl`` (what the product wrote,
unedited apart from path placeholders), ``results.jsonl`` (the rows ``shadowtest run``
wrote beside it), ``truth.jsonl`` (per row of the product's sensor, the truthful verdict,
established from the export by the recording's author, not by this harness). See
``tests/data/real/tetragon/README.md``. Scenarios resolve against the built-in catalogue
plus the product's ``configs/scenarios-*`` directories (e.g. ``etc-write-enforced-tg``).

A new recording joins by adding a folder (Falco next: ``tests/data/real/falco/<folder>``
with ``results.jsonl``, ``truth.jsonl`` and the product's output, ``export.jsonl`` or one
other file); the sensor is named after the product directory and its adapter has the same
name.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.__main__ import main

REAL = Path(__file__).resolve().parent.parent / "data" / "real"
FOLDERS = sorted(p.parent for p in REAL.glob("*/*/truth.jsonl"))


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def _config(tmp_path: Path, product_dir: Path) -> Path:
    extra = sorted((product_dir / "configs").glob("scenarios-*"))
    scenarios = ", ".join(json.dumps(str(p)) for p in ["builtin", *extra])
    config = tmp_path / "shadowtest.toml"
    config.write_text(f'[tool.shadowtest]\nscenarios = [{scenarios}]\natomics = ["builtin"]\n',
                      "utf-8")
    return config


def _export(folder: Path) -> Path:
    """The product's own output in ``folder``: ``export.jsonl``, else its one other file."""
    if (folder / "export.jsonl").is_file():
        return folder / "export.jsonl"
    others = [p for p in sorted(folder.iterdir())
              if p.is_file() and p.name not in ("results.jsonl", "truth.jsonl", "README.md")]
    assert len(others) == 1, (
        f"{folder}: expected export.jsonl or exactly one file of the product's output beside "
        f"results.jsonl and truth.jsonl, got {[p.name for p in others]}")
    return others[0]


def _rejudge(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]]]:
    product = folder.parent.name
    out = tmp_path / "rejudged.jsonl"
    monkeypatch.chdir(tmp_path)  # rejudge reads [tool.shadowtest] of the cwd: only ours
    code = main(["rejudge", str(folder / "results.jsonl"),
                 "--sensor", f"{product}={product}:{_export(folder)}",
                 "--config", str(_config(tmp_path, folder.parent)), "--out", str(out)])
    capsys.readouterr()
    return code, [r for r in _rows(out) if r["sensor"] == product]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_rejudge_real_recording_equals_truth(folder: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    truth = {t["run_id"]: t for t in _rows(folder / "truth.jsonl")}
    _, rows = _rejudge(folder, tmp_path, monkeypatch, capsys)
    got = {r["run_id"]: r for r in rows}
    assert sorted(got) == sorted(truth), "rejudge must give one row per recorded run"
    wrong = [
        (run_id, t["scenario"], t["truthful_verdict"], got[run_id]["verdict"],
         got[run_id]["reason"])
        for run_id, t in sorted(truth.items())
        if got[run_id]["verdict"] != t["truthful_verdict"]
    ]
    assert wrong == [], (
        f"{len(wrong)} of {len(truth)} rows differ from truth "
        f"(got {dict(Counter(r['verdict'] for r in rows))}):\n"
        + "\n".join(map(str, wrong)))


def test_real_recordings_present() -> None:
    """The contract runs on the four Tetragon folders at least (a lost folder is a lost
    contract, not a pass)."""
    names = {f"{p.parent.name}/{p.name}" for p in FOLDERS}
    assert {"tetragon/default", "tetragon/ancestors", "tetragon/enforce",
            "tetragon/from-start"} <= names


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_rejudge_without_the_scenario_files_judges_each_sensor_on_its_own_row(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """No scenario file at hand (a recording replayed outside a checkout): each sensor is
    judged on the ``expected`` of its own recorded row, not on the run's first row (auditd's
    rule names), and still gives the truth."""
    product = folder.parent.name
    (tmp_path / "none").mkdir()
    config = tmp_path / "shadowtest.toml"
    config.write_text('[tool.shadowtest]\nscenarios = ["none"]\n', "utf-8")
    out = tmp_path / "rejudged.jsonl"
    monkeypatch.chdir(tmp_path)
    main(["rejudge", str(folder / "results.jsonl"), "--sensor",
          f"{product}={product}:{_export(folder)}", "--config", str(config), "--out", str(out)])
    capsys.readouterr()
    truth = {t["run_id"]: t["truthful_verdict"] for t in _rows(folder / "truth.jsonl")}
    got = {r["run_id"]: r["verdict"] for r in _rows(out) if r["sensor"] == product}
    assert got == truth
