"""harness.targets.vm without qemu: argv building, image checks, state files, stop-by-pid, CLI."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.targets import vm, vmcli
from harness.targets.ssh import SshTarget
from harness.targets.vm import KERNELS, VirtualMachine, VmEndpoint, VmError


def _endpoint(key: Path = Path("/c/id_ed25519")) -> VmEndpoint:
    return VmEndpoint(host="127.0.0.1", port=10022, user="root", key=key,
                      kernel="6.1.0-56-amd64", pid=4242, console=Path("/s/vm-6.1.console.log"))


def _fake_image(cache: Path, kernels: list[str] | None = None) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    for name in ["root.img", "id_ed25519", *(f"{p}-{r}" for r in KERNELS.values()
                                              for p in ("vmlinuz", "initrd.img"))]:
        (cache / name).write_bytes(b"x")
    (cache / "image.json").write_text(json.dumps(
        {"kernels": list(KERNELS.values()) if kernels is None else kernels,
         "built_at": "2025-01-01T00:00:00Z", "inputs_sha256": "0" * 64}))


@pytest.fixture
def fake_qemu() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A process whose command line looks like our qemu forwarding port 5999."""
    port = 5999
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                             "/usr/bin/qemu-system-x86_64", f"hostfwd=tcp:127.0.0.1:{port}-:22"])
    deadline = time.monotonic() + 10
    while not vm.is_our_qemu(proc.pid, port):  # argv visible once exec'd
        assert time.monotonic() < deadline, "fake qemu never showed its command line"
        time.sleep(0.01)
    yield proc, port
    proc.kill()
    proc.wait()


def test_kernels_map_short_names_to_releases() -> None:
    assert KERNELS == {"6.1": "6.1.0-56-amd64", "6.12": "6.12.117+deb12-amd64"}
    assert vm.DEFAULT_CACHE.as_posix() == "/var/cache/shadowtest/vm"


@pytest.mark.parametrize(("given", "expected"), [
    ("6.1", ("6.1", "6.1.0-56-amd64")),
    ("6.12.117+deb12-amd64", ("6.12", "6.12.117+deb12-amd64")),
])
def test_resolve_kernel_accepts_name_or_release(given: str, expected: tuple[str, str]) -> None:
    assert vm.resolve_kernel(given) == expected


def test_resolve_kernel_unknown_lists_known() -> None:
    with pytest.raises(VmError, match=r"unknown VM kernel '5\.10'.*6\.1 \(6\.1\.0-56-amd64\)"):
        vm.resolve_kernel("5.10")


def test_endpoint_ssh_argv() -> None:
    assert _endpoint().ssh_argv() == [
        "ssh", "-i", "/c/id_ed25519", "-p", "10022", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
        "root@127.0.0.1"]


def test_endpoint_url_quotes_the_key_path() -> None:
    assert _endpoint().url() == "ssh://root@127.0.0.1:10022?key=/c/id_ed25519"
    assert _endpoint(Path("/a b/k")).url() == "ssh://root@127.0.0.1:10022?key=/a%20b/k"


def test_endpoint_url_names_a_known_hosts_file_an_ssh_node_checks() -> None:
    url = _endpoint().url(Path("/run/shadowtest/vm/vm-6.1.known_hosts"))
    assert url == ("ssh://root@127.0.0.1:10022?key=/c/id_ed25519"
                   "&known_hosts=/run/shadowtest/vm/vm-6.1.known_hosts")
    target = SshTarget("vm-6.1", url)
    assert (target._known_hosts, target.CHECK_HOST_KEY) == (
        "/run/shadowtest/vm/vm-6.1.known_hosts", True)


def test_endpoint_record_host_key_writes_known_hosts_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = "ssh-ed25519 AAAAC3Nza1 root@shadowtest\necdsa-sha2-nistp256 AAAAE2Vj2 root@shadowtest\n"
    monkeypatch.setattr(VmEndpoint, "run", lambda self, command, timeout=120:
                        subprocess.CompletedProcess([command], 0, out, ""))
    path = _endpoint().record_host_key(tmp_path / "vm-6.1.known_hosts")
    assert path.read_text() == ("[127.0.0.1]:10022 ssh-ed25519 AAAAC3Nza1\n"
                                "[127.0.0.1]:10022 ecdsa-sha2-nistp256 AAAAE2Vj2\n")


