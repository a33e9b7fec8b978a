"""Error tree: every error says what, where, expected vs got, and how to fix."""

from __future__ import annotations


class ShadowtestError(Exception):
    """Base of every error shadowtest raises on purpose."""


class ConfigError(ShadowtestError):
    """``[tool.shadowtest]`` / ``shadowtest.toml`` is wrong; ``key`` names the offending key
    of the table when one does."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class ScenarioError(ShadowtestError):
    """A scenario or atomic file is malformed. Carries file, line and key path."""

    def __init__(self, path: str, line: int | None, key: str, message: str) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {key or '<root>'}: {message}")


class TargetError(ShadowtestError):
    """A target could not run a command on a node."""


class SensorError(ShadowtestError):
    """A sensor could not be started, attached to, or read."""


class SafetyError(ShadowtestError):
    """Refused for safety: node not allowed, PID 1 of the machine, path outside the run."""
