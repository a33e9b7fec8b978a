"""The runner's reaper: what a harness killed even with SIGKILL must not leave behind.

A parent-death signal covers processes the harness starts directly (contexts, QEMU, the
SSH master connection), but not a container (its processes belong to dockerd) nor a
dockerd the harness started for itself (it must stop *after* its containers). For those
the docker target starts this reaper, detached (``setsid -f``)::

    python -m harness.reaper STATE_FILE

STATE_FILE (JSON) names the runner's pid and start time, the docker socket, the label
that marks the runner's containers, and the dockerd to stop (its state dir), if any. The
reaper checks every half second whether the runner still lives; once it is gone it
removes the labelled containers, stops that dockerd by pid, removes the state file and
exits. A runner that releases normally removes the state file, and the reaper exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.sensors._process import pid_alive

STATE_DIR = Path("/run/shadowtest/reaper")


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat):
    with the pid, it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def arm(name: str, **state: Any) -> Path:
    """Write the state and start the detached reaper for the current process."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = STATE_DIR / f"{name}-{os.getpid()}.json"
    path.write_text(json.dumps({"pid": os.getpid(), "start": start_time(os.getpid()), **state}))
    subprocess.run(["setsid", "-f", sys.executable, "-m", "harness.reaper", str(path)],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    return path


def disarm(path: Path) -> None:
    """The runner released everything itself: the reaper exits without acting."""
    path.unlink(missing_ok=True)


def _runner_alive(state: dict[str, Any]) -> bool:
    pid = int(state["pid"])
    return pid_alive(pid) and start_time(pid) == state.get("start")


def reap(state: dict[str, Any]) -> None:
    """Remove the runner's containers, then stop the dockerd it started (by pid)."""
    socket = state.get("socket")
    label = state.get("label")
    if socket and label and os.path.exists(socket):
        with contextlib.suppress(Exception):
            import docker  # type: ignore[import-untyped]

            client = docker.DockerClient(base_url=f"unix://{socket}", version="auto", timeout=30)
            for c in client.api.containers(all=True, filters={"label": label}):
                with contextlib.suppress(Exception):
                    client.api.remove_container(c["Id"], force=True, v=True)
            client.close()
    if state.get("dockerd_state"):
        from harness.dockerd import Dockerd

        with contextlib.suppress(Exception):
            Dockerd(state["dockerd_state"], state["dockerd_data"]).stop()


def watch(path: Path, interval: float = 0.5) -> None:
    while True:
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # disarmed: the runner released everything itself
        if not _runner_alive(state):
            reap(state)
            path.unlink(missing_ok=True)
            return
        time.sleep(interval)  # a watchdog's period, not a wait for a result


if __name__ == "__main__":
    watch(Path(sys.argv[1]))