def test_endpoint_record_host_key_without_keys_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VmEndpoint, "run", lambda self, command, timeout=120:
                        subprocess.CompletedProcess([command], 1, "", "cat: no such file"))
    with pytest.raises(VmError, match="cannot read the VM's host keys: exit 1: cat: no such file"):
        _endpoint().record_host_key(tmp_path / "k")


def test_endpoint_as_json_is_serialisable() -> None:
    data = json.loads(json.dumps(_endpoint().as_json()))
    assert data == {"host": "127.0.0.1", "port": 10022, "user": "root", "key": "/c/id_ed25519",
                    "kernel": "6.1.0-56-amd64", "pid": 4242, "console": "/s/vm-6.1.console.log"}


def test_qemu_argv_attached_has_pdeathsig_and_loopback_only_forward() -> None:
    argv = vm.qemu_argv(kernel=Path("/c/vmlinuz-K"), initrd=Path("/c/initrd.img-K"),
                        image=Path("/c/root.img"), port=10022, console=Path("/s/con.log"))
    assert argv[:4] == ["setpriv", "--pdeathsig", "KILL", "--"]
    assert argv[4] == "qemu-system-x86_64"
    opts = dict(itertools.pairwise(argv[5:]))
    assert opts["-accel"] == "tcg,thread=multi"
    assert opts["-m"] == "2048"
    assert opts["-smp"] == "2"
    assert opts["-append"] == ("root=/dev/vda rw console=ttyS0 init=/sbin/shadowtest-init panic=-1"
                               " cgroup_no_v1=all")
    assert opts["-drive"] == "file=/c/root.img,if=virtio,format=raw,snapshot=on"
    assert opts["-nic"] == "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:10022-:22"
    assert opts["-serial"] == "file:/s/con.log"
    assert "-no-reboot" in argv


@pytest.mark.parametrize(("layout", "arg"), [("v2", "cgroup_no_v1=all"),
                                             ("hybrid", "shadowtest.cgroup=hybrid")])
def test_qemu_argv_puts_the_cgroup_layout_on_the_kernel_command_line(layout: str, arg: str) -> None:
    argv = vm.qemu_argv(kernel=Path("k"), initrd=Path("i"), image=Path("r"), port=1,
                        console=Path("c"), cgroup=layout)
    append = argv[argv.index("-append") + 1].split()
    assert arg in append
    assert [a for a in append if "cgroup" in a] == [arg]


def test_unknown_cgroup_layout_lists_the_known_ones() -> None:
    with pytest.raises(VmError, match=r"unknown VM cgroup layout 'v1'.*v2, hybrid"):
        VirtualMachine("6.1", cgroup="v1")


def test_vm_target_takes_the_cgroup_layout_from_its_url() -> None:
    from harness.core.errors import ConfigError
    from harness.targets.ssh import VmTarget

    assert VmTarget("k", "vm://6.12")._cgroup == "v2"
    assert VmTarget("k", "vm://6.12?cgroup=hybrid")._cgroup == "hybrid"
    with pytest.raises(ConfigError, match=r"vm://6.12\?cgroup=v3.*cgroup=v2 or cgroup=hybrid"):
        VmTarget("k", "vm://6.12?cgroup=v3")


def test_vm_image_init_mounts_both_layouts() -> None:
    """The guest's init (in ci/vm-image.sh) reads the layout from the kernel command line."""
    script = vm.vm_image_script().read_text()
    assert "shadowtest.cgroup=*" in script
    assert "mnt cgroup2 /sys/fs/cgroup/unified" in script
    assert "mnt cgroup2 /sys/fs/cgroup\n" in script


def test_qemu_argv_detached_has_no_pdeathsig() -> None:
    argv = vm.qemu_argv(kernel=Path("k"), initrd=Path("i"), image=Path("r"), port=1,
                        console=Path("c"), memory_mb=1024, cpus=1, detached=True)
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-m") + 1] == "1024"
    assert argv[argv.index("-smp") + 1] == "1"


def test_free_port_is_a_bindable_loopback_port() -> None:
    assert 1024 <= vm.free_port() <= 65535


def test_check_image_missing_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(VmError, match=r"no VM image in .*bash ci/vm-image\.sh"):
        vm.check_image(tmp_path, KERNELS["6.1"])


