"""``harness.core.node``: kernel release parsing and kernel requirement checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import TargetError
from harness.core.node import NodeFacts, kernel_satisfies, kernel_tuple
from harness.nodes.remote.nodeprobe import cgroup2_root
from harness.targets.local import cgroup2_root_of


@pytest.mark.parametrize(
    ("release", "version"),
    [
        ("6.1.0-56-amd64", (6, 1, 0)),
        ("6.18.44-fc-v657", (6, 18, 44)),
        ("5.15.0-1034-azure", (5, 15, 0)),
        ("6.12.0+", (6, 12, 0)),
        ("6.8.0-rc3", (6, 8, 0)),
        ("5.8", (5, 8, 0)),
        ("6", (6, 0, 0)),
        ("4.19.0.1-custom", (4, 19, 0)),
    ],
)
def test_kernel_tuple_reads_major_minor_patch(release: str, version: tuple[int, int, int]) -> None:
    assert kernel_tuple(release) == version


@pytest.mark.parametrize(
    ("release", "requirement", "ok"),
    [
        ("6.1.0-56-amd64", ">=5.8", True),
        ("5.8.0-1-generic", ">=5.8", True),
        ("5.4.0-150-generic", ">=5.8", False),
        ("6.1.0-56-amd64", "<6.2", True),
        ("6.2.0", "<6.2", False),
        ("6.12.9-arch1", "==6.12", True),
        ("6.1.0-56-amd64", "==6.12", False),
        ("6.18.44-fc-v657", ">=6.18", True),
        ("6.18.44-fc-v657", "==6.18.44", True),
        ("6.18.44-fc-v657", "<6.18.44", False),
        ("6.18.44-fc-v657", ">6.18.43", True),
        ("6.18.44-fc-v657", "<=6.18", True),
        ("6.18.44-fc-v657", "!=6.18", False),
        ("6.1.0-56-amd64", "!=6.18", True),
        ("5.8.0", "5.8", True),  # bare version means >=
        ("5.7.19", "5.8", False),
        ("6.1.0-56-amd64", "5", True),
        ("6.1.0-56-amd64", ">= 5.8", True),
    ],
)
def test_kernel_satisfies_table(release: str, requirement: str, ok: bool) -> None:
    assert kernel_satisfies(release, requirement) is ok


@pytest.mark.parametrize("requirement", ["", "~6.1", "6.x", ">=6.1.2.3", "=>5.8", "latest"])
def test_kernel_satisfies_bad_requirement_raises(requirement: str) -> None:
    with pytest.raises(ValueError, match=r"expected a kernel requirement like '>=5\.8'"):
        kernel_satisfies("6.1.0-56-amd64", requirement)


# ---------------------------------------------------------------- cgroup2 root (node probe)
@pytest.mark.parametrize(("dirs", "want"), [
    (["sys/fs/cgroup"], "/sys/fs/cgroup"),                            # pure v2
    (["sys/fs/cgroup/cpu", "sys/fs/cgroup/unified"], "/sys/fs/cgroup/unified"),  # hybrid
    (["sys/fs/cgroup/cpu"], ""),                                      # v1 only
    ([], ""),                                                         # no cgroups at all
])
def test_cgroup2_root_finds_the_unified_hierarchy_of_any_layout(
        tmp_path: Path, dirs: list[str], want: str) -> None:
    """Probed through a prefix (a pod sees the node's / at /host): the answer is the path
    on the node. A cgroup2 directory is the one with cgroup.controllers."""
    for d in dirs:
        (tmp_path / d).mkdir(parents=True)
        if not d.endswith("/cpu"):
            (tmp_path / d / "cgroup.controllers").write_text("cpu memory pids\n")
        else:
            (tmp_path / d / "cgroup.procs").write_text("")
    assert cgroup2_root(str(tmp_path)) == want


def test_local_target_without_a_cgroup2_root_says_what_the_probe_found() -> None:
    facts = NodeFacts(node="n", kernel="6.1.0", reasons=(("cgroup2", "no cgroup2 hierarchy mounted"),))
    with pytest.raises(TargetError, match=r"node 'n'.*probe found none \(no cgroup2 hierarchy"):
        cgroup2_root_of(facts)
    assert str(cgroup2_root_of(NodeFacts(node="n", kernel="6", cgroup2_root="/sys/fs/cgroup"))) \
        == "/sys/fs/cgroup"
