"""harness.nodes.cgroups: cgroup path -> container id over the layouts real runtimes produce, and
the scan over a cgroup tree (a fake one in tmp_path: the scan only reads directories)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.nodes import cgroups
from harness.nodes.cgroups import container_id
from harness.nodes.remote.nodeprobe import cgroup2_root

ID_DOCKER_FS = "a2ffe0e97ac22657a2a023ad628e9df837c38a03b1ebc904d3f6d644eb1a1a81"
ID_DOCKER_SD = "9b98bb265ea4c149d9a786380dd07716d341c3e925f2616040c6cd9ac8c4b75c"
ID_CRI = "7dea796eb5d6826a85978fa316612874aa3d576ac576495bed83d77fbc9dc744"
ID_KIND = "a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e"
ID_CRIO = "5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c"
ID_CRIO_CONMON = "32da98c8522068be05a7510a3eddb09cad6ed2f03286180d0e931d0d0b6224a6"
ID_PODMAN = "2521e906f0a0c758c3a7dc4fd68c197e32e96abb4b36807d0b0ede6d014a7c24"
ID_PODMAN_RL = "cf21d19260ace8544fe8b769fc2638bf2c0873dfbfff0b6253f0569b26a1d5eb"
ID_K8S_DOCKER = "d0b3604b67ac7930dd34ba3a796627e3e4717d12309e90a4afe3f38b6816ac98"
ID_MINIKUBE_NODE = "d6701ec289c56e4391acb11d07474b3139466857a305490575508a8b7a9fcf22"
ID_MINIKUBE_POD = "89e8f450417b56acf3089925dfd8f050dd50e950e18cfe83ea923269df601102"
ID_CRI_LITERAL = "ee4b20e90ac7f42a10bd004d05646b13d8ab5e2c5e7cbc01abf8006bac016459"
ID_CRI_FS = "0c34bcd7d02f321d0df7aa6ea703285b02abebc9096c5128c14091fc43ea1f3b"
ID_SHADOWTEST = "3f1c0b9d6a4e2f8b7c5d1e0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c"

#: (cgroup path as a runtime wrote it, expected container id). Paths copied from public
#: reports of real nodes; the source of each is in its comment.
REAL_PATHS: list[tuple[str, str | None]] = [
    # docker, cgroupfs driver: /proc/self/cgroup in a container on Debian 10 / Ubuntu 20.04
    # (docker/for-linux#1293)
    (f"/docker/{ID_DOCKER_FS}", ID_DOCKER_FS),
    # ... and the same as a whole /proc/<pid>/cgroup v2 line
    (f"0::/docker/{ID_DOCKER_FS}", ID_DOCKER_FS),
    # docker, systemd driver: Fedora 23 (nginx-proxy/docker-gen#186); the path on pure v2
    # per docker's docs (docker/docs#14545)
    (f"/system.slice/docker-{ID_DOCKER_SD}.scope", ID_DOCKER_SD),
    # rootless docker, systemd driver (docker/docs#14545)
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID_DOCKER_SD}.scope",
     ID_DOCKER_SD),
    # kubelet + containerd, systemd driver: systemd-cgls of a node (netdata/netdata#4868)
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod55c6c714_b240_4dec_9a45_"
     f"57b61696ab6e.slice/cri-containerd-{ID_CRI}.scope", ID_CRI),
    # kind node: kubelet.slice parent (containerd/nri#227)
    ("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-"
     f"besteffort-pod1e597579_417e_482f_bf65_5fe170c3aebd.slice/cri-containerd-{ID_KIND}.scope",
     ID_KIND),
    # CRI-O, systemd driver (opencontainers/runc#4620)
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda5c1f8d5_1919_434d_add7_"
     f"4afaafdaef89.slice/crio-{ID_CRIO}.scope", ID_CRIO),
    # CRI-O, cgroupfs driver: crio-<id> without .scope (cri-o/cri-o#812)
    (f"/kubepods/burstable/poda5c1f8d5-1919-434d-add7-4afaafdaef89/crio-{ID_CRIO}", ID_CRIO),
    # CRI-O's monitor scope is not the container (opencontainers/runc#4620)
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod207aaad1_659f_4db8_88e0_"
     f"46e0cdcc3004.slice/crio-conmon-{ID_CRIO_CONMON}.scope", None),
    # kubelet + docker, systemd driver (lxc/lxc#3890)
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7d4424e6_bb13_42f4_a47a_"
     f"45a4828bf54d.slice/docker-{ID_K8S_DOCKER}.scope", ID_K8S_DOCKER),
    # kubelet, cgroupfs driver: pod dirs kubepods/<qos>/pod<uid> (google/cadvisor#2540), the
    # container a plain 64-hex dir under it (kubernetes/kubernetes#36807)
    (f"/kubepods/burstable/pod1ff47ee6-9685-4726-ac6f-0ff070c452d6/{ID_CRI_FS}", ID_CRI_FS),
    ("/kubepods/burstable/pod1ff47ee6-9685-4726-ac6f-0ff070c452d6", None),
    # runc's systemd notation used as a literal cgroupfs dir name (open-telemetry/
    # opentelemetry-java#4507)
    ("/kubepods-besteffort-pod0125ec2f_b64a_4868_8f5b_94b56cbab864.slice:cri-containerd:"
     f"{ID_CRI_LITERAL}", ID_CRI_LITERAL),
    # minikube node in docker running CRI-O pods: the pod's container, not the node's
    # (kubernetes/minikube#11280)
    (f"/docker/{ID_MINIKUBE_NODE}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-"
     f"pod2ca4a155_3599_498d_bb9d_4446693fa3ea.slice/crio-{ID_MINIKUBE_POD}.scope", ID_MINIKUBE_POD),
    (f"/docker/{ID_MINIKUBE_NODE}/kubepods.slice", ID_MINIKUBE_NODE),
    # podman, rootful (podman-container-tools/podman#10602) and rootless with crun's
    # /container sub-cgroup (podman-container-tools/podman#20423)
    (f"/machine.slice/libpod-{ID_PODMAN}.scope", ID_PODMAN),
    (f"/machine.slice/libpod-{ID_PODMAN}.scope/init.scope", ID_PODMAN),
    (f"/user.slice/user-0.slice/user@0.service/machine.slice/libpod-{ID_PODMAN_RL}.scope/container",
     ID_PODMAN_RL),
    (f"/machine.slice/libpod-conmon-{ID_PODMAN}.scope", None),
    # plain containerd (ctr run): /<namespace>/<name> (containerd/containerd#1617)
    ("/default/redis", "redis"),
    (f"/k8s.io/{ID_CRI}", ID_CRI),
    # shadowtest's own namespace context
    (f"/shadowtest/{ID_SHADOWTEST}", ID_SHADOWTEST),
    # host cgroups: never a container
    ("/", None),
    ("", None),
    ("/init.scope", None),
    ("/system.slice/containerd.service", None),
    ("/system.slice/docker.service", None),
    ("/user.slice/user-0.slice/session-3.scope", None),
    ("/kubepods.slice/kubepods-besteffort.slice", None),
    ("/system.slice/system-getty.slice/getty@tty1.service", None),
    ("/shadowtest", None),
    ("/docker", None),
    ("/default", None),
    # not 64 hex: not an id
    (f"/docker/{ID_DOCKER_FS[:63]}", None),
    (f"/system.slice/docker-{ID_DOCKER_SD.upper()}.scope", None),
]


@pytest.mark.parametrize(("path", "want"), REAL_PATHS)
def test_container_id_maps_real_runtime_paths(path: str, want: str | None) -> None:
    assert container_id(path) == want


def _tree(root: Path, paths: list[str]) -> dict[str, int]:
    for rel in paths:
        (root / rel).mkdir(parents=True, exist_ok=True)
        (root / rel / "cgroup.procs").write_text("")
    return {rel: os.stat(root / rel).st_ino for rel in paths}


def test_scan_maps_every_container_cgroup_and_its_subcgroups(tmp_path: Path) -> None:
    pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod55c6.slice"
    paths = [f"system.slice/docker-{ID_DOCKER_SD}.scope", f"docker/{ID_DOCKER_FS}",
             f"{pod}/cri-containerd-{ID_CRI}.scope", f"machine.slice/libpod-{ID_PODMAN}.scope/container",
             f"shadowtest/{ID_SHADOWTEST}", "system.slice/cron.service", "init.scope",
             f"machine.slice/libpod-conmon-{ID_PODMAN}.scope"]
    ino = _tree(tmp_path, paths)
    got = cgroups.scan(str(tmp_path))
    assert got == {
        ino[f"system.slice/docker-{ID_DOCKER_SD}.scope"]: ID_DOCKER_SD,
        ino[f"docker/{ID_DOCKER_FS}"]: ID_DOCKER_FS,
        ino[f"{pod}/cri-containerd-{ID_CRI}.scope"]: ID_CRI,
        os.stat(tmp_path / f"machine.slice/libpod-{ID_PODMAN}.scope").st_ino: ID_PODMAN,
        ino[f"machine.slice/libpod-{ID_PODMAN}.scope/container"]: ID_PODMAN,
        ino[f"shadowtest/{ID_SHADOWTEST}"]: ID_SHADOWTEST,
    }


def test_scan_stops_at_the_depth_limit(tmp_path: Path) -> None:
    deep = "/".join(["a"] * cgroups.MAX_DEPTH) + f"/docker-{ID_DOCKER_SD}.scope"
    _tree(tmp_path, [deep])
    assert cgroups.scan(str(tmp_path)) == {}
    assert cgroups.scan(str(tmp_path), max_depth=cgroups.MAX_DEPTH + 1) != {}


def test_scan_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert cgroups.scan(str(tmp_path / "gone")) == {}


def test_process_cgroup_reads_the_v2_line_of_this_process() -> None:
    rel = cgroups.process_cgroup(os.getpid())
    assert rel is not None
    assert rel.startswith("/")
    assert cgroups.process_cgroup(2**22 + 7) is None  # above pid_max: never a process


def test_node_scan_code_runs_standalone_and_uses_the_probed_root() -> None:
    """What the sensors send to a remote node: stdlib-only, decides nothing itself."""
    code = cgroups.node_scan_code()
    res = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True,
                         text=True, check=True, cwd="/")
    out = json.loads(res.stdout)
    assert out["root"] == cgroup2_root()
    want = cgroups.scan(out["root"]) if out["root"] else {}
    assert out["map"] == {str(k): v for k, v in want.items()}
