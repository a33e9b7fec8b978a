"""``shadowtest run``: the pytest command line the CLI hands harness/pytest/runner.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.__main__ import main
from harness.engine.config import Settings
from harness.pytest import runner

FIXED = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-o", "addopts=",
         "-o", "testpaths=", "-o", "filterwarnings=", "--strict-markers", "-rfEs",
         "-W", "ignore::pytest.PytestAssertRewriteWarning"]


def test_argv_of_configured_scenarios(tmp_path: Path) -> None:
    settings = Settings(source=tmp_path / "shadowtest.toml", root=tmp_path,
                        scenarios=(tmp_path / "a", tmp_path / "b"))
    assert runner.pytest_argv(settings, settings.scenarios, explicit=False) == [
        str(tmp_path / "a"), str(tmp_path / "b"), "--shadowtest", *FIXED,
        "--rootdir", str(tmp_path),
        "--shadowtest-config", str(tmp_path / "shadowtest.toml"),
        "-c", str(tmp_path / "shadowtest.toml")]


def test_argv_of_named_paths_and_every_option(tmp_path: Path) -> None:
    settings = Settings(source=None, root=tmp_path)
    argv = runner.pytest_argv(settings, [Path("s/x.yaml")], explicit=True,
                              results=Path("r.jsonl"), sensors="auditd,falco",
                              numprocesses="auto")
    assert argv == ["s/x.yaml", "--shadowtest", "--shadowtest-scenarios=s/x.yaml", *FIXED,
                    "--shadowtest-results", "r.jsonl", "--rootdir", str(tmp_path),
                    "--shadowtest-sensors", "auditd,falco", "-n", "auto"]


def test_cli_run_passes_arguments_after_double_dash_and_returns_pytest_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s").mkdir()
    monkeypatch.chdir(tmp_path)
    seen: list[list[str]] = []

    def fake(argv: list[str]) -> int:
        seen.append(list(argv))
        return 5

    monkeypatch.setattr(runner, "run_pytest", fake)
    assert main(["run", "s", "--results", "r.jsonl", "--", "-k", "ptrace", "-x"]) == 5
    [argv] = seen
    assert argv[:3] == ["s", "--shadowtest", "--shadowtest-scenarios=s"]
    assert argv[-3:] == ["-k", "ptrace", "-x"]
    assert argv[argv.index("--shadowtest-results") + 1] == "r.jsonl"


def test_cli_run_of_a_missing_configured_scenarios_folder_is_exit_4(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "shadowtest.toml").write_text('[tool.shadowtest]\nscenarios = ["nowhere"]\n')
    monkeypatch.chdir(tmp_path)
    assert main(["run"]) == 4
    assert "scenarios: " in capsys.readouterr().err
