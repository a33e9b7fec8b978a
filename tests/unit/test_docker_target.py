"""The docker target and the project's dockerd, without a daemon: URLs, create bodies,
labels, variables, the sweep's choice, mirrors, flags."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.core.errors import ConfigError, TargetError
from harness.nodes.dockerd import SAFE_FLAGS, Dockerd, apt_mirror, ping
from harness.targets.docker import (
    BIN,
    CONTEXTS,
    DEFAULT_SOCKET,
    HOST_ETC,
    LABEL_MANAGED,
    LABEL_RUN,
    LEAKED_FD,
    NO_HOST_ETC,
    RUNNER,
    DockerTarget,
    DockerUrl,
    container_config,
    context_variables,
    parse_url,
    sweep_containers,
)

RUN = "st0123456789ab"


# ------------------------------------------------------------------ urls
@pytest.mark.parametrize(("url", "want"), [
    ("docker://", DockerUrl()),
    ("docker:///var/run/docker.sock", DockerUrl(socket="/var/run/docker.sock")),
    ("docker://?socket=/tmp/d.sock", DockerUrl(socket="/tmp/d.sock")),
    ("docker://?image=my/base:1", DockerUrl(image="my/base:1")),
])
def test_parse_url_accepts_the_documented_forms(url: str, want: DockerUrl) -> None:
    assert parse_url(url) == want


def test_parse_url_default_is_the_projects_dockerd() -> None:
    assert parse_url("docker://").base_url == f"unix://{DEFAULT_SOCKET}"
    assert DEFAULT_SOCKET == "/run/shadowtest/dockerd/docker.sock"


@pytest.mark.parametrize(("url", "message"), [
    ("docker://somehost:2375", "a host part is not supported (only the local unix socket): "
                               "expected docker://"),
    ("docker://?sockett=/x", "unknown query key 'sockett': expected one of socket= ("),
    ("docker://?sockett=/x", "did you mean socket=?"),
    ("docker:///a.sock?socket=/b.sock", "both a path and socket=: expected one of them, got "
                                        "/a.sock and socket=/b.sock; give one"),
    ("docker://?socket=relative.sock", "must be an absolute path: expected /path/to/docker.sock, "
                                       "got 'relative.sock'"),
    ("docker://?socket=/a&socket=/b", "socket= given 2 times"),
    ("docker://?dockerd=mine", "unknown dockerd=: expected 'shared'"),
    ("local://", "not a docker:// URL: expected docker://"),
])
def test_parse_url_refuses_with_what_and_how(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_url(url, "d1")
    assert str(err.value).startswith(f"node 'd1': url {url!r}: ")
    assert message in str(err.value)
    assert url in str(err.value)


# ------------------------------------------------------------------ create bodies
def _body(context: str, **kw: Any) -> dict[str, Any]:
    return container_config(context, RUN, "shadowtest/base:bookworm", "/repo/harness/_stagerunner.py",
                            "/srv/catalog/atomic/bin", **kw)


@pytest.mark.parametrize("context", CONTEXTS)
def test_every_context_is_labelled_named_networkless_and_runs_the_stage_runner(context: str) -> None:
    body = _body(context, anchor_pid=4242)
    host = body["HostConfig"]
    assert body["Labels"] == {LABEL_RUN: RUN, LABEL_MANAGED: "true",
                              "shadowtest.io/context": context}
    assert host["NetworkMode"] == "none"
    assert body["NetworkDisabled"] is True
    assert f"SHADOWTEST_RUN_ID={RUN}" in body["Env"]
    assert body["Hostname"] == f"shadowtest-{RUN}"
    assert f"/repo/harness/_stagerunner.py:{RUNNER}:ro" in host["Binds"]
    assert f"/srv/catalog/atomic/bin:{BIN}:ro" in host["Binds"]
    assert body["Cmd"][-3:] == ["python3", "-u", RUNNER] or body["Cmd"][-1].endswith(
        f"exec python3 -u {RUNNER}")
    assert (body["OpenStdin"], body["StdinOnce"], body["Tty"]) == (True, True, False)
    assert "Privileged" not in host  # --privileged fails on this kernel's bounding set


def test_privileged_context_is_near_privileged() -> None:
    host = _body("container-privileged")["HostConfig"]
    assert host["CapAdd"] == ["ALL"]
    assert host["CapDrop"] == ["SYS_RESOURCE"]
    assert "seccomp=unconfined" in host["SecurityOpt"]
    assert "apparmor=unconfined" in host["SecurityOpt"]
    assert host["MaskedPaths"] == []
    assert host["ReadonlyPaths"] == []
    assert "PidMode" not in host


def test_hostpid_context_shares_the_host_pid_namespace_and_holds_the_anchor_door() -> None:
    body = _body("container-hostpid", anchor_pid=4242)
    host = body["HostConfig"]
    assert host["PidMode"] == "host"
    assert sorted(host["CapAdd"]) == ["SYS_ADMIN", "SYS_PTRACE"]
    assert "seccomp=unconfined" in host["SecurityOpt"]
    assert "SHADOWTEST_ANCHOR_PID=4242" in body["Env"]
    assert body["Cmd"][:2] == ["sh", "-c"]
    assert f'exec {LEAKED_FD}</proc/"$SHADOWTEST_ANCHOR_PID"/ns/mnt' in body["Cmd"][2]
    with pytest.raises(TargetError, match="anchor"):
        _body("container-hostpid")


def test_hostetc_context_mounts_the_hosts_etc_rw_with_default_privileges() -> None:
    host = _body("container-hostetc")["HostConfig"]
    assert f"/etc:{HOST_ETC}:rw" in host["Binds"]
    assert not {"CapAdd", "SecurityOpt", "PidMode"} & set(host)


def test_unknown_context_lists_the_known_ones() -> None:
    with pytest.raises(TargetError) as err:
        _body("namespace")
    assert "expected one of container-privileged, container-hostpid, container-hostetc" in str(err.value)
    target = DockerTarget("d", "docker://")
    with pytest.raises(TargetError, match="not provided by docker://"):
        target.open("host", RUN)


def test_context_variables_give_atomics_the_doors() -> None:
    pid = context_variables("container-hostpid", 4242)
    assert pid["host_anchor_pid"] == 4242
    assert pid["host_mntns_fd"] == LEAKED_FD
    assert pid["host_pidns"] == os.readlink("/proc/self/ns/pid")
    assert pid["host_mntns"] == os.readlink("/proc/self/ns/mnt")
    assert context_variables("container-hostetc", None)["host_etc"] == HOST_ETC
    assert pid["host_etc"] == "/proc/4242/root/etc"
    assert context_variables("container-privileged", None)["host_etc"] == NO_HOST_ETC
    assert "host_anchor_pid" not in context_variables("container-privileged", None)


def test_stage_bin_mounts_the_atomics_bin_read_only(tmp_path: Path) -> None:
    target = DockerTarget("d", "docker://")
    assert target.stage_bin(tmp_path) == BIN
    body = container_config("container-hostetc", RUN, "img", "/r.py", target._bin_dir)
    assert f"{tmp_path}:{BIN}:ro" in body["HostConfig"]["Binds"]
    assert target.stage_bin(tmp_path / "missing") == BIN
    assert target._bin_dir is None


def test_target_names_its_contexts_and_needs_the_socket() -> None:
    target = DockerTarget("d", "docker://?socket=/nonexistent/shadowtest.sock")
    assert target.contexts() == CONTEXTS
    with pytest.raises(TargetError, match=r"ci/dockerd.sh start"):
        target.client()


# ------------------------------------------------------------------ sweep
class _FakeApi:
    def __init__(self, containers: list[dict[str, Any]]) -> None:
        self.listed = containers
        self.removed: list[str] = []
        self.filters: Any = None

    def containers(self, all: bool, filters: dict[str, str]) -> list[dict[str, Any]]:
        self.filters = (all, filters)
        return self.listed

    def remove_container(self, cid: str, force: bool, v: bool) -> None:
        self.removed.append(cid)


class _FakeClient:
    def __init__(self, api: _FakeApi) -> None:
        self.api = api


def test_sweep_removes_only_finished_runs() -> None:
    now = time.time()
    api = _FakeApi([
        {"Id": "exited", "State": "exited", "Created": now},
        {"Id": "dead", "State": "dead", "Created": now},
        {"Id": "running", "State": "running", "Created": now - 3600},
        {"Id": "created-old", "State": "created", "Created": now - 3600},
        {"Id": "created-new", "State": "created", "Created": now},  # a concurrent run's
    ])
    assert sweep_containers(_FakeClient(api)) == ["exited", "dead", "created-old"]
    assert api.removed == ["exited", "dead", "created-old"]
    assert api.filters == (True, {"label": f"{LABEL_MANAGED}=true"})


# ------------------------------------------------------------------ dockerd
def test_dockerd_uses_exactly_the_safe_flags_under_its_state_dir(tmp_path: Path) -> None:
    d = Dockerd(tmp_path / "state", tmp_path / "data")
    argv = d.argv("/usr/sbin/dockerd")
    assert argv[0] == "/usr/sbin/dockerd"
    assert argv[argv.index("--data-root") + 1] == str(tmp_path / "data")
    assert argv[argv.index("--exec-root") + 1] == str(tmp_path / "state" / "exec")
    assert argv[argv.index("--pidfile") + 1] == str(tmp_path / "state" / "dockerd.pid")
    assert argv[argv.index("--host") + 1] == f"unix://{tmp_path}/state/docker.sock"
    assert set(SAFE_FLAGS) <= set(argv)
    assert SAFE_FLAGS == ("--iptables=false", "--ip-forward=false", "--ip-masq=false",
                          "--bridge=none", "--storage-driver=overlay2")


def test_dockerd_pid_is_none_unless_the_pidfile_names_a_dockerd(tmp_path: Path) -> None:
    d = Dockerd(tmp_path, tmp_path / "data")
    assert d.pid() is None
    d.pidfile.write_text(f"{os.getpid()}\n")  # alive, but a python, not a dockerd
    assert d.pid() is None
    assert not d.running()
    assert "not running" in d.status()


def test_ping_answers_only_a_200(tmp_path: Path) -> None:
    path = tmp_path / "d.sock"
    assert not ping(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(2)

    def answer(replies: list[bytes]) -> None:
        for reply in replies:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(reply)

    t = threading.Thread(target=answer, args=([b"HTTP/1.1 200 OK\r\n\r\nOK",
                                               b"HTTP/1.1 500 Internal\r\n\r\n"],))
    t.start()
    assert ping(path)
    assert not ping(path)
    t.join(5)
    server.close()


def test_apt_mirror_reads_deb822_then_one_line_sources(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"
    (d / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "# deb http://old/ bookworm main\n"
        "deb [signed-by=/k.gpg] http://one.example/debian bookworm main\n")
    assert apt_mirror(tmp_path) == "http://one.example/debian"
    (tmp_path / "sources.list").write_text("")
    with pytest.raises(TargetError, match="no apt source for suite 'bookworm'"):
        apt_mirror(tmp_path)


# ---------------------------------------------------------------- cgroup inode
CID = "9b98bb265ea4c149d9a786380dd07716d341c3e925f2616040c6cd9ac8c4b75c"


@pytest.mark.parametrize("rel", [f"docker/{CID}", f"system.slice/docker-{CID}.scope"])
def test_cgroup_inode_finds_either_driver_s_cgroup_under_the_probed_root(
        tmp_path: Path, rel: str) -> None:
    """cgroupfs (docker/<id>) and systemd (system.slice/docker-<id>.scope) drivers; the root
    is the node's probed cgroup2 root (here a stand-in directory)."""
    from harness.targets.docker import cgroup_inode

    (tmp_path / rel).mkdir(parents=True)
    assert cgroup_inode(os.getpid(), CID, str(tmp_path)) == (tmp_path / rel).stat().st_ino


def test_cgroup_inode_without_a_cgroup2_root_is_none(tmp_path: Path) -> None:
    from harness.targets.docker import cgroup_inode

    assert cgroup_inode(os.getpid(), CID, "") is None
    assert cgroup_inode(os.getpid(), CID, str(tmp_path)) is None
