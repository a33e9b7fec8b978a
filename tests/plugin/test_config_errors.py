"""Errors before the first attack: every node and sensor is built (not started) when
pytest configures; a bad one stops ``shadowtest run`` with exit 4 and a message naming the
file, line and key, before any atomic or sensor runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GOOD = """
    [tool.shadowtest]
    scenarios = ["builtin/credential-access"]
    allowed_nodes = ["local"]

    [tool.shadowtest.nodes.local]
    url = "local://"

    [tool.shadowtest.sensors.auditd]
    type = "auditd"

    [tool.shadowtest.sensors.bpftrace]
    type = "bpftrace"
"""


def _run(root: Path, config: str) -> subprocess.CompletedProcess[str]:
    (root / "shadowtest.toml").write_text(textwrap.dedent(config).lstrip())
    return subprocess.run([sys.executable, "-m", "harness", "run", "--results", "r.jsonl"],
                          cwd=root, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("edit", "where", "says"), [
    (('type = "bpftrace"', 'type = "bpftrace"\nperf_rb_pagez = 64'), 13,
     "sensors.bpftrace: [tool.shadowtest.sensors.bpftrace]: unknown key(s) perf_rb_pagez"),
    (('type = "auditd"', 'type = "auditdd"'), 9, "unknown sensor type 'auditdd'"),
    (('url = "local://"', 'url = "lcoal://"'), 6,
     "nodes.local.url = 'lcoal://': node 'local': unknown target scheme 'lcoal'"),
    (('url = "local://"', 'url = "vm://6.12?memroy=4096"'), 6,
     "nodes.local.url = 'vm://6.12?memroy=4096': node 'local': url 'vm://6.12?memroy=4096': "
     "unknown query key 'memroy'"),
    (('url = "local://"', 'url = "ssh://root@127.0.0.1:2222?kye=/k"'), 6,
     "unknown query key 'kye'"),
], ids=["sensor-option", "sensor-type", "node-url-scheme", "vm-url-key", "ssh-url-key"])
def test_bad_sensor_or_node_exits_4_before_any_attack(tmp_path: Path, edit: tuple[str, str],
                                                      where: int, says: str) -> None:
    res = _run(tmp_path, GOOD.replace(*edit))
    assert res.returncode == 4, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert f"{tmp_path / 'shadowtest.toml'}:{where}: " in out
    assert says in out
    assert "collected" not in out  # configuration failed before collection, so before any run
    assert not (tmp_path / "r.jsonl").exists()
    assert "Traceback" not in out


def test_a_bad_key_in_pyproject_names_that_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "app"

        [tool.shadowtest]
        scenarios = ["builtin"]
        allowed_nodes = ["local"]

        [tool.shadowtest.nodes.ctr]
        url = "docker://?sockett=/run/docker.sock"
    """).lstrip())
    res = subprocess.run([sys.executable, "-m", "harness", "run"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 4, res.stdout + res.stderr
    assert (f"{tmp_path / 'pyproject.toml'}:9: nodes.ctr.url = "
            f"'docker://?sockett=/run/docker.sock'") in res.stderr
    assert "sockett" in res.stderr


def test_a_missing_scenario_path_names_the_key(tmp_path: Path) -> None:
    res = _run(tmp_path, GOOD.replace('"builtin/credential-access"', '"my-scenarios"'))
    assert res.returncode == 4
    assert (f"{tmp_path / 'shadowtest.toml'}:2: scenarios: {tmp_path / 'my-scenarios'} does not "
            "exist") in res.stderr
