"""Base of sensors whose transport is JSON lines: a file tailed (following rotation and
truncation) or a command's stdout. Subclasses write ``normalise(raw) -> Detection | None``
and may override ``on_record`` to read health events (drop alerts, lost events).

Sign of life: a file written by another product, or a command's output, cannot be asked
for a sync marker, so a run's window is only judged (MISSED, CLEAN) when the producer
showed life during it (``silence``): the command still runs; or the writer's process
(``pid`` / ``pidfile``) ran through the whole window; or, without those, the file got a
line (any line: a detection, an exec event, a metrics snapshot ...) inside the window.
Otherwise the window is SENSOR_DOWN with what was seen, never MISSED."""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from harness.core.detection import Detection, keep_raw
from harness.core.errors import ConfigError, SensorError
from harness.core.health import Health
from harness.nodes.process import spawn, stop
from harness.sensors.base import DetectionStream, SensorBase
from harness.sensors.streams import FileTail, LineReader, process_started_at

_decoder = msgspec.json.Decoder()


def decode_json(data: bytes | str) -> Any:
    """One JSON document (a line, a request body) with msgspec; invalid UTF-8 in ``bytes``
    (or a lone surrogate in ``str``) is replaced by U+FFFD and the text decoded again, as
    Python's own readers do with ``errors="replace"``: one odd byte in a command line must
    not lose the detection around it.

    Raises ``msgspec.DecodeError`` (and only that) for anything still not JSON. The retry
    is decided by the input, not by the exception's type: msgspec <= 0.18 raised
    ``UnicodeDecodeError`` for invalid UTF-8, 0.19+ raises ``DecodeError`` (which is a
    ``ValueError`` only since 0.19)."""
    try:
        return _decoder.decode(data)
    except RecursionError as exc:  # hostile input is data: a line nested thousands deep
        raise msgspec.DecodeError(f"nested too deeply to decode: {exc}") from exc
    except (msgspec.DecodeError, UnicodeError) as exc:
        first: Exception = exc
    repaired = _repair_utf8(data)
    if repaired is None:  # valid text: the error was the JSON itself
        if isinstance(first, msgspec.DecodeError):
            raise first
        raise msgspec.DecodeError(str(first)) from first
    try:
        return _decoder.decode(repaired)
    except (UnicodeError, RecursionError) as exc:  # the repaired text is valid UTF-8
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


