"""The target protocol and the registry of targets (the stage-runner session every context
uses is ``harness.nodes.runner.RunnerSession``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable
from urllib.parse import urlsplit

from harness.core.errors import ConfigError
from harness.core.node import NodeFacts
from harness.nodes.runner import RunnerSession
from harness.nodes.shell import NodeShell


@runtime_checkable
class Target(Protocol):
    """How commands run on one node and how its facts are read."""

    NAME: ClassVar[str]
    node: str

    def contexts(self) -> tuple[str, ...]:
        """The scenario contexts this target can provide (e.g. host, namespace)."""

    def facts(self) -> NodeFacts:
        """Facts read from the node itself."""

    def open(self, context: str, run_id: str) -> RunnerSession:
        """Start a stage runner in ``context``; return when it is ready and its ids known."""

    def close(self) -> None:
        """Release what the target holds (connections, daemons it started)."""

    #: runs on this node may go to several xdist workers at once (told apart by run id)
    PARALLEL_SAFE: ClassVar[bool]

    def stage_bin(self, bin_dir: Path) -> str:
        """Where an atomic's ``bin/`` helpers are on the node (a remote node gets a copy)."""

    def shell(self) -> NodeShell | None:
        """The node's command layer for sensors running there (None: no sensor can)."""


class TargetBase:
    """What a target without an opinion on :class:`Target`'s optional members means: runs
    grouped on one worker, helpers used in place, no node shell for sensors."""

    PARALLEL_SAFE: ClassVar[bool] = False
    #: the query keys the target's URL may have (key -> what it means), for
    #: ``harness.nodes.url.parse_node_url``: any other key is a configuration error
    URL_KEYS: ClassVar[Mapping[str, str]] = {}

    def stage_bin(self, bin_dir: Path) -> str:
        return str(bin_dir)

    def shell(self) -> NodeShell | None:
        return None


# ----------------------------------------------------------------- registry
BUILTIN: dict[str, str] = {
    "local": "harness.targets.local:LocalTarget",
    "docker": "harness.targets.docker:DockerTarget",
    "ssh": "harness.targets.ssh:SshTarget",
    "vm": "harness.targets.ssh:VmTarget",
    "kubernetes": "harness.targets.kubernetes:KubernetesTarget",
}


def build_target(node: str, url: str) -> Target:
    """``local://`` -> LocalTarget; schemes come from BUILTIN + 'shadowtest.targets' entry points."""
    scheme = urlsplit(url).scheme
    known = dict(BUILTIN)
    for ep in entry_points(group="shadowtest.targets"):
        known[ep.name] = ep.value
    if scheme not in known:
        raise ConfigError(
            f"node {node!r}: unknown target scheme {scheme!r} in {url!r}: expected one of "
            f"{', '.join(f'{k}://' for k in sorted(known))}"
        )
    module, _, name = known[scheme].partition(":")
    cls: Callable[..., Target] = getattr(importlib.import_module(module), name)
    return cls(node=node, url=url)
