"""The sensor protocol, the detection stream every sensor feeds, and the registry."""

from __future__ import annotations

import importlib
import inspect
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

from harness.core.detection import Detection
from harness.core.errors import ConfigError
from harness.core.health import Health
from harness.sensors.rulepack import empty


@runtime_checkable
class OnNode(Protocol):
    """A sensor that runs on the node it watches (auditd, the bundled bpftrace sensor): the
    session hands it the node's shell (this machine, or a VM over SSH) before start()."""

    def use_shell(self, shell: Any) -> None:
        """Run the sensor's daemon and commands through ``shell`` (a NodeShell)."""


class Sensor(Protocol):
    """A product's detections, normalised. Owns its transport and its daemon (if any)."""

    NAME: ClassVar[str]
    stream: DetectionStream
    #: expected ingestion delay in seconds (SaaS backends: seconds to minutes); the window
    #: of every run is extended by it, so a slow backend is not reported MISSED too early
    delay: float

    def start(self) -> None:
        """Start (or attach to) the sensor; return only when its stream is live."""

    def stop(self) -> None:
        """Stop what ``start`` started, by pid; detach otherwise."""

    def health(self) -> Health:
        """Whether the sensor is alive now (lost/malformed counts are cumulative)."""

    def sync(self) -> str | None:
        """Ask the sensor to emit a marker; the stream sees it once every earlier event
        was delivered (the watermark). None when the sensor cannot be synced."""

    def normalise(self, raw: Any) -> Detection | None:
        """Pure: one raw record of the product to a Detection (None: not a detection)."""

    #: configured to stop what it detects (bpftrace ``enforce = true``, the BPF-LSM enforcer)
    enforces: bool
    #: whose ``expect:`` blocks judge this sensor: "" = its own name's; else another
    #: sensor's that runs the same rule pack (config ``expect_as``; :func:`expect_key`)
    expects: str

    @property
    def sync_hint(self) -> str | None:
        """Why this sensor's windows are waited out (None: it syncs, or nothing to say)."""

    def exit_record(self, detection: Detection) -> str | None:
        """The product's own record of how a process it reported ended (e.g. Tetragon's
        ``process_exit`` with ``signal: SIGKILL``), as text; None when it has none."""

    def rulepack(self) -> Mapping[str, Any]:
        """The rule-pack identity of what judges runs (``harness.sensors.rulepack``: kind,
        name, version, sha256, files, policies, reason), recorded in every results row."""

    def loss_silence(self, since: float, until: float) -> str | None:
        """Why events of ``since``..``until`` (the product's own clock) may have been lost,
        by the product's own account (e.g. Falco's drop alerts); None when none is known."""

    def end_of_input(self) -> None:
        """Every line of the product's output has been handed to the sensor (a recording
        replayed to its end): deliver what is still held back (auditd's pending events)."""


class SensorBase:
    """What a sensor without an opinion on :class:`Sensor`'s optional members means:
    not an enforcer, no ingestion delay, nothing to say about sync, no exit records, no
    rule-pack knowledge, no loss reported, nothing held back at the end of its input.
    Every bundled sensor derives from it; a third-party sensor may too."""

    NAME: ClassVar[str]
    enforces: bool = False
    delay: float = 0.0
    expects: str = ""

    @property
    def sync_hint(self) -> str | None:
        return None

    def exit_record(self, detection: Detection) -> str | None:
        return None

    def rulepack(self) -> Mapping[str, Any]:
        return empty(reason=f"no rule-pack identity known for sensor type {self.NAME!r}: give "
                            "it a rulepack() method returning this object")

    def loss_silence(self, since: float, until: float) -> str | None:
        return None

    def end_of_input(self) -> None:
        return None


@runtime_checkable
class LineFed(Protocol):
    """A sensor that reads its product's output as text lines (a file tail, a command's
    stdout): ``replay`` hands a recorded file to it line by line, then ends the input."""

    def on_line(self, line: str) -> None:
        """One line of the product's output, without its newline."""

    def end_of_input(self) -> None:
        """No more lines: deliver what is still held back."""


@runtime_checkable
class Recorded(Protocol):
    """A sensor that keeps the span of its product's own timestamps read so far (every
    line is a sign of life, not only detections): a recording replayed shows the sensor
    alive only inside it (``ReplaySensor.silence``)."""

    @property
    def first_seen(self) -> float:
        """The earliest product time read (epoch seconds; 0.0: none yet)."""

    @property
    def last_seen(self) -> float:
        """The latest product time read (epoch seconds; 0.0: none yet)."""


@runtime_checkable
class Quiet(Protocol):
    """A sensor fed by a producer it cannot sync (a file tail, a command's output, a webhook):
    it says whether the producer showed a sign of life during a run's window. The harness
    judges a window without one SENSOR_DOWN (the reason says what was seen and how to fix
    it), never MISSED or CLEAN."""

    def silence(self, since: float, until: float) -> str | None:
        """Why the producer showed no sign of life from ``since`` to ``until`` (epoch
        seconds); None when it did."""


