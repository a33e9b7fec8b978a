"""YAML with line numbers: every key path maps to the line it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.core.errors import ScenarioError

KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    """``("expect", "auditd", "rule")`` -> ``expect.auditd.rule``; indices as ``[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class LinedDocument:
    """A loaded YAML document and the line of every key path in it."""

    def __init__(self, path: Path, data: Any, lines: dict[KeyPath, int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def line(self, key: KeyPath) -> int | None:
        """Line of ``key``, else of its nearest parent that has one."""
        while True:
            if key in self.lines:
                return self.lines[key]
            if not key:
                return None
            key = key[:-1]

    def error(self, key: KeyPath, message: str) -> ScenarioError:
        return ScenarioError(str(self.path), self.line(key), dotted(key), message)


def load_lined(path: Path) -> LinedDocument:
    """Parse one YAML file; syntax errors and duplicate keys become ScenarioError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), None, "", f"cannot read file: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ScenarioError(
            str(path), line, "", f"invalid YAML: {exc.problem or exc}; fix the syntax"
        ) from exc
    lines: dict[KeyPath, int] = {(): 1}
    if node is None:
        return LinedDocument(path, None, lines)
    data = convert_node(node, (), lines, path)
    return LinedDocument(path, data, lines)


def convert_node(node: yaml.Node, key: KeyPath, lines: dict[KeyPath, int], path: Path) -> Any:
    lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for k_node, v_node in node.value:
            name = str(k_node.value)
            sub = (*key, name)
            if name in out:
                raise ScenarioError(
                    str(path), k_node.start_mark.line + 1, dotted(sub),
                    "duplicate key: each key may appear once; remove one of them",
                )
            lines[sub] = k_node.start_mark.line + 1
            out[name] = convert_node(v_node, sub, lines, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [convert_node(v, (*key, i), lines, path) for i, v in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode) and node.style is None:
        rest = node.end_mark.buffer[node.end_mark.pointer:].split("\n", 1)[0] if node.end_mark.buffer else ""
        if rest.lstrip().startswith("#{"):
            raise ScenarioError(
                str(path), node.start_mark.line + 1, dotted(key),
                "unquoted value followed by ' #{...}': YAML reads that as a comment and drops "
                "it; quote the whole value",
            )
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
