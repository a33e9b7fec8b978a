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
bpftrace sensor's reader with another daemon (``harness.sensors.libbpf.LoaderSensor``
runs it, as it runs the compiled reference sensor). Build: ``bash ci/lsm-enforcer.sh``
(run by ``start()`` when needed); the artefacts go to the node under
``/var/lib/shadowtest/lsm``.
On a node whose kernel cannot run BPF LSM programs (this development host), ``start()``
raises SensorError with the node's reason, and the run reports SENSOR_DOWN.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from harness.core.detection import Detection
from harness.core.errors import ConfigError
from harness.nodes.cgroups import node_cgroup2_root
from harness.sensors.bpftrace import rules as rule_table
from harness.sensors.libbpf import LoaderSensor
from harness.sensors.rulepack import files_pack

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "enforcer.bpf.c", HERE / "enforcer.c", HERE / "enforcer.h",
           HERE.parent / "libbpf" / "emit.h")
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


class LsmEnforcerSensor(LoaderSensor):
    """The BPF LSM enforcer (``shadowtest-lsm`` + ``enforcer.bpf.o``) run on the node;
    its output is read like the bundled bpftrace sensor's (markers, cgroup mapping)."""

    NAME: ClassVar[str] = "lsm"
    LOADER: ClassVar[str] = LOADER
    OBJECT: ClassVar[str] = OBJECT
    BUILD_SCRIPT: ClassVar[Path] = BUILD_SCRIPT
    DEFAULT_CACHE: ClassVar[Path] = DEFAULT_CACHE
    REMOTE_DIR: ClassVar[str] = REMOTE_DIR
    WHAT: ClassVar[str] = "the LSM enforcer"

    def __init__(self, name: str = "lsm", rules: Sequence[str] = tuple(RULES),
                 container_parents: Sequence[str] = DEFAULT_PARENTS,
                 allow_comms: Sequence[str] = DEFAULT_COMMS, build_dir: str | None = None,
                 cache_dir: str | None = None, start_timeout: float = 60.0,
                 node: str | None = None, record: str | None = None) -> None:
        validate(name, rules, container_parents, allow_comms)
        super().__init__(name=name, build_dir=build_dir, cache_dir=cache_dir,
                         start_timeout=start_timeout, node=node, record=record)
        self.rules = tuple(rules)
        self.container_parents = tuple(container_parents)
        self.allow_comms = tuple(allow_comms)

    def loader_args(self, loader: str, obj: str) -> list[str]:
        return loader_argv(loader, obj, self.shell.node, self.rules, self.container_parents,
                           self.allow_comms, cgroup2_root=node_cgroup2_root(self.shell))

    def normalise(self, raw: Any) -> Detection | None:
        det = super().normalise(raw)
        if det is None:
            return None
        action = raw.get("action")
        return replace(det, action=str(action)) if action else det

    def rulepack(self) -> dict[str, Any]:
        """Identity of what is enforced: the BPF and loader sources (header lsm-N)."""
        return files_pack(list(SOURCES))


__all__ = ["RULES", "LsmEnforcerSensor", "loader_argv", "validate"]