def test_check_image_wrong_kernels(tmp_path: Path) -> None:
    _fake_image(tmp_path, kernels=["5.10.0-1-amd64"])
    with pytest.raises(VmError, match=r"has kernels \['5\.10\.0-1-amd64'\], expected 6\.1\.0-56"):
        vm.check_image(tmp_path, KERNELS["6.1"])


def test_check_image_incomplete_names_missing_file(tmp_path: Path) -> None:
    _fake_image(tmp_path)
    (tmp_path / "initrd.img-6.12.117+deb12-amd64").unlink()
    with pytest.raises(VmError, match=r"incomplete: missing .*initrd\.img-6\.12\.117"):
        vm.check_image(tmp_path, KERNELS["6.12"])
    assert vm.check_image(tmp_path, KERNELS["6.1"])["kernel"] == tmp_path / "vmlinuz-6.1.0-56-amd64"


def test_check_image_refuses_comma_paths(tmp_path: Path) -> None:
    cache = tmp_path / "a,b"
    _fake_image(cache)
    with pytest.raises(VmError, match="contains a comma"):
        vm.check_image(cache, KERNELS["6.1"])


def test_read_manifest_corrupt(tmp_path: Path) -> None:
    (tmp_path / "image.json").write_text("{half")
    with pytest.raises(VmError, match="unreadable VM image manifest"):
        vm.read_manifest(tmp_path)


def test_up_without_image_starts_nothing(tmp_path: Path) -> None:
    machine = VirtualMachine("6.1", cache_dir=tmp_path / "cache", state_dir=tmp_path / "state")
    with pytest.raises(VmError, match=r"bash ci/vm-image\.sh"):
        machine.up()
    assert machine.endpoint is None
    assert not (tmp_path / "state" / "vm-6.1.json").exists()


def test_vm_image_script_is_in_the_repository() -> None:
    script = vm.vm_image_script()
    assert script.name == "vm-image.sh"
    assert "linux-image" in script.read_text()


def test_vm_image_script_is_valid_bash_without_hard_coded_mirrors() -> None:
    script = vm.vm_image_script()
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    # no mirror host written in the script: it reads them from the host's apt sources
    assert not re.search(r"https?://[a-z0-9.-]*debian\.org", script.read_text())


def test_console_tail(tmp_path: Path) -> None:
    con = tmp_path / "c.log"
    con.write_bytes(b"".join(b"line %d\r\n" % i for i in range(40)))
    tail = vm.console_tail(con, lines=3)
    assert tail == "    | line 37\n    | line 38\n    | line 39"
    assert "unreadable" in vm.console_tail(tmp_path / "none")


