"""The node-wide audit daemon the auditd sensors share: its state under ``STATE`` (a lock
file, a users directory of pids, the daemon's pid and the kernel settings it changed),
``auditctl``, and its release: the last user (or the watchdog, ``reap``, once every user
is gone) deletes exactly the harness's rules, stops the daemon by pid and restores the
kernel's audit settings."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.nodes.process import pid_alive
from harness.nodes.reaper import stop_detached
from harness.nodes.shell import NodeShell
from harness.sensors.auditd import netlink

STATE = Path("/run/shadowtest/auditd")
#: the kernel audit settings a started daemon changes and its release restores
SETTINGS = {"enabled": "-e", "backlog_limit": "-b", "failure": "-f", "rate_limit": "-r"}
#: generous bounds on waits that end on a real condition (the daemon registered / exited)
REGISTER_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def read_rules(path: Path) -> list[list[str]]:
    """auditctl argument lists, one per non-comment line."""
    out: list[list[str]] = []
    for raw in path.read_text("utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(shlex.split(line))
    return out


def delete_form(rule: list[str]) -> list[str]:
    """``-a always,exit ...`` -> ``-d always,exit ...``; ``-w PATH ...`` -> ``-W PATH ...``."""
    flip = {"-a": "-d", "-A": "-d", "-w": "-W"}
    return [flip.get(rule[0], rule[0]), *rule[1:]]


def audit_status(shell: NodeShell | None = None) -> dict[str, int]:
    """``auditctl -s`` as numbers (enabled, pid, lost, backlog_limit, ...): on this machine
    read over netlink in process (``auditctl`` when the kernel refuses that), on a node
    through its shell."""
    if shell is None:
        with contextlib.suppress(OSError):
            return netlink.status()
    out = (shell.run(["auditctl", "-s"]) if shell is not None else subprocess.run(
        ["auditctl", "-s"], capture_output=True, text=True, check=False)).stdout
    status: dict[str, int] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            status[key] = int(value.split()[0])
    return status


def auditctl(*args: str, shell: NodeShell | None = None) -> subprocess.CompletedProcess[str]:
    if shell is not None:
        return shell.run(["auditctl", *args])
    return subprocess.run(["auditctl", *args], capture_output=True, text=True, check=False)


@dataclass
class Shared:
    """The node-wide audit daemon state, kept in files under STATE (guarded by a lock)."""

    root: Path

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @property
    def users(self) -> Path:
        return self.root / "users"

    def live_users(self) -> list[int]:
        self.users.mkdir(parents=True, exist_ok=True)
        alive = []
        for f in self.users.iterdir():
            pid = int(f.name) if f.name.isdigit() else 0
            if pid and pid_alive(pid):
                alive.append(pid)
            else:
                f.unlink(missing_ok=True)
        return alive

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.root / "state.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def save(self, state: dict[str, Any]) -> None:
        (self.root / "state.json").write_text(json.dumps(state))

    def clear(self) -> None:
        (self.root / "state.json").unlink(missing_ok=True)


def release(shared: Shared, rules: list[list[str]], stop_daemon: bool = True) -> bool:
    """With the lock held: when no shadowtest process uses the shared daemon any more,
    delete exactly our rules, stop the daemon we started by pid and restore the kernel's
    audit settings as they were before it started — also when the daemon died first.
    True when released (or nothing was left to release)."""
    if shared.live_users():
        return False
    for rule in rules:
        auditctl(*delete_form(rule))
    state = shared.state()
    if stop_daemon and state:
        pid = daemon_pid(state)
        if pid:
            stop_pid(pid)
        restore_settings(state)
    shared.clear()
    watchdog = state.get("watchdog") or (0, "")
    stop_detached(int(watchdog[0]), str(watchdog[1]))  # not when it is the caller
    return True


def restore_settings(saved: dict[str, Any]) -> None:
    """Put the kernel's audit settings back as ``saved`` recorded them (enabled, backlog
    limit, failure mode, rate limit), each only when it differs."""
    now = audit_status()
    for key, flag in SETTINGS.items():
        if key in saved and now.get(key) != int(saved[key]):
            auditctl(flag, str(int(saved[key])))


def daemon_pid(state: dict[str, Any]) -> int | None:
    """The shared daemon's pid when it still runs: the recorded one, or — when the
    starter was killed between starting it and recording its pid — the registered audit
    daemon if it runs with our config directory."""
    pid = int(state.get("pid") or 0)
    if pid and pid_alive(pid):
        return pid
    registered = int(audit_status().get("pid") or 0)
    conf = state.get("conf")
    if registered and conf and pid_alive(registered):
        try:
            argv = Path(f"/proc/{registered}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if conf.encode() in argv:
            return registered
    return None


def reap(state_dir: Path, rules_file: Path, backstop: float = 60.0) -> None:
    """The shared daemon's watchdog (``python -m harness.sensors.auditd STATE RULES``),
    started with it: once every user is gone — even killed with SIGKILL, which runs no
    cleanup — release the daemon, its rules and the kernel's audit settings. It sleeps on
    the users' pidfds (woken by an exit, not a polling period); whoever releases first
    stops it by pid; it exits when the state is cleared."""
    shared = Shared(state_dir)
    rules = read_rules(rules_file)
    while True:
        with shared.locked():
            if not shared.state() or release(shared, rules):
                return
            users = shared.live_users()
        _wait_for_an_exit(users, backstop)


def _wait_for_an_exit(pids: list[int], timeout: float) -> None:
    """Until one of ``pids`` exits (a pidfd is readable then), at most ``timeout``."""
    import select

    fds: list[int] = []
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                return  # gone already
            except OSError:  # no pidfd (old kernel): a period instead
                time.sleep(1.0)
                return
        select.select(fds, [], [], timeout)
    finally:
        for fd in fds:
            os.close(fd)


def ours_running(state: dict[str, Any]) -> bool:
    pid = int(state.get("pid") or 0)
    return bool(pid) and pid_alive(pid) and audit_status().get("pid") == pid


def stop_pid(pid: int) -> None:
    """SIGTERM the daemon by pid, wait for it to exit (generously: it flushes its log on a
    busy machine), then SIGKILL and wait again: it is gone when this returns."""
    for sig, grace in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if not pid_alive(pid):
            return
