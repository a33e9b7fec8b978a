"""The README's main job inside a kernel-matrix VM booted with a pure cgroup v2 hierarchy,
as that VM's own local node.

On the host: a wheel of this tree and a wheelhouse of its dependencies (the versions this
.venv was tested with, pip's own wheel included), built with the .venv's pip. In the guest
(no network, Debian 12's python3): a venv, ``pip install --no-index`` from the wheelhouse,
then in an empty project directory whose ``shadowtest.toml`` is the repository's own
``[tool.shadowtest]`` (built-in catalogue, auditd + bpftrace, ``local://``):
``shadowtest run --results results.jsonl``. Every row must carry the verdict the catalogue
expects for its sensor on that node (read through ``check_scenario`` and each scenario's
``expectation(sensor, facts)``; the facts are the rows' own), the node probe must report
cgroup2 at ``/sys/fs/cgroup``, and the namespace context's detections must map to its
container through the cgroup -> container map.

One VM (kernel 6.12), booted once; the timings of every phase are printed (``-s``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.builtin import ATOMICS, SCENARIOS
from harness.core import policy
from harness.core.node import kernel_satisfies, unmet
from harness.core.scenario import Scenario, check_scenario, load_atomics, scenario_files
from harness.nodes import cgroups
from harness.targets import vm
from harness.targets.vm import VirtualMachine, VmEndpoint
from harness.tools.catalogue import expected_cell

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
KERNEL = "6.12"
GUEST = "/opt/shadowtest"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SENSORS = ("auditd", "bpftrace")

#: the README's main job configuration: pyproject.toml's [tool.shadowtest] (checked below)
#: plus one allowance for QEMU TCG on a loaded CI machine: LLVM compiles the bundled rule
#: pack in 60-90 s or more, and bpftrace gets 5 x start_timeout (default 60 s) to attach;
#: 600 keeps a slow compile from turning every bpftrace row SENSOR_DOWN
TCG_ALLOWANCE = {"bpftrace": {"start_timeout": 600}}
MAIN_JOB_CONFIG = """
[tool.shadowtest]
scenarios = ["builtin"]
allowed_nodes = ["local"]
window = "5s"

[tool.shadowtest.nodes.local]
url = "local://"

[tool.shadowtest.sensors.auditd]
type = "auditd"

[tool.shadowtest.sensors.bpftrace]
type = "bpftrace"
start_timeout = 600
"""

TIMINGS: dict[str, float] = {}


class _Phase:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        TIMINGS[self.name] = round(time.perf_counter() - self.started, 1)
        print(f"[cgroup2-vm] {self.name}: {TIMINGS[self.name]} s", flush=True)


def _pip(*args: str, timeout: float = 600) -> None:
    __tracebackhide__ = True
    res = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                         capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        pytest.fail(f"pip {' '.join(args[:2])} failed on the host (exit {res.returncode}); it "
                    f"needs the package registry:\n{res.stderr[-2000:]}")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This tree's wheel + its dependencies' wheels at this .venv's versions + pip's."""
    out = tmp_path_factory.mktemp("wheelhouse")
    with _Phase("host: wheel + wheelhouse"):
        _pip("wheel", "--no-deps", "-q", "-w", str(out), str(REPO))
        frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                                capture_output=True, text=True, check=True).stdout
        pins = [ln for ln in frozen.splitlines()
                if "==" in ln and " @ " not in ln and not ln.lower().startswith("shadowtest==")]
        constraints = out.parent / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        wheel = next(out.glob("shadowtest-*.whl"))
        # this machine is the guest's kind (Debian 12, CPython 3.11): its wheels fit there
        _pip("download", "-q", "--only-binary=:all:", "-d", str(out), "-c", str(constraints),
             str(wheel), "pip")
    return out


