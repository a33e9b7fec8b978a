"""Error tree: every error says what, where, expected vs got, and how to fix."""

from __future__ import annotations

import re


class ShadowtestError(Exception):
    """Base of every error shadowtest raises on purpose."""


class ConfigError(ShadowtestError):
    """``[tool.shadowtest]`` / ``shadowtest.toml`` is wrong; ``key`` names the offending key
    of the table when one does."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


#: an error quotes a short prefix of a bad value, never all of it (a hostile file can hold
#: a megabyte-long value): longer runs without a space, and longer messages, are cut
_LONGEST_WORD = 200
_LONGEST_MESSAGE = 1000
_WORD = re.compile(r"\S{" + str(_LONGEST_WORD + 1) + ",}")


def bounded(message: str) -> str:
    """``message`` with every run of more than 200 non-space characters cut to a prefix,
    and the middle of a message over 1000 characters cut (its start says what, its end
    how to fix), each cut saying how much it left out."""
    message = _WORD.sub(lambda m: f"{m[0][:120]}...({len(m[0]) - 120} more characters)",
                        message)
    if len(message) > _LONGEST_MESSAGE:
        cut = len(message) - 900
        message = f"{message[:650]} ...({cut} more characters)... {message[-250:]}"
    return message


class ScenarioError(ShadowtestError):
    """A scenario or atomic file is malformed. Carries file, line and key path; the message
    is :func:`bounded`."""

    def __init__(self, path: str, line: int | None, key: str, message: str) -> None:
        self.path = path
        self.line = line
        self.key = bounded(key)
        message = bounded(message)
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {key or '<root>'}: {message}")


class TargetError(ShadowtestError):
    """A target could not run a command on a node."""


class SensorError(ShadowtestError):
    """A sensor could not be started, attached to, or read."""


class SafetyError(ShadowtestError):
    """Refused for safety: node not allowed, PID 1 of the machine, path outside the run."""
