"""The reference eBPF sensor shipped with shadowtest: ``sensor.bt`` run by bpftrace.

``sensor.bt`` and its modules are generated from the rule table ``rules.py`` by
``python -m harness.sensors.bpftrace.generate`` (RULES.md lists the rules).

One JSON detection per matching event (pid, ppid, ancestors, comm, cgroup id,
technique); ``lost_events`` lines are counted so a lossy window is SENSOR_DOWN,
never MISSED. Sync markers: ``getpgid(0x5ad00000 + token)`` on every CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from importlib.resources import files
from itertools import count
from pathlib import Path
from typing import IO, Any, ClassVar

import msgspec

from harness.core.detection import Detection
from harness.core.errors import SensorError
from harness.core.health import Health
from harness.nodes import cgroups
from harness.nodes.process import getpgid_every_cpu
from harness.nodes.reaper import deferred_signals
from harness.nodes.remote.nodeprobe import cgroup2_root
from harness.nodes.shell import LocalShell, NodeProcess, NodeShell
from harness.sensors.base import DetectionStream, SensorBase
from harness.sensors.rulepack import files_pack
from harness.sensors.streams import FileTail, LineReader

MARKER_BASE = 0x5AD00000
#: how long bpftrace may take to detach and exit on SIGINT before SIGKILL (a busy machine)
STOP_TIMEOUT = 30.0
_decoder = msgspec.json.Decoder()


#: optional parts of the bundled rule pack, appended to the program only on nodes whose
#: kernel has the feature (probed on the node): feature -> (program file, probe command)
MODULES: dict[str, tuple[str, list[str]]] = {
    "kprobes": ("sensor-kprobes.bt", ["test", "-e", "/sys/kernel/tracing/kprobe_events"]),
}


def program_path(name: str = "sensor.bt") -> Path:
    return Path(str(files("harness").joinpath(f"sensors/bpftrace/{name}")))


class BpftraceSensor(SensorBase):
    """Starts ``bpftrace -B none -f json sensor.bt`` (or tails a running one's output)."""

    NAME: ClassVar[str] = "bpftrace"

    def __init__(self, name: str = "bpftrace", program: str | None = None,
                 binary: str = "bpftrace", attach_output: str | None = None,
                 attach_pid: int | None = None, perf_rb_pages: int | None = None,
                 start_timeout: float = 60.0, node: str | None = None,
                 record: str | None = None, load_modules: bool = True,
                 enforce: bool = False) -> None:
        self.name = name
        #: enforce mode: the program kills (``signal("KILL")``, run with ``--unsafe``);
        #: default program enforce.bt (container-scoped kill policies), its lines carry
        #: ``"action":"sigkill"``
        self.enforces = enforce
        self.load_modules = load_modules
        self.modules: list[str] = []  # the optional rule-pack modules loaded (by feature)
        self.program = Path(program) if program else program_path(
            "enforce.bt" if enforce else "sensor.bt")
        self.binary = binary
        self.attach_output = Path(attach_output) if attach_output else None
        self.attach_pid = attach_pid
        self.perf_rb_pages = perf_rb_pages
        self.start_timeout = start_timeout
        self.node = node
        self.record = Path(record) if record else None
        self._record_fh: IO[str] | None = None
        self.stream = DetectionStream(name)
        self.delay = 0.0  # synchronous: the sync marker closes the window
        self.shell: NodeShell = LocalShell(node or "local")
        self._proc: NodeProcess | None = None
        self._readers: list[LineReader] = []
        self._tail: FileTail | None = None
        self._ready = threading.Event()
        self._stderr: list[str] = []
        self._markers: dict[int, set[int]] = {}
        # the span of what bpftrace printed (heartbeats every second, detections): a
        # recording replayed by `rejudge` shows the sensor alive only inside it
        self.first_seen = 0.0
        self.last_seen = 0.0
        self._tokens = count(os.getpid() % 4096 * 256)
        self._cgroups: dict[int, str] = {}
        self._not_containers: set[int] = set()
        self._offset = time.time() - time.monotonic()  # bpftrace nsecs is CLOCK_MONOTONIC
        self._ncpu = len(os.sched_getaffinity(0))
        self._clock = 0.0  # the node's clock minus ours: received_at is in the node's time

    # ------------------------------------------------------------ lifecycle
    def use_shell(self, shell: NodeShell) -> None:
        """Run bpftrace on ``shell``'s node (this machine, or a VM over SSH)."""
        self.shell = shell

    def start(self) -> None:
        if self.record is not None:  # raw output, for `shadowtest rejudge` (format bpftrace)
            self._record_fh = self.record.open("a", encoding="utf-8")
        if self.attach_output is not None:
            self._tail = FileTail(self.attach_output, self.on_line, f"{self.name}-tail",
                                  on_bad_line=self.stream.count_malformed,
                                  on_failure=self.stream.close, on_lost=self.stream.count_lost)
            self._ready.set()
            return
        binary = self.shell.which(self.binary)
        if binary is None:
            raise SensorError(f"{self.name}: {self.binary!r} not found on PATH of node "
                              f"{self.shell.node!r}; install bpftrace there")
        env = {"BPFTRACE_PERF_RB_PAGES": str(self.perf_rb_pages)} if self.perf_rb_pages else {}
        program = str(self.program)
        data = self._program_text()
        if self.shell.remote or self.modules:  # the program file goes to the node, by digest
            program = f"/run/shadowtest/bpftrace/sensor-{hashlib.sha256(data).hexdigest()[:16]}.bt"
            self.shell.put(program, data)
        if self.shell.remote:
            probe = self.shell.run(["python3", "-S", "-c", "import time;print(time.time()-time.monotonic())"])
            with contextlib.suppress(ValueError):
                self._offset = float(probe.stdout.strip())
        self._ncpu = self.shell.cpus()
        self._clock = self.shell.clock_offset()
        unsafe = ["--unsafe"] if self.enforces else []  # signal() needs it
        argv = [binary, *unsafe, "-B", "none", "-f", "json", program]
        if not self.shell.remote and self.shell.which("setpriv"):
            # dies with the harness, even one killed with SIGKILL (its BPF programs and
            # perf buffers are file descriptors: the kernel detaches them); a remote one
            # is stopped by its wrapper when the SSH channel closes
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        with deferred_signals():  # started and recorded, or not started at all
            self._proc = self.shell.popen(argv, env, stop_signal=signal.SIGINT)
        self._readers = self._read_output(self._proc)
        # LLVM compiles the program on the node: under a TCG VM (whether shadowtest runs
        # there or drives it over SSH) or on a busy machine that takes a minute or more
        timeout = self.start_timeout * 5
        deadline = time.time() + timeout
        while not self._ready.wait(0.05):
            exited = self._proc.poll() is not None
            if exited or time.time() > deadline:
                self.stop()
                why = (f"exited with code {self._proc.returncode}" if exited else
                       f"not ready after {timeout:.0f} s (start_timeout; stopped)")
                raise SensorError(f"{self.name}: bpftrace did not become ready on node "
                                  f"{self.shell.node!r}: {why}: " + " | ".join(self._stderr[-5:]))

    def _program_text(self) -> bytes:
        """The program, plus the bundled modules whose kernel feature the node has (only
        with the bundled program: a user's own ``program`` is run as it is)."""
        data = self.program.read_bytes()
        self.modules = []
        if self.program != program_path() or not self.load_modules:
            return data
        for feature, (name, probe) in MODULES.items():
            if self.shell.run(probe).returncode == 0:
                data += b"\n" + (self.program.parent / name).read_bytes()
                self.modules.append(feature)
        return data

    def stop(self) -> None:
        """Stop bpftrace by pid (SIGINT, repeated; SIGKILL after a generous grace) and wait
        for it. A Ctrl-C or SIGTERM meanwhile is absorbed: this is the end already, and an
        interrupt raised here would skip the rest of the teardown (the next sensors)."""
        with deferred_signals() as held:
            try:
                self._stop()
            finally:
                held.clear()

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.halt(grace=STOP_TIMEOUT, repeat=0.3)  # SIGINT: SIGTERM is sometimes ignored
            for reader in self._readers:
                reader.join(5)
            for pipe in (self._proc.stdout, self._proc.stderr):
                if pipe is not None:
                    pipe.close()
        if self._tail is not None:
            self._tail.stop()
        if self._record_fh is not None:
            self._record_fh.close()
            self._record_fh = None

    def _read_output(self, proc: NodeProcess) -> list[LineReader]:
        """The daemon's stdout as sensor lines (a bad line counted, a failed pipe closing
        the stream) and its stderr kept for the reason of a failed start."""
        assert proc.stdout is not None
        assert proc.stderr is not None
        return [
            LineReader(proc.stdout, self.on_line, self._on_eof, f"{self.name}-stdout",
                       on_bad_line=self.stream.count_malformed, on_failure=self.stream.close),
            LineReader(proc.stderr, self._stderr.append, lambda: None, f"{self.name}-stderr"),
        ]

    def health(self) -> Health:
        if self._proc is not None and self._proc.poll() is not None:
            err = " | ".join(x for x in self._stderr[-3:] if x.strip())
            return Health(False, f"bpftrace exited with code {self._proc.returncode}: {err}")
        if self.attach_pid is not None and not self.shell.pid_alive(self.attach_pid):
            return Health(False, f"attached bpftrace pid {self.attach_pid} is not running")
        if self.stream.closed:  # e.g. why it did not start
            return Health(False, self.stream.closed)
        if self._proc is None and self._tail is None:
            return Health(False, f"{self.name} was never started")
        return Health(True, lost=self.stream.lost, malformed=self.stream.malformed)

    def sync(self) -> str | None:
        """getpgid(MARKER_BASE + token) on every CPU: each CPU's perf buffer is drained
        past this point once its marker line is read."""
        token = next(self._tokens) & 0xFFFFF
        self._markers[token] = set()
        if self.shell.remote:  # the node's own CPUs (the SSH control runner does it there)
            self.shell.getpgid_every_cpu(MARKER_BASE + token)
            return str(token)
        getpgid_every_cpu(MARKER_BASE + token)
        return str(token)

    # ------------------------------------------------------------ parsing
    def on_line(self, line: str) -> None:
        if not line.strip():
            return  # bpftrace prints blank lines on exit
        if self._record_fh is not None:
            self._record_fh.write(line + "\n")
            self._record_fh.flush()
        try:
            outer = _decoder.decode(line)
            kind = outer.get("type") if isinstance(outer, dict) else None
            if kind == "lost_events":  # "scope": the compiled sensor's per-run attribution
                data = outer["data"]
                self.stream.count_lost(int(data["events"]), int(data.get("scope", 0)))
                return
            if kind != "printf":
                if kind not in ("attached_probes", "map", "hist", "stats"):
                    self.stream.count_malformed(line)
                return
            payload = _decoder.decode(outer["data"])
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, RecursionError):
            self.stream.count_malformed(line)
            return
        if not isinstance(payload, dict):
            self.stream.count_malformed(line)
            return
        self._on_payload(payload, line)

    def _on_payload(self, payload: dict[str, Any], line: str) -> None:
        kind = payload.get("kind")
        try:
            if kind in ("ready", "heartbeat", "marker") and "ts_ns" in payload:
                self._seen(_observed_at(payload, self._offset))  # a sign of life, in time
            if kind == "ready":
                self._ready.set()
            elif kind == "marker":
                self._on_marker(int(payload["token"]), int(payload["cpu"]))
            elif kind == "detection":
                det = self.normalise(payload)
                if det is not None:
                    self._seen(det.observed_at)
                    self.stream.push(self._enrich(det))
        except Exception:  # a bad record must never kill the reader thread
            self.stream.count_malformed(line)

    def _seen(self, at: float) -> None:
        if at > 0:
            self.first_seen = at if not self.first_seen else min(self.first_seen, at)
            self.last_seen = max(self.last_seen, at)

    def _on_marker(self, token: int, cpu: int) -> None:
        seen = self._markers.setdefault(token, set())
        seen.add(cpu)
        if len(seen) >= self._ncpu:
            self.stream.mark(str(token))

    def _on_eof(self) -> None:
        self.stream.close("bpftrace output ended (process exited)")

    def rulepack(self) -> dict[str, Any]:
        """The program's sha256 and ``shadowtest-rulepack`` header version."""
        pack = files_pack([self.program])
        if self.attach_output is not None:
            pack["reason"] = ("attached to a running bpftrace: the program digested is the "
                              "configured one, which that bpftrace may not run")
        return pack

    def normalise(self, raw: Any) -> Detection | None:
        """Pure: a decoded ``{"kind": "detection", ...}`` payload to a Detection."""
        if not isinstance(raw, dict) or raw.get("kind") != "detection":
            return None
        names = tuple(str(raw[k]) for k in ("path",) if raw.get(k))
        extra = {k: v for k, v in raw.items() if k not in _CORE}
        return Detection(
            sensor=self.name, rule=str(raw["rule"]), technique=(str(raw["technique"]),),
            severity=raw.get("severity"), node=self.node, cgroup_id=int(raw["cgroup"]),
            pid=int(raw["pid"]), ppid=int(raw["ppid"]),
            ancestors=tuple(int(a) for a in raw.get("ancestors", ()) if a),
            comm=raw.get("comm"), names=names,
            observed_at=_observed_at(raw, self._offset), received_at=time.time() + self._clock,
            fields=extra, raw=raw,
        )

    def _enrich(self, det: Detection) -> Detection:
        """cgroup id (inode in the unified hierarchy) -> the container id it is named by."""
        if det.cgroup_id is None:
            return det
        cid = self._cgroups.get(det.cgroup_id)
        if cid is None and det.cgroup_id not in self._not_containers:
            self._cgroups = self._scan()  # a new container: cgroup ids are not reused soon
            cid = self._cgroups.get(det.cgroup_id)
            if cid is None:
                self._not_containers.add(det.cgroup_id)
        if cid is None:
            return det
        from dataclasses import replace

        return replace(det, container_id=cid)


    def _scan(self) -> dict[int, str]:
        """{cgroup id: container id} on the sensor's node: the node probe's cgroup2 root,
        mapped by ``harness.nodes.cgroups`` (there, over the node shell, for a remote node)."""
        if not self.shell.remote:
            return scan_cgroups()
        res = self.shell.run(["python3", "-S", "-c", cgroups.node_scan_code()])
        try:
            return {int(k): str(v) for k, v in json.loads(res.stdout or "{}").get("map", {}).items()}
        except (ValueError, AttributeError):
            return {}


def _observed_at(raw: dict[str, Any], offset: float) -> float:
    """bpftrace's own wall clock (``wall_ns``, microsecond precision) when it printed one,
    else the monotonic ``ts_ns`` shifted by the harness's clock offset."""
    wall = raw.get("wall_ns")
    if isinstance(wall, int) and wall > 0:
        return wall / 1e9
    return int(raw["ts_ns"]) / 1e9 + offset


_CORE = frozenset({"kind", "rule", "technique", "severity", "pid", "ppid", "ancestors", "comm",
                   "cgroup", "ts_ns", "wall_ns"})


def scan_cgroups(root: Path | None = None) -> dict[int, str]:
    """Inode -> container id for every container cgroup (``harness.nodes.cgroups``: docker's
    cgroupfs and systemd drivers, containerd/CRI, CRI-O, podman, shadowtest's own contexts)
    under the cgroup2 hierarchy at ``root`` (default: this machine's, as the node probe
    finds it)."""
    where = str(root) if root is not None else cgroup2_root()
    return cgroups.scan(where) if where else {}
