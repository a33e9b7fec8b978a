"""Node facts, read from the node itself, and kernel requirement checks."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
    ">": operator.gt, "<": operator.lt,
}
_REQ = re.compile(r"^(?P<op>>=|<=|==|!=|>|<)?(?P<ver>[0-9]+(?:\.[0-9]+){0,2})$")
#: why a feature no probe explains is missing
_WHY_NOT = {"disposable": "not one of the harness's own snapshot VMs (vm://); an effect "
                          "global by nature runs only there"}


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the node says about itself (never what a config file claims)."""

    node: str
    kernel: str
    distro: str = ""
    arch: str = ""
    btf: bool = False
    bpf_lsm: bool = False
    kprobes: bool = False
    tracepoints: bool = False
    cgroup2: bool = False
    hostname: str = ""
    reasons: tuple[tuple[str, str], ...] = ()
    kfunc: bool = False
    cgroup2_root: str = ""
    ncpu: int = 0
    #: one of the harness's own snapshot VMs (vm://): every boot starts from the image and
    #: nothing a run does outlives it, so effects global by nature may run there
    disposable: bool = False

    @classmethod
    def from_probe(cls, data: dict[str, Any]) -> NodeFacts:
        """From ``harness.nodes.remote.nodeprobe.probe()``'s dict (unknown keys ignored)."""
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in data.items() if k in known}
        kw["reasons"] = tuple((str(a), str(b)) for a, b in (data.get("reasons") or ()))
        return cls(**kw)

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["reasons"] = dict(self.reasons)
        return row

    def feature(self, name: str) -> tuple[bool, str]:
        """(available, why not) for a feature a scenario may require."""
        ok = bool(getattr(self, name, False))
        why = "" if ok else _WHY_NOT.get(name, f"{name} not available")
        return ok, dict(self.reasons).get(name, why)


def unmet(facts: Mapping[str, Any], kernel: str | None, features: Sequence[str]) -> str:
    """Why a node with ``facts`` (``NodeFacts.as_row()``) does not meet a kernel
    requirement and features ('' when it does, or when no facts are known: nothing to
    hold against it)."""
    if not facts:
        return ""
    release, node = str(facts.get("kernel") or ""), facts.get("node")
    if kernel and not (release and kernel_satisfies(release, kernel)):
        return f"kernel {release or 'unknown'} on {node} does not satisfy {kernel}"
    for feature in features:
        if not facts.get(feature):
            why = (dict(facts.get("reasons") or {}).get(feature)
                   or _WHY_NOT.get(feature, f"{feature} not available"))
            return f"{feature} not usable on {node} ({release}): {why}"
    return ""


def kernel_tuple(release: str) -> tuple[int, int, int]:
    nums = [*(int(x) for x in re.findall(r"\d+", release.split("-", maxsplit=1)[0])[:3]), 0, 0, 0]
    return nums[0], nums[1], nums[2]


def kernel_satisfies(release: str, requirement: str) -> bool:
    """``kernel_satisfies("6.1.0-56-amd64", ">=5.8")`` -> True."""
    m = _REQ.match(requirement.replace(" ", ""))
    if not m:
        raise ValueError(f"expected a kernel requirement like '>=5.8', got {requirement!r}")
    want = kernel_tuple(m["ver"])
    got = kernel_tuple(release)[: len(m["ver"].split("."))]
    return _OPS[m["op"] or ">="](got, want[: len(got)])
