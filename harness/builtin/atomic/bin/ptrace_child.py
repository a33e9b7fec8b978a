#!/usr/bin/env python3
"""A debugger attaching to its own child (benign): fork, attach, prove, detach, reap."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptrace_attach import PTRACE_ATTACH, PTRACE_DETACH, libc, tracer_of


def main():
    child = os.fork()
    if child == 0:
        time.sleep(5)
        os._exit(0)
    try:
        if libc.ptrace(PTRACE_ATTACH, child, None, None) != 0:
            print("attach to own child failed", file=sys.stderr)
            return 1
        os.waitpid(child, 0x40000000)
        tracer = tracer_of(child)
        libc.ptrace(PTRACE_DETACH, child, None, None)
        print(f"attached own child pid={child} tracer={tracer}")
        return 0 if tracer == os.getpid() else 2
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


if __name__ == "__main__":
    sys.exit(main())
