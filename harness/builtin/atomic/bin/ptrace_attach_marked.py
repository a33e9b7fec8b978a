#!/usr/bin/env python3
"""ptrace PID 1 of a private PID namespace, and leave a marker only if the attach happened
-- even when the attacking process is killed. Non-destructive. Stdlib only.

usage: ptrace_attach_marked.py MARKER

The helper makes its own target: it unshares a new PID namespace and forks a sleeping
init (PID 1 there), then forks the attacker (PID 2 there), which does
ptrace(PTRACE_ATTACH, 1). The target is never the context's PID 1 (the stage runner) nor
the machine's: a kill policy that lands after the attach leaves its tracee stopped (the
attach's SIGSTOP is still pending when the killed tracer exits), which must not happen
to the process running the atomic's stages.

The helper (the "watcher", outside the new namespace) writes MARKER only on proof from
the kernel that the attach happened:
  - the attacker reports the attach, and /proc/<target>/status shows the attacker as
    TracerPid while it still holds it (then it detaches: the target runs on); or
  - the attacker died by a signal and the target is left stopped (the SIGSTOP of a
    PTRACE_ATTACH that completed before the kill landed).
So a kill at syscall entry that still lets the attach complete (a race) leaves the
marker; a deny (EPERM from an LSM) or a kill that stops the attach does not.

Prints 'attached pid=1 tracer=<attacker's host pid>' after a successful attach. Exit
code: the attacker's (0 attached, 1 ptrace failed); killed by a signal -> the helper
kills itself with the same signal, so the stage sees exactly what a killed attacker gives.
"""

import ctypes
import os
import signal
import sys
import time

CLONE_NEWPID = 0x20000000
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
PR_SET_PDEATHSIG = 1
WALL = getattr(os, "__WALL", 0x40000000)
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


def status_field(pid, name):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return line.split()[1]
    except OSError:
        return ""
    return ""


def left_stopped(pid, seconds=1.0):
    """The target entered a stop (T): an attach's SIGSTOP outlived its killed tracer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if status_field(pid, "State") in ("T", "t"):
            return True
        time.sleep(0.005)
    return False


def sleeper():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    while True:
        time.sleep(3600)


def attacker(report, go):
    if libc.ptrace(PTRACE_ATTACH, 1, None, None) != 0:
        err = ctypes.get_errno()
        print(f"ptrace(PTRACE_ATTACH, 1) failed: {os.strerror(err)}", file=sys.stderr, flush=True)
        os._exit(1)
    os.waitpid(1, WALL)  # the attach-stop
    os.write(report, b"attached\n")
    os.read(go, 1)  # the watcher checks TracerPid while we hold the attach
    libc.ptrace(PTRACE_DETACH, 1, None, None)  # signal 0: the SIGSTOP is discarded
    os._exit(0)


def main():
    marker = sys.argv[1]
    if libc.unshare(CLONE_NEWPID) != 0:
        print(f"unshare(CLONE_NEWPID) failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 3
    target = os.fork()
    if target == 0:
        sleeper()
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        os.close(go_w)
        attacker(report_w, go_r)
    os.close(report_w)
    os.close(go_r)
    try:
        said = os.read(report_r, 64)  # b"" when the attacker died first
        attached = said.startswith(b"attached") and status_field(target, "TracerPid") == str(pid)
        os.write(go_w, b"k") if said else None
        _, status = os.waitpid(pid, 0)
        if not attached and os.WIFSIGNALED(status):
            attached = left_stopped(target)
        if attached:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, f"ptrace attach of pid 1 by host pid {pid}\n".encode())
            os.close(fd)
            print(f"attached pid=1 tracer={pid}", flush=True)
    finally:
        os.kill(target, signal.SIGKILL)
        os.waitpid(target, 0)
    if os.WIFSIGNALED(status):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), os.WTERMSIG(status))
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