def test_is_our_qemu_needs_qemu_and_the_port(fake_qemu: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = fake_qemu
    assert vm.is_our_qemu(proc.pid, port)
    assert not vm.is_our_qemu(proc.pid, port + 1)
    assert not vm.is_our_qemu(1, port)  # never the machine's PID 1


def test_stop_from_state_stops_only_that_qemu(
        tmp_path: Path, fake_qemu: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = fake_qemu
    path = vm.state_path(tmp_path, "6.1")
    path.write_text(json.dumps({"pid": proc.pid, "port": port, "name": "6.1"}))
    assert "stopped" in vm.stop_from_state(path)
    assert proc.wait(timeout=10) != 0
    assert not path.exists()
    assert vm.stop_from_state(path).endswith("not running")  # idempotent


def test_stop_from_state_never_signals_a_reused_pid(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        path = vm.state_path(tmp_path, "6.12")
        path.write_text(json.dumps({"pid": other.pid, "port": 5998, "name": "6.12"}))
        assert "stale state removed" in vm.stop_from_state(path)
        assert other.poll() is None
        assert not path.exists()
    finally:
        other.kill()
        other.wait()


def test_up_refuses_a_running_vm_of_the_same_state(
        tmp_path: Path, fake_qemu: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = fake_qemu
    _fake_image(tmp_path / "cache")
    (tmp_path / "state").mkdir()
    vm.state_path(tmp_path / "state", "6.1").write_text(
        json.dumps({"pid": proc.pid, "port": port, "name": "6.1"}))
    machine = VirtualMachine("6.1", cache_dir=tmp_path / "cache", state_dir=tmp_path / "state")
    with pytest.raises(VmError, match=r"already running .*shadowtest vm down --kernel 6\.1"):
        machine.up()
    assert proc.poll() is None


def test_read_state_rejects_malformed(tmp_path: Path) -> None:
    path = tmp_path / "vm-6.1.json"
    path.write_text('{"pid": "1"}')
    assert vm.read_state(path) is None
    assert "unreadable state file removed" in vm.stop_from_state(path)
    assert not path.exists()


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shadowtest")
    sub = parser.add_subparsers(dest="command", required=True)
    vmcli.add_vm_parser(sub)
    return parser.parse_args(argv)


def test_cli_parses_the_vm_commands() -> None:
    up = _parse("vm", "up", "--kernel", "6.12")
    assert (up.vm_command, up.kernel, up.cache, up.state) == (
        "up", "6.12", Path("/var/cache/shadowtest/vm"), Path("/run/shadowtest/vm"))
    assert _parse("vm", "down", "--all", "--state", "/x").all
    assert _parse("vm", "build", "--cache", "/c").cache == Path("/c")
    with pytest.raises(SystemExit):
        _parse("vm", "up", "--kernel", "4.19")
    with pytest.raises(SystemExit):
        _parse("vm", "down", "--kernel", "6.1", "--all")


def test_cli_down_and_status_with_nothing_running(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vmcli.run_vm(_parse("vm", "down", "--all", "--state", str(tmp_path))) == 0
    assert vmcli.run_vm(_parse("vm", "down", "--kernel", "6.1", "--state", str(tmp_path))) == 0
    assert vmcli.run_vm(_parse("vm", "status", "--cache", str(tmp_path), "--state",
                            str(tmp_path))) == 0
    out = capsys.readouterr().out
    assert "nothing running" in out
    assert "not running" in out
    assert "image: none" in out


def test_cli_up_without_image_fails_with_the_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse("vm", "up", "--kernel", "6.1", "--cache", str(tmp_path / "c"), "--state",
                  str(tmp_path / "s"))
    assert vmcli.run_vm(args) == 1
    assert "bash ci/vm-image.sh" in capsys.readouterr().err


def _qemu_script(tmp_path: Path, body: str) -> Path:
    """A stand-in qemu: counts its starts, then runs ``body`` with $CONSOLE the -serial file."""
    script = tmp_path / "qemu-system-x86_64"
    script.write_text("#!/bin/sh\n"
                      f"echo start >> {tmp_path / 'starts'}\n"
                      'for a in "$@"; do case "$a" in file:*) CONSOLE="${a#file:}";; esac; done\n'
                      + body)
    script.chmod(0o755)
    return script


def test_a_guest_that_panics_at_boot_is_booted_again_then_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_image(tmp_path / "cache")
    script = _qemu_script(tmp_path, 'printf "[ 1.2] RIP: enqueue_timer\\n'
                                    'Kernel panic - not syncing: Fatal exception\\n" > "$CONSOLE"\n'
                                    "exit 0\n")
    monkeypatch.setattr(vm, "QEMU", str(script))
    machine = VirtualMachine("6.12", cache_dir=tmp_path / "cache", state_dir=tmp_path / "state")
    with pytest.raises(VmError, match=r"panicked while booting in 3 of 3 attempts") as err:
        machine.up(timeout=60)
    assert "Kernel panic - not syncing" in str(err.value)
    assert (tmp_path / "starts").read_text().count("start") == vm.BOOT_ATTEMPTS
    assert capsys.readouterr().err.count("booting again") == vm.BOOT_ATTEMPTS
    assert machine.endpoint is None
    assert not (tmp_path / "state" / "vm-6.12.json").exists()


def test_a_qemu_that_exits_without_a_panic_is_not_booted_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_image(tmp_path / "cache")
    script = _qemu_script(tmp_path, 'echo "qemu: could not open disk image" >&2\nexit 1\n')
    monkeypatch.setattr(vm, "QEMU", str(script))
    machine = VirtualMachine("6.1", cache_dir=tmp_path / "cache", state_dir=tmp_path / "state")
    with pytest.raises(VmError, match=r"(?s)qemu exited 1 before SSH was up.*could not open disk image"):
        machine.up(timeout=60)
    assert (tmp_path / "starts").read_text().count("start") == 1
