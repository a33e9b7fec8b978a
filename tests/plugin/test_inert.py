"""Installed but not asked for, the plugin changes nothing in a project's own test suite:
the project's ``pytest`` output is byte-for-byte the same as with the plugin disabled, its
``tests/scenarios/*.yaml`` are its own, and no scenario runs even when ``[tool.shadowtest]``
allows a node."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROJECT_TESTS = {
    "tests/test_login.py": """
        import signal

        import yaml

        def test_login_flows_parse(request):
            flows = yaml.safe_load(open(request.path.parent / "scenarios" / "login.yaml"))
            assert flows["steps"] == ["open", "type password", "submit"]

        def test_sigterm_is_untouched():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        def test_dist_option_is_untouched(pytestconfig):
            assert getattr(pytestconfig.option, "dist", "no") in ("no", "load")
    """,
    "tests/scenarios/login.yaml": """
        id: login
        steps: [open, type password, submit]
    """,
    "tests/scenarios/nested/logout.yml": """
        steps: [click logout]
    """,
}
CONFIGURED = """
    [tool.shadowtest]
    scenarios = ["tests/scenarios", "builtin"]
    allowed_nodes = ["local"]
    [tool.shadowtest.sensors.bpftrace]
    type = "bpftrace"
"""


def _project(root: Path, pyproject: str) -> None:
    for rel, text in PROJECT_TESTS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    (root / "pyproject.toml").write_text(textwrap.dedent(pyproject).lstrip())


def _pytest(root: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SHADOWTEST_"))}
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                         cwd=root, capture_output=True, text=True, timeout=120, env=env,
                         check=False)
    # what differs by nature: how long the run took, and the header's list of installed
    # plugins (pytest names every installed plugin there, inert or not)
    out = re.sub(r" in \d+\.\d+s", " in <t>", res.stdout + res.stderr)
    return res.returncode, re.sub(r"(?m)^(plugins: .*?)shadowtest-[^,\s]+(, )?", r"\1", out)


@pytest.mark.parametrize("pyproject", ['[project]\nname = "app"\n', CONFIGURED],
                         ids=["unconfigured", "configured-but-not-asked"])
@pytest.mark.parametrize("args", [(), ("-rA", "-v"), ("-n", "2")], ids=["plain", "verbose", "xdist"])
def test_project_suite_is_byte_for_byte_the_same(tmp_path: Path, pyproject: str,
                                                 args: tuple[str, ...]) -> None:
    _project(tmp_path, pyproject)
    junit_with, junit_without = tmp_path / "with.xml", tmp_path / "without.xml"
    with_plugin = _pytest(tmp_path, "-q", *args, f"--junitxml={junit_with}")
    without = _pytest(tmp_path, "-q", *args, "-p", "no:shadowtest", f"--junitxml={junit_without}")
    assert with_plugin[0] == without[0] == 0, with_plugin[1]
    assert with_plugin[1].replace("with.xml", "X") == without[1].replace("without.xml", "X")
    assert "3 passed" in with_plugin[1]
    assert _cases(junit_with) == _cases(junit_without)


def _cases(junit: Path) -> list[str]:
    """JUnit test cases without timings, sorted (xdist writes them in completion order)."""
    text = re.sub(r'(time|timestamp|hostname)="[^"]*"', "", junit.read_text())
    return sorted(re.findall(r"<testcase .*?(?:/>|</testcase>)", text, re.DOTALL))


def test_collect_only_never_sees_the_project_yaml(tmp_path: Path) -> None:
    _project(tmp_path, CONFIGURED)
    code, out = _pytest(tmp_path, "--collect-only", "-q")
    assert code == 0
    assert [ln for ln in out.splitlines() if "::" in ln] == [
        "tests/test_login.py::test_login_flows_parse",
        "tests/test_login.py::test_sigterm_is_untouched",
        "tests/test_login.py::test_dist_option_is_untouched",
    ]


def test_shadowtest_options_without_the_switch_are_a_usage_error(tmp_path: Path) -> None:
    _project(tmp_path, CONFIGURED)
    code, out = _pytest(tmp_path, "--shadowtest-results", "r.jsonl")
    assert code == 4
    assert "--shadowtest-results given without --shadowtest" in out
    assert not (tmp_path / "r.jsonl").exists()


def test_the_switch_collects_only_configured_paths(tmp_path: Path) -> None:
    """With --shadowtest the project's YAML under tests/scenarios is collected only because
    it is configured: a file that is not a scenario is a collection error there (and only
    there), naming the file and key."""
    _project(tmp_path, CONFIGURED.replace('"tests/scenarios", ', ""))
    code, out = _pytest(tmp_path, "--shadowtest", "--collect-only", "-q", "tests")
    assert code == 0, out
    assert "login.yaml" not in out
    _project(tmp_path, CONFIGURED)
    code, out = _pytest(tmp_path, "--shadowtest", "--collect-only", "-q", "tests")
    assert code == 2
    assert re.search(r"tests/scenarios/login\.yaml:2: steps: unknown key 'steps'", out), out
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # this process is untouched
