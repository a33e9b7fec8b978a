"""benchmarks/RESULTS.md: each benchmark owns one section between its own markers."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, section: str, begin: str, end: str) -> None:
    """Replace the text from ``begin`` to ``end`` (``section`` carries both markers) or,
    when the file has no such section yet, append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# shadowtest benchmarks\n"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")
