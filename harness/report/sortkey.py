"""The natural sort order of kernel releases and node names, shared by every report."""

from __future__ import annotations

import re


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key: 5.10.0 after 5.4.0, 6.1 before 6.12 (kernel releases, node names)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p)
                 for p in re.split(r"(\d+)", text) if p)
