"""``replay``: the detections of any adapter, read back from a recorded file, offline.

The file holds what the product wrote (Falco alert lines, Tetragon export lines, Tracee
events, bpftrace ``-f json`` output, a raw audit log, a Sysdig ListEventsResponse, a list
of CrowdStrike alerts ...); ``format`` names the adapter whose normaliser reads it. Used to
judge runs again without the sensor (``shadowtest rejudge``) and to feed parity jobs.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from harness.core.detection import Detection
from harness.core.errors import ConfigError, SensorError
from harness.core.health import Health
from harness.sensors.base import (
    DetectionStream,
    LineFed,
    Recorded,
    Sensor,
    SensorBase,
    sensor_class,
)
from harness.sensors.rulepack import rulepack_of

_CONTAINERS = ("data", "resources", "events", "alerts", "detections")


class ReplaySensor(SensorBase):
    """Reads ``path`` once at start with the ``format`` adapter's parser; always healthy
    (a recording cannot go down), synced to the end of the recording."""

    NAME: ClassVar[str] = "replay"

    def __init__(self, name: str = "replay", path: str | None = None, format: str | None = None,
                 node: str | None = None) -> None:
        if not path or not format:
            raise ConfigError(
                f"[tool.shadowtest.sensors.{name}]: type 'replay' needs path = '<recorded file>' "
                "and format = '<adapter type that wrote it, e.g. falco, tetragon, auditd>'"
            )
        if format == "replay":
            raise ConfigError(f"[tool.shadowtest.sensors.{name}]: format cannot be 'replay'")
        self.name = name
        self.path = Path(path)
        self.format = format
        self.node = node
        self.delay = 0.0
        self.adapter = _adapter(format, name, self.path, node)
        self.stream = DetectionStream(name)

    def start(self) -> None:
        if not self.path.is_file():
            raise SensorError(f"{self.name}: recorded file {self.path} does not exist")
        adapter = self.adapter
        text = self.path.read_text("utf-8", errors="replace")
        if isinstance(adapter, LineFed) and not _is_json_document(text):
            for line in text.split("\n"):
                adapter.on_line(line)
            adapter.end_of_input()  # auditd: events still pending at the end of the file
        else:
            for raw in records_or_bad(text):
                if isinstance(raw, str):  # not a JSON object: counted, never a crash
                    adapter.stream.count_malformed(raw)
                    continue
                try:
                    det = adapter.normalise(raw)
                except Exception:  # hostile input is data: one bad record never aborts
                    adapter.stream.count_malformed(json.dumps(raw, default=str)[:200])
                    continue
                if det is not None:
                    adapter.stream.push(det)
        # offline, the sensor's own timestamp is the best "received" time there is
        for det in self.adapter.stream.snapshot():
            self.stream.push(replace(det, received_at=det.observed_at))
        for _ in range(self.adapter.stream.malformed):
            self.stream.count_malformed("")
        if self.adapter.stream.lost:
            self.stream.count_lost(self.adapter.stream.lost)
        self.stream.advance(float("inf"))

    def stop(self) -> None:
        """Nothing runs."""

    def health(self) -> Health:
        return Health(True, lost=self.stream.lost, malformed=self.stream.malformed)

    def sync(self) -> str | None:
        return None

    def silence(self, since: float, until: float) -> str | None:
        """A recording shows a live window only where it has events on both sides of it (or
        inside it): a run outside the recorded span cannot be judged from it (SENSOR_DOWN,
        never MISSED). Offline rejudging judges the recorded runs, inside the span."""
        times = [d.observed_at for d in self.stream.snapshot() if d.observed_at > 0]
        # every line the product wrote is a sign of life, not only detections (Tetragon's
        # exec/exit lines: the adapter keeps the span of their times)
        if isinstance(self.adapter, Recorded):
            times += [t for t in (self.adapter.first_seen, self.adapter.last_seen) if t > 0]
        if not times:
            return (f"{self.name}: the recording {self.path} has no timestamped event: it "
                    "cannot show that the sensor was alive during the window")
        first, last = min(times), max(times)
        if last < since:
            return (f"{self.name}: the recording {self.path} ends {since - last:.1f} s before "
                    "the window (last event): record over the runs, or rejudge recorded runs")
        if first > until:
            return (f"{self.name}: the recording {self.path} starts {first - until:.1f} s after "
                    "the window (first event)")
        return self.adapter.loss_silence(since, until) or None  # the product said it lost events

    def normalise(self, raw: Any) -> Detection | None:
        return self.adapter.normalise(raw)

    def exit_record(self, detection: Detection) -> str | None:
        """The recorded product's own exit record of the detection's process (Tetragon's
        ``process_exit.signal``), when its adapter keeps one."""
        return self.adapter.exit_record(detection)

    def rulepack(self) -> dict[str, Any]:
        """The configured adapter's identity, with where the recording came from."""
        pack = rulepack_of(self.adapter)
        pack["reason"] = (f"replayed from {self.path}: "
                          f"{pack.get('reason') or 'identity of the configured adapter'}")
        return pack


def _adapter(format: str, name: str, path: Path, node: str | None) -> Sensor:
    cls = sensor_class(format)
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"name": name}
    if "node" in params:
        kwargs["node"] = node
    if "path" in params:
        kwargs["path"] = str(path)
    return cls(**kwargs)


def _is_json_document(text: str) -> bool:
    """A whole-file JSON document (an API response, a list), not JSON lines."""
    head = text.lstrip()[:1]
    if head == "[":
        return True
    if head != "{":
        return False
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def records(text: str) -> Iterator[dict[str, Any]]:
    """Records of an API response or list dump: ``[...]``, ``{"data": [...]}``,
    ``{"resources": [...]}``, or one object per line (what is not an object is skipped:
    :func:`records_or_bad` says what)."""
    return (r for r in records_or_bad(text) if isinstance(r, dict))


def records_or_bad(text: str) -> Iterator[dict[str, Any] | str]:
    """As :func:`records`, with each record that is not a JSON object (an undecodable
    line, a list item that is a string, a document nested too deeply) as a short prefix of
    its text, for the caller to count malformed."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                yield line[:200]
                continue
            yield obj if isinstance(obj, dict) else line[:200]
        return
    if isinstance(doc, dict):
        for key in _CONTAINERS:
            if isinstance(doc.get(key), list):
                doc = doc[key]
                break
        else:
            doc = [doc]
    if isinstance(doc, list):
        yield from (r if isinstance(r, dict) else repr(r)[:200] for r in doc)
    else:
        yield repr(doc)[:200]
