#!/usr/bin/env python3
"""Attach to a process with ptrace, prove it (TracerPid), detach. Non-destructive.

usage: ptrace_attach.py PID [--attach|--seize]
Prints 'attached pid=<pid> tracer=<own pid>' once the target shows us as its tracer.
"""

import ctypes
import os
import sys

PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 16, 17, 0x4206, 0x4207
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


def tracer_of(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return 0


def main():
    pid = int(sys.argv[1])
    seize = "--seize" in sys.argv[2:]
    request = PTRACE_SEIZE if seize else PTRACE_ATTACH
    if libc.ptrace(request, pid, None, None) != 0:
        err = ctypes.get_errno()
        print(f"ptrace({request:#x}, {pid}) failed: {os.strerror(err)}", file=sys.stderr)
        return 1
    try:
        if not seize:
            os.waitpid(pid, getattr(os, "__WALL", 0x40000000))
        tracer = tracer_of(pid)
        print(f"attached pid={pid} tracer={tracer} self={os.getpid()}")
        return 0 if tracer == os.getpid() else 2
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


if __name__ == "__main__":
    sys.exit(main())
