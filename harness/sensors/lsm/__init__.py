"""A deny-before-effect enforcer: BPF LSM programs (CO-RE, libbpf) that return -EPERM to
two container attacks before they take effect, and report each denial.

Rules (``enforcer.bpf.c`` has the exact policy):

- ``etc-file-create`` (T1098): a container task creating a new file directly in the
  host's ``/etc`` (``inode_create`` on the directory the loader stat()ed as ``/etc``):
  ``open(O_CREAT)`` fails with EPERM and no file is created. Package managers (by comm,
  ``allow_comms``) are allowed.
- ``ptrace-pid1`` (T1055.008): a container task's PTRACE_MODE_ATTACH access to PID 1 of a
  non-initial PID namespace (``ptrace_access_check``): PTRACE_ATTACH fails with EPERM.

"Container task" = the task's cgroup v2 ancestor at level 1 is one of
``container_parents`` (``shadowtest``, ``docker``, ``kubepods``, ``kubepods.slice``):
the host's own processes (root cgroup, init.scope, system.slice, user sessions) are never
denied. The loader (``enforcer.c``) prints bpftrace's ``-f json`` envelope with the
bundled bpftrace sensor's payloads, plus ``"action": "deny"``; so this sensor is the
bpftrace sensor's reader with another daemon. Build: ``bash ci/lsm-enforcer.sh`` (run by
``start()`` when needed); the artefacts go to the node under ``/var/lib/shadowtest/lsm``.
On a node whose kernel cannot run BPF LSM programs (this development host), ``start()``
raises SensorError with the node's reason, and the run reports SENSOR_DOWN.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from harness.core.detection import Detection
from harness.core.errors import ConfigError, SensorError
from harness.core.health import Health
from harness.nodes.cgroups import node_cgroup2_root
from harness.nodes.shell import NodeShell
from harness.sensors.bpftrace import BpftraceSensor
from harness.sensors.bpftrace import rules as rule_table
from harness.sensors.rulepack import files_pack

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "enforcer.bpf.c", HERE / "enforcer.c", HERE / "enforcer.h")
BUILD_SCRIPT = HERE.parents[2] / "ci" / "lsm-enforcer.sh"
DEFAULT_CACHE = Path("/var/cache/shadowtest/lsm")
LOADER, OBJECT = "shadowtest-lsm", "enforcer.bpf.o"
#: where the loader goes on the node: not /run/shadowtest (the VMs' /run is noexec), keyed
#: by the artefacts' digest so a rebuilt enforcer never runs an older object
REMOTE_DIR = "/var/lib/shadowtest/lsm"

#: rule -> (technique, severity): what the BPF programs enforce — the enforced rules of the
#: reference sensor's one rule table (harness/sensors/bpftrace/rules.py), which enforce.bt
#: is generated from too
RULES: dict[str, tuple[str, str]] = {
    e.rule: (rule_table.rule(e.rule).technique, rule_table.rule(e.rule).severity)
    for e in rule_table.ENFORCEMENTS}
DEFAULT_PARENTS = ("shadowtest", "docker", "kubepods", "kubepods.slice")
DEFAULT_COMMS = ("dpkg", "apt", "apt-get")
#: level-1 cgroups that hold the host's own processes: never a container parent
HOST_CGROUPS = frozenset({"init.scope", "system.slice", "user.slice", "machine.slice"})
MAX_ENTRIES = 32  # the loader's list sizes
_PARENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: a part of a file written to a node: put() passes data base64-encoded in one argv
#: entry, and one argv string is capped at 128 KiB by the kernel (MAX_ARG_STRLEN)
CHUNK = 64 * 1024


def validate(name: str, rules: Sequence[str], container_parents: Sequence[str],
             allow_comms: Sequence[str]) -> None:
    """Pure: the options of ``[tool.shadowtest.sensors.<name>]`` (type ``lsm``)."""
    where = f"[tool.shadowtest.sensors.{name}]"
    for key, value in (("rules", rules), ("container_parents", container_parents),
                       ("allow_comms", allow_comms)):
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} must be a list of strings, got {value!r}")
        if len(value) > MAX_ENTRIES:
            raise ConfigError(f"{where}: {key} has {len(value)} entries; at most {MAX_ENTRIES}")
    unknown = sorted(set(rules) - set(RULES))
    if unknown or not rules:
        raise ConfigError(f"{where}: rules {list(rules)!r}: expected a non-empty list of "
                          f"{', '.join(RULES)} (unknown: {', '.join(unknown) or 'none'})")
    if not container_parents:
        raise ConfigError(f"{where}: container_parents is empty: name the level-1 cgroups "
                          f"whose subtrees are containers, e.g. {list(DEFAULT_PARENTS)!r}")
    for parent in container_parents:
        if not _PARENT.match(parent):
            raise ConfigError(f"{where}: container_parents entry {parent!r} is not a cgroup "
                              "name (one path component: letters, digits, '.', '_', '-')")
        if parent in HOST_CGROUPS:
            raise ConfigError(f"{where}: container_parents entry {parent!r} holds the host's "
                              "own processes, which the enforcer must never deny; name "
                              "container-only cgroups (shadowtest, docker, kubepods)")
    for comm in allow_comms:
        if not 0 < len(comm.encode()) <= 15:
            raise ConfigError(f"{where}: allow_comms entry {comm!r} is not a comm "
                              "(1 to 15 bytes: the kernel's task name)")


def loader_argv(loader: str, obj: str, node: str, rules: Sequence[str],
                container_parents: Sequence[str], allow_comms: Sequence[str],
                cgroup2_root: str = "") -> list[str]:
    """Pure: the loader's command line; ``cgroup2_root`` is the node probe's (none: the
    loader reports that the node has no cgroup2 hierarchy)."""
    argv = [loader, "--object", obj, "--node", node]
    if cgroup2_root:
        argv += ["--cgroup2-root", cgroup2_root]
    for flag, values in (("--rule", rules), ("--container-parent", container_parents),
                         ("--allow-comm", allow_comms)):
        for value in values:
            argv += [flag, value]
    return argv


def build(cache_dir: Path = DEFAULT_CACHE, script: Path = BUILD_SCRIPT) -> Path:
    """``bash ci/lsm-enforcer.sh cache_dir`` (a no-op when built): the artefacts' dir."""
    if not script.is_file():
        raise SensorError(f"lsm: the build script {script} is missing (the harness was "
                          "installed without its ci/); build the enforcer in a checkout with "
                          "`bash ci/lsm-enforcer.sh` and set build_dir = '<its output dir>'")
    res = subprocess.run(["bash", str(script), str(cache_dir)], capture_output=True, text=True,
                         timeout=900, check=False)
    out = res.stdout.strip().splitlines()
    if res.returncode != 0 or not out:
        raise SensorError(f"lsm: building the enforcer failed (`bash {script} {cache_dir}`, "
                          f"exit {res.returncode}): {res.stderr.strip()[-800:]}")
    return Path(out[-1])


