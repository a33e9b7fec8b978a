"""harness.targets.ssh without a node: the ssh argv of ssh:// and vm:// nodes (host keys
checked with the user's known_hosts and ssh_config, skipped only for the harness's own
ephemeral VMs), url query keys, and the error when ssh refuses a host key."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.core.errors import ConfigError, TargetError
from harness.nodes.ssh import NO_HOST_KEY_CHECK, SshShell
from harness.targets import vm
from harness.targets.ssh import SshTarget, VmTarget


def _argv(url: str) -> list[str]:
    target = SshTarget("n1", url)
    shell = SshShell("n1", *target._shell_args, known_hosts=target._known_hosts,
                     ssh_config=target._ssh_config, check_host_key=target.CHECK_HOST_KEY)
    try:
        return [*shell.base_argv(), shell.destination]
    finally:
        shell.close()


def _options(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]


# ---------------------------------------------------------------- ssh:// argv
def test_ssh_argv_checks_host_keys_as_the_user_configured() -> None:
    argv = _argv("ssh://root@10.0.0.5:2222?key=/keys/id%20ed")
    options = _options(argv)
    assert not [o for o in options if o.startswith(("StrictHostKeyChecking", "UserKnownHostsFile"))]
    assert "-F" not in argv  # the user's ~/.ssh/config and /etc/ssh/ssh_config apply
    assert "BatchMode=yes" in options  # an unknown key fails instead of asking
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == "/keys/id ed"
    assert argv[-1] == "root@10.0.0.5"


def test_ssh_argv_known_hosts_and_ssh_config_from_the_url() -> None:
    argv = _argv("ssh://root@10.0.0.5?known_hosts=/etc/shadowtest/known_hosts"
                 "&ssh_config=/etc/shadowtest/ssh_config")
    assert argv[1:3] == ["-F", "/etc/shadowtest/ssh_config"]
    assert "UserKnownHostsFile=/etc/shadowtest/known_hosts" in _options(argv)
    assert not [o for o in _options(argv) if o.startswith("StrictHostKeyChecking")]


def test_ssh_argv_leaves_user_and_port_to_ssh_config_when_the_url_has_none() -> None:
    argv = _argv("ssh://lab-node-3")
    assert "-p" not in argv
    assert argv[-1] == "lab-node-3"  # a Host alias: ssh_config's HostName, User, Port apply


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("ssh://root@h?key=/k&insecure=1", "unknown query key 'insecure': expected "
                     "one of key= (", id="unknown-key"),
        pytest.param("ssh://root@h?kye=/k", "unknown query key 'kye': expected one of key= (",
                     id="typo-of-key"),
        pytest.param("ssh://root@h?StrictHostKeyChecking=no", "unknown query key "
                     "'StrictHostKeyChecking'", id="no-way-to-turn-checks-off"),
        pytest.param("ssh://root@h?key=/a&key=/b", "key= given 2 times: expected key= once, "
                     "got key=/a key=/b; keep one of them", id="repeated-key"),
        pytest.param("ssh://root@h?known_hosts=", "known_hosts= has no value: expected "
                     "known_hosts=<the known_hosts file", id="empty-value"),
        pytest.param("ssh://root@h:ssh", "expected a port number 1-65535 after the host",
                     id="bad-port"),
    ],
)
def test_ssh_url_errors_name_the_node_and_the_fix(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SshTarget("n1", url)
    assert str(info.value).startswith(f"node 'n1': url {url!r}: ")
    assert message in str(info.value)


# ---------------------------------------------------------------- vm:// argv
class _FakeVm:
    def __init__(self, kernel: str, **_: Any) -> None:
        self.kernel = kernel

    def up(self) -> vm.VmEndpoint:
        return vm.VmEndpoint(host="127.0.0.1", port=10022, user="root", key=Path("/c/id_ed25519"),
                             kernel=self.kernel, pid=4242, console=Path("/s/console.log"))

    def down(self) -> None:
        pass


def test_vm_argv_skips_host_key_checks_for_the_harness_own_ephemeral_vm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vm, "VirtualMachine", _FakeVm)
    monkeypatch.setattr(SshShell, "connect", lambda self: None)
    target = VmTarget("vm-6.1", "vm://6.1")
    try:
        shell = target.shell()
        argv = shell.base_argv()
    finally:
        target.close()
    assert [argv[i:i + 4] for i in range(len(argv)) if argv[i:i + 4] == list(NO_HOST_KEY_CHECK)]
    assert argv[argv.index("-p") + 1] == "10022"
    assert shell.destination == "root@127.0.0.1"
    assert (SshTarget.CHECK_HOST_KEY, VmTarget.CHECK_HOST_KEY) == (True, False)


# ---------------------------------------------------------------- host key refused
FAKE_SSH = """#!/bin/sh
echo "$@" >> {log}
case "$*" in *ControlMaster=yes*) exit 255;; esac
echo '{stderr}' >&2
exit 255
"""


@pytest.mark.parametrize(
    ("stderr", "what"),
    [
        pytest.param("No ED25519 host key is known for [10.0.0.5]:2222 and you have requested "
                     "strict checking.\nHost key verification failed.",
                     "its host key is not in /kh/known_hosts", id="unknown"),
        pytest.param("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key "
                     "verification failed.", "its host key has CHANGED since it was recorded: "
                     "if the node was reinstalled, remove the old key (ssh-keygen -R "
                     "'[10.0.0.5]:2222' -f /kh/known_hosts) and add the new one", id="changed"),
    ],
)
def test_connect_refused_host_key_fails_at_once_saying_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stderr: str, what: str
) -> None:
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text(FAKE_SSH.format(log=log, stderr=stderr.replace("\n", "\\n")))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    target = SshTarget("lab", "ssh://root@10.0.0.5:2222?known_hosts=/kh/known_hosts")
    with pytest.raises(TargetError) as info:
        target.shell()
    message = str(info.value)
    assert message.startswith(f"node 'lab': ssh refused root@10.0.0.5: {what} (ssh: ")
    assert "ssh-keyscan -p 2222 10.0.0.5 >> /kh/known_hosts" in message
    assert "?known_hosts=PATH" in message
    checks = [c for c in log.read_text().splitlines() if "ControlMaster=no" in c]
    assert len(checks) == 1  # no retry: a refused key is not a transient failure
    assert "StrictHostKeyChecking" not in log.read_text()


# ---------------------------------------------------------------- a real sshd (optional)
SSHD = os.environ.get("SHADOWTEST_SSHD") or shutil.which("sshd", path="/usr/sbin:/sbin:/usr/bin")

NODE_SCRIPT = r'''
import json, os, subprocess, sys, time
from harness.core.errors import TargetError
from harness.nodes.ssh import SshShell
from harness.targets.ssh import SshTarget

d, sshd = sys.argv[1], sys.argv[2]
sh = lambda cmd: subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True)
sh("ip link set lo up && mount -t tmpfs tmpfs /run && mkdir -m 0755 /run/sshd")
sh(f"cp /etc/passwd {d}/passwd && echo 'sshd:x:4242:65534::/run/sshd:/usr/sbin/nologin' "
   f">> {d}/passwd && mount --bind {d}/passwd /etc/passwd")
for name in ("host_key", "other_key", "client_key"):
    sh(f"ssh-keygen -q -t ed25519 -N '' -f {d}/{name}")
sh(f"cp {d}/client_key.pub {d}/authorized_keys")
with open(f"{d}/sshd_config", "w") as f:
    f.write(f"Port 2222\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\n")
server = subprocess.Popen([sshd, "-D", "-e", "-f", f"{d}/sshd_config"], stderr=subprocess.DEVNULL)
for _ in range(50):
    if subprocess.run("ssh-keyscan -p 2222 127.0.0.1", shell=True, capture_output=True).stdout:
        break
    time.sleep(0.1)
open(f"{d}/empty", "w").close()
scan = sh("ssh-keyscan -t ed25519 -p 2222 127.0.0.1").stdout
with open(f"{d}/known", "w") as f:
    f.write(scan)
with open(f"{d}/changed", "w") as f:
    f.write(scan.split(" ssh-ed25519 ")[0] + " " + open(f"{d}/other_key.pub").read())
with open(f"{d}/ssh_config", "w") as f:  # the user's ssh_config: nothing about host keys
    f.write("Host *\n  ConnectTimeout 10\n")
out = {}
def attempt(label, url, check=True):
    target = SshTarget("local-sshd", url)
    target.CHECK_HOST_KEY = check
    try:
        out[label] = "ok:" + target.shell().run(["echo", "hi"]).stdout.strip()
    except TargetError as exc:
        out[label] = "error:" + str(exc)
    finally:
        target.close()
base = f"ssh://root@127.0.0.1:2222?key={d}/client_key&ssh_config={d}/ssh_config"
attempt("unknown", f"{base}&known_hosts={d}/empty")
attempt("known", f"{base}&known_hosts={d}/known")
attempt("changed", f"{base}&known_hosts={d}/changed")
attempt("ephemeral", f"{base}&known_hosts={d}/empty", check=False)
server.terminate()
server.wait(10)
print(json.dumps(out))
'''


@pytest.mark.skipif(os.geteuid() != 0 or not SSHD or not shutil.which("unshare"),
                    reason="needs root, unshare and an sshd binary (openssh-server, or "
                           "SHADOWTEST_SSHD=PATH)")
def test_real_sshd_in_a_network_namespace_checks_host_keys(tmp_path: Path) -> None:
    """An sshd on 127.0.0.1 of a fresh network (and mount, pid) namespace: an unknown and
    a changed host key are refused with the fix; a known one connects; only the ephemeral
    (vm://) setting connects without one. Nothing leaves the namespaces."""
    assert SSHD is not None
    res = subprocess.run(
        ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child",
         "--propagation", "private", "--", sys.executable, "-c", NODE_SCRIPT, str(tmp_path), SSHD],
        capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["known"] == "ok:hi"
    assert out["ephemeral"] == "ok:hi"
    assert out["unknown"].startswith(
        f"error:node 'local-sshd': ssh refused root@127.0.0.1: its host key is not in "
        f"{tmp_path}/empty (ssh: ")
    assert f"ssh-keyscan -p 2222 127.0.0.1 >> {tmp_path}/empty" in out["unknown"]
    assert out["changed"].startswith(
        "error:node 'local-sshd': ssh refused root@127.0.0.1: its host key has CHANGED since it "
        f"was recorded: if the node was reinstalled, remove the old key (ssh-keygen -R "
        f"'[127.0.0.1]:2222' -f {tmp_path}/changed)")
