"""A stage runner that is gone says why: its exit code and what its process (or the ssh /
docker client carrying it) wrote to stderr, without blocking on a pipe."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest

from harness.core.errors import TargetError
from harness.nodes.runner import RunnerSession


def _stages(session: RunnerSession, n: int) -> None:
    for _ in range(n):  # the pipe breaks on a write once the reader is gone
        session.stage("command", ["true"], {}, timeout=5)


def _session(code: str) -> RunnerSession:
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return RunnerSession(context="control", proc=proc, pids=frozenset({proc.pid}), hello={})


def _closed(session: RunnerSession) -> None:
    for pipe in (session.proc.stdin, session.proc.stdout, session.proc.stderr):
        if pipe is not None:
            with contextlib.suppress(BrokenPipeError):
                pipe.close()


def test_a_runner_that_exits_mid_request_names_its_code_and_stderr() -> None:
    session = _session("import sys; sys.stdin.readline(); "
                       "sys.stderr.write('Connection to 127.0.0.1 closed by remote host.'); "
                       "sys.exit(255)")
    try:
        with pytest.raises(TargetError, match=r"exited \(code 255\).*closed by remote host"):
            session.stage("command", ["true"], {}, timeout=5)
    finally:
        _closed(session)


def test_a_runner_gone_before_the_request_names_its_stderr() -> None:
    session = _session("import sys; sys.stderr.write('kex_exchange_identification: reset'); "
                       "sys.stdin.close()")
    session.proc.wait(10)
    try:
        with pytest.raises(TargetError,
                           match=r"stage runner (is gone|exited).*kex_exchange_identif"):
            _stages(session, 50)
    finally:
        _closed(session)
