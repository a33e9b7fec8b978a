"""A run whose harness *and* journal watchdog are both SIGKILLed leaves an orphan journal:
the next run replays it before it starts (issue 16: cleanup as a journal, nothing left to
timing). Here the orphan holds a namespace context's run cgroup; after the next run the
cgroup, the journal and its lock are gone and the node is as it was."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from harness.nodes import reaper
from tests.e2e.conftest import NOTHING_LEFT, Catalog, leftovers, snapshot
from tests.helpers import until

pytestmark = [pytest.mark.node]

CONFIG = """
[tool.shadowtest]
scenarios = ["scenarios"]
atomics = ["atomic"]
allowed_nodes = ["local"]
window = "3s"

[tool.shadowtest.nodes.local]
url = "local://"

[tool.shadowtest.sensors.auditd]
type = "auditd"
"""


def _journal_of(pid: int) -> tuple[Path, dict[str, Any]] | None:
    for path in reaper.STATE_DIR.glob("*.json") if reaper.STATE_DIR.is_dir() else ():
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("pid") == pid and state.get("watchdog") and any(  # armed: watchdog named
                e.get("kind") == "cgroup" for e in state.get("entries", ())):
            return path, state
    return None


def test_an_orphan_journal_is_replayed_by_the_next_run(catalog: Catalog) -> None:
    catalog.config(CONFIG)
    catalog.atomic("slow-sleep", """
        id: slow-sleep
        name: a long action, killed mid-run
        technique: T1082
        supported_platforms: [linux]
        touches: [{kind: process, what: "one short-lived process"}]
        executor: {name: sh, command: "sleep 600", timeout: 700s}
        proof: {command: "true"}
    """)
    catalog.atomic("quick-true", """
        id: quick-true
        name: a no-op
        technique: T1082
        supported_platforms: [linux]
        touches: [{kind: process, what: "one short-lived process"}]
        executor: {name: sh, command: "true", timeout: 10s}
        proof: {command: "true"}
    """)
    slow = catalog.scenario("discovery", "killed-in-a-namespace", """
        id: killed-in-a-namespace
        name: is killed with its watchdog
        technique: T1082
        atomic: slow-sleep
        contexts: [namespace]
        expect: {auditd: {gap: "a no-op for this test"}}
    """)
    before = snapshot()
    proc = catalog.popen("run", "--results", "first.jsonl")
    try:
        until(lambda: _journal_of(proc.pid) is not None or proc.poll() is not None,
              "the run's journal with its namespace cgroup", seconds=120)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        found = _journal_of(proc.pid)
        assert found is not None
        path, state = found
        cgroup = Path(next(e["path"] for e in state["entries"] if e["kind"] == "cgroup"))
        until(cgroup.is_dir, "the run cgroup created", seconds=120)
        watchdog = int(state["watchdog"][0])
        os.kill(watchdog, signal.SIGKILL)  # nobody looks after the journal any more...
        os.kill(proc.pid, signal.SIGKILL)  # ...and the harness runs no cleanup of its own
        proc.communicate(timeout=60)
        # the context's own processes finish the atomic's cleanup (parent-death signal) and
        # leave an empty cgroup that only the journal names
        until(lambda: "populated 0" in (cgroup / "cgroup.events").read_text().splitlines(),
              "the killed run's processes gone", seconds=120)
        time.sleep(1.0)
        assert cgroup.is_dir(), "not an orphan: something removed its cgroup"
        assert path.exists(), "not an orphan: something replayed its journal"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
    slow.unlink()
    catalog.scenario("discovery", "next-run", """
        id: next-run
        name: the next run, on the host
        technique: T1082
        atomic: quick-true
        contexts: [host]
        expect: {auditd: {gap: "a no-op for this test"}}
    """)
    res = catalog.run("run", "--results", "second.jsonl")
    assert res.returncode == 0, res.stdout + res.stderr
    until(lambda: not cgroup.exists(), f"the orphan's cgroup {cgroup} removed", seconds=120)
    until(lambda: not path.exists() and not path.with_suffix(".lock").exists(),
          "the orphan journal and its lock removed", seconds=120)
    left = leftovers(before, catalog.owner)
    assert left == NOTHING_LEFT, left