class LsmEnforcerSensor(BpftraceSensor):
    """The BPF LSM enforcer (``shadowtest-lsm`` + ``enforcer.bpf.o``) run on the node;
    its output is read like the bundled bpftrace sensor's (markers, cgroup mapping)."""

    NAME: ClassVar[str] = "lsm"

    def __init__(self, name: str = "lsm", rules: Sequence[str] = tuple(RULES),
                 container_parents: Sequence[str] = DEFAULT_PARENTS,
                 allow_comms: Sequence[str] = DEFAULT_COMMS, build_dir: str | None = None,
                 cache_dir: str | None = None, start_timeout: float = 60.0,
                 node: str | None = None, record: str | None = None) -> None:
        validate(name, rules, container_parents, allow_comms)
        super().__init__(name=name, start_timeout=start_timeout, node=node, record=record,
                         load_modules=False)
        self.rules = tuple(rules)
        self.container_parents = tuple(container_parents)
        self.allow_comms = tuple(allow_comms)
        self.build_dir = Path(build_dir) if build_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE
        self.error: str | None = None  # the loader's {"kind": "error"} reason
        self.ready: dict[str, Any] = {}  # the loader's ready line (load_ms, attach_ms, ...)
        self.timings: dict[str, float] = {}  # seconds: build, upload, start (to ready)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.record is not None:
            self._record_fh = self.record.open("a", encoding="utf-8")
        t0 = time.perf_counter()
        built = self.build_dir or build(self.cache_dir)
        loader_bin, obj = built / LOADER, built / OBJECT
        if not loader_bin.is_file() or not obj.is_file():
            raise SensorError(f"{self.name}: {built} lacks {LOADER} and {OBJECT}: build them "
                              "with `bash ci/lsm-enforcer.sh`")
        t1 = time.perf_counter()
        data = {LOADER: loader_bin.read_bytes(), OBJECT: obj.read_bytes()}
        digest = hashlib.sha256(data[LOADER] + data[OBJECT]).hexdigest()[:16]
        remote = f"{REMOTE_DIR}/{digest}"
        for fname, blob in data.items():
            put_file(self.shell, f"{remote}/{fname}", blob, 0o755 if fname == LOADER else 0o644)
        t2 = time.perf_counter()
        self._ncpu = self.shell.cpus()
        self._clock = self.shell.clock_offset()
        argv = loader_argv(f"{remote}/{LOADER}", f"{remote}/{OBJECT}", self.shell.node,
                           self.rules, self.container_parents, self.allow_comms,
                           cgroup2_root=node_cgroup2_root(self.shell))
        self._proc = self.shell.popen(argv, stop_signal=signal.SIGTERM)
        self._readers = self._read_output(self._proc)
        deadline = time.time() + self.start_timeout
        while not self._ready.wait(0.05):
            if self._proc.poll() is not None or time.time() > deadline:
                code = self._proc.poll()
                for reader in self._readers:  # the error line may still be in the pipe
                    reader.join(2)
                self.stop()
                if self.error:
                    raise SensorError(f"{self.name}: {self.error}")
                raise SensorError(
                    f"{self.name}: the LSM enforcer did not become ready on {self.shell.node!r} "
                    f"(exit {code}): " + " | ".join(self._stderr[-5:]))
        self.timings = {"build": t1 - t0, "upload": t2 - t1, "start": time.perf_counter() - t2}

    def _on_payload(self, payload: dict[str, Any], line: str) -> None:
        kind = payload.get("kind")
        if kind == "error":
            self.error = str(payload.get("reason"))
            return
        if kind == "ready":
            self.ready = payload
        super()._on_payload(payload, line)

    def _on_eof(self) -> None:
        self.stream.close(f"{self.name}: the LSM enforcer's output ended (process exited): "
                          + (self.error or " | ".join(self._stderr[-3:])))

    def health(self) -> Health:
        if self._proc is not None and self._proc.poll() is not None:
            err = self.error or " | ".join(x for x in self._stderr[-3:] if x.strip())
            return Health(False, f"the LSM enforcer exited with code {self._proc.returncode}: {err}")
        return super().health()

    def normalise(self, raw: Any) -> Detection | None:
        det = super().normalise(raw)
        if det is None:
            return None
        action = raw.get("action")
        return replace(det, action=str(action)) if action else det

    def rulepack(self) -> dict[str, Any]:
        """Identity of what is enforced: the BPF and loader sources (header lsm-N)."""
        return files_pack(list(SOURCES))


def put_file(shell: NodeShell, path: str, data: bytes, mode: int) -> None:
    """``shell.put``, in parts when ``data`` is larger than one argv entry can carry."""
    if len(data) <= CHUNK:
        shell.put(path, data, mode)
        return
    parts = [f"{path}.part{i}" for i in range(0, len(data), CHUNK)]
    for part, i in zip(parts, range(0, len(data), CHUNK), strict=True):
        shell.put(part, data[i:i + CHUNK], 0o600)
    script = (f"cat {' '.join(shlex.quote(p) for p in parts)} > {shlex.quote(path)} && "
              f"chmod {oct(mode)[2:]} {shlex.quote(path)} && rm -f "
              + " ".join(shlex.quote(p) for p in parts))
    res = shell.run(["sh", "-c", script])
    if res.returncode != 0:
        raise SensorError(f"lsm: cannot write {path} on {shell.node!r}: {res.stderr.strip()}")


__all__ = ["RULES", "LsmEnforcerSensor", "build", "loader_argv", "put_file", "validate"]
