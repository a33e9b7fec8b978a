"""Kernel-matrix VMs: boot the cached image (``ci/vm-image.sh``) under QEMU TCG with one of
the stock Debian kernels and reach it over SSH on a 127.0.0.1 port forward.

    with VirtualMachine("6.1") as vm:          # boots, waits for SSH
        endpoint = vm.endpoint                 # VmEndpoint: ssh_argv(), url(), run()
        endpoint.run("uname -r").stdout        # '6.1.0-56-amd64\\n'

Networking is QEMU user mode with ``restrict=on`` (the guest reaches nothing but the
forward) and a ``hostfwd`` bound to 127.0.0.1 only. ``snapshot=on``: every boot starts
from the clean image, nothing is written back.

Lifetime: unless ``detached``, qemu runs under ``setpriv --pdeathsig KILL``, so a harness
killed even by SIGKILL leaves no VM and therefore no port forward. The parent-death signal
fires when the *thread* that started qemu exits, not the process: call :meth:`up` from a
thread that lives as long as the VM should (the main thread, or a pytest fixture's). A
detached VM (``shadowtest vm up``, :mod:`harness.targets.vmcli`) outlives its starter and is
stopped by its state file (``shadowtest vm down``). qemu is only ever signalled by pid, and only while
``/proc/<pid>/cmdline`` still shows that qemu and its port forward.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from harness.core.errors import TargetError
from harness.nodes.reaper import Journal

#: short name -> kernel release, both installed in the one cached image
KERNELS: dict[str, str] = {"6.1": "6.1.0-56-amd64", "6.12": "6.12.117+deb12-amd64"}
DEFAULT_CACHE = Path("/var/cache/shadowtest/vm")
DEFAULT_STATE = Path("/run/shadowtest/vm")
#: the guest's PID 1 (written by ci/vm-image.sh)
GUEST_INIT = "/sbin/shadowtest-init"
#: cgroup layout of the guest -> what goes on its kernel command line. ``v2`` (the default,
#: like every current distribution): cgroup2 at /sys/fs/cgroup and no v1 controller at all
#: (``cgroup_no_v1=all``); ``hybrid``: v1 controllers under /sys/fs/cgroup/<name> and
#: cgroup2 at /sys/fs/cgroup/unified (systemd's older layout; the guest's init mounts it).
CGROUP_LAYOUTS: dict[str, str] = {"v2": "cgroup_no_v1=all", "hybrid": "shadowtest.cgroup=hybrid"}
DEFAULT_CGROUP = "v2"
QEMU = "qemu-system-x86_64"
#: Boots of one VM before up() gives up (a lost port race or a guest panic at boot).
BOOT_ATTEMPTS = 3
BUILD_HINT = "build it with `bash ci/vm-image.sh` (or `shadowtest vm build`)"
_TERM_GRACE = 10.0


class VmError(TargetError):
    """A kernel-matrix VM could not be built, booted, reached or stopped."""


def check_cgroup_layout(layout: str) -> str:
    """``layout`` when it is one of :data:`CGROUP_LAYOUTS`, else a VmError listing them."""
    if layout not in CGROUP_LAYOUTS:
        raise VmError(f"unknown VM cgroup layout {layout!r}: expected one of "
                      f"{', '.join(CGROUP_LAYOUTS)} (default {DEFAULT_CGROUP}: pure cgroup v2)")
    return layout


def resolve_kernel(kernel: str) -> tuple[str, str]:
    """``"6.1"`` or ``"6.1.0-56-amd64"`` -> ``("6.1", "6.1.0-56-amd64")``."""
    for name, release in KERNELS.items():
        if kernel in (name, release):
            return name, release
    known = ", ".join(f"{n} ({r})" for n, r in KERNELS.items())
    raise VmError(f"unknown VM kernel {kernel!r}: expected one of {known}")


@dataclass(frozen=True)
class VmEndpoint:
    """How to reach a running VM: SSH to ``user@host:port`` with ``key``."""

    host: str
    port: int
    user: str
    key: Path
    kernel: str
    pid: int
    console: Path

    def ssh_argv(self) -> list[str]:
        """``ssh`` up to the destination; append the remote command."""
        return ["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
                f"{self.user}@{self.host}"]

    def url(self, known_hosts: Path | None = None) -> str:
        """The target URL, e.g. ``ssh://root@127.0.0.1:10022?key=/var/cache/.../id_ed25519``
        (``&known_hosts=PATH``: an ssh:// node checks the VM's host key against that file)."""
        url = f"ssh://{self.user}@{self.host}:{self.port}?key={quote(str(self.key), safe='/')}"
        return url + (f"&known_hosts={quote(str(known_hosts), safe='/')}" if known_hosts else "")

    def record_host_key(self, path: Path) -> Path:
        """Write the booted VM's host keys to ``path`` as known_hosts lines (the VM makes a
        new key at each boot; read over the harness's own loopback forward just after the
        boot), so an ``ssh://`` node for this VM checks its host key."""
        res = self.run("cat /etc/ssh/ssh_host_*_key.pub", timeout=60)
        keys = [ln.split()[:2] for ln in res.stdout.splitlines() if len(ln.split()) >= 2]
        if res.returncode != 0 or not keys:
            raise VmError(f"cannot read the VM's host keys: exit {res.returncode}: "
                          f"{res.stderr.strip()[-300:]}")
        path.write_text("".join(f"[{self.host}]:{self.port} {kind} {key}\n" for kind, key in keys))
        return path

    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the guest over SSH (no check of the exit status)."""
        return subprocess.run([*self.ssh_argv(), command], capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "key": str(self.key), "console": str(self.console)}


# ------------------------------------------------------------------ image


def image_paths(cache_dir: Path, release: str) -> dict[str, Path]:
    return {"image": cache_dir / "root.img", "kernel": cache_dir / f"vmlinuz-{release}",
            "initrd": cache_dir / f"initrd.img-{release}", "key": cache_dir / "id_ed25519",
            "manifest": cache_dir / "image.json"}


def read_manifest(cache_dir: Path) -> dict[str, Any] | None:
    """``image.json`` of a complete build, or None when there is none."""
    try:
        data = json.loads((cache_dir / "image.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise VmError(f"{cache_dir / 'image.json'}: unreadable VM image manifest ({exc}); "
                      f"remove it and {BUILD_HINT}") from exc
    if not isinstance(data, dict):
        raise VmError(f"{cache_dir / 'image.json'}: expected a JSON object, got "
                      f"{type(data).__name__}; remove it and {BUILD_HINT}")
    return data


def check_image(cache_dir: Path, release: str) -> dict[str, Path]:
    """The files a boot of ``release`` needs; a clear error when any is missing."""
    paths = image_paths(cache_dir, release)
    manifest = read_manifest(cache_dir)
    if manifest is None:
        raise VmError(f"no VM image in {cache_dir} (expected {paths['manifest']}): {BUILD_HINT}"
                      + ("" if cache_dir == DEFAULT_CACHE else f" {cache_dir}"))
    if release not in manifest.get("kernels", []):
        raise VmError(f"VM image {paths['manifest']} has kernels {manifest.get('kernels')}, "
                      f"expected {release}: rebuild it ({BUILD_HINT})")
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise VmError(f"VM image in {cache_dir} is incomplete: missing {', '.join(missing)}; "
                      f"{BUILD_HINT}")
    for p in paths.values():
        if "," in str(p):  # qemu's option syntax would split the path
            raise VmError(f"VM image path {p} contains a comma, which qemu's -drive/-serial "
                          "options cannot take; use a cache directory without commas")
    return paths


def vm_image_script() -> Path:
    """``ci/vm-image.sh`` of the repository this package was loaded from."""
    script = Path(__file__).resolve().parents[2] / "ci" / "vm-image.sh"
    if not script.is_file():
        raise VmError(f"{script} not found: the harness package was installed without its "
                      "repository; clone the shadowtest repository and run "
                      "`bash ci/vm-image.sh [CACHE_DIR]` from it")
    return script


def build_image(cache_dir: Path = DEFAULT_CACHE) -> None:
    """Run ``ci/vm-image.sh cache_dir`` (a no-op when the cached image is up to date)."""
    script = vm_image_script()
    rc = subprocess.run(["bash", str(script), str(cache_dir)], check=False).returncode
    if rc != 0:
        raise VmError(f"building the VM image in {cache_dir} failed: `bash {script} {cache_dir}` "
                      f"exited {rc} (its output above says why)")


# ------------------------------------------------------------------ qemu


def qemu_argv(*, kernel: Path, initrd: Path, image: Path, port: int, console: Path,
              memory_mb: int = 2048, cpus: int = 2, detached: bool = False,
              cgroup: str = DEFAULT_CGROUP) -> list[str]:
    """The full command line of one VM (``setpriv --pdeathsig KILL`` first unless detached);
    ``cgroup``: the guest's cgroup layout (:data:`CGROUP_LAYOUTS`)."""
    argv = [] if detached else ["setpriv", "--pdeathsig", "KILL", "--"]
    layout = CGROUP_LAYOUTS[check_cgroup_layout(cgroup)]
    return [*argv, QEMU, "-accel", "tcg,thread=multi", "-cpu", "max", "-m", str(memory_mb),
            "-smp", str(cpus), "-display", "none", "-monitor", "none", "-no-reboot",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", f"root=/dev/vda rw console=ttyS0 init={GUEST_INIT} panic=-1 {layout}",
            "-drive", f"file={image},if=virtio,format=raw,snapshot=on",
            "-nic", f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-serial", f"file:{console}"]


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (qemu may still lose a race for it: up()
    retries with another port when the forward cannot be set up)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hostfwd(port: int) -> str:
    return f"hostfwd=tcp:127.0.0.1:{port}-:22"


def is_our_qemu(pid: int, port: int) -> bool:
    """True while ``pid`` is a live qemu (or its setpriv launcher) forwarding ``port``."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False  # exited, waiting to be reaped: nothing left to stop
    text = [a.decode(errors="replace") for a in args]
    return any(a.endswith(QEMU) for a in text) and any(_hostfwd(port) in a for a in text)


def stop_qemu(pid: int, port: int, proc: subprocess.Popen[bytes] | None = None,
              grace: float = _TERM_GRACE) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` s, the qemu ``pid`` forwarding ``port`` — only
    while it is still that qemu. Returns whether a signal was sent."""
    if not is_our_qemu(pid, port):
        if proc is not None:
            proc.poll()
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, port, proc, grace):
        if is_our_qemu(pid, port):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, port, proc, grace)
    return True


