#!/usr/bin/env python3
"""Fileless execution: copy /bin/true into a memfd named shadowtest-<run id> and execute it
with fexecve() (execveat(fd, "", AT_EMPTY_PATH)) in a child. With --no-exec the memfd is only
used as a scratch buffer (the benign control).

usage: memfd_exec.py RUN_ID [--no-exec]
"""

import os
import shutil
import sys


def main():
    run_id, no_exec = sys.argv[1], "--no-exec" in sys.argv[2:]
    fd = os.memfd_create(f"shadowtest-{run_id}", 0)
    try:
        if no_exec:
            os.write(fd, b"scratch data for " + run_id.encode())
            os.lseek(fd, 0, os.SEEK_SET)
            print(f"memfd used without exec: {os.read(fd, 64).decode()}")
            return 0
        with open(shutil.which("true") or "/bin/true", "rb") as src:
            os.write(fd, src.read())
        child = os.fork()
        if child == 0:
            try:
                os.execve(fd, ["shadowtest-memfd"], {})  # noqa: S606 (fexecve is the point)
            finally:
                os._exit(127)
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        print(f"executed memfd:shadowtest-{run_id} exit={code}")
        return 0 if code == 0 else 1
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
