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


#: Bounds of one scenario, atomic or policy file: anything past them is not such a file,
#: and would make ``validate`` slow or its memory unbounded (hostile input is data).
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_VALUES = 100_000

#: libyaml's loader when PyYAML has it (7x faster, and it bounds flow nesting itself)
_LOADER: type[yaml.SafeLoader] = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader  # type: ignore[assignment]

#: what a tagged scalar's constructor can raise on a bad value (``!!float abc``,
#: ``!!bool maybe``, ``!!python/object/apply ...`` under the safe loader)
_CONSTRUCT_ERRORS = (yaml.YAMLError, ValueError, KeyError, TypeError, OverflowError,
                     AttributeError, IndexError)


_PLAIN_COLLECTIONS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def clip(value: object, limit: int = 80) -> str:
    """``repr(value)`` (a string as it is), at most ``limit`` characters: errors quote a
    short prefix of a bad value, never the whole of it."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def load_lined(path: Path) -> LinedDocument:
    """Parse one YAML file; every problem (syntax, duplicate keys, bad tags, aliases that
    expand past :data:`MAX_VALUES`, nesting past :data:`MAX_DEPTH`, a file past
    :data:`MAX_BYTES`) becomes a ScenarioError naming the file, line and key."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ScenarioError(str(path), None, "",
                                f"the file is {size} bytes; a scenario, atomic or policy file is "
                                f"at most {MAX_BYTES} bytes: is this the right file?")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), None, "", f"cannot read file: {clip(str(exc), 200)}") from exc
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ScenarioError(
            str(path), line, "", f"invalid YAML: {clip(str(exc.problem or exc), 200)}; fix the syntax"
        ) from exc
    except yaml.YAMLError as exc:  # the reader: NUL and other control characters
        raise ScenarioError(str(path), None, "",
                            f"invalid YAML: {clip(str(exc), 200)}; fix the file") from exc
    except RecursionError as exc:  # the pure-Python composer on deep nesting
        raise ScenarioError(str(path), None, "",
                            f"nested deeper than {MAX_DEPTH} levels: not a scenario file") from exc
    lines: dict[KeyPath, int] = {(): 1}
    if node is None:
        return LinedDocument(path, None, lines)
    data = _Converter(path, text, lines).convert(node, ())
    return LinedDocument(path, data, lines)


def convert_node(node: yaml.Node, key: KeyPath, lines: dict[KeyPath, int], path: Path) -> Any:
    """One composed node (and what is under it) to plain data, recording each key's line;
    bounded like :func:`load_lined`."""
    return _Converter(path, "", lines).convert(node, key)


class _Converter:
    """Composed nodes to plain data with a budget: every value visited (an alias's target
    once per reference) counts against :data:`MAX_VALUES`, so alias bombs and alias cycles
    stop with an error in bounded time."""

    def __init__(self, path: Path, text: str, lines: dict[KeyPath, int]) -> None:
        self.path = path
        self.text = text
        self.lines = lines
        self.values = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node, key: KeyPath, message: str) -> ScenarioError:
        return ScenarioError(str(self.path), node.start_mark.line + 1, dotted(key), message)

    def convert(self, node: yaml.Node, key: KeyPath) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise self.error(node, key, f"the document expands to more than {MAX_VALUES} values "
                                        "(aliases referring to aliases?): not a scenario file")
        if len(key) > MAX_DEPTH:
            raise self.error(node, key, f"nested deeper than {MAX_DEPTH} levels (an alias that "
                                        "refers to itself?): not a scenario file")
        self.lines.setdefault(key, node.start_mark.line + 1)
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_COLLECTIONS:
            raise self.error(node, key, f"the tag {clip(node.tag)} is not supported here: a "
                                        "scenario file holds plain mappings, lists and values; "
                                        "remove the tag")
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k_node, v_node in node.value:
                if not isinstance(k_node, yaml.ScalarNode):
                    raise self.error(k_node, key, "a key must be a plain value, not a list or "
                                                  "mapping; fix the key")
                name = str(k_node.value)
                sub = (*key, name)
                if name in out:
                    raise ScenarioError(
                        str(self.path), k_node.start_mark.line + 1, dotted(sub),
                        "duplicate key: each key may appear once; remove one of them",
                    )
                self.lines[sub] = k_node.start_mark.line + 1
                out[name] = self.convert(v_node, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(v, (*key, i)) for i, v in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and not node.style and self.text:  # plain ('' in libyaml)
            end = node.end_mark.index
            stop = self.text.find("\n", end)
            rest = self.text[end:stop if stop >= 0 else len(self.text)]
            if rest.lstrip().startswith("#{"):
                raise self.error(
                    node, key,
                    "unquoted value followed by ' #{...}': YAML reads that as a comment and drops "
                    "it; quote the whole value",
                )
        try:
            return self.constructor.construct_object(node, deep=True)
        except _CONSTRUCT_ERRORS as exc:
            raise self.error(node, key, f"cannot read the value {clip(repr(node.value))} tagged "
                                        f"{node.tag}: {clip(str(exc), 120)}; remove the tag or "
                                        "fix the value") from exc