def _wait_gone(pid: int, port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if proc is not None:  # our child: wait() reaps it
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while is_our_qemu(pid, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)  # polling another process's exit: no pidfd for non-children here
    return True


def console_tail(console: Path, lines: int = 25) -> str:
    try:
        data = console.read_bytes()
    except OSError:
        return f"(no console output: {console} unreadable)"
    text = data.decode(errors="replace").replace("\r", "")
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    | {ln}" for ln in tail) if tail else "    (console empty)"


def ssh_banner(port: int, timeout: float = 2.0) -> bool:
    """True when something on 127.0.0.1:port says ``SSH-`` (QEMU's forward accepts
    connections before the guest listens, so a connect alone proves nothing)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


# ------------------------------------------------------------------ the VM


class VirtualMachine:
    """One QEMU TCG VM of the cached image booted with one kernel (a context manager).

    ``kernel`` is a short name (``"6.1"``) or a release. ``state_dir``: where
    ``vm-<name>.json`` {pid, port, kernel, name, key, console, ...} and the console log
    go (default: a private temporary directory, no state file). ``detached``: no
    parent-death signal, for VMs that outlive their starter (``shadowtest vm up``).
    ``cgroup``: the guest's cgroup layout, ``v2`` (pure cgroup v2, the default) or ``hybrid``.
    """

    def __init__(self, kernel: str, cache_dir: Path = DEFAULT_CACHE, state_dir: Path | None = None,
                 memory_mb: int = 2048, cpus: int = 2, detached: bool = False,
                 cgroup: str = DEFAULT_CGROUP) -> None:
        self.name, self.release = resolve_kernel(kernel)
        self.cgroup = check_cgroup_layout(cgroup)
        self.cache_dir = Path(cache_dir)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.detached = detached
        self.endpoint: VmEndpoint | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        #: the private folder, while it exists (see nodes/reaper)
        self._journal = Journal("vm")

    @property
    def state_file(self) -> Path | None:
        return state_path(self.state_dir, self.name) if self.state_dir is not None else None

    def __enter__(self) -> VirtualMachine:
        self.up()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    def up(self, timeout: float = 180) -> VmEndpoint:
        """Boot and wait until ``ssh ... true`` succeeds; the endpoint. Call from a thread
        that lives as long as the VM (see the module doc: the parent-death signal)."""
        if self._proc is not None:
            raise VmError(f"VM {self.name} is already up (pid {self._proc.pid}); down() first")
        paths = check_image(self.cache_dir, self.release)
        if self.state_file is not None:
            _refuse_running(self.state_file)
        workdir = self._workdir()
        console = workdir / f"vm-{self.name}.console.log"
        qemu_log = workdir / f"vm-{self.name}.qemu.log"
        deadline = time.monotonic() + timeout
        panics: list[str] = []
        for _attempt in range(BOOT_ATTEMPTS):
            self._port = free_port()
            console.write_bytes(b"")
            argv = qemu_argv(kernel=paths["kernel"], initrd=paths["initrd"], image=paths["image"],
                             port=self._port, console=console, memory_mb=self.memory_mb,
                             cpus=self.cpus, detached=self.detached, cgroup=self.cgroup)
            with qemu_log.open("wb") as log:
                try:
                    self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                                  stdout=log, stderr=log, start_new_session=True)
                except FileNotFoundError as exc:
                    raise VmError(f"cannot start {argv[0]}: {exc}; install qemu-system-x86 "
                                  "(ci/vm-image.sh installs it)") from exc
            self.endpoint = VmEndpoint(host="127.0.0.1", port=self._port, user="root",
                                       key=paths["key"], kernel=self.release, pid=self._proc.pid,
                                       console=console)
            try:
                self._write_state()
                self._wait_ssh(self._proc, self.endpoint, deadline, console, qemu_log)
            except _PortLost:
                self._reset()
                continue
            except _GuestPanicked as exc:
                # A disposable guest that panicked while booting ran nothing yet: boot it
                # again (TCG occasionally faults a guest kernel early), and say so.
                panics.append(str(exc))
                print(f"shadowtest vm: {exc}; booting again", file=sys.stderr, flush=True)
                self._reset()
                continue
            except BaseException:
                self.down()
                raise
            return self.endpoint
        self.down()
        if panics:
            raise VmError(f"VM {self.name} ({self.release}): the guest kernel panicked while "
                          f"booting in {len(panics)} of {BOOT_ATTEMPTS} attempts; the last:\n"
                          f"{panics[-1]}")
        err = _read(qemu_log).strip()[-800:]
        raise VmError(f"VM {self.name}: qemu could not set up a 127.0.0.1 port forward in "
                      f"{BOOT_ATTEMPTS} attempts (another process took each free port first?): "
                      f"{err}")

    def _workdir(self) -> Path:
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            return self.state_dir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"shadowtest-vm-{self.name}-")
            # removed by down(), or by the journal's watchdog when this process is SIGKILLed
            # (QEMU dies by its parent-death signal; its folder would stay)
            self._journal.record("dir", path=self._tmp.name)
        return Path(self._tmp.name)

    def _wait_ssh(self, proc: subprocess.Popen[bytes], endpoint: VmEndpoint, deadline: float,
                  console: Path, qemu_log: Path) -> None:
        started = time.monotonic()
        last = ""
        while True:
            rc = proc.poll()
            if rc is not None:
                err = _read(qemu_log)
                if "Could not set up host forwarding rule" in err:
                    raise _PortLost
                if "Kernel panic" in _read(console):
                    raise _GuestPanicked(
                        f"VM {self.name} ({self.release}): the guest kernel panicked "
                        f"{time.monotonic() - started:.1f} s after start (qemu exited {rc})"
                        f"\n  last console lines ({console}):\n{console_tail(console)}")
                raise VmError(
                    f"VM {self.name} ({self.release}): qemu exited {rc} before SSH was up "
                    f"({time.monotonic() - started:.1f} s after start).\n  qemu: {err.strip()[-800:]}"
                    f"\n  last console lines ({console}):\n{console_tail(console)}")
            if time.monotonic() > deadline:
                raise VmError(
                    f"VM {self.name} ({self.release}): SSH on 127.0.0.1:{self._port} not ready "
                    f"within {deadline - started:.0f} s (last ssh: {last or 'no SSH banner yet'})."
                    f"\n  last console lines ({console}):\n{console_tail(console)}\n  "
                    "expected the console to show 'shadowtest-init: sshd started'; TCG boots "
                    "are slow on a busy machine: raise the timeout or run one VM at a time")
            if ssh_banner(self._port):
                try:
                    probe = endpoint.run("true", timeout=30)
                except subprocess.TimeoutExpired:
                    last = "`ssh ... true` timed out after 30 s"
                else:
                    if probe.returncode == 0:
                        return
                    last = f"exit {probe.returncode}: {probe.stderr.strip()[-300:]}"
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)  # the poll interval; returns at once if qemu dies

    def _write_state(self) -> None:
        if self.state_file is None or self.endpoint is None:
            return
        data = {**self.endpoint.as_json(), "name": self.name, "detached": self.detached,
                "cgroup": self.cgroup,
                "cache_dir": str(self.cache_dir), "started_at": time.time()}
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state_file)

    def _reset(self) -> None:
        if self._proc is not None:
            stop_qemu(self._proc.pid, self._port, self._proc)
        self._proc = None
        self.endpoint = None
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)

    def down(self) -> None:
        """Stop qemu by pid (SIGTERM, then SIGKILL) and remove the state file; idempotent."""
        self._reset()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._journal.forget("dir", path=self._tmp.name)
            self._journal.close()
            self._tmp = None


class _PortLost(Exception):
    """qemu could not set up the forward (another process took the port first)."""


class _GuestPanicked(Exception):
    """The guest kernel panicked before SSH was up (qemu exits: ``panic=-1 -no-reboot``)."""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------------ state files


def state_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"vm-{name}.json"


def read_state(path: Path) -> dict[str, Any] | None:
    """A state file's content, or None when it is absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) \
            or not isinstance(data.get("port"), int):
        return None
    return data


def _refuse_running(path: Path) -> None:
    data = read_state(path)
    if data is not None and is_our_qemu(data["pid"], data["port"]):
        raise VmError(f"a VM for this kernel is already running (pid {data['pid']}, port "
                      f"{data['port']}, state {path}): stop it with `shadowtest vm down "
                      f"--kernel {data.get('name', '?')} --state {path.parent}` or use another "
                      "state directory")


def stop_from_state(path: Path) -> str:
    """Stop the VM a state file names (if it is still that qemu) and remove the file;
    what happened, for the CLI. Idempotent."""
    data = read_state(path)
    if data is None:
        if path.exists():
            path.unlink()
            return f"{path}: unreadable state file removed"
        return f"{path}: not running"
    sent = stop_qemu(data["pid"], data["port"])
    path.unlink(missing_ok=True)
    what = "stopped" if sent else "was not running (stale state removed)"
    return f"VM {data.get('name', '?')} pid {data['pid']} port {data['port']}: {what}"