class JsonLinesSensor(SensorBase):
    """``path`` (tail it) or ``command`` (run it, read stdout); one JSON object per line."""

    NAME: ClassVar[str] = "jsonlines"
    #: the product's name in reasons, and how to make a quiet but live producer visible
    PRODUCT: ClassVar[str] = "the producer"
    LIFE_HINT: ClassVar[str] = ("set pidfile = '<the writer's pid file>' (or pid) for this "
                                "sensor so the harness can see the writer is alive")
    #: a writer process that started less than this after the window opened may have started
    #: before it (/proc's start time is whole boot seconds + clock ticks)
    START_SLACK: ClassVar[float] = 1.5

    def __init__(self, name: str, path: str | None = None, command: str | list[str] | None = None,
                 from_start: bool = False, delay: float = 0.0, node: str | None = None,
                 pid: int | None = None, pidfile: str | None = None) -> None:
        self._check_transport(name, path, command)
        self._check_writer(name, command, pid, pidfile)
        #: the producer's own process (local node): alive through a window = sign of life
        self.pid = int(pid) if pid is not None else None
        self.pidfile = Path(pidfile) if pidfile else None
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

    @staticmethod
    def _check_writer(name: str, command: str | list[str] | None, pid: int | None,
                      pidfile: str | None) -> None:
        if pid is not None and pidfile is not None:
            raise ConfigError(f"[tool.shadowtest.sensors.{name}]: set pid or pidfile, not both")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1):
            raise ConfigError(f"[tool.shadowtest.sensors.{name}] pid: expected the writer's "
                              f"process id (an integer > 1), got {pid!r}")
        if command is not None and (pid is not None or pidfile is not None):
            raise ConfigError(
                f"[tool.shadowtest.sensors.{name}]: pid/pidfile name the process writing a "
                "tailed file or posting alerts; with command = ... the harness watches the "
                "command itself: remove pid/pidfile")

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.path is not None:
            if not self.path.parent.is_dir():
                raise SensorError(f"{self.name}: directory of {self.path} does not exist")
            self._tail = FileTail(self.path, self.on_line, f"{self.name}-tail",
                                  from_start=self.from_start,
                                  on_bad_line=self.stream.count_malformed,
                                  on_failure=self.stream.close, on_lost=self.stream.count_lost)
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
                       f"{self.name}-stdout", on_bad_line=self.stream.count_malformed,
                       on_failure=self.stream.close),
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
        if self._proc is None and (down := self._writer_down()):
            return Health(False, down)
        return Health(True, lost=self.stream.lost, malformed=self.stream.malformed)

    def _writer_down(self) -> str | None:
        """Why the configured writer (``pid`` / ``pidfile``) is not running now (None: it
        runs, or none is configured)."""
        if self.pid is None and self.pidfile is None:
            return None
        return self._writer_silence(float("inf"))

    def sync(self) -> str | None:
        """A file or stream written by another product cannot be asked for a marker."""
        return None

    # ------------------------------------------------------------ sign of life
    def silence(self, since: float, until: float) -> str | None:
        """Why the producer showed no sign of life from ``since`` to ``until`` (epoch
        seconds: a run's window, from subscribing to judging), with what was seen and how to
        fix it; None when it did. The harness makes such a window SENSOR_DOWN."""
        if self._proc is not None:
            return self._command_silence(since)
        if self.pid is not None or self.pidfile is not None:
            return self._writer_silence(since)
        if self._tail is None:
            return f"{self.name}: not started"
        last = self._tail.last_line
        if last >= since:
            return None
        return (f"{self.name}: no line from {self.path} during the window "
                f"({self._last_seen(last, since, self._tail.started_at)}): {self.PRODUCT} may "
                f"be dead or stalled, and a miss cannot be proved; {self.LIFE_HINT}")

    def _last_seen(self, last: float, since: float, started: float) -> str:
        if last:
            return f"last line {since - last:.1f} s before it"
        seen = f"none since the tail started {max(0.0, since - started):.1f} s before it"
        if self.path is None:
            return seen
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return f"{seen}; the file does not exist"
        return f"{seen}; the file was last written {since - mtime:.1f} s before it"

    def _command_silence(self, since: float) -> str | None:
        proc = self._proc
        assert proc is not None
        if proc.poll() is None:
            return None  # the command runs: its own liveness is the sign of life
        for reader in self._readers:  # its last words (stderr) into the reason
            reader.join(0.5)
        ended = self._readers[0].ended_at if self._readers else 0.0
        when = f", {ended - since:.1f} s after the window opened" if ended >= since else ""
        err = " | ".join(x for x in self._stderr[-3:] if x.strip())
        return (f"{self.name}: command {self.command[0] if self.command else ''!r} exited with "
                f"code {proc.returncode}{when}; nothing it would have printed was read"
                + (f": {err}" if err else ""))

    def _writer_silence(self, since: float) -> str | None:
        """The writer (``pid``, or the pid in ``pidfile``) ran through the whole window."""
        where = f"pid {self.pid}"
        pid = self.pid
        if self.pidfile is not None:
            try:
                pid = int(self.pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError) as exc:
                return (f"{self.name}: cannot read the writer's pid from {self.pidfile} "
                        f"({exc.__class__.__name__}: {exc}): {self.PRODUCT} is not running, or "
                        "pidfile names the wrong file")
            where = f"pid {pid} from {self.pidfile}"
        assert pid is not None
        started = process_started_at(pid)
        if started is None:
            return (f"{self.name}: {self.PRODUCT} ({where}) is not running: nothing written "
                    "during the window can be trusted to be complete")
        if started > since + self.START_SLACK:
            return (f"{self.name}: {self.PRODUCT} ({where}) started {started - since:.1f} s "
                    "after the window opened (restarted?): events of the window may be lost")
        return None

    # ------------------------------------------------------------ parsing
    def on_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            raw = decode_json(line)
        except msgspec.DecodeError:
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
