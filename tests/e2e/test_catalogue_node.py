"""The WHOLE bundled catalogue, once, on this node, through the real CLI from the repository
root (real auditd + bpftrace): every (scenario, context, sensor) verdict equals what
docs/catalogue.md promises, and the run leaves nothing behind on the node (/etc, cgroups,
mounts, processes, audit rules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.core.node import unmet
from harness.tools.catalogue import expected_cell, load_catalogue
from tests.e2e.conftest import REPO

pytestmark = pytest.mark.node

# /etc paths that other software on a shared machine legitimately rewrites (package
# managers, resolvers); a change there is not attributed to a shadowtest run.
VOLATILE_ETC = ("/etc/apt/", "/etc/alternatives/", "/etc/ld.so.cache", "/etc/mtab",
                "/etc/resolv.conf", "/etc/adjtime", "/etc/docker/", "/etc/ssh/ssh_host_")
PROCESS_WORDS = (" bpftrace ", " auditd ", "stagerunner.py", " unshare ", "harness.sensors.auditd")


def _etc() -> dict[str, int]:
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk("/etc"):
        for name in [*filenames, *dirnames]:
            path = os.path.join(dirpath, name)
            if path.startswith(VOLATILE_ETC) or any(path == v.rstrip("/") for v in VOLATILE_ETC):
                continue
            try:
                # a directory's mtime changes when a run's file is created and removed in it:
                # its listing (the files under it, compared here) is what must be unchanged
                out[path] = 0 if name in dirnames else os.lstat(path).st_mtime_ns
            except FileNotFoundError:
                continue
    return out


def _cgroups() -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        if dirpath.count("/") > 6:
            dirnames[:] = []
            continue
        out += [os.path.join(dirpath, d) for d in dirnames if "shadowtest" in os.path.join(dirpath, d)]
    return sorted(out)


def _mounts() -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    out = []
    for ln in lines:
        fields = ln.split()
        sep = fields.index("-")
        out.append(f"{fields[4]} {fields[sep + 1]} {fields[sep + 2]}")  # mount point, type, source
    return sorted(out)


def _processes() -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid=,comm=,args="], capture_output=True, text=True,
                        check=True).stdout
    return sorted(ln.strip() for ln in ps.splitlines() if any(w in f" {ln} " for w in PROCESS_WORDS))


def _audit_rules() -> list[str]:
    res = subprocess.run(["auditctl", "-l"], capture_output=True, text=True, check=False)
    return res.stdout.splitlines()


def snapshot() -> dict[str, Any]:
    """What a run could leave behind on this node."""
    return {"etc": _etc(), "cgroups": _cgroups(), "mounts": _mounts(), "processes": _processes(),
            "audit_rules": _audit_rules()}


def difference(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    b_etc, a_etc = before["etc"], after["etc"]
    etc = dict.fromkeys(a_etc.keys() - b_etc.keys(), "added")
    etc |= dict.fromkeys(b_etc.keys() - a_etc.keys(), "removed")
    etc |= {p: "modified" for p in a_etc.keys() & b_etc.keys() if a_etc[p] != b_etc[p]}
    if etc:
        out["etc"] = dict(sorted(etc.items()))
    for key in ("cgroups", "mounts", "processes", "audit_rules"):
        added = sorted(set(after[key]) - set(before[key]))
        removed = sorted(set(before[key]) - set(after[key]))
        if added or removed:
            out[key] = {"added": added, "removed": removed}
    return out


def processes_with(run_ids: set[str]) -> list[str]:
    """Processes whose command line or environment carries one of ``run_ids``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            blob = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        text = blob.decode("utf-8", "replace")
        if any(r in text for r in run_ids):
            found.append(f"{pid} {text[:120]!r}")
    return found


def declared_not_executed(scenario_path: Path, facts: dict[str, Any] | None = None) -> str | None:
    """The scenario's own reason to expect NOT_EXECUTED on a node with ``facts`` (a declared
    ``not_executed`` reason, or a ``requires`` those facts do not meet), else None."""
    raw = yaml.safe_load(scenario_path.read_text())
    if raw.get("not_executed"):
        return str(raw["not_executed"])
    req = raw.get("requires") or {}
    if req and facts is not None:
        return unmet(facts, req.get("kernel"), req.get("features") or ()) or None
    return f"requires {req}" if req else None


def declared_by_precondition(scenario: Any, reason: str) -> bool:
    """NOT_EXECUTED because one of the atomic's own preconditions failed: the atomic
    declares why (its precondition's description is the reason), e.g. a host whose root
    block device cannot be mounted a second time read-only."""
    return any(reason.startswith(f"precondition failed: {p.description}")
               for p in scenario.atomic.precondition)


