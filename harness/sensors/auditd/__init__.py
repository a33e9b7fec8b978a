"""The real kernel audit daemon as a sensor: rules keyed by ATT&CK ids, raw log parsed.

One audit daemon per kernel: every shadowtest process on the node shares one instance
(a lock file and a users directory of pids). The first user starts it and loads the
rules; the last one deletes exactly those rules and stops it by pid.
Correlation is by process tree (audit has no container id and its timestamps lag by up
to 0.8 s): every exec record feeds a pid -> ppid map, and each detection carries its
ancestors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from importlib.resources import files
from itertools import count
from pathlib import Path
from typing import Any, ClassVar

from harness.core.detection import Detection
from harness.core.errors import SensorError
from harness.core.health import Health
from harness.core.mitre import TECHNIQUE_ID
from harness.nodes.process import pid_alive, spawn, stop
from harness.nodes.reaper import deferred_signals, spawn_detached
from harness.nodes.shell import LocalShell, NodeProcess, NodeShell
from harness.sensors.auditd import netlink
from harness.sensors.auditd.auditlog import AuditEvent, AuditLogParser
from harness.sensors.auditd.daemon import (
    REGISTER_TIMEOUT,
    SETTINGS,
    STATE,
    STOP_TIMEOUT,
    Shared,
    audit_status,
    auditctl,
    delete_form,
    ours_running,
    read_rules,
    release,
    restore_settings,
)
from harness.sensors.base import DetectionStream, SensorBase
from harness.sensors.rates import load_rate, rate_file, save_rate, size_for
from harness.sensors.rulepack import files_pack
from harness.sensors.streams import FileTail, LineReader

SYNC_PREFIX = "shadowtest-sync "
#: the audit log's rotation: each file holds ``LOG_HEADROOM_S`` of the peak write rate an
#: earlier session measured on the node (16 to 64 MiB, and all files together at most half
#: the free space where the log is: it may be a tmpfs), ``NUM_LOGS`` files are kept, so a
#: tail may lag three files behind (one lagging more is told by FileTail: lost, never
#: skipped silently)
LOG_HEADROOM_S, LOG_MIN_MB, LOG_MAX_MB, NUM_LOGS = 10.0, 16, 64, 4
#: where the measured peak write rate of the audit log is kept, per node
RATES = Path("/var/cache/shadowtest/auditd")


def log_mb_for(rate: float | None, free_bytes: int | None = None) -> int:
    """Pure: max_log_file (MiB) for a measured peak write rate (bytes/s; None: default),
    bounded by ``free_bytes`` where the log is written."""
    cap = LOG_MAX_MB
    while free_bytes is not None and cap > LOG_MIN_MB and cap * NUM_LOGS * 2 << 20 > free_bytes:
        cap //= 2
    return size_for(rate, 1, LOG_HEADROOM_S, LOG_MIN_MB, cap)


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def render_conf(log: Path, max_log_mb: int = LOG_MIN_MB) -> str:
    """The shipped auditd.conf with ``log_file`` pointing at ``log`` and the rotation sized
    (auditd 3.0.9 needs ``key = value`` with spaces, space_left > admin_space_left, and
    freq > 0)."""
    template = Path(str(files("harness").joinpath("sensors/auditd/auditd_conf/auditd.conf")))
    values = {"log_file": str(log), "max_log_file": str(max_log_mb), "num_logs": str(NUM_LOGS)}
    lines = [f"{key} = {values[key]}" if (key := ln.split("=")[0].strip()) in values else ln
             for ln in template.read_text("utf-8").splitlines()]
    return "\n".join(lines) + "\n"


def _rate_file(node: str) -> Path:
    return rate_file(RATES, node)


def rules_path() -> Path:
    return Path(str(files("harness").joinpath("sensors/auditd/auditd.rules")))


class AuditdSensor(SensorBase):
    """auditd started (or attached to) by the harness; its raw log tailed and parsed."""

    NAME: ClassVar[str] = "auditd"

    def __init__(self, name: str = "auditd", attach: bool = False, log: str | None = None,
                 rules: str | None = None, binary: str = "auditd", backlog: int = 8192,
                 node: str | None = None, state_dir: str | None = None) -> None:
        self.name = name
        self.attach = attach
        self.shared = Shared(Path(state_dir) if state_dir else STATE)
        self.log = Path(log) if log else (
            Path("/var/log/audit/audit.log") if attach else self.shared.root / "audit.log")
        self.rules_file = Path(rules) if rules else rules_path()
        self.rules = read_rules(self.rules_file)
        self.binary = binary
        self.backlog = backlog
        self.node = node
        self.stream = DetectionStream(name)
        self.delay = 0.0  # synchronous: the sync marker closes the window
        self._parser = AuditLogParser()
        # the span of the audit records read (every exec is logged): a recording replayed
        # by `rejudge` shows the sensor alive only inside it
        self.first_seen = 0.0
        self.last_seen = 0.0
        self._tail: FileTail | None = None
        self._tree: dict[int, int] = {}
        self._daemon_pid: int | None = None
        self._lost_seen: int | None = None
        self._tokens = count(os.getpid() * 1000)
        self._started = False
        self.shell: NodeShell = LocalShell(node or "local")
        self._remote: RemoteDaemon | None = None
        self._clock = 0.0  # the node's clock minus ours: received_at is in the node's time

    # ------------------------------------------------------------ lifecycle
    def use_shell(self, shell: NodeShell) -> None:
        """Run (or attach to) auditd on ``shell``'s node: this machine, or a VM over SSH."""
        self.shell = shell

    def start(self) -> None:
        if self.shell.remote:
            self._clock = self.shell.clock_offset()
            self._remote = RemoteDaemon(self, self.shell)
            self._remote.start()
            self._started = True
            return
        if self.attach:
            status = audit_status()
            if not status.get("pid"):
                self._daemon_pid = None
                self._tail = FileTail(self.log, self.on_line, f"{self.name}-tail",
                                      on_bad_line=self.stream.count_malformed,
                                      on_failure=self.stream.close, on_lost=self.stream.count_lost)
                return  # health() reports SENSOR_DOWN with the reason
            self._daemon_pid = status["pid"]
        with deferred_signals(), self.shared.locked():
            users = self.shared.live_users()
            state = self.shared.state()
            if not users and state and not self.attach:
                # a daemon whose last user died (and whose watchdog has not acted yet), or
                # one that died itself: release it first, so the kernel's settings are
                # restored and the next originals are the real ones
                release(self.shared, self.rules)
                state = {}
            if not self.attach and not (users or ours_running(state)):
                state = self._start_daemon()
            if not self.attach:
                self._daemon_pid = int(state["pid"])
                self.log = Path(state.get("log", self.log))  # the shared daemon's own log
            if not users:
                self._load_rules()
            (self.shared.users / str(os.getpid())).touch()
            self._started = True  # a user from here on: stop() releases, even if interrupted
        self._tail = FileTail(self.log, self.on_line, f"{self.name}-tail",
                              on_bad_line=self.stream.count_malformed,
                              on_failure=self.stream.close, on_lost=self.stream.count_lost)
        self._lost_seen = audit_status().get("lost", 0)

    def _start_daemon(self) -> dict[str, Any]:
        status = audit_status()
        if status.get("pid"):
            raise SensorError(
                f"{self.name}: an audit daemon not started by shadowtest runs already "
                f"(pid {status['pid']}); one audit daemon per kernel: set attach = true and "
                "log = '<its log file>' under [tool.shadowtest.sensors.auditd]"
            )
        binary = shutil.which(self.binary) or shutil.which(self.binary, path="/usr/sbin:/sbin")
        if binary is None:
            raise SensorError(f"{self.name}: {self.binary!r} not found; install auditd")
        conf = self.shared.root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        os.chmod(conf, 0o750)
        (conf / "auditd.conf").write_text(
            render_conf(self.log, log_mb_for(load_rate(_rate_file(self.shell.node)),
                                             _free_bytes(self.log.parent))))
        os.chmod(conf / "auditd.conf", 0o640)
        # journal first: the kernel's settings as they are now and the daemon's config are
        # recorded, and the watchdog runs, before anything changes; whoever releases (this
        # process, or the watchdog once it is gone) restores exactly these
        state: dict[str, Any] = {**{k: status[k] for k in SETTINGS if k in status},
                                 "conf": str(conf), "log": str(self.log)}
        self.shared.save(state)
        # the watchdog, in its own session: it outlives a harness killed with SIGKILL; it
        # waits for the lock held here, so it never sees this start half done; whoever
        # releases stops it by pid
        state["watchdog"] = list(spawn_detached(
            [sys.executable, "-m", "harness.sensors.auditd", str(self.shared.root),
             str(self.rules_file)]))
        self.shared.save(state)
        proc = spawn([binary, "-n", "-c", str(conf)])
        state["pid"] = proc.pid
        self.shared.save(state)
        deadline = time.monotonic() + REGISTER_TIMEOUT
        while audit_status().get("pid") != proc.pid:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
                stop(proc, signal.SIGTERM, grace=STOP_TIMEOUT)
                restore_settings(state)
                self.shared.clear()
                raise SensorError(f"{self.name}: auditd did not register: {err.strip()[:300]}")
            time.sleep(0.05)
        auditctl("-b", str(self.backlog))
        return state

    def _load_rules(self) -> None:
        for rule in self.rules:
            res = auditctl(*rule)
            if res.returncode != 0 and "exists" not in res.stderr:
                self._delete_rules()
                raise SensorError(
                    f"{self.name}: auditctl {' '.join(rule)} failed: {res.stderr.strip()}"
                )

    def _delete_rules(self) -> None:
        for rule in self.rules:
            auditctl(*delete_form(rule))

    def stop(self) -> None:
        with deferred_signals() as held:
            try:
                self._stop()
            finally:
                held.clear()  # absorbed: see _stop

    def _stop(self) -> None:
        if self._remote is not None:
            self._remote.stop()
            self._remote = None
            self._started = False
            return
        if self._tail is not None:
            self._tail.stop()
            if self._tail.rate.peak is not None and not self.attach:  # sizes the next start
                with contextlib.suppress(OSError):
                    save_rate(_rate_file(self.shell.node), self._tail.rate.peak)
            self._tail = None
        if not self._started:
            return
        self._started = False
        # a Ctrl-C or SIGTERM meanwhile is absorbed: this is the end already, and an
        # interrupt raised here would skip the rest of the teardown
        with deferred_signals() as held, self.shared.locked():
            try:
                (self.shared.users / str(os.getpid())).unlink(missing_ok=True)
                release(self.shared, self.rules, stop_daemon=not self.attach)
            finally:
                held.clear()

    def health(self) -> Health:
        if self._remote is not None:
            return self._remote.health()
        if self._daemon_pid is None:
            return Health(False, f"no audit daemon is running (auditctl -s: pid 0); "
                                 f"{'start auditd or set attach = false' if self.attach else ''}")
        if not pid_alive(self._daemon_pid):
            return Health(False, f"auditd pid {self._daemon_pid} is not running")
        status = audit_status()
        if status.get("pid") != self._daemon_pid or not status.get("enabled"):
            return Health(False, f"kernel audit is not delivering to pid {self._daemon_pid}: {status}")
        lost = status.get("lost", 0)
        if self._lost_seen is not None and lost > self._lost_seen:
            self.stream.count_lost(lost - self._lost_seen)
        self._lost_seen = lost
        return Health(True, lost=self.stream.lost, malformed=self.stream.malformed)

    def rulepack(self) -> dict[str, Any]:
        """The audit rules file loaded: its sha256 and ``shadowtest-rulepack`` header."""
        return files_pack([self.rules_file])

    def end_of_input(self) -> None:
        """The events still pending in the parser (a record group not yet closed)."""
        for event in self._parser.flush():
            self._on_event(event)

    def sync(self) -> str | None:
        """An audit user message through the kernel; None when the daemon that would log
        it is gone (the kernel takes the message either way: a token then would only make
        the run wait out its window)."""
        if self._remote is None and (self._daemon_pid is None or not pid_alive(self._daemon_pid)):
            return None
        token = str(next(self._tokens))
        if self._remote is None:
            try:  # in process: no auditctl subprocess per run
                netlink.user_message(SYNC_PREFIX + token)
            except OSError:
                pass  # the kernel refused netlink here: auditctl below
            else:
                return token
        res = auditctl("-m", SYNC_PREFIX + token, shell=self.shell if self._remote else None)
        return token if res.returncode == 0 else None

    # ------------------------------------------------------------ parsing
    def on_line(self, line: str) -> None:
        before = self._parser.malformed
        events = self._parser.feed(line)
        if self._parser.malformed > before:
            self.stream.count_malformed(line)
        for event in events:
            try:
                self._on_event(event)
            except Exception:  # a bad record must never kill the reader thread
                self.stream.count_malformed(line)

    def _on_event(self, event: AuditEvent) -> None:
        if event.timestamp > 0:
            self.first_seen = (event.timestamp if not self.first_seen
                               else min(self.first_seen, event.timestamp))
            self.last_seen = max(self.last_seen, event.timestamp)
        msg = event.user_msg
        if msg and msg.startswith(SYNC_PREFIX):
            for event2 in self._parser.flush():
                self._on_event(event2)
            self.stream.mark(msg[len(SYNC_PREFIX):].strip())
            return
        if event.pid is not None and event.ppid is not None:
            self._tree[event.pid] = event.ppid
            if len(self._tree) > 200_000:
                self._tree.clear()
        det = self.normalise(event)
        if det is not None:
            self.stream.push(_with_ancestors(det, self._tree))

    def normalise(self, raw: Any) -> Detection | None:
        """Pure: an AuditEvent whose key is an ATT&CK id to a Detection."""
        if not isinstance(raw, AuditEvent) or not raw.key or not TECHNIQUE_ID.match(raw.key):
            return None
        names = tuple(x for x in (*raw.paths, raw.proctitle or "", raw.exe or "") if x)
        fields: dict[str, Any] = {"serial": raw.serial, "syscall": raw.syscall, "exe": raw.exe,
                                  "success": raw.success, "opid": raw.opid,
                                  "proctitle": raw.proctitle, "paths": list(raw.paths)}
        return Detection(
            sensor=self.name, rule=raw.key, technique=(raw.key,), node=self.node,
            pid=raw.pid, ppid=raw.ppid, comm=raw.comm, names=names,
            observed_at=raw.timestamp, received_at=time.time() + self._clock, fields=fields,
            raw=raw,
        )


