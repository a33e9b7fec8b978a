#!/usr/bin/env python3
"""Create /etc/shadowtest-<run id>.conf through a path that does not start with "/etc/".

usage: etc_evasive.py HOW RUN_ID
HOW: relative (chdir /etc, open the bare name), dotdot (/tmp/../etc/...), double-slash
(//etc/...), proc-root (/proc/self/root/etc/...) or dirfd (openat on an fd of /etc).
Every way is one openat(2) of the same file; never overwrites (O_EXCL). Prints
'wrote /etc/<name> via <how>'.
"""

import os
import sys

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def main():
    how, run_id = sys.argv[1], sys.argv[2]
    name = f"shadowtest-{run_id}.conf"
    data = f"written by shadowtest run {run_id} via {how}\n".encode()
    if how == "relative":
        os.chdir("/etc")
        fd = os.open(name, FLAGS, 0o644)
    elif how == "dotdot":
        fd = os.open(f"/tmp/../etc/{name}", FLAGS, 0o644)  # noqa: S108 - the evasion itself
    elif how == "double-slash":
        fd = os.open(f"//etc/{name}", FLAGS, 0o644)
    elif how == "proc-root":
        fd = os.open(f"/proc/self/root/etc/{name}", FLAGS, 0o644)
    elif how == "dirfd":
        etc = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
        fd = os.open(name, FLAGS, 0o644, dir_fd=etc)
        os.close(etc)
    else:
        sys.exit(f"unknown way {how!r}")
    os.write(fd, data)
    os.close(fd)
    print(f"wrote /etc/{name} via {how}")


if __name__ == "__main__":
    main()
