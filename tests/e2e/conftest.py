"""End-to-end helpers: a scenario catalogue in tmp_path and the real ``shadowtest`` CLI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.builtin import BUILTIN
from harness.nodes.dockerd import Dockerd

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Catalog:
    root: Path
    #: set in the environment of every process this catalogue's harness starts, so the
    #: leftover check can tell this test's processes from another run's
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, OWNER: self.owner, **(extra or {})}

    def scenario(self, tactic: str, sid: str, text: str) -> Path:
        path = self.root / "scenarios" / tactic / f"{sid}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def atomic(self, aid: str, text: str) -> Path:
        path = self.root / "atomic" / f"{aid}.yaml"
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def config(self, text: str) -> None:
        (self.root / "shadowtest.toml").write_text(textwrap.dedent(text).lstrip())

    def run(self, *args: str, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness", *args], cwd=self.root, capture_output=True,
            text=True, timeout=timeout, check=False, env=self.env(env),
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "harness", *args], cwd=self.root, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=self.env(),
        )

    def rows(self, name: str = "results.jsonl") -> list[dict[str, Any]]:
        path = self.root / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


DEFAULT_CONFIG = """
[tool.shadowtest]
scenarios = ["scenarios"]
atomics = ["atomic"]
allowed_nodes = ["local"]
window = "5s"

[tool.shadowtest.nodes.local]
url = "local://"

[tool.shadowtest.sensors.auditd]
type = "auditd"

[tool.shadowtest.sensors.bpftrace]
type = "bpftrace"
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    """The bundled atomics (with atomic/bin) and an empty scenarios/ tree."""
    shutil.copytree(BUILTIN / "atomic", tmp_path / "atomic")
    (tmp_path / "scenarios").mkdir()
    cat = Catalog(tmp_path)
    cat.config(DEFAULT_CONFIG)
    return cat