def own_requires_unmet(scenario: Any, sensor: str, row: dict[str, Any]) -> bool:
    """NOT_EXECUTED for this sensor only: its expect block's ``requires`` is unmet by the
    run's node facts (e.g. the reference sensor's kprobe rule on a kernel without kprobes)."""
    exp = scenario.expectation(sensor, row.get("facts"))
    return (bool(exp.requires) and bool(unmet(row.get("facts") or {}, *exp.requires))
            and row["reason"].startswith(f"not runnable for {sensor}: "))


def run_catalogue(results: Path) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """``python -m harness run --results FILE`` from the repository root, in its own
    session; (result, wall seconds, its pid)."""
    started = time.perf_counter()
    with subprocess.Popen([sys.executable, "-m", "harness", "run", "--results", str(results)],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 15)
            out, err = proc.communicate()
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return res, time.perf_counter() - started, proc.pid


def session_members(sid: int) -> list[str]:
    """Processes still in the CLI's session (its descendants that did not detach)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid:  # after ")": state ppid pgrp session
            found.append(f"{pid} {stat[:80]}")
    return found


@pytest.fixture
def node_state() -> dict[str, Any]:
    return snapshot()


def others_active(before: dict[str, Any], after: dict[str, Any], cli_pid: int) -> bool:
    """Another shadowtest (or sensor) user shares this node: its daemons, cgroups and audit
    rules cannot be told from ours, so only what carries our ids is attributed to us."""
    users = Path("/run/shadowtest/auditd/users")
    live = [p.name for p in users.iterdir()] if users.is_dir() else []
    return bool(before["processes"] or after["processes"] or [u for u in live if u != str(cli_pid)])


def attributable(left: dict[str, Any], ids: set[str]) -> dict[str, Any]:
    """The part of ``left`` that names one of our run or container ids, or shadowtest."""
    def ours(text: str) -> bool:
        return any(i in text for i in ids)
    out: dict[str, Any] = {}
    for key, value in left.items():
        if key == "etc":
            hits = {p: v for p, v in value.items() if ours(p) or "shadowtest" in p}
        else:
            hits = {k: [x for x in v if ours(x)] for k, v in value.items()}
            hits = {k: v for k, v in hits.items() if v}
        if hits:
            out[key] = hits
    return out


def test_whole_catalogue_gives_the_documented_verdicts_and_leaves_nothing(
        tmp_path: Path, node_state: dict[str, Any]) -> None:
    cat = load_catalogue(REPO)
    results = tmp_path / "results.jsonl"
    res, wall, cli_pid = run_catalogue(results)
    rows = [json.loads(ln) for ln in results.read_text().splitlines()] if results.exists() else []
    log = f"exit {res.returncode}, {wall:.1f} s\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}"
    assert res.returncode == 0, log
    got = {(r["scenario"], r["context"], r["sensor"]): r for r in rows}
    sensors = {r["sensor"] for r in rows}
    problems: list[str] = []
    for s in cat.scenarios:
        why_not = declared_not_executed(s.path)
        for context in s.contexts:
            for sensor in sorted(sensors):
                row = got.get((s.id, context, sensor))
                if row is None:
                    if why_not is None:
                        problems.append(f"{s.id}[{context}] {sensor}: no verdict row")
                    continue
                verdict, want = row["verdict"], expected_cell(s, sensor, row.get("facts"))
                if verdict == "NOT_EXECUTED" and (
                        declared_not_executed(s.path, row.get("facts") or {}) is not None
                        or declared_by_precondition(s, row["reason"])
                        or own_requires_unmet(s, sensor, row)):
                    continue
                if not want.accepts(verdict):
                    problems.append(f"{s.id}[{context}] {sensor}: expected {want.short()} "
                                    f"({want.text}), got {verdict}: {row.get('reason')}")
    assert not [r for r in rows if r["verdict"] == "UNEXPECTED"], log
    assert problems == [], "\n".join(problems) + "\n" + log
    assert {r["scenario"] for r in rows} <= {s.id for s in cat.scenarios}

    ids = {r["run_id"] for r in rows} | {r["container_id"] for r in rows if r.get("container_id")}
    deadline = time.monotonic() + 10  # the last user stops the shared daemons by pid: let them exit
    while True:
        after = snapshot()
        left = difference(node_state, after)
        stray = processes_with(ids) + session_members(cli_pid)
        shared = others_active(node_state, after, cli_pid)
        blame = attributable(left, ids) if shared else left
        if (not blame and not stray) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    note = " (node shared: only what names our ids is ours)" if shared else ""
    assert blame == {}, f"the catalogue run left this behind{note}: {json.dumps(blame, indent=1)}"
    assert stray == [], stray
    users = Path("/run/shadowtest/auditd/users") / str(cli_pid)
    assert not users.exists(), f"{users}: the run is still registered as a user of the shared auditd"
