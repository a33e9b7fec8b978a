#!/usr/bin/env python3
"""Discovery: read /proc/<pid>/environ of a child this script starts itself (never another
process), as tools that hunt for secrets in other processes' environments do.

Prints 'read environ of pid=<child>: <n> variables, SHADOWTEST_RUN_ID=<value>'.
"""

import os
import subprocess
import sys
import time


def main():
    child = subprocess.Popen(["sleep", "10"], env={**os.environ, "SHADOWTEST_DISCOVERY": "1"})
    try:
        env: dict = {}
        for _ in range(100):  # until the child has exec'd (before, it shows our environment)
            with open(f"/proc/{child.pid}/environ", "rb") as fh:
                env = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
            if env.get(b"SHADOWTEST_DISCOVERY") == b"1":
                break
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    run = env.get(b"SHADOWTEST_RUN_ID", b"").decode()
    print(f"read environ of pid={child.pid}: {len(env)} variables, SHADOWTEST_RUN_ID={run}")
    return 0 if run and env.get(b"SHADOWTEST_DISCOVERY") == b"1" else 1


if __name__ == "__main__":
    sys.exit(main())
