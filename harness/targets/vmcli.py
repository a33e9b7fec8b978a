"""``shadowtest vm build | up | down | status``: the kernel-matrix VMs from the command line
(the VMs themselves: :mod:`harness.targets.vm`)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from harness.targets.vm import (
    BUILD_HINT,
    CGROUP_LAYOUTS,
    DEFAULT_CACHE,
    DEFAULT_CGROUP,
    DEFAULT_STATE,
    KERNELS,
    VirtualMachine,
    VmError,
    build_image,
    is_our_qemu,
    read_manifest,
    read_state,
    state_path,
    stop_from_state,
)


class SubParsers(Protocol):
    """What :func:`add_vm_parser` uses of ``ArgumentParser.add_subparsers()``'s result."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_vm_parser(sub: SubParsers) -> None:
    """``shadowtest vm build | up | down | status``."""
    vm = sub.add_parser("vm", help="kernel-matrix VMs: build the image, boot, stop")
    vsub = vm.add_subparsers(dest="vm_command", required=True)
    names = sorted(KERNELS)
    b = vsub.add_parser("build", help="build the cached image (ci/vm-image.sh); no-op if current")
    b.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    u = vsub.add_parser("up", help="boot a detached VM; print its endpoint JSON and ssh command")
    u.add_argument("--kernel", required=True, choices=names)
    u.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    u.add_argument("--state", type=Path, default=DEFAULT_STATE, help=f"default {DEFAULT_STATE}")
    u.add_argument("--memory", type=int, default=2048, help="MiB (default 2048)")
    u.add_argument("--cpus", type=int, default=2)
    u.add_argument("--cgroup", choices=sorted(CGROUP_LAYOUTS), default=DEFAULT_CGROUP,
                   help="the guest's cgroup layout (default v2: pure cgroup v2)")
    u.add_argument("--timeout", type=float, default=180, help="seconds to wait for SSH")
    d = vsub.add_parser("down", help="stop VMs by their state files (idempotent)")
    which = d.add_mutually_exclusive_group(required=True)
    which.add_argument("--kernel", choices=names)
    which.add_argument("--all", action="store_true")
    d.add_argument("--state", type=Path, default=DEFAULT_STATE, help=f"default {DEFAULT_STATE}")
    s = vsub.add_parser("status", help="the cached image and the running VMs")
    s.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    s.add_argument("--state", type=Path, default=DEFAULT_STATE, help=f"default {DEFAULT_STATE}")


def run_vm(args: argparse.Namespace) -> int:
    """Run a ``shadowtest vm`` command: 0 on success, 1 with the error on stderr."""
    try:
        if args.vm_command == "build":
            build_image(args.cache)
            return 0
        if args.vm_command == "up":
            return _cli_up(args)
        if args.vm_command == "down":
            return _cli_down(args)
        return _cli_status(args)
    except VmError as exc:
        print(f"shadowtest vm: error: {exc}", file=sys.stderr)
        return 1


def _cli_up(args: argparse.Namespace) -> int:
    vm = VirtualMachine(args.kernel, cache_dir=args.cache, state_dir=args.state,
                        memory_mb=args.memory, cpus=args.cpus, detached=True,
                        cgroup=args.cgroup)
    started = time.monotonic()
    endpoint = vm.up(timeout=args.timeout)
    known_hosts = endpoint.record_host_key(Path(args.state) / f"vm-{vm.name}.known_hosts")
    print(json.dumps({**endpoint.as_json(), "url": endpoint.url(known_hosts),
                      "boot_seconds": round(time.monotonic() - started, 1)}, indent=2))
    print(shlex.join(endpoint.ssh_argv()))
    print(f"stop it with: shadowtest vm down --kernel {vm.name} --state {args.state}",
          file=sys.stderr)
    return 0


def _cli_down(args: argparse.Namespace) -> int:
    state: Path = args.state
    paths = sorted(state.glob("vm-*.json")) if args.all else [state_path(state, args.kernel)]
    if not paths:
        print(f"no VM state files in {state}: nothing running")
    for path in paths:
        print(stop_from_state(path))
    return 0


def _cli_status(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.cache)
    if manifest is None:
        print(f"image: none in {args.cache} ({BUILD_HINT})")
    else:
        print(f"image: {args.cache} kernels={manifest.get('kernels')} "
              f"built_at={manifest.get('built_at')} inputs_sha256={manifest.get('inputs_sha256')}")
    paths = sorted(Path(args.state).glob("vm-*.json"))
    if not paths:
        print(f"VMs: none running (state {args.state})")
    for path in paths:
        data = read_state(path)
        if data is None:
            print(f"{path}: unreadable")
            continue
        alive = is_our_qemu(data["pid"], data["port"])
        print(f"VM {data.get('name')} ({data.get('kernel')}): pid {data['pid']} "
              f"port 127.0.0.1:{data['port']} cgroup {data.get('cgroup', '?')} "
              f"{'running' if alive else 'NOT running (stale)'}"
              f" console {data.get('console')}")
    return 0
