"""The project's own dockerd and base image: started by hand with safe flags, cached.

PLATFORM.md: no systemd, and a default dockerd rewrites host networking. So shadowtest
runs its own daemon, never the system's: private ``--data-root`` (persistent, so the base
image stays cached), ``--exec-root``/``--pidfile``/socket under a state directory, and no
iptables, forwarding, masquerading or bridge. The registry is unreachable, so the base
image is built with debootstrap and ``docker import``-ed; the rootfs tarball is cached
so a wiped data-root re-imports in seconds.

CLI (``ci/dockerd.sh`` calls it)::

    python -m harness.nodes.dockerd start|stop|status|image [STATE_DIR]

start/stop/status use the standard library only; ``image`` uses the docker SDK.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.core.errors import TargetError

STATE_DIR = Path("/run/shadowtest/dockerd")
DATA_ROOT = Path("/var/lib/shadowtest/docker")
CACHE_DIR = Path("/var/cache/shadowtest")
BASE_IMAGE = "shadowtest/base:bookworm"
SUITE = "bookworm"
PACKAGES = ("python3", "util-linux", "procps")
#: PLATFORM.md's safe flags: the host's network configuration is never touched
SAFE_FLAGS = ("--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
              "--storage-driver=overlay2")


class Dockerd:
    """A dockerd owned by shadowtest: one per ``state_dir`` (socket, pidfile, log, exec root)."""

    def __init__(self, state_dir: Path | str = STATE_DIR, data_root: Path | str = DATA_ROOT) -> None:
        self.state_dir = Path(state_dir)
        self.data_root = Path(data_root)
        self.socket = self.state_dir / "docker.sock"
        self.pidfile = self.state_dir / "dockerd.pid"
        self.log = self.state_dir / "dockerd.log"
        self.exec_root = self.state_dir / "exec"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def argv(self, binary: str = "dockerd") -> list[str]:
        return [binary, "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                "--pidfile", str(self.pidfile), "--host", self.url, *SAFE_FLAGS]

    def pid(self) -> int | None:
        """The pidfile's pid when that process is alive and is a dockerd, else None."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _comm(pid) == "dockerd" else None

    def running(self) -> bool:
        """Our dockerd is alive and answers on its socket."""
        return self.pid() is not None and ping(self.socket)

    def start(self, timeout: float = 60.0) -> str:
        """Start dockerd detached (its own session) unless it already runs; return the socket
        url once ``/_ping`` answers. Idempotent and safe to call from concurrent processes."""
        with self._lock():
            if self.running():
                return self.url
            binary = ensure_docker_installed()
            if (pid := self.pid()) is not None:  # alive but not answering yet: wait for it
                return self._wait_ready(pid, timeout)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.data_root.mkdir(parents=True, exist_ok=True)
            for stale in (self.socket, self.pidfile):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            with self.log.open("ab") as log:
                proc = subprocess.Popen(
                    self.argv(binary), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True, close_fds=True,
                )
            return self._wait_ready(proc.pid, timeout, proc)

    def _wait_ready(self, pid: int, timeout: float,
                    proc: subprocess.Popen[bytes] | None = None) -> str:
        deadline = time.monotonic() + timeout
        while not ping(self.socket):
            exited = proc.poll() is not None if proc is not None else _comm(pid) is None
            if exited or time.monotonic() > deadline:
                why = (f"exited with code {proc.returncode}" if proc is not None and exited
                       else "exited" if exited else f"did not answer within {timeout:g} s")
                raise TargetError(
                    f"dockerd (pid {pid}, socket {self.socket}) {why}; last lines of "
                    f"{self.log}:\n{_tail(self.log)}\nfix the cause, then run "
                    f"`ci/dockerd.sh stop {self.state_dir}` and start it again"
                )
            time.sleep(0.05)
        return self.url

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM our dockerd by its pidfile's pid (only if that pid is a dockerd), wait, then
        unmount what its containers left under the exec root and data root. True if it ran."""
        with self._lock():
            pid = self.pid()
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while _comm(pid) == "dockerd" and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _comm(pid) == "dockerd":
                    os.kill(pid, signal.SIGKILL)
                    while _comm(pid) == "dockerd":
                        time.sleep(0.05)
            unmount_under(self.exec_root, self.data_root)
            for stale in (self.socket, self.pidfile):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            return pid is not None

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return f"dockerd ({self.state_dir}): not running"
        answers = "answers" if ping(self.socket) else "does not answer"
        return f"dockerd ({self.state_dir}): pid {pid}, {self.url} {answers}"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield


def ping(sock: Path, timeout: float = 2.0) -> bool:
    """``GET /_ping`` on the unix socket answers ``OK``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = s.recv(4096)
    except OSError:
        return False
    return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0] + b" "


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def ensure_docker_installed() -> str:
    """The dockerd binary; ``apt-get install -y docker.io`` when missing (a fresh machine)."""
    found = shutil.which("dockerd")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "docker.io"]):
        res = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            raise TargetError(f"`{' '.join(argv)}` failed (exit {res.returncode}): "
                              f"{res.stderr.strip()[-500:]}; install docker.io by hand")
    found = shutil.which("dockerd")
    if found is None:
        raise TargetError("docker.io is installed but dockerd is not on PATH (/usr/sbin?)")
    return found


