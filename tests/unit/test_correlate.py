"""``harness.core.correlate.correlate``: which key ties a detection to a run, strongest first."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from harness.core.correlate import KEYS, correlate
from harness.core.detection import Detection
from harness.core.run import Run

T0 = 1_700_000_000.0
RUN_ID = "st0123456789ab"
CID = hashlib.sha256(RUN_ID.encode()).hexdigest()  # 64 hex, as the namespace target names it
OTHER_CID = hashlib.sha256(b"another run").hexdigest()
CGROUP = 91234
ROOT_PID = 4242
CHILD_PID = 4243


def _run(**kw: Any) -> Run:
    values: dict[str, Any] = {
        "run_id": RUN_ID, "scenario": "ptrace-pid1", "context": "namespace", "node": "local",
        "started_at": T0, "ended_at": T0 + 2.0, "executed": True,
        "pids": frozenset({ROOT_PID, CHILD_PID}), "cgroup_id": CGROUP, "container_id": CID,
    }
    values.update(kw)
    return Run(**values)


def _detection(**kw: Any) -> Detection:
    values: dict[str, Any] = {
        "sensor": "bpftrace", "rule": "ptrace-pid1", "technique": ("T1055.008",),
        "node": "local", "pid": 7001, "ppid": 7000, "ancestors": (6999, 2235, 1),
        "cgroup_id": 555, "observed_at": T0 + 0.5, "received_at": T0 + 0.6,
    }
    values.update(kw)
    return Detection(**values)


# ---------------------------------------------------------------- precedence
@pytest.mark.parametrize(
    ("detection", "key"),
    [
        pytest.param(
            _detection(names=(f"/etc/shadowtest-{RUN_ID}.conf",), container_id=CID,
                       cgroup_id=CGROUP, pid=ROOT_PID),
            "run_id", id="run_id-beats-all"),
        pytest.param(_detection(container_id=CID, cgroup_id=CGROUP, pid=ROOT_PID),
                     "container_id", id="container_id-beats-cgroup-and-tree"),
        pytest.param(_detection(cgroup_id=CGROUP, pid=ROOT_PID), "cgroup_id",
                     id="cgroup_id-beats-tree"),
        pytest.param(_detection(pid=ROOT_PID), "process_tree", id="tree-alone"),
        pytest.param(_detection(names=(f"shadowtest-{RUN_ID}",)), "run_id", id="run_id-alone"),
        pytest.param(_detection(container_id=CID), "container_id", id="container_id-alone"),
        pytest.param(_detection(cgroup_id=CGROUP), "cgroup_id", id="cgroup_id-alone"),
    ],
)
def test_correlate_prefers_the_strongest_key(detection: Detection, key: str) -> None:
    assert correlate(_run(), detection) == key


def test_correlate_keys_are_listed_strongest_first() -> None:
    assert KEYS == ("run_id", "container_id", "cgroup_id", "process_tree")


# ---------------------------------------------------------------- container ids
@pytest.mark.parametrize(
    ("run_cid", "detection_cid", "key"),
    [
        (CID, CID, "container_id"),
        (CID, CID[:12], "container_id"),
        (CID, CID[:15], "container_id"),
        (CID, f"containerd://{CID}", "container_id"),
        (CID, f"docker://{CID}", "container_id"),
        (CID, f"docker://{CID[:12]}", "container_id"),
        (CID, CID.upper(), "container_id"),
        (f"containerd://{CID}", CID[:12], "container_id"),
        (CID[:12], CID, "container_id"),
        (CID, CID[:11], None),
        (CID[:11], CID, None),
        (CID, f"docker://{CID[:11]}", None),
        (CID, "", None),
        (CID, OTHER_CID, None),
        (CID, OTHER_CID[:12], None),
        (CID, CID[:12] + OTHER_CID[12:], None),  # same short id, different container
        (None, CID, None),
    ],
)
def test_correlate_container_id_prefix(
    run_cid: str | None, detection_cid: str, key: str | None
) -> None:
    run = _run(container_id=run_cid, cgroup_id=None)
    assert correlate(run, _detection(container_id=detection_cid)) == key


# ---------------------------------------------------------------- cgroup ids
@pytest.mark.parametrize(
    ("run_cgroup", "detection_cgroup", "key"),
    [
        (CGROUP, CGROUP, "cgroup_id"),
        (CGROUP, CGROUP + 1, None),
        (CGROUP, None, None),
        (None, None, None),  # a host run has no cgroup of its own: None never equals None
        (None, CGROUP, None),
    ],
)
def test_correlate_cgroup_id(
    run_cgroup: int | None, detection_cgroup: int | None, key: str | None
) -> None:
    run = _run(container_id=None, cgroup_id=run_cgroup)
    assert correlate(run, _detection(cgroup_id=detection_cgroup)) == key


# ---------------------------------------------------------------- process tree
@pytest.mark.parametrize(
    "detection",
    [
        pytest.param(_detection(pid=CHILD_PID), id="pid"),
        pytest.param(_detection(ppid=ROOT_PID), id="ppid"),
        pytest.param(_detection(ancestors=(6999, ROOT_PID, 2235, 1)), id="grandparent"),
        pytest.param(_detection(ancestors=(6999, 6998, 6997, 6996, 6995, ROOT_PID)),
                     id="sixth-ancestor"),
    ],
)
def test_correlate_process_tree_by_pid_ppid_or_any_ancestor(detection: Detection) -> None:
    run = _run(container_id=None, cgroup_id=None)
    assert correlate(run, detection) == "process_tree"


@pytest.mark.parametrize(
    "detection",
    [
        pytest.param(_detection(pid=0, ppid=0, ancestors=(0, 0, 0)), id="all-zero"),
        pytest.param(_detection(pid=None, ppid=None, ancestors=()), id="no-pids"),
        pytest.param(_detection(pid=7001, ppid=0, ancestors=(6999, 0, 0)), id="zero-padding"),
    ],
)
def test_correlate_ignores_pid_zero(detection: Detection) -> None:
    run = _run(container_id=None, cgroup_id=None, pids=frozenset({0, ROOT_PID}))
    assert correlate(run, detection) is None


def test_correlate_run_without_pids_never_matches_the_tree() -> None:
    run = _run(container_id=None, cgroup_id=None, pids=frozenset())
    assert correlate(run, _detection(pid=ROOT_PID, ppid=1, ancestors=(1,))) is None


# ---------------------------------------------------------------- no key
def test_correlate_unrelated_detection_is_none() -> None:
    assert correlate(_run(), _detection()) is None


def test_correlate_time_alone_never_correlates() -> None:
    """Same node, same scenario's rule, observed and received inside the run: no key."""
    run = _run()
    detection = _detection(
        node=run.node, observed_at=run.started_at + 0.5, received_at=run.started_at + 0.5,
        names=("/etc/shadowtest-st00000000beef.conf",), container_id=OTHER_CID,
    )
    assert correlate(run, detection) is None
