"""Base of sensors whose transport is JSON lines: a file tailed (following rotation and
truncation) or a command's stdout. Subclasses write ``normalise(raw) -> Detection | None``
and may override ``on_record`` to read health events (drop alerts, lost events)."""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from harness.detection import Detection, keep_raw
from harness.errors import ConfigError, SensorError
from harness.sensors._process import spawn, stop
from harness.sensors._streams import FileTail, LineReader
from harness.sensors.base import DetectionStream
from harness.verdict import Health

_decoder = msgspec.json.Decoder()


def decode_json(data: bytes | str) -> Any:
    """One JSON document (a line, a request body) with msgspec; invalid UTF-8 in ``bytes``
    (or a lone surrogate in ``str``) is replaced by U+FFFD and the text decoded again, as
    Python's own readers do with ``errors="replace"``: one odd byte in a command line must
    not lose the detection around it.

    Raises ``msgspec.DecodeError`` (a ``ValueError``) for anything still not JSON. The retry
    is decided by the input, not by the exception's type: msgspec <= 0.18 raised
    ``UnicodeDecodeError`` for invalid UTF-8, 0.19+ raises ``DecodeError``."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeError) as exc:
        first: Exception = exc
    repaired = _repair_utf8(data)
    if repaired is None:  # valid text: the error was the JSON itself
        if isinstance(first, msgspec.DecodeError):
            raise first
        raise msgspec.DecodeError(str(first)) from first
    try:
        return _decoder.decode(repaired)
    except UnicodeError as exc:  # pragma: no cover - the repaired text is valid UTF-8
        raise msgspec.DecodeError(str(exc)) from exc


def _repair_utf8(data: bytes | str) -> str | None:
    """``data`` as valid text with U+FFFD for what is not UTF-8; None when it already was."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (a reader with errors="surrogateescape")
            try:  # each escaped byte back to itself: one U+FFFD per invalid byte
                raw = data.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # a surrogate that is no escaped byte
                raw = data.encode("utf-8", "surrogatepass")
            return raw.decode("utf-8", "replace")
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")
    return None


class JsonLinesSensor:
    """``path`` (tail it) or ``command`` (run it, read stdout); one JSON object per line."""

    NAME: ClassVar[str] = "jsonlines"

    def __init__(self, name: str, path: str | None = None, command: str | list[str] | None = None,
                 from_start: bool = False, delay: float = 0.0, node: str | None = None) -> None:
        self._check_transport(name, path, command)
        self.name = name
        self.path = Path(path) if path else None
        self.command = shlex.split(command) if isinstance(command, str) else command
        self.from_start = from_start
        self.delay = float(delay)
        self.node = node
        self.stream = DetectionStream(name)
        self._tail: FileTail | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._readers: list[LineReader] = []
        self._stderr: list[str] = []
        self._unhealthy: str | None = None
        self._line: str | None = None

    def _check_transport(self, name: str, path: str | None,
                         command: str | list[str] | None) -> None:
        """Exactly one of ``path`` / ``command``; a subclass with one more transport of its own
        (an HTTP receiver) overrides this, and its ``start`` handles that transport."""
        if (path is None) == (command is None):
            raise ConfigError(
                f"sensor {name!r}: set exactly one of path = '<file to tail>' or "
                f"command = '<program printing JSON lines>' under [tool.shadowtest.sensors.{name}]"
            )

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.path is not None:
            if not self.path.parent.is_dir():
                raise SensorError(f"{self.name}: directory of {self.path} does not exist")
            self._tail = FileTail(self.path, self.on_line, f"{self.name}-tail",
                                  from_start=self.from_start)
            return
        assert self.command is not None
        try:
            self._proc = spawn(self.command)
        except OSError as exc:
            raise SensorError(f"{self.name}: cannot start {self.command[0]!r}: {exc}") from exc
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self._readers = [
            LineReader(self._proc.stdout, self.on_line,
                       lambda: self.stream.close(f"{self.name}: command output ended"),
                       f"{self.name}-stdout"),
            LineReader(self._proc.stderr, self._stderr.append, lambda: None, f"{self.name}-stderr"),
        ]

    def stop(self) -> None:
        if self._tail is not None:
            self._tail.stop()
            self._tail = None
        if self._proc is not None:
            stop(self._proc, signal.SIGTERM)
            for reader in self._readers:
                reader.join(5)
            for pipe in (self._proc.stdout, self._proc.stderr):
                if pipe is not None:
                    pipe.close()
            self._proc = None

    def health(self) -> Health:
        if self.stream.closed:
            return Health(False, self.stream.closed)
        if self._proc is not None and self._proc.poll() is not None:
            return Health(False, f"{self.name}: command exited {self._proc.returncode}: "
                                 + " | ".join(self._stderr[-3:]))
        if self._tail is None and self._proc is None:
            return Health(False, f"{self.name}: not started")
        return Health(True, lost=self.stream.lost, malformed=self.stream.malformed)

    def sync(self) -> str | None:
        """A file or stream written by another product cannot be asked for a marker."""
        return None

    # ------------------------------------------------------------ parsing
    def on_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            raw = decode_json(line)
        except ValueError:  # msgspec.DecodeError (not JSON) is a ValueError
            self.stream.count_malformed(line)
            return
        if not isinstance(raw, dict):
            self.stream.count_malformed(line)
            return
        self._line = line
        try:
            self.on_record(raw)
        except Exception:  # a bad record must never kill the reader thread
            self.stream.count_malformed(line)
        finally:
            self._line = None

    def on_record(self, raw: dict[str, Any]) -> None:
        """Push the record's detection, if it is one (override for health events).

        A detection read from a line keeps that line as its ``raw`` event (the product's
        own bytes, decoded again on demand with ``json.loads``): one string per detection
        instead of a tree of dicts, which the garbage collector would walk on every pass."""
        det = self.normalise(raw)
        if det is not None:
            if self._line is not None:
                keep_raw(det, self._line)
            self.stream.push(det)

    def normalise(self, raw: Any) -> Detection | None:
        raise NotImplementedError

    @staticmethod
    def now() -> float:
        return time.time()