def verdicts(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    return {(r["scenario"], r["context"], r["sensor"]): r["verdict"] for r in rows}


#: what the leftover check compares (every kind is a sorted list; empty = nothing left)
KINDS = ("etc_files", "processes", "cgroups", "audit_rules", "audit_settings", "mounts",
         "files", "netns")
#: processes a run may start (matched in ``ps`` args)
RUN_PROCESSES = (" bpftrace ", " auditd ", "stagerunner.py", " unshare ", "harness.nodes.reaper",
                 "harness.sensors.auditd ", "shadowtest-sensor --object",
                 "shadowtest-lsm --object")
#: files under /run/shadowtest that are the node's own state, kept between runs (the shared
#: audit daemon's lock, config and log; the bpftrace program cache by digest; folders)
KEPT_STATE = ("/run/shadowtest/auditd/lock", "/run/shadowtest/auditd/audit.log",
              "/run/shadowtest/auditd/conf", "/run/shadowtest/bpftrace/sensor-",
              "/run/shadowtest/dockerd/lock")
AUDIT_SETTINGS = ("enabled", "backlog_limit", "failure", "rate_limit")
#: the environment mark of the processes a test's own harness starts (they inherit it)
OWNER = "SHADOWTEST_E2E_OWNER"


class Leftovers(dict[str, list[str]]):
    """What is left on the node, by kind. Equality is sparse: a missing kind is an empty
    one, so ``left == NOTHING_LEFT`` (or a dict of empty lists) means nothing left."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, dict):
            return NotImplemented
        return all(self.get(k, []) == other.get(k, []) for k in {*self, *other})

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]


NOTHING_LEFT = Leftovers()


@dataclass
class Snapshot:
    """The node's state a run may change, at one moment."""

    processes: dict[str, str]  # "pid:start" -> "pid args"
    cgroups: set[str]
    named_hierarchies: set[str]
    audit_rules: set[str]
    audit_settings: dict[str, int]
    audit_original: dict[str, int]  # the settings the shared audit daemon restores
    mounts: set[str]
    files: set[str]
    netns: set[str]


def _ps() -> dict[str, str]:
    out: dict[str, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            raw = (proc / "stat").read_text()
        except OSError:
            continue
        comm, stat = raw[raw.find("(") + 1:raw.rfind(")")], raw.rpartition(")")[2].split()
        if stat[0] == "Z" or not args:
            continue
        out[f"{proc.name}:{stat[19]}"] = f"{proc.name} {comm} {args.strip()}"
    return out


def _environ_has(pid: str, mark: bytes) -> bool:
    try:
        return mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _ancestors(pid: int) -> list[int]:
    chain: list[int] = []
    while pid > 1 and len(chain) < 64:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
        chain.append(pid)
    return chain


def _cgroup_roots() -> list[Path]:
    roots = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            roots.append(Path(fields[4]))
    return roots


def _cgroups() -> set[str]:
    """Every cgroup in every mounted hierarchy whose path names shadowtest."""
    out: set[str] = set()
    for root in _cgroup_roots():
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                if "shadowtest" in d or "shadowtest" in dirpath[len(str(root)):]:
                    out.add(os.path.join(dirpath, d))
    return out


def _named_hierarchies() -> set[str]:
    """Named cgroup v1 hierarchies (``name=...``): every process is in every hierarchy, so
    /proc/self/cgroup lists even the ones no longer mounted anywhere."""
    names = {ln.split(":")[1] for ln in Path("/proc/self/cgroup").read_text().splitlines()
             if "name=" in ln.split(":")[1]}
    return {n for n in names if "shadowtest" in n}


def _audit() -> tuple[set[str], dict[str, int]]:
    rules = subprocess.run(["auditctl", "-l"], capture_output=True, text=True, check=False).stdout
    status = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=False).stdout
    settings: dict[str, int] = {}
    for line in status.splitlines():
        key, _, value = line.partition(" ")
        if key in (*AUDIT_SETTINGS, "pid") and value.split():
            settings[key] = int(value.split()[0])
    return {ln for ln in rules.splitlines() if ln.startswith("-")}, settings


def _shared_audit_users() -> list[int]:
    """Live shadowtest processes using the shared audit daemon (another run's)."""
    users = Path("/run/shadowtest/auditd/users")
    live = []
    for f in users.iterdir() if users.is_dir() else ():
        if f.name.isdigit() and Path(f"/proc/{f.name}").exists():
            live.append(int(f.name))
    return live


def _audit_original() -> dict[str, int]:
    try:
        state = json.loads(Path("/run/shadowtest/auditd/state.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: int(state[k]) for k in AUDIT_SETTINGS if k in state}


def _mounts() -> set[str]:
    out = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        point, fstype, source = fields[4], fields[sep + 1], fields[sep + 2]
        if ("shadowtest" in line or fstype in ("cgroup", "nsfs")
                or point.startswith(("/tmp/", "/run/shadowtest"))):
            out.add(f"{point} {fstype} {source}")
    return out


def _files() -> set[str]:
    """/etc, /tmp, /run entries named shadowtest*, and the files under the node's state
    root /run/shadowtest (its folders and KEPT_STATE are the node's, kept between runs)."""
    out = {str(p) for d in ("/etc", "/tmp", "/run") for p in Path(d).glob("shadowtest*")}
    out.discard("/run/shadowtest")
    for dirpath, _, filenames in os.walk("/run/shadowtest"):
        out.update(os.path.join(dirpath, n) for n in filenames)
    return {f for f in out if not f.startswith(KEPT_STATE)}


def _netns() -> set[str]:
    named = Path("/run/netns")
    return {str(p) for p in named.iterdir()} if named.is_dir() else set()


def snapshot() -> Snapshot:
    rules, settings = _audit()
    return Snapshot(processes=_ps(), cgroups=_cgroups(), named_hierarchies=_named_hierarchies(),
                    audit_rules=rules, audit_settings=settings, audit_original=_audit_original(),
                    mounts=_mounts(), files=_files(), netns=_netns())


def _live_runs(mark: bytes | None) -> set[str]:
    """Run ids (and their cgroup names) of the runs another live harness is doing now: a
    run's processes carry SHADOWTEST_RUN_ID in their environment."""
    ids: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark is not None and mark in env:
            continue
        for var in env:
            if var.startswith(b"SHADOWTEST_RUN_ID="):
                run_id = var.split(b"=", 1)[1].decode(errors="replace")
                ids.update((run_id, hashlib.sha256(run_id.encode()).hexdigest()))
    return {i for i in ids if i}


def _held_by_others(mark: bytes | None) -> list[str]:
    """Command lines and working directories of live processes not started by this test."""
    out: list[str] = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        if mark is not None and _environ_has(proc.name, mark):
            continue
        with contextlib.suppress(OSError):
            out.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace"))
            out.append(os.readlink(proc / "cwd"))
    return out


def _reaper_of_live_runner(line: str) -> bool:
    match = re.search(r"harness\.nodes\.reaper \S*-(\d+)\.json", line)
    return bool(match) and Path(f"/proc/{match.group(1)}").exists()


def leftovers(before: Snapshot, owner: str | None = None) -> Leftovers:
    """What a run left behind, compared with ``before``: its processes (started by it, or
    carrying ``OWNER=owner`` in their environment), cgroups in every hierarchy and named v1
    hierarchies, mounts, audit rules and settings, files under /etc, /tmp and /run named
    shadowtest*, and network namespaces. What another live shadowtest run holds (the shared
    audit daemon, its rules and settings while it has users; processes under a live harness)
    is not this run's."""
    now = snapshot()
    others = _shared_audit_users()
    me = os.getpid()
    mark = f"{OWNER}={owner}".encode() if owner else None
    live = _live_runs(mark)

    held = _held_by_others(mark)

    def theirs(name: str) -> bool:
        """Named after a run another live harness is doing, or named in the command line
        (or the working directory) of a live process that is not this test's."""
        return any(run_id in name for run_id in live) or any(name in h for h in held)

    procs = []
    for key, line in sorted(now.processes.items()):
        pid = key.split(":")[0]
        if int(pid) == me:
            continue
        ours = mark is not None and _environ_has(pid, mark)
        run_like = any(k in f" {line} " for k in RUN_PROCESSES)
        if not ours and (not run_like or key in before.processes):
            continue
        if not ours:
            if others and ("auditd" in line):
                continue  # the shared daemon (and its watchdog) of another live run
            if _reaper_of_live_runner(line) or any(run_id in line for run_id in live):
                continue
            live_parent = [a for a in _ancestors(int(pid)) if a not in (1, me)]
            if any(_is_harness(a) for a in live_parent):
                continue  # under another live harness: that run's
        procs.append(line)
    left = Leftovers()
    left["processes"] = procs
    files = {f for f in now.files - before.files
             if not theirs(f) and not any(h.startswith(f) for h in held)
             and not (others and f.startswith("/run/shadowtest/auditd/"))
             and not _reaper_of_live_runner(f"harness.nodes.reaper {f}")}
    left["etc_files"] = sorted(f for f in files if f.startswith("/etc/"))
    left["files"] = sorted(f for f in files if not f.startswith("/etc/"))
    cgroups = (now.cgroups - before.cgroups) | {
        f"hierarchy {n}" for n in now.named_hierarchies - before.named_hierarchies}
    left["cgroups"] = sorted(c for c in cgroups if not theirs(c))
    left["mounts"] = sorted(m for m in now.mounts - before.mounts
                            if not theirs(m) and not theirs(m.split()[0]))
    left["netns"] = sorted(n for n in now.netns - before.netns if not theirs(n))
    if not others:
        left["audit_rules"] = sorted(now.audit_rules - before.audit_rules)
        if not now.audit_settings.get("pid"):
            # no audit daemon left: the kernel's settings are what they were before any
            # shadowtest daemon (the shared one's saved originals when one ran before)
            want = before.audit_original or before.audit_settings
            left["audit_settings"] = [
                f"{k} {now.audit_settings.get(k)} (was {want[k]})" for k in AUDIT_SETTINGS
                if k in want and now.audit_settings.get(k) != want[k]]
    return Leftovers({k: v for k, v in left.items() if v})


def _is_harness(pid: int) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return any(k in args for k in ("harness", "pytest", "shadowtest"))


@pytest.fixture
def clean_node(catalog_owner: str) -> Callable[[], Leftovers]:
    """A snapshot of the node before the test, and the check for after: what this test's
    runs left behind (another run sharing the node at the same time is not a leftover)."""
    before = snapshot()
    return lambda: leftovers(before, catalog_owner)


@pytest.fixture
def catalog_owner(catalog: Catalog) -> str:
    return catalog.owner


@pytest.fixture
def cpu_hog() -> Iterator[list[int]]:
    """A busy machine: ``nproc`` x 2 busy loops (nice ``SHADOWTEST_E2E_HOG_NICE``, default
    10) for the test's duration, stopped by pid afterwards."""
    nice = int(os.environ.get("SHADOWTEST_E2E_HOG_NICE", "10"))
    n = 2 * (os.cpu_count() or 1)
    procs = [subprocess.Popen([sys.executable, "-S", "-c", "while True: pass"],
                              preexec_fn=lambda: os.nice(nice),  # noqa: PLW1509
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
             for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(30)


def _dockerd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``ci/dockerd.sh`` (the project's one start/stop path), in its own process: a dockerd
    started in the test process would be its child (an unreaped zombie after ``stop``)."""
    return subprocess.run(["bash", str(REPO / "ci" / "dockerd.sh"), *args], capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[str]:
    """The project's dockerd with the base image (``ci/dockerd.sh image``); its socket url.
    At the end of the session it is stopped (``ci/dockerd.sh stop``) only if this fixture
    started it and the same pid still runs: a dockerd that ran before (started by
    ci/test.sh, another test, by hand) is left running."""
    daemon = Dockerd()
    before = daemon.pid()
    res = _dockerd_cli("image")  # starts dockerd (idempotent), then builds/imports the image
    assert res.returncode == 0, res.stderr
    started = daemon.pid() if before is None else None
    yield daemon.url
    if started is not None and daemon.pid() == started:
        res = _dockerd_cli("stop")
        assert res.returncode == 0, res.stderr
        assert daemon.pid() is None, f"dockerd (pid {started}) still runs after stop"
