"""The reaper lets a run's processes finish the atomic's cleanup before it kills what is
left (issue 16: killing the run cgroup as soon as the harness was gone killed the stage
runner's armed cleanup mid-way, and left /etc/shadowtest-<run>.conf behind)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from harness.nodes import reaper


def _cgroup(tmp_path: Path, populated: int) -> Path:
    cg = tmp_path / "st0123456789ab"
    cg.mkdir()
    (cg / "cgroup.events").write_text(f"populated {populated}\nfrozen 0\n")
    return cg


def test_reap_waits_for_the_cgroup_to_empty_before_killing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cg = _cgroup(tmp_path, 1)
    seen: list[str] = []
    monkeypatch.setattr(reaper, "remove_cgroup",
                        lambda c, timeout=60.0: seen.append((c / "cgroup.events").read_text()))

    def cleanup_finishes() -> None:
        time.sleep(0.3)
        (cg / "cgroup.events").write_text("populated 0\nfrozen 0\n")

    threading.Thread(target=cleanup_finishes).start()
    reaper.reap({"cgroups": [str(cg)]})
    assert seen == ["populated 0\nfrozen 0\n"]  # killed and removed only once empty


def test_wait_empty_is_bounded_and_says_so(tmp_path: Path) -> None:
    assert reaper.wait_empty(_cgroup(tmp_path, 1), timeout=0.2) is False
    assert reaper.wait_empty(tmp_path / "gone", timeout=0.2) is True


def test_reap_removes_only_the_runners_private_temp_dirs(tmp_path: Path) -> None:
    """A SIGKILLed harness leaves its VM console folder and SSH control-socket folder
    (QEMU and ssh die by their parent-death signal; the folders do not): the reaper removes
    them — and never a path that is not such a folder."""
    import tempfile

    ours = Path(tempfile.mkdtemp(prefix="shadowtest-vm-6.1-"))
    (ours / "vm-6.1.console.log").write_text("boot\n")
    other = Path(tempfile.mkdtemp(prefix="not-ours-"))
    nested = tmp_path / "shadowtest-deeper"
    nested.mkdir()
    try:
        reaper.reap({"dirs": [str(ours), str(other), str(nested)]})
        assert not ours.exists()
        assert other.exists()
        assert nested.exists()
    finally:
        other.rmdir()
