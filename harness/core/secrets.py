"""Credentials: read from the environment or a file, never from a config value, and
redacted from everything shadowtest writes (results, messages, summaries, logs)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from harness.core.errors import ConfigError

REDACTED = "***"
_known: set[str] = set()
_lock = threading.Lock()


class Secret:
    """A credential whose ``str``/``repr`` never show it; ``reveal()`` to use it."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source
        if len(value) >= 4:
            with _lock:
                _known.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source!r})"

    __str__ = __repr__


def resolve_secret(value: object, what: str) -> Secret:
    """``"env:NAME"`` or ``"file:/path"`` -> Secret. A literal value is refused: config
    files end up in repositories."""
    text = str(value)
    kind, _, ref = text.partition(":")
    if kind == "env" and ref:
        if ref not in os.environ:
            raise ConfigError(f"{what}: environment variable {ref} is not set; export it or use file:PATH")
        return Secret(os.environ[ref], f"env:{ref}")
    if kind == "file" and ref:
        try:
            return Secret(Path(ref).read_text("utf-8").strip(), f"file:{ref}")
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read secret file {ref}: {exc.strerror}") from exc
    raise ConfigError(
        f"{what}: expected 'env:VARIABLE' or 'file:/path/to/secret', got a literal value; "
        "never put credentials in a config file"
    )


def redact(text: str) -> str:
    """``text`` with every known secret value replaced by ***."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    return text
