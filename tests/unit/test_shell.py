"""The node command layer: every target starts its stage runners through the node's shell
(harness/nodes/shell.py, harness/nodes/ssh.py) with one start_runner (harness/nodes/runner.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from harness.core.errors import TargetError
from harness.nodes.runner import RunnerSession, stage_runner_argv, start_runner
from harness.nodes.shell import LocalShell, NodeShell
from harness.nodes.ssh import SshShell


def test_both_shells_are_node_shells() -> None:
    assert isinstance(LocalShell(), NodeShell)
    shell = SshShell("n1", "root@h", 22, None)
    try:
        assert isinstance(shell, NodeShell)
    finally:
        shell.close()


class _Recording(LocalShell):
    """This machine's shell, recording what it is asked to start."""

    def __init__(self) -> None:
        super().__init__("rec")
        self.started: list[tuple[list[str], dict[str, str], tuple[int, ...]]] = []

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              pass_fds: Sequence[int] = ()) -> subprocess.Popen[str]:
        self.started.append((list(argv), dict(env or {}), tuple(pass_fds)))
        return super().start(argv, env, pass_fds)


def test_start_runner_starts_the_stage_runner_through_the_given_shell() -> None:
    shell = _Recording()
    proc, hello = start_runner(stage_runner_argv(), "host", env={"SHADOWTEST_RUN_ID": "st1"},
                               shell=shell)
    session = RunnerSession(context="host", proc=proc, pids=frozenset({proc.pid}), hello=hello)
    try:
        assert hello["ready"] is True
        assert hello["pid"] == proc.pid
        res = session.stage("command", ["sh", "-c", "echo $SHADOWTEST_RUN_ID"], {}, 10)
        assert (res.exit_code, res.stdout) == (0, "st1\n")
    finally:
        session.close()
    assert shell.started == [(stage_runner_argv(), {"SHADOWTEST_RUN_ID": "st1"}, ())]
    assert proc.returncode == 0


def test_start_runner_says_what_a_context_that_did_not_start_printed() -> None:
    with pytest.raises(TargetError, match=r"ctx: the context did not start \(exit 3\): boom"):
        start_runner(["sh", "-c", "echo boom >&2; exit 3"], "ctx", shell=LocalShell())


def test_local_shell_start_passes_fds_and_env() -> None:
    read, write = os.pipe()
    try:
        proc = LocalShell().start(["sh", "-c", f'echo "$X" > /proc/self/fd/{write}'], env={"X": "hi"},
                                  pass_fds=(write,))
        proc.communicate(timeout=10)
        os.close(write)
        assert os.read(read, 100) == b"hi\n"
    finally:
        os.close(read)


def test_ssh_shell_start_runs_over_the_master_with_env_set_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_popen(argv: list[str], **kw: Any) -> Any:
        seen.append(argv)
        return object()

    shell = SshShell("n1", "root@h", 2222, "/k")
    monkeypatch.setattr(shell, "_master", object())  # connected: no ssh started here
    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    try:
        shell.start(["python3", "-u", "/run/shadowtest/_stagerunner.py"], env={"A": "1"})
        with pytest.raises(TargetError, match=r"fds \[9\] cannot be passed to a command over SSH"):
            shell.start(["true"], pass_fds=(9,))
    finally:
        monkeypatch.setattr(shell, "_master", None)
        shell.close()
    (argv,) = seen
    assert argv[:len(shell.base_argv())] == shell.base_argv()
    assert argv[-3:] == ["root@h", "--", "env A=1 python3 -u /run/shadowtest/_stagerunner.py"]
