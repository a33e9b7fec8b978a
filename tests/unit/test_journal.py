"""The run journal (issue 16): what a run creates that would outlive it is recorded before it
is created and replayed in reverse by whoever outlives the runner — its watchdog, or, when
both were killed, the next run's sweep. Nothing waits on age or timing: the runner's pid and
start time, and the watchdog's lock, decide."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.nodes import reaper
from harness.nodes.process import pid_alive
from tests.helpers import until


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "reaper"
    monkeypatch.setattr(reaper, "STATE_DIR", d)
    return d


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A folder the journal may remove: the harness's own kind (tmp/shadowtest-*)."""
    d = Path(tempfile.mkdtemp(prefix="shadowtest-journaltest-"))
    (d / "console.log").write_text("boot\n")
    yield d
    if d.exists():
        subprocess.run(["rm", "-rf", str(d)], check=False)


def _watchdog(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "harness.nodes.reaper", str(path)],
                            start_new_session=True)


def _journal_of(runner: int, entries: list[dict[str, str]], state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"test-1-{runner}.json"
    path.write_text(json.dumps({"pid": runner, "start": reaper.start_time(runner),
                                "entries": entries}))
    return path


def test_entries_are_recorded_in_order_forgotten_and_closed(
        state_dir: Path, private_dir: Path) -> None:
    journal = reaper.Journal("t")
    journal.record("dir", path=str(private_dir))
    journal.record("cgroup", path="/sys/fs/cgroup/shadowtest/x")
    journal.record("dir", path=str(private_dir))  # once only
    path = journal.path
    assert path is not None
    assert path.parent == state_dir
    state = json.loads(path.read_text())
    assert state["pid"] == os.getpid()
    assert [e["kind"] for e in state["entries"]] == ["dir", "cgroup"]
    watchdog = int(state["watchdog"][0])
    until(lambda: pid_alive(watchdog), "the watchdog runs", seconds=15)
    journal.close()  # entries left: stays armed
    assert path.exists()
    assert pid_alive(watchdog)
    journal.forget("cgroup", path="/sys/fs/cgroup/shadowtest/x")
    journal.forget("dir", path=str(private_dir))
    assert json.loads(path.read_text())["entries"] == []
    journal.close()
    assert not path.exists()
    assert not path.with_suffix(".lock").exists()
    until(lambda: not pid_alive(watchdog), "the watchdog stopped by pid", seconds=15)
    assert private_dir.exists()  # released by its owner, never by the journal


def test_reap_replays_the_journal_in_reverse(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    monkeypatch.setattr(reaper, "release", lambda e: done.append(e["kind"]))
    reaper.reap({"pid": 1, "entries": [{"kind": "dockerd"}, {"kind": "containers"},
                                       {"kind": "dir"}, {"kind": "cgroup"}]})
    assert done == ["cgroup", "dir", "containers", "dockerd"]


def test_a_journal_of_an_older_version_is_read_in_creation_order() -> None:
    state = {"pid": 1, "cgroups": ["/c"], "dirs": ["/tmp/shadowtest-d"], "socket": "/s",
             "label": "l", "dockerd_state": "/st", "dockerd_data": "/da"}
    assert [e["kind"] for e in reaper.entries_of(state)] == ["dockerd", "containers", "dir",
                                                             "cgroup"]


def test_a_dead_runners_watchdog_replays_its_journal(state_dir: Path, private_dir: Path) -> None:
    runner = subprocess.Popen(["sleep", "60"])
    path = _journal_of(runner.pid, [{"kind": "dir", "path": str(private_dir)}], state_dir)
    dog = _watchdog(path)
    try:
        time.sleep(0.3)
        assert private_dir.exists()  # the runner lives: nothing done
        assert dog.poll() is None
        runner.kill()
        runner.wait()
        assert dog.wait(15) == 0
        assert not private_dir.exists()
        assert not path.exists()
        assert not path.with_suffix(".lock").exists()
    finally:
        runner.kill()
        dog.kill()


def test_a_second_watchdog_for_the_same_journal_exits_at_once(
        state_dir: Path, private_dir: Path) -> None:
    runner = subprocess.Popen(["sleep", "60"])
    path = _journal_of(runner.pid, [{"kind": "dir", "path": str(private_dir)}], state_dir)
    first = _watchdog(path)
    try:
        until(lambda: path.with_suffix(".lock").exists(), "the first watchdog's lock", seconds=15)
        time.sleep(0.2)
        second = _watchdog(path)
        assert second.wait(10) == 0
        assert first.poll() is None  # still the one looking after it
        assert reaper.sweep(state_dir) == []  # looked after, runner alive: not handed over
    finally:
        runner.kill()
        runner.wait()
        first.wait(15)
    assert not private_dir.exists()


def test_the_next_run_sweeps_a_journal_whose_runner_and_watchdog_were_both_killed(
        state_dir: Path, private_dir: Path) -> None:
    runner = subprocess.Popen(["sleep", "60"])
    path = _journal_of(runner.pid, [{"kind": "dir", "path": str(private_dir)}], state_dir)
    dog = _watchdog(path)
    until(lambda: path.with_suffix(".lock").exists(), "the watchdog's lock", seconds=15)
    time.sleep(0.2)
    dog.send_signal(signal.SIGKILL)
    dog.wait()
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    time.sleep(0.3)
    assert private_dir.exists()  # an orphan: nobody replays it now
    assert path.exists()
    handed = reaper.sweep(state_dir)
    assert handed == [path]
    until(lambda: not private_dir.exists(), "the orphan's folder removed", seconds=15)
    until(lambda: not path.exists() and not path.with_suffix(".lock").exists(),
          "the orphan journal and its lock removed", seconds=15)
    assert reaper.sweep(state_dir) == []


def test_a_new_journal_sweeps_orphans_first(state_dir: Path, private_dir: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = _journal_of(gone.pid, [{"kind": "dir", "path": str(private_dir)}], state_dir)
    journal = reaper.Journal("t")
    journal.record("cgroup", path="/sys/fs/cgroup/shadowtest/y")
    try:
        until(lambda: not private_dir.exists() and not orphan.exists(), "the orphan replayed", seconds=15)
    finally:
        journal.forget("cgroup", path="/sys/fs/cgroup/shadowtest/y")
        journal.close()


def test_held_names_only_live_runners_entries(state_dir: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    _journal_of(gone.pid, [{"kind": "cgroup", "path": "/dead"}], state_dir)
    live = state_dir / f"live-1-{os.getpid()}.json"
    live.write_text(json.dumps({"pid": os.getpid(), "start": reaper.start_time(os.getpid()),
                                "entries": [{"kind": "cgroup", "path": "/live"},
                                            {"kind": "dir", "path": "/tmp/shadowtest-x"}]}))
    assert reaper.held("cgroup", state_dir) == {"/live"}


def test_a_sweep_removes_a_lock_whose_journal_is_gone(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    stale = state_dir / "docker-1-99999.lock"
    stale.write_text("")
    kept = state_dir / "vm-1-99998.lock"  # its journal is there: not stale
    kept.write_text("")
    (state_dir / "vm-1-99998.json").write_text(json.dumps(
        {"pid": os.getpid(), "start": reaper.start_time(os.getpid()), "entries": []}))
    reaper.sweep(state_dir)
    assert not stale.exists()
    assert kept.exists()
