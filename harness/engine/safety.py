"""Safety checks that run before any atomic: the node allow-list."""

from __future__ import annotations

from collections.abc import Iterable

from harness.core.errors import SafetyError
from harness.engine.config import Settings


def check_nodes_allowed(nodes: Iterable[str], settings: Settings) -> None:
    """Every node a collected scenario would attack must be in ``allowed_nodes``."""
    refused = sorted(n for n in nodes if n not in settings.allowed_nodes)
    if refused:
        where = settings.source or "<no config file>"
        raise SafetyError(
            f"refusing to run atomics on node(s) {', '.join(refused)}: not in allowed_nodes "
            f"{list(settings.allowed_nodes)} ({where}). Atomics attack the node they run on; "
            f"allow a node explicitly: allowed_nodes = {sorted({*settings.allowed_nodes, *refused})}"
        )