class RemoteDaemon:
    """auditd on a remote node (a VM of the kernel matrix): started there with the shipped
    config, rules loaded with ``auditctl -R``, its log followed with ``tail -F`` over the
    node's shell. One harness owns a VM's kernel, so no users directory is needed; on an
    SSH node already running auditd, ``attach = true`` follows that daemon's log."""

    def __init__(self, sensor: AuditdSensor, shell: NodeShell) -> None:
        self.sensor = sensor
        self.shell = shell
        self.root = "/run/shadowtest/auditd"
        self.log = str(sensor.log) if sensor.attach else f"{self.root}/audit.log"
        self.daemon: NodeProcess | None = None
        self.tail: NodeProcess | None = None
        self.pid: int | None = None
        self.saved: dict[str, int] = {}
        self.readers: list[LineReader] = []
        self.lost_seen: int | None = None

    def start(self) -> None:
        s, sh = self.sensor, self.shell
        status = audit_status(sh)
        if s.attach:
            self.pid = status.get("pid") or None
        else:
            if status.get("pid"):
                raise SensorError(
                    f"{s.name}: an audit daemon not started by shadowtest runs on node "
                    f"{sh.node!r} (pid {status['pid']}); set attach = true and log = '<its log>'")
            binary = sh.which(s.binary)
            if binary is None:
                raise SensorError(f"{s.name}: {s.binary!r} not found on node {sh.node!r}; install auditd")
            sh.put(f"{self.root}/conf/auditd.conf", render_conf(Path(self.log)).encode(), 0o640)
            sh.run(["chmod", "0750", f"{self.root}/conf"])
            self.saved = {k: status[k] for k in SETTINGS if k in status}
            self.daemon = sh.popen([binary, "-n", "-c", f"{self.root}/conf"])
            deadline = time.time() + 30
            while audit_status(sh).get("pid") != self.daemon.node_pid:
                if self.daemon.poll() is not None or time.time() > deadline:
                    self.daemon.halt()
                    raise SensorError(f"{s.name}: auditd did not register on node {sh.node!r}")
                time.sleep(0.1)
            self.pid = self.daemon.node_pid
            auditctl("-b", str(s.backlog), shell=sh)
            sh.put(f"{self.root}/rules", s.rules_file.read_bytes())
            res = sh.run(["auditctl", "-R", f"{self.root}/rules"])
            if res.returncode != 0 and "exists" not in res.stderr:
                raise SensorError(f"{s.name}: auditctl -R on node {sh.node!r}: {res.stderr.strip()[:300]}")
        self.tail = sh.popen(["tail", "-n", "0", "-F", self.log])
        assert self.tail.stdout is not None
        self.readers = [LineReader(self.tail.stdout, s.on_line, lambda: None, f"{s.name}-tail",
                                  on_bad_line=s.stream.count_malformed,
                                  on_failure=s.stream.close)]
        self.lost_seen = audit_status(sh).get("lost", 0)
        # tail -F -n 0 starts at the end: a round trip through the log proves it follows
        sub = s.stream.subscribe()
        token = s.sync()
        if token is None or not sub.wait(lambda _: False, token, time.time() + 30)[1]:
            raise SensorError(f"{s.name}: the audit log on node {sh.node!r} is not followed")

    def stop(self) -> None:
        sh = self.shell
        if self.tail is not None:
            self.tail.halt(grace=2)
            self.tail = None
        if self.daemon is not None:
            with deferred_signals():
                for rule in self.sensor.rules:
                    auditctl(*delete_form(rule), shell=sh)
                self.daemon.halt(grace=STOP_TIMEOUT)
                self.daemon = None
                for key, flag in SETTINGS.items():  # also when the daemon died first
                    if key in self.saved:
                        auditctl(flag, str(self.saved[key]), shell=sh)

    def health(self) -> Health:
        s = self.sensor
        if self.pid is None:
            return Health(False, f"no audit daemon is running on node {self.shell.node!r}")
        if self.daemon is not None and self.daemon.poll() is not None:
            return Health(False, f"auditd on node {self.shell.node!r} exited ({self.daemon.returncode})")
        if self.tail is not None and self.tail.poll() is not None:
            return Health(False, f"the audit log tail on node {self.shell.node!r} ended")
        status = audit_status(self.shell)
        if status.get("pid") != self.pid or not status.get("enabled"):
            return Health(False, f"kernel audit on node {self.shell.node!r} is not delivering "
                                 f"to pid {self.pid}: {status}")
        lost = status.get("lost", 0)
        if self.lost_seen is not None and lost > self.lost_seen:
            s.stream.count_lost(lost - self.lost_seen)
        self.lost_seen = lost
        return Health(True, lost=s.stream.lost, malformed=s.stream.malformed)


def _with_ancestors(det: Detection, tree: dict[int, int], depth: int = 8) -> Detection:
    from dataclasses import replace

    chain: list[int] = []
    pid = det.ppid
    while pid and len(chain) < depth and pid in tree:
        pid = tree[pid]
        if pid in chain or pid <= 1:
            break
        chain.append(pid)
    return replace(det, ancestors=tuple(chain))


__all__ = ["STATE", "SYNC_PREFIX", "AuditdSensor", "RemoteDaemon", "render_conf", "rules_path"]
