"""Heavy optional engines stay extras: using one that is not installed is a one-line error
naming the extra to install (README "Dependencies: the lock and the newest")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.core.extras import missing_extra

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize(("module", "extra"), [("pyspark.sql", "spark"), ("pandas", "spark"),
                                               ("falconpy", "crowdstrike")])
def test_missing_extra_names_the_extra_to_install(module: str, extra: str) -> None:
    err = missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module), "it")
    top = module.partition(".")[0]
    assert str(err) == f"it needs {top!r}: pip install 'shadowtest[{extra}]'"


def test_parity_spark_without_pyspark_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    for name in [m for m in sys.modules if m == "pyspark" or m.startswith("pyspark.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark: ModuleNotFoundError
    monkeypatch.chdir(tmp_path)  # no project configuration
    alerts = f"falco:{DATA / 'falco' / 'alerts.jsonl'}"
    code = main(["parity", "--incumbent", alerts, "--candidate", alerts, "--engine", "spark"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("shadowtest parity: error: parity --engine spark needs 'pyspark': "
                   "pip install 'shadowtest[spark]'\n")