def unmount_under(*roots: Path) -> list[str]:
    """Lazily unmount every mount point under ``roots`` (deepest first): overlay and
    netns mounts a killed dockerd's containers may leave. Returns what was unmounted."""
    prefixes = [str(r.resolve()) + "/" for r in roots]
    points: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(point.startswith(p) for p in prefixes):
                points.append(point)
    done = []
    for point in sorted(set(points), key=len, reverse=True):
        if subprocess.run(["umount", "-l", point], capture_output=True, check=False).returncode == 0:
            done.append(point)
    return done


# ------------------------------------------------------------------ base image
def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses for the ``bookworm`` suite (deb822
    ``*.sources`` first, then one-line ``sources.list``): never a hard-coded host."""
    files = sorted((sources_dir / "sources.list.d").glob("*.sources"))
    for path in files:
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = _deb822(stanza)
            if "deb" in fields.get("types", "").split() and SUITE in fields.get("suites", "").split():
                return fields.get("uris", "").split()[0]
    lists = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    raise TargetError(f"no apt source for suite {SUITE!r} in {sources_dir}/sources.list.d/*.sources "
                      f"or sources.list: add one (debootstrap needs a mirror)")


def _deb822(stanza: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, _, value = line.partition(":")
        out[key.strip().lower()] = value.strip()
    return out


def rootfs_tarball(cache_dir: Path = CACHE_DIR) -> Path:
    """The cached base rootfs tarball, built with debootstrap when missing (30-45 s)."""
    tarball = cache_dir / f"base-{SUITE}-rootfs.tar"
    if tarball.is_file():
        return tarball
    cache_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which("debootstrap") is None:
        res = subprocess.run(["apt-get", "install", "-y", "debootstrap"], capture_output=True,
                             text=True, check=False)
        if res.returncode != 0:
            raise TargetError(f"debootstrap is missing and apt-get install failed: {res.stderr[-300:]}")
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE,
                str(root), apt_mirror()]
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            log = root / "debootstrap" / "debootstrap.log"
            raise TargetError(f"`{' '.join(argv)}` failed (exit {res.returncode}): "
                              f"{(res.stderr or res.stdout).strip()[-400:]}\n{_tail(log)}")
        part = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(part), "."],
                       check=True, capture_output=True)
        part.rename(tarball)  # atomic: a half-written tarball is never cached
    return tarball


def ensure_base_image(client: Any, image: str = BASE_IMAGE, cache_dir: Path = CACHE_DIR) -> str:
    """``image`` exists in the daemon behind ``client`` (a docker.DockerClient): skip; else
    import the cached rootfs tarball (building it first if needed). Returns the image id."""
    import docker.errors  # type: ignore[import-untyped]

    with contextlib.suppress(docker.errors.ImageNotFound):
        return str(client.images.get(image).id)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / "image.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with contextlib.suppress(docker.errors.ImageNotFound):
            return str(client.images.get(image).id)
        tarball = rootfs_tarball(cache_dir)
        repository, _, tag = image.partition(":")
        client.api.import_image_from_file(str(tarball), repository=repository, tag=tag or "latest")
        return str(client.images.get(image).id)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in {"start", "stop", "status", "image"} or len(args) > 2:
        print("usage: python -m harness.nodes.dockerd start|stop|status|image [STATE_DIR]", file=sys.stderr)
        return 2
    daemon = Dockerd(args[1]) if len(args) == 2 else Dockerd()
    try:
        if args[0] == "start":
            print(daemon.start())
        elif args[0] == "stop":
            print("stopped" if daemon.stop() else "not running")
        elif args[0] == "status":
            print(daemon.status())
            return 0 if daemon.running() else 3
        else:
            import docker

            client = docker.DockerClient(base_url=daemon.start(), version="auto")
            try:
                print(ensure_base_image(client))
            finally:
                client.close()
    except TargetError as exc:
        print(f"shadowtest dockerd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
