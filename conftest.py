"""Repo-level pytest configuration for shadowtest's own suite.

Tests marked ``node`` attack this node with the real daemons (auditd, bpftrace): they
run only with ``--run-node`` (CI and ``bash ci/test.sh`` pass it) and as root, so plain
``pytest`` never attacks a node.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-node", action="store_true", default=False,
                     help="run tests that need root and attack this node with real sensors")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-node") and os.geteuid() == 0:
        return
    why = "needs --run-node" if os.geteuid() == 0 else "needs root and --run-node"
    skip = pytest.mark.skip(reason=f"attacks this node with real daemons: {why}")
    for item in items:
        if {"node", "docker", "vm"} & set(item.keywords):
            item.add_marker(skip)
