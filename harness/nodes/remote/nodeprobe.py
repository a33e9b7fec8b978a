"""Node facts, probed on the node itself: kernel, distro, arch, BTF, kprobes, kfunc, BPF LSM.

Stdlib only and standalone: it is imported on this machine and copied to remote nodes
(VMs over SSH), where ``python3 _nodeprobe.py NODE`` prints the facts as one JSON object.
Features are probed, not read from a config file: BPF LSM counts as usable only when
``bpf`` is an active LSM *and* a BPF trampoline program (the mechanism LSM programs use,
like fentry/kfunc) really attaches.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

CGROUP2_CANDIDATES = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def ensure_mounted(path: str, fstype: str) -> None:
    if os.path.ismount(path) or not os.path.isdir(path):
        return
    subprocess.run(["mount", "-t", fstype, "none", path], check=False, capture_output=True)


def cgroup2_root(prefix: str = "") -> str:
    """Where the unified (v2) hierarchy is mounted: /sys/fs/cgroup/unified on a hybrid
    host, /sys/fs/cgroup on a pure-v2 one; '' when there is none. The one place that
    decides it: targets and sensors read it from the node facts (``cgroup2_root``) or run
    this on the node. ``prefix``: where the node's / is seen from here (``/host`` in a pod
    that mounts the node's root there); the result is the path on the node."""
    for path in CGROUP2_CANDIDATES:
        seen = prefix + path
        if os.path.exists(os.path.join(seen, "cgroup.controllers")) or (
                os.path.isdir(seen) and os.path.exists(os.path.join(seen, "cgroup.procs"))
                and _fstype(seen) == "cgroup2"):
            return path
    return ""


def _fstype(path: str) -> str:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and parts[1] == path:
                    return parts[2]
    except OSError:
        pass
    return ""


def distro() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def _trampoline() -> tuple[bool, str]:
    bpftrace = shutil.which("bpftrace")
    if bpftrace is None:
        return False, "bpftrace is not installed, so the trampoline (kfunc) probe could not run"
    probe = subprocess.run(
        [bpftrace, "-e", "kfunc:vmlinux:security_file_open { exit(); } BEGIN { exit(); }"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if probe.returncode != 0:
        err = [x for x in probe.stderr.splitlines() if "ERROR" in x and "RLIMIT" not in x]
        return False, "a BPF trampoline (fentry/kfunc) program does not attach: " + (
            err[-1].strip() if err else probe.stderr.strip()[:200])
    return True, ""


def probe(node: str) -> dict[str, Any]:
    """The facts as a plain dict (NodeFacts' fields; ``reasons`` says why a feature is not)."""
    ensure_mounted("/sys/kernel/tracing", "tracefs")
    ensure_mounted("/sys/kernel/security", "securityfs")
    uname = platform.uname()
    reasons: dict[str, str] = {}
    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    if not btf:
        reasons["btf"] = "/sys/kernel/btf/vmlinux is missing (kernel built without BTF)"
    kprobes = os.path.exists("/sys/kernel/tracing/kprobe_events")
    if not kprobes:
        reasons["kprobes"] = "no kprobe_events in tracefs (kernel built without CONFIG_KPROBES)"
    tracepoints = os.path.isdir("/sys/kernel/tracing/events/syscalls")
    if not tracepoints:
        reasons["tracepoints"] = "no syscall tracepoints in tracefs"
    cg2 = cgroup2_root()
    if not cg2:
        reasons["cgroup2"] = "no cgroup2 hierarchy mounted"
    kfunc, why = _trampoline() if btf else (False, "no BTF, so no BPF trampolines (kfunc)")
    if not kfunc:
        reasons["kfunc"] = why
    try:
        with open("/sys/kernel/security/lsm", encoding="utf-8") as fh:
            lsms = fh.read().strip().split(",")
    except OSError as exc:
        lsms = []
        reasons["bpf_lsm"] = f"cannot read the active LSM list: {exc}"
    bpf_lsm = "bpf" in lsms and kfunc
    if "bpf_lsm" not in reasons and not bpf_lsm:
        reasons["bpf_lsm"] = (f"'bpf' is not in the active LSM list ({','.join(lsms)})"
                              if "bpf" not in lsms else
                              "'bpf' is an active LSM but BPF trampoline programs do not attach ("
                              + why + ")")
    return {
        "node": node, "kernel": uname.release, "distro": distro(), "arch": uname.machine,
        "btf": btf, "bpf_lsm": bpf_lsm, "kprobes": kprobes, "kfunc": kfunc,
        "tracepoints": tracepoints, "cgroup2": bool(cg2), "cgroup2_root": cg2,
        "hostname": uname.node, "ncpu": len(os.sched_getaffinity(0)),
        "reasons": sorted(reasons.items()),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cgroup2-root"]:  # only the root, seen through PREFIX (argv[2])
        sys.stdout.write(cgroup2_root(sys.argv[2] if len(sys.argv) > 2 else "") + "\n")
    else:
        sys.stdout.write(json.dumps(probe(sys.argv[1] if len(sys.argv) > 1 else "")) + "\n")