@dataclass
class _State:
    detections: list[Detection] = field(default_factory=list)
    markers: set[str] = field(default_factory=set)
    lost: int = 0
    #: losses a sensor could attribute to one run's process tree, by loss scope (see
    #: count_lost): they blind only the runs of that scope
    lost_scoped: dict[int, int] = field(default_factory=dict)
    malformed: int = 0
    malformed_samples: list[str] = field(default_factory=list)
    closed: str | None = None
    watermark: float = 0.0
    base: int = 0  # absolute index of detections[0] (older ones were dropped)


class DetectionStream:
    """Thread-safe, append-only stream of one sensor's detections.

    Reader threads ``push``; a run ``subscribe``s before acting and then ``wait``s,
    woken on every new line (no polling sleeps).
    """

    MAX_SAMPLES = 10
    #: detections kept in memory; past this the oldest half is dropped (a run whose window
    #: reaches back into dropped ones counts them as lost: SENSOR_DOWN, never MISSED)
    MAX_KEPT = 200_000

    def __init__(self, sensor: str) -> None:
        self.sensor = sensor
        self._lock = threading.RLock()  # taken directly where no one is woken (cheaper)
        self._cond = threading.Condition(self._lock)
        self._waiting = 0  # readers blocked in wait(): push wakes them only when there are
        self._s = _State()

    # ------------------------------------------------------------- writers
    def push(self, detection: Detection) -> None:
        with self._lock:
            detections = self._s.detections
            # no gc.freeze() here: it would freeze every object of the user's process; the
            # kept lines are plain strings (keep_raw) and detections are slotted
            detections.append(detection)
            if len(detections) > self.MAX_KEPT:
                drop = self.MAX_KEPT // 2
                del detections[:drop]
                self._s.base += drop
            if self._waiting:
                self._cond.notify_all()

    def mark(self, token: str) -> None:
        """A sync marker arrived: every event before it has been delivered."""
        with self._cond:
            self._s.markers.add(token)
            self._cond.notify_all()

    def advance(self, watermark: float) -> None:
        """Every event that happened before ``watermark`` (epoch seconds) has been delivered
        (a poller's last complete query end, minus the backend's ingestion delay)."""
        with self._cond:
            if watermark > self._s.watermark:
                self._s.watermark = watermark
                self._cond.notify_all()

    def count_lost(self, n: int, scope: int | None = None) -> None:
        """``n`` events were lost: of every run in flight, or — with ``scope`` — only of the
        runs whose process trees were announced under that loss scope (the stage runner's
        ``loss_scope`` of the run id; a sensor that follows run trees in the kernel knows)."""
        with self._cond:
            if scope:
                self._s.lost_scoped[scope] = self._s.lost_scoped.get(scope, 0) + n
            else:
                self._s.lost += n
            self._cond.notify_all()

    def count_malformed(self, line: str) -> None:
        with self._cond:
            self._s.malformed += 1
            if len(self._s.malformed_samples) < self.MAX_SAMPLES:
                self._s.malformed_samples.append(line[:200])

    def close(self, reason: str) -> None:
        with self._cond:
            self._s.closed = reason
            self._cond.notify_all()

    # ------------------------------------------------------------- readers
    @property
    def lost(self) -> int:
        """Losses of every run (not those attributed to one loss scope)."""
        return self._s.lost

    def lost_in(self, scope: int) -> int:
        """Losses attributed to one loss scope so far."""
        return self._s.lost_scoped.get(scope, 0) if scope else 0

    @property
    def malformed(self) -> int:
        return self._s.malformed

    @property
    def malformed_samples(self) -> list[str]:
        with self._cond:
            return list(self._s.malformed_samples)

    @property
    def closed(self) -> str | None:
        return self._s.closed

    @property
    def watermark(self) -> float:
        return self._s.watermark

    def snapshot(self) -> list[Detection]:
        """Every detection so far (offline use: replay, rejudge)."""
        with self._cond:
            return list(self._s.detections)

    def subscribe(self) -> Subscription:
        with self._cond:
            return Subscription(self, self._s.base + len(self._s.detections), self._s.lost,
                                self._s.malformed, time.time(), dict(self._s.lost_scoped))

    def _since(self, index: int) -> list[Detection]:
        return self._s.detections[max(0, index - self._s.base):]

    def dropped_since(self, index: int) -> int:
        """Detections after ``index`` that were dropped from memory before being read."""
        return max(0, self._s.base - index)

    def wait(
        self,
        index: int,
        done: Callable[[list[Detection]], bool],
        marker: str | None,
        deadline: float,
        until: float | None = None,
    ) -> tuple[list[Detection], bool]:
        """Block until ``done(detections since index)``, the marker, the watermark passing
        ``until``, closure, or the deadline (epoch seconds). Returns the detections and
        whether the sensor was synced past the run (marker or watermark)."""
        with self._cond:
            seen: list[Detection] = []
            upto = index  # absolute index of the first detection not yet in ``seen``
            while True:
                s = self._s
                if s.base > index:  # some were dropped from memory: as _since(index) says
                    seen = self._since(index)
                else:  # the new ones only: a reader woken on every push stays O(new)
                    seen.extend(s.detections[upto - s.base:])
                upto = s.base + len(s.detections)
                synced = (marker is not None and marker in self._s.markers) or (
                    until is not None and self._s.watermark >= until)
                if done(seen) or synced or self._s.closed is not None:
                    return seen, synced
                left = deadline - time.time()
                if left <= 0:
                    return seen, False
                self._waiting += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._waiting -= 1