@pytest.fixture(scope="module")
def guest(wheelhouse: Path) -> Iterator[VmEndpoint]:
    vm.build_image(vm.DEFAULT_CACHE)  # a no-op when the cached image is current
    with _Phase(f"boot vm://{KERNEL}?cgroup=v2"):
        machine = VirtualMachine(KERNEL, cgroup="v2")
        endpoint = machine.up(timeout=300)
    try:
        yield endpoint
    finally:
        machine.down()


def _guest(endpoint: VmEndpoint, command: str, timeout: float = 600) -> str:
    __tracebackhide__ = True
    res = endpoint.run(f"export PATH={GUEST_PATH}; set -e; {command}", timeout=timeout)
    if res.returncode != 0:
        pytest.fail(f"in the guest: `{command}` exited {res.returncode}:\n"
                    f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res.stdout


def _ship(endpoint: VmEndpoint, src: Path, dest: str) -> None:
    """tar ``src`` here | ssh | tar in ``dest`` in the guest."""
    __tracebackhide__ = True
    tar = subprocess.Popen(["tar", "-C", str(src), "-c", "."], stdout=subprocess.PIPE)
    res = subprocess.run([*endpoint.ssh_argv(), f"mkdir -p {dest} && tar -C {dest} -x"],
                         stdin=tar.stdout, capture_output=True, text=True, timeout=600, check=False)
    assert tar.stdout is not None
    tar.stdout.close()
    if tar.wait() != 0 or res.returncode != 0:
        pytest.fail(f"shipping {src} to the guest's {dest} failed: {res.stderr[-1000:]}")


def _catalogue() -> list[Scenario]:
    atomics, errors = load_atomics([ATOMICS])
    assert errors == [], errors
    out = []
    for path in scenario_files([SCENARIOS]):
        errs, scenario = check_scenario(path, atomics)
        assert errs == [], (path, errs)
        assert scenario is not None
        out.append(scenario)
    return out


def _declared_not_executed(scenario: Scenario, facts: dict[str, Any], reason: str) -> bool:
    """NOT_EXECUTED that the catalogue itself declares: a ``not_executed`` reason in the
    scenario, a kernel/feature requirement the node (its facts) does not meet, or one of
    the atomic's own preconditions failing (its description is the reason)."""
    if yaml.safe_load(scenario.path.read_text()).get("not_executed"):
        return True
    release = str(facts.get("kernel") or "")
    if scenario.kernel and not kernel_satisfies(release, scenario.kernel):
        return True
    if any(not facts.get(f) for f in scenario.features):
        return True
    return any(reason.startswith(f"precondition failed: {p.description}")
               for p in scenario.atomic.precondition)


def _check_row(scenario: Scenario, row: dict[str, Any]) -> str | None:
    """None when the row's verdict is the one the catalogue expects for its sensor on the
    row's node (``expected_cell``: harness.core.expectation, enforce and overrides
    included), else what differs. NOT_EXECUTED (harness.core.policy: not run) passes only
    when the catalogue declares it or the sensor's own ``requires`` is unmet by the facts."""
    facts, sensor, got = row["facts"], row["sensor"], row["verdict"]
    want = expected_cell(scenario, sensor, facts)
    outcome = policy.outcome_of_row(row)
    if policy.state(outcome) is policy.State.NOT_RUN:
        if _declared_not_executed(scenario, facts, row.get("reason", "")):
            return None
        exp = scenario.expectation(sensor, facts)
        if exp.requires and unmet(facts, *exp.requires) \
                and row.get("reason", "").startswith(f"not runnable for {sensor}: "):
            return None  # the sensor's own requires, unmet by the node
    if not want.accepts(got):
        return f"expected {want.short()} ({want.text}), got {got}: {row.get('reason', '')[:300]}"
    if want.gap is not None and row.get("known_gap") != want.gap:
        return f"a miss without the declared gap {want.gap!r} (known_gap {row.get('known_gap')!r})"
    if policy.fails(outcome):
        return f"{got} fails the run (harness.core.policy): {row.get('reason', '')[:300]}"
    return None


#: real cgroups made in the guest for each runtime's layout (relative to the cgroup2 root)
LAYOUTS = {
    "docker-systemd": "system.slice/docker-{id}.scope",
    "docker-cgroupfs": "docker/{id}",
    "containerd-cri": "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1e59_7579"
                      ".slice/cri-containerd-{id}.scope",
    "kubelet-cgroupfs": "kubepods/burstable/pod1e597579-417e-482f-bf65-5fe170c3aebd/{id}",
    "crio": "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2ca4.slice/crio-{id}.scope",
    "podman": "machine.slice/libpod-{id}.scope/container",
}


def _layouts_map_on_the_node(endpoint: VmEndpoint, root: str) -> None:
    """Make a real cgroup per runtime layout under the guest's cgroup2 ``root``, run the
    sensors' node scan there (node probe's root + harness.nodes.cgroups), compare with stat."""
    __tracebackhide__ = True
    want = {name: f"{i:02x}" * 32 for i, name in enumerate(LAYOUTS, start=1)}
    paths = {name: f"{root}/{rel.format(id=want[name])}" for name, rel in LAYOUTS.items()}
    made = " ".join(shlex.quote(p) for p in paths.values())
    try:
        inodes = _guest(endpoint, f"mkdir -p {made} && stat -c %i {made}").split()
        out = json.loads(_guest(endpoint, "python3 -S -c " + shlex.quote(cgroups.node_scan_code())))
    finally:  # children first: rmdir of every component, deepest first
        parts = sorted({"/".join(p.split("/")[:n]) for p in paths.values()
                        for n in range(len(root.split("/")) + 1, len(p.split("/")) + 1)},
                       key=lambda p: -p.count("/"))
        endpoint.run("rmdir " + " ".join(shlex.quote(p) for p in parts) + " 2>/dev/null")
    assert out["root"] == root
    got = {name: out["map"].get(ino) for name, ino in zip(paths, inodes, strict=True)}
    assert got == want


def test_main_job_config_is_the_repository_s() -> None:
    ours = tomllib.loads(MAIN_JOB_CONFIG)["tool"]["shadowtest"]
    theirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["shadowtest"]
    for sensor, options in TCG_ALLOWANCE.items():
        for key, value in options.items():
            assert ours["sensors"][sensor].pop(key) == value
            theirs["sensors"][sensor].pop(key, None)
    assert ours == theirs


def test_main_job_in_a_pure_cgroup_v2_vm_gives_the_catalogue_s_verdicts(
        wheelhouse: Path, guest: VmEndpoint) -> None:
    # the guest really is pure v2: cgroup2 on /sys/fs/cgroup, no v1 hierarchy mounted,
    # and no v1 controller can be (cgroup_no_v1=all)
    mounts = _guest(guest, "cat /proc/mounts")
    cgroup_mounts = sorted((f[1], f[2]) for f in map(str.split, mounts.splitlines())
                           if f[2] in ("cgroup", "cgroup2"))
    assert cgroup_mounts == [("/sys/fs/cgroup", "cgroup2")], mounts
    assert "cgroup_no_v1=all" in _guest(guest, "cat /proc/cmdline").split()
    controllers = _guest(guest, "cat /sys/fs/cgroup/cgroup.controllers").split()
    assert {"cpu", "memory", "pids"} <= set(controllers), controllers
    _layouts_map_on_the_node(guest, "/sys/fs/cgroup")

    with _Phase("ship the wheelhouse"):
        _ship(guest, wheelhouse, f"{GUEST}/wheelhouse")
    with _Phase("guest: venv + pip install --no-index"):
        _guest(guest, f"python3 -m venv --without-pip {GUEST}/venv && "
                      f"pip_wheel=$(ls {GUEST}/wheelhouse/pip-*.whl) && "
                      f"{GUEST}/venv/bin/python $pip_wheel/pip install -q "
                      f"--no-index --no-compile --disable-pip-version-check "
                      f"--find-links {GUEST}/wheelhouse shadowtest", timeout=900)
    project = f"{GUEST}/project"
    _guest(guest, f"mkdir -p {project} && printf %s {shlex.quote(MAIN_JOB_CONFIG)} "
                  f"> {project}/shadowtest.toml && {GUEST}/venv/bin/shadowtest --help >/dev/null")

    with _Phase("guest: shadowtest run (built-in catalogue, auditd + bpftrace)"):
        run = guest.run(f"export PATH={GUEST_PATH}; cd {project} && "
                        f"{GUEST}/venv/bin/shadowtest run --results results.jsonl", timeout=1500)
    log = f"shadowtest run exited {run.returncode}\n{run.stdout[-5000:]}\n{run.stderr[-3000:]}"
    rows = [json.loads(ln) for ln in _guest(guest, f"cat {project}/results.jsonl").splitlines()
            if ln.strip()]
    assert rows, log

    # the node facts are the guest's, probed there: the booted kernel, pure v2
    kernels = {r["facts"]["kernel"] for r in rows}
    assert kernels == {guest.kernel}, kernels
    roots = {r["facts"]["cgroup2_root"] for r in rows}
    assert roots == {"/sys/fs/cgroup"}, roots

    scenarios = {s.id: s for s in _catalogue()}
    got = {(r["scenario"], r["context"], r["sensor"]): r for r in rows}
    assert {r["sensor"] for r in rows} == set(SENSORS), log
    assert set(got) <= {(s.id, c, n) for s in scenarios.values() for c in s.contexts for n in SENSORS}
    problems = []
    facts = rows[0]["facts"]
    for scenario in scenarios.values():
        for context in scenario.contexts:
            for sensor in SENSORS:
                row = got.get((scenario.id, context, sensor))
                if row is None:
                    if not _declared_not_executed(scenario, facts, ""):
                        problems.append(f"{scenario.id}[{context}] {sensor}: no verdict row")
                    continue
                diff = _check_row(scenario, row)
                if diff is not None:
                    problems.append(f"{scenario.id}[{context}] {sensor}: {diff}")
    assert problems == [], "\n".join(problems) + "\n" + log

    # the cgroup -> container map works on pure v2: the namespace context's bpftrace
    # detections carry the run's container id (its cgroup is <cgroup2 root>/shadowtest/<id>)
    mapped = [r for r in rows if r["sensor"] == "bpftrace" and r["context"] == "namespace"
              and r["verdict"] == "DETECTED"]
    assert mapped, "no namespace-context bpftrace detection to check the container map with"
    wrong = [(r["scenario"], r["container_id"], r["detection"]["container_id"]) for r in mapped
             if r["detection"]["container_id"] != r["container_id"]]
    assert wrong == [], wrong
    assert run.returncode == 0, log
    print(f"[cgroup2-vm] {len(rows)} rows, timings {json.dumps(TIMINGS)}", flush=True)


def test_hybrid_vm_keeps_the_older_layout_and_the_map_follows_it() -> None:
    """``cgroup=hybrid``: v1 controllers under /sys/fs/cgroup/<name>, cgroup2 at
    /sys/fs/cgroup/unified; the node probe finds it there and the map works under it."""
    vm.build_image(vm.DEFAULT_CACHE)
    with _Phase(f"boot vm://{KERNEL}?cgroup=hybrid"), VirtualMachine(KERNEL, cgroup="hybrid") as machine:
        assert machine.endpoint is not None
        endpoint = machine.endpoint
        mounts = list(map(str.split, _guest(endpoint, "cat /proc/mounts").splitlines()))
        v2 = [f[1] for f in mounts if f[2] == "cgroup2"]
        v1 = {f[1] for f in mounts if f[2] == "cgroup"}
        assert v2 == ["/sys/fs/cgroup/unified"], mounts
        assert {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/systemd"} <= v1, v1
        probe = (REPO / "harness" / "nodes" / "remote" / "nodeprobe.py").read_text()
        root = _guest(endpoint, f"python3 -S -c {shlex.quote(probe)} --cgroup2-root").strip()
        assert root == "/sys/fs/cgroup/unified"
        _layouts_map_on_the_node(endpoint, root)
