"""Strict readers for fields of products' JSON records: missing/null gives an empty value,
a value of the wrong type raises TypeError (the caller counts the line as malformed)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def obj(value: Any) -> dict[str, Any]:
    """An object field, ``{}`` when missing or null (pod, container, parent ...)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def array(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def integer(value: Any) -> int | None:
    """Integers: bare, as strings (protojson's 64-bit ints) or ``{"value": n}`` wrappers
    (``UInt32Value`` outside protojson)."""
    if isinstance(value, dict):
        value = value.get("value")
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return int(value)


def unique(items: Iterable[str | None]) -> tuple[str, ...]:
    """Non-empty items, first occurrence order."""
    return tuple(dict.fromkeys(i for i in items if i))
