"""``harness.node``: kernel release parsing and kernel requirement checks."""

from __future__ import annotations

import pytest

from harness.node import kernel_satisfies, kernel_tuple


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