@dataclass(frozen=True)
class Subscription:
    """A run's view of a stream from the moment it subscribed (before acting)."""

    stream: DetectionStream
    index: int
    lost_at_start: int
    malformed_at_start: int
    #: when the run subscribed (epoch seconds): its window for the sensor opens here
    opened_at: float = 0.0
    #: the stream's losses by loss scope when the run subscribed
    scoped_at_start: dict[int, int] = field(default_factory=dict)

    def wait(
        self, done: Callable[[list[Detection]], bool], marker: str | None, deadline: float,
        until: float | None = None,
    ) -> tuple[list[Detection], bool]:
        return self.stream.wait(self.index, done, marker, deadline, until)

    def lost(self, scope: int = 0) -> int:
        """Events lost since the run subscribed that it cannot rule out as its own: those of
        every run, and those of its own loss ``scope`` (0: a run of no scope)."""
        own = self.stream.lost_in(scope) - self.scoped_at_start.get(scope, 0) if scope else 0
        return (self.stream.lost - self.lost_at_start + own
                + self.stream.dropped_since(self.index))

    def malformed(self) -> int:
        return self.stream.malformed - self.malformed_at_start


# ----------------------------------------------------------------- registry
BUILTIN: dict[str, str] = {
    "auditd": "harness.sensors.auditd:AuditdSensor",
    "bpftrace": "harness.sensors.bpftrace:BpftraceSensor",
    "falco": "harness.sensors.falco:FalcoSensor",
    "tetragon": "harness.sensors.tetragon:TetragonSensor",
    "tracee": "harness.sensors.tracee:TraceeSensor",
    "sysdig": "harness.sensors.sysdig:SysdigSensor",
    "crowdstrike": "harness.sensors.crowdstrike:CrowdStrikeSensor",
    "replay": "harness.sensors.replay:ReplaySensor",
    "lsm": "harness.sensors.lsm:LsmEnforcerSensor",
    "libbpf": "harness.sensors.libbpf:LibbpfSensor",
}


def known_sensors() -> dict[str, str]:
    """Built-in sensors merged with the ``shadowtest.sensors`` entry-point group."""
    known = dict(BUILTIN)
    for ep in entry_points(group="shadowtest.sensors"):
        known[ep.name] = ep.value
    return known


def sensor_class(kind: str) -> Callable[..., Sensor]:
    known = known_sensors()
    if kind not in known:
        raise ConfigError(
            f"unknown sensor type {kind!r}: known types are {', '.join(sorted(known))}; "
            "register more under the 'shadowtest.sensors' entry-point group"
        )
    module, _, name = known[kind].partition(":")
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        from harness.core.extras import missing_extra

        raise missing_extra(exc, f"sensor type {kind!r}") from exc
    cls: Callable[..., Sensor] = getattr(imported, name)
    return cls


def build_sensor(name: str, options: Mapping[str, Any]) -> Sensor:
    """Build the sensor called ``name`` from its ``[tool.shadowtest.sensors.<name>]`` table."""
    kind = str(options.get("type", name))
    cls = sensor_class(kind)
    kwargs = {k: v for k, v in options.items() if k not in ("type", "nodes", "expect_as")}
    accepted = inspect.signature(cls).parameters
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        raise ConfigError(
            f"[tool.shadowtest.sensors.{name}]: unknown key(s) {', '.join(unknown)} for type "
            f"{kind!r}: expected {', '.join(sorted(k for k in accepted if k != 'name'))}",
            key=unknown[0],
        )
    sensor = cls(name=name, **kwargs)
    if "expect_as" in options:
        expect_as = options["expect_as"]
        if not isinstance(expect_as, str) or not expect_as.strip():
            raise ConfigError(f"[tool.shadowtest.sensors.{name}]: expect_as must name the sensor "
                              f"whose expect: blocks judge this one (e.g. 'falco'), got "
                              f"{expect_as!r}", key="expect_as")
        sensor.expects = expect_as
    return sensor


def expect_key(name: str, sensor: Sensor) -> str:
    """The sensor name whose ``expect:`` blocks judge the sensor configured as ``name``:
    its ``expect_as`` (or its type's default, e.g. the compiled reference sensor judged
    as ``bpftrace``), else ``name``."""
    return sensor.expects or name
