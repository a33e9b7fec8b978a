"""Falco: JSON alerts from a file (``file_output`` with ``json_output: true``), from a
program's stdout (``falco -o json_output=true``), or POSTed to an HTTP receiver (Falco's
``http_output``, a Falcosidekick ``webhook`` output).

Every transport hands each alert object to ``on_record``: internal alerts are health, not
detections ("Falco internal: syscall event drop" counts its ``n_drops`` as lost events, so
the window is SENSOR_DOWN rather than MISSED); every other alert goes to ``normalise``.

The receiver is an aiohttp server in a thread of its own with its own event loop. An alert is
pushed to the stream before its request is answered, so a 200 means the stream has it.
"""

from __future__ import annotations

import datetime
import itertools
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from harness.core.detection import Detection, make_detection
from harness.core.errors import ConfigError
from harness.core.health import Health
from harness.sensors.jsonlines import JsonLinesSensor, decode_json
from harness.sensors.marker import getpgid_every_cpu
from harness.sensors.streams import HttpReceiver

#: rules Falco emits about itself (drops, timeouts, metrics snapshots): never detections
INTERNAL_PREFIX = "Falco internal:"
DROP_RULE = "Falco internal: syscall event drop"
METRICS_RULE = "Falco internal: metrics snapshot"
#: the rule of ``harness/rulepacks/falco/shadowtest-sync.yaml``: one alert per sync marker
SYNC_RULE = "shadowtest sync marker"
SYNC_RULES_FILE = "shadowtest-sync.yaml"
#: getpgid(MARKER_BASE + token % 2^20): above any pid_max (4194304), so ESRCH; outside the
#: bundled bpftrace sensor's range (0x5ad00000-0x5adfffff) and the Tetragon sync policy's
#: 0x5af00000, so no sensor takes another's markers for its own
MARKER_BASE = 0x5AE00000
#: what to turn on when an alert carries no process ancestry (the MISSED near miss says it)
ANCESTRY_HINT = (
    "this Falco alert has no process ancestry beyond proc.ppid, so it can only match the "
    "run's own pids: add proc.pid, proc.ppid, proc.apid[2]..proc.apid[7], proc.vpid and "
    "proc.sid to every alert with append_output in falco.yaml (README, 'Falco: "
    "correlation')")
NO_PID_HINT = (
    "this Falco alert has no proc.pid: its rule's output prints no process id; add proc.pid, "
    "proc.ppid, proc.apid[2]..proc.apid[7], proc.vpid and proc.sid to every alert with "
    "append_output in falco.yaml (README, 'Falco: correlation')")
#: what Falcosidekick's ``/test`` endpoint forwards to its outputs (``source: internal``)
SIDEKICK_TEST_RULE = "Test rule"

_TECHNIQUE = re.compile(r"[Tt]\d{4}(?:\.\d{3})?")
_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?(?:[Zz]|([+-])(\d\d):?(\d\d))?"
)
_HOST = "host"  # Falco's container.id / container.name for a process outside any container


@dataclass
class _Marker:
    """One sync: its token, the CPUs its thread called getpgid on, the CPUs whose alert
    came back, when it was made, and whether the thread has asked every CPU."""

    token: str
    cpus: set[int]
    seen: set[int]
    created: float
    fired: bool = False


class FalcoSensor(JsonLinesSensor):
    """Exactly one transport: ``path`` (tail a JSON alerts file), ``command`` (read a program's
    stdout) or ``listen`` (``"HOST:PORT"``; port 0 picks a free one, see ``port``/``url``)."""

    NAME: ClassVar[str] = "falco"
    PRODUCT: ClassVar[str] = "Falco"
    LIFE_HINT: ClassVar[str] = (
        "a live Falco with no alert to raise writes nothing: turn on its metrics snapshots "
        "(falco.yaml metrics.enabled: true, metrics.output_rule: true, metrics.interval "
        "shorter than the window, e.g. 2s; each 'Falco internal: metrics snapshot' alert is a "
        "sign of life) or run Falco with --pidfile and set pidfile = '<that file>' for this "
        "sensor")

    def __init__(self, name: str = "falco", path: str | None = None,
                 command: str | list[str] | None = None, listen: str | None = None,
                 from_start: bool = False, delay: float = 0.0, node: str | None = None,
                 rules_files: list[str] | None = None, rules_oci: str | None = None,
                 pid: int | None = None, pidfile: str | None = None,
                 sync: bool | None = None, drop_alert_interval: float = 30.0) -> None:
        self.listen = listen
        if sync is not None and not isinstance(sync, bool):
            raise ConfigError(f"[tool.shadowtest.sensors.{name}] sync: expected true or false "
                              f"(or leave it out: on once the sync rule answers), got {sync!r}")
        #: None: sync once the sync rule is known loaded; True: always; False: never
        self.sync_mode = sync
        #: Falco alerts dropped events at most once per this many seconds (falco.yaml
        #: syscall_event_drops: 1 / rate with max_burst 1; default rate .03333 -> 30 s)
        self.loss = LossLedger(float(drop_alert_interval))
        self._tokens = itertools.count(os.getpid() % 4096 * 256)
        self._sync_lock = threading.Lock()
        #: tid of a marker thread -> its marker
        self._pending: dict[int, _Marker] = {}
        self._sync_seen = False
        #: the first and last time (epoch seconds, the alerts' own) of any record read,
        #: internal alerts included: a recording's live span for replay
        self.first_seen = 0.0
        self.last_seen = 0.0
        #: rule-pack identity only (results rows' ``rulepack``): the files falco loads, in
        #: order, and/or the falcoctl-pinned artifact ``repo:tag@sha256:<digest>``
        self.rules_files = list(rules_files or [])
        self.rules_oci = rules_oci  # before super().__init__, whose _check_transport reads it
        super().__init__(name, path, command, from_start, delay, node, pid, pidfile)
        self._receiver: HttpReceiver | None = None
        if listen is not None:
            self._receiver = HttpReceiver(listen, self.on_body, self.stream.count_malformed,
                                          f"{name}-http")

    def _check_transport(self, name: str, path: str | None,
                         command: str | list[str] | None) -> None:
        if sum(x is not None for x in (path, command, self.listen)) != 1:
            raise ConfigError(
                f"sensor {name!r}: set exactly one of path = '<Falco json alerts file>', "
                "command = '<program printing Falco json alerts>' or listen = '127.0.0.1:2801' "
                f"(HTTP receiver for Falco http_output / Falcosidekick webhook) under "
                f"[tool.shadowtest.sensors.{name}]"
            )

    @property
    def port(self) -> int | None:
        """The receiver's bound port once started (None for the other transports)."""
        return self._receiver.port if self._receiver is not None else None

    @property
    def url(self) -> str | None:
        """``http://HOST:PORT/``: where Falco's ``http_output.url`` or Falcosidekick's
        ``webhook.address`` should point (None before start and for the other transports)."""
        return self._receiver.url if self._receiver is not None else None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._receiver is None:
            super().start()
            return
        self._receiver.start()

    def stop(self) -> None:
        if self._receiver is None:
            super().stop()
            return
        self._receiver.stop()

    def health(self) -> Health:
        if self._receiver is None:
            return super().health()
        if self.stream.closed:
            return Health(False, self.stream.closed)
        if not self._receiver.running:
            return Health(False, f"{self.name}: HTTP receiver on {self.listen} is not running")
        if down := self._writer_down():
            return Health(False, down)
        return Health(True, lost=self.stream.lost, malformed=self.stream.malformed)

    def silence(self, since: float, until: float) -> str | None:
        """Why a miss cannot be proved from ``since`` to ``until``: no sign of life from
        Falco (``_producer_silence``), or Falco reported dropped events and nothing has
        proved since that it stopped dropping (``LossLedger``); None when neither."""
        return self._producer_silence(since, until) or self._loss_silence(since, until)

    def _producer_silence(self, since: float, until: float) -> str | None:
        """As ``JsonLinesSensor.silence``; for the receiver, any request with a body (an
        alert, a metrics snapshot) inside the window is the sign of life."""
        if self._receiver is None:
            return super().silence(since, until)
        if self.pid is not None or self.pidfile is not None:
            return self._writer_silence(since)
        last = self._receiver.last_post
        if last >= since:
            return None
        seen = (f"last one {since - last:.1f} s before it" if last else
                f"none since the receiver started {since - self._receiver.started_at:.1f} s "
                "before it")
        return (f"{self.name}: no POST to {self.url or self.listen} during the window ({seen}): "
                f"Falco (or Falcosidekick) may be dead or cannot reach the receiver, and a miss "
                f"cannot be proved; {self.LIFE_HINT}")

    # ------------------------------------------------------------ parsing
    def on_record(self, raw: dict[str, Any]) -> None:
        """Shared by every transport: a drop alert is lost events and opens a stretch no
        window can be trusted in (Falco alerts drops at most once per
        ``drop_alert_interval``); a metrics snapshot with grown drop counters is lost events,
        one with unchanged counters closes that stretch; a sync marker alert moves the sync
        on; every other alert is normalised."""
        rule = raw.get("rule")
        at = _record_time(raw)
        if at < self.first_seen or not self.first_seen:
            self.first_seen = at
        self.last_seen = max(self.last_seen, at)
        if rule == DROP_RULE:
            n = _drops(raw)
            self.stream.count_lost(n)
            self.loss.drop(at, n)
            return
        if rule == METRICS_RULE:
            lost = self.loss.snapshot(at, raw.get("output_fields"))
            if lost:
                self.stream.count_lost(lost)
            return
        if rule == SYNC_RULE:
            self._on_sync_alert(raw.get("output_fields"))
            return
        super().on_record(raw)

    # ------------------------------------------------------------ sync
    def sync(self) -> str | None:
        """getpgid(MARKER_BASE + token) on every CPU, from a thread of its own: with
        ``harness/rulepacks/falco/shadowtest-sync.yaml`` loaded, Falco alerts each call with
        its ``thread.tid`` and ``evt.cpu``, and once every CPU's alert is read, everything
        Falco saw before it was delivered (its buffers are read in order per CPU). The token
        is returned (so the run waits for it, not for the whole window) when the rule is
        known to be loaded: ``sync = true``, ``rules_files`` names shadowtest-sync.yaml, or
        an earlier marker came back; otherwise None (the window is waited out, as without
        sync). Never while a drop alert's stretch is unproven (the window must be judged by
        ``silence``). Markers are local: this machine's kernel is the one Falco watches."""
        if self.sync_mode is False:
            return None
        token = next(self._tokens)
        fired = threading.Thread(target=self._fire_markers, args=(token,),
                                 name=f"{self.name}-sync", daemon=True)
        fired.start()
        fired.join(10)
        if not self.sync_ready or self.loss.unproven_at(time.time()):
            return None
        return str(token)

    @property
    def sync_ready(self) -> bool:
        """The sync rule is known to be loaded (configured, or a marker came back)."""
        if self.sync_mode is None:
            return self._sync_seen or any(_names_sync_rules(f) for f in self.rules_files)
        return self.sync_mode

    @property
    def sync_hint(self) -> str | None:
        """Why this sensor's windows are waited out (None when it syncs): for a MISSED row's
        reason."""
        if self.sync_ready:
            return None
        if self.sync_mode is False:
            return f"{self.name}: sync = false: every MISSED waits out the whole window"
        return (f"{self.name} cannot be synced yet, so a MISSED waits out the whole window: "
                f"load harness/rulepacks/falco/{SYNC_RULES_FILE} in Falco (rules_file) and "
                "list it in this sensor's rules_files (or set sync = true)")

    def _fire_markers(self, token: int) -> None:
        tid = threading.get_native_id()
        cpus: set[int] = set()
        marker = _Marker(str(token), cpus, set(), time.time())
        with self._sync_lock:
            self._pending[tid] = marker
            self._expire_pending()
        getpgid_every_cpu(MARKER_BASE + (token & 0xFFFFF), cpus)  # in 0x5ae00000-0x5aefffff
        with self._sync_lock:  # complete only now: an alert of the first CPU may come back
            marker.fired = True  # before the last CPU was even asked
            self._complete(tid)

    def _on_sync_alert(self, of: Any) -> None:
        if not isinstance(of, dict):
            raise TypeError(f"output_fields is not an object: {type(of).__name__}")
        tid, cpu = _int(of.get("thread.tid")), _int(of.get("evt.cpu"))
        if tid is None or cpu is None:
            raise ValueError(f"{SYNC_RULE!r} alert without thread.tid and evt.cpu: the rule "
                             f"is not the one of harness/rulepacks/falco/{SYNC_RULES_FILE}")
        with self._sync_lock:
            pending = self._pending.get(tid)
            if pending is None:
                return  # another process's getpgid, or an expired marker
            self._sync_seen = True
            pending.seen.add(cpu)
            self._complete(tid)

    def _complete(self, tid: int) -> None:
        marker = self._pending.get(tid)
        if marker is not None and marker.fired and marker.cpus and marker.cpus <= marker.seen:
            del self._pending[tid]
            self.stream.mark(marker.token)

    def _expire_pending(self) -> None:
        old = time.time() - 600.0
        for tid in [t for t, p in self._pending.items() if p.created < old]:
            del self._pending[tid]

    # ------------------------------------------------------------ loss
    def loss_silence(self, since: float, until: float) -> str | None:
        """Why events of ``since``..``until`` may have been lost (a drop alert's unproven
        stretch, or grown metrics drop counters); None when none is known. Times are the
        alerts' own (``time``), so a recording replayed later is judged the same."""
        return self.loss.silence(self.name, since, until)

    _loss_silence = loss_silence

    def on_body(self, body: bytes) -> tuple[int, int]:
        """One HTTP request body: an alert object (Falco ``http_output``, Falcosidekick
        webhook), a JSON array of alerts, or newline-delimited alerts.

        Returns (records accepted, records malformed); malformed ones are counted on the
        stream. Invalid UTF-8 is replaced, as the file and command transports do."""
        try:
            doc = decode_json(body)
        except msgspec.DecodeError:  # decode_json raises only that, whatever msgspec's version
            if b"\n" not in body.strip():
                self.stream.count_malformed(_sample(body))
                return 0, 1
            return self._on_ndjson(body)
        records = doc if isinstance(doc, list) else [doc]
        ok = 0
        for raw in records:
            ok += self._accept(raw, body)
        return ok, len(records) - ok

    def _on_ndjson(self, body: bytes) -> tuple[int, int]:
        ok = bad = 0
        for line in body.split(b"\n"):
            if not line.strip():
                continue
            try:
                raw = decode_json(line)
            except msgspec.DecodeError:
                self.stream.count_malformed(_sample(line))
                bad += 1
                continue
            if self._accept(raw, line):
                ok += 1
            else:
                bad += 1
        return ok, bad

    def _accept(self, raw: Any, sample: bytes) -> bool:
        if isinstance(raw, dict):
            try:
                self.on_record(raw)
            except (KeyError, TypeError, ValueError, AttributeError):
                pass
            else:
                return True
        self.stream.count_malformed(_sample(sample))
        return False

    def normalise(self, raw: Any) -> Detection | None:
        """Pure: one Falco alert (or Falcosidekick payload) to a Detection; None for Falco's
        internal alerts and Falcosidekick's test event. Raises KeyError/TypeError/ValueError
        for a record that is not an alert (no ``rule``, ``output_fields`` not an object)."""
        if not isinstance(raw, dict):
            return None
        rule = raw["rule"]
        if not isinstance(rule, str) or not rule:
            raise ValueError(f"rule is not a non-empty string: {rule!r}")
        get = raw.get
        if rule.startswith(INTERNAL_PREFIX) or (
            rule == SIDEKICK_TEST_RULE and get("source") == "internal"
        ):
            return None
        of = get("output_fields") or {}
        tags = get("tags") or ()
        if not isinstance(of, dict):
            raise TypeError(f"output_fields is not an object: {type(of).__name__}")
        techniques, tactics = _split_tags(tags)
        oget = of.get
        container_id = _text(oget("container.full_id")) or _text(oget("container.id"))
        if container_id == _HOST:
            container_id = None
        container_name = _text(oget("container.name")) if container_id else None
        pod = _text(oget("k8s.pod.name")) or _text(oget("k8smeta.pod.name"))
        namespace = _text(oget("k8s.ns.name")) or _text(oget("k8smeta.ns.name"))
        priority = get("priority")
        hostname = _text(get("hostname"))

        fields = dict(of)  # Falco's own names (fd.name, k8s.pod.name): Detection.value reads them
        fields["source"] = get("source")
        # tuples of strings: the collector stops walking them (and then ``fields``) after one
        # pass, so a long session's kept detections cost the cyclic collector ~nothing
        fields["tags"] = tuple(tags)
        fields["tactics"] = tactics
        if pod:
            fields["pod"] = pod
        if namespace:
            fields["namespace"] = namespace
        if "uuid" in raw:
            fields["uuid"] = raw["uuid"]
        names = [n for n in (_text(get("output")), _text(oget("proc.cmdline")),
                             _text(oget("fd.name")), container_name, pod) if n]
        pid = _int(oget("proc.pid"))
        if pid is None:
            pid = _int(oget("proc.apid[0]"))
        ppid = _int(oget("proc.ppid"))
        if ppid is None:
            ppid = _int(oget("proc.apid[1]"))
        ancestors = _ancestors(of, pid, container_id) if (_APID2 in of or _SID in of) else ()
        if hint := _ancestry_hint(get("source"), pid, ancestors):
            fields["correlation_hint"] = hint
        return make_detection(
            self.name, rule, techniques,
            priority.lower() if isinstance(priority, str) and priority else None,
            None, hostname or self.node, container_id, None, pid, ppid, ancestors,
            _text(oget("proc.name")), tuple(names), _observed_at(raw, of), time.time(), fields,
            raw,
        )


# ---------------------------------------------------------------- loss
#: metrics snapshot counters of events Falco lost (kernel buffer, userspace, outputs queue);
#: rates and percentages (``*_perc``, ``*_prev``, ``*_rate_sec``) are not counters
_LOSS_COUNTER = re.compile(r"(?:scap|falco)\.n_drops(?:_[a-z_]+)?|falco\.outputs_queue_num_drops")
_NOT_COUNTER = ("_perc", "_prev", "_rate_sec")
#: a snapshot proves no kernel-side loss only with one of these (metrics
#: kernel_event_counters_enabled: true)
_KERNEL_COUNTERS = ("scap.n_drops", "scap.n_drops_buffer_total")


class LossLedger:
    """Which stretches of time (harness clock, when each alert was read) may have lost
    events, from Falco's drop alerts and metrics snapshots.

    - A drop alert opens a stretch that stays open: Falco raises at most one drop alert per
      ``syscall_event_drops`` token (one per 30 s by default), so later losses are silent.
      It closes at the first proof of no loss: two consecutive metrics snapshots of the
      same Falco (same ``falco.start_ts``) whose drop counters (``scap.n_drops*``,
      ``falco.n_drops*``, ``falco.outputs_queue_num_drops``) did not change, the first of
      them read after the drop alert (the stretch ends where that proof begins); or once
      ``interval`` seconds have passed since the alert (the token is back: the next drop
      raises an alert again).
    - Two snapshots whose counters grew: the stretch between them lost events (counted as
      lost, less what drop alerts already counted in it).

    A window overlapping a stretch cannot prove a miss: ``silence`` says why."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self.stretches: list[tuple[float, float, str]] = []  # closed (start, end, what)
        self.open_since: float | None = None
        self.open_drops = 0
        self._snapshot: tuple[float, Any, dict[str, int]] | None = None  # (read at, start, counters)
        self._alerted_since_snapshot = 0

    def drop(self, at: float, n: int) -> None:
        with self._lock:
            self._alerted_since_snapshot += n
            if self.open_since is None or at >= self.open_since + self.interval:
                self._close(at)
                self.open_since = at
                self.open_drops = 0
            self.open_drops += n

    def snapshot(self, at: float, of: Any) -> int:
        """A metrics snapshot read at ``at``; returns the events it shows lost that no drop
        alert counted (0 when none or when it cannot tell)."""
        if not isinstance(of, dict):
            return 0
        counters = {k: n for k, v in of.items()
                    if _LOSS_COUNTER.fullmatch(k) and not k.endswith(_NOT_COUNTER)
                    and (n := _int(v)) is not None}
        start = of.get("falco.start_ts")
        with self._lock:
            prev, self._snapshot = self._snapshot, (at, start, counters)
            alerted, self._alerted_since_snapshot = self._alerted_since_snapshot, 0
            if prev is None or prev[1] != start or set(prev[2]) != set(counters):
                return 0  # a first snapshot, a restarted Falco or other counters: no proof
            # the counters overlap (scap.n_drops counts what scap.n_drops_buffer_total does):
            # the largest growth of one of them is the loss
            grown = max((counters[k] - prev[2][k] for k in counters), default=0)
            if grown > 0:
                self.stretches.append((prev[0], at, f"metrics counters grew by {grown}"))
                del self.stretches[:-64]
                return max(1, grown - alerted) if grown > alerted else 0
            has_kernel = any(k in counters for k in _KERNEL_COUNTERS)
            if (self.open_since is not None and has_kernel and grown == 0
                    and prev[0] >= self.open_since):
                self._close(prev[0])
            return 0

    def _close(self, end: float) -> None:
        if self.open_since is not None:
            end = min(max(end, self.open_since), self.open_since + self.interval)
            self.stretches.append((self.open_since, end,
                                   f"{self.open_drops} dropped events alerted"))
            del self.stretches[:-64]
            self.open_since = None

    def unproven_at(self, at: float) -> bool:
        """A drop alert's stretch is open at ``at``."""
        with self._lock:
            return (self.open_since is not None and self.open_since <= at
                    < self.open_since + self.interval)

    def silence(self, name: str, since: float, until: float) -> str | None:
        with self._lock:
            if self.open_since is not None:
                end = self.open_since + self.interval
                if self.open_since <= until and since < end:
                    return (
                        f"{name}: Falco alerted {self.open_drops} dropped syscall events "
                        f"{max(0.0, since - self.open_since):.1f} s before the window opened and "
                        "sends at most one drop alert per "
                        f"{self.interval:g} s (syscall_event_drops rate/max_burst), so later "
                        "losses are silent; no metrics snapshot has proved since that it "
                        "stopped dropping: a miss cannot be proved. Turn on metrics "
                        "(enabled: true, output_rule: true, kernel_event_counters_enabled: "
                        "true, interval: 2s): two snapshots with unchanged drop counters end "
                        "this; set syscall_event_drops.threshold: 0 so every loss alerts")
            for start, end, what in reversed(self.stretches):
                if start <= until and since <= end:
                    return (f"{name}: Falco lost events during the window ({what} between "
                            f"{start - since:+.1f} s and {end - since:+.1f} s from its opening): "
                            "a miss cannot be proved")
        return None


# ---------------------------------------------------------------- helpers (pure)
def _sample(data: bytes) -> str:
    return data[:200].decode("utf-8", errors="replace")


def _text(value: Any) -> str | None:
    """A field's text; None for null, empty and Falco's ``<NA>``."""
    if isinstance(value, str) and value and value != "<NA>":
        return value
    return None


def _int(value: Any) -> int | None:
    """Falco prints numbers as JSON numbers, internal alerts as numeric strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _split_tags(tags: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """ATT&CK technique ids (``T1611``, ``T1055.008``) and tactic tags (``mitre_*``)."""
    if not isinstance(tags, list | tuple):
        raise TypeError(f"tags is not an array: {type(tags).__name__}")
    try:  # a rule's tags repeat on every alert it raises
        key = tuple(tags)
        techniques, tactics = _TAGS[key]
    except KeyError:
        techniques, tactics = _TAGS[key] = _read_tags(tags)
        if len(_TAGS) > _TAGS_MAX:
            _TAGS.clear()
    except TypeError:  # an unhashable tag (an object): not cached
        techniques, tactics = _read_tags(tags)
    return techniques, tactics


#: tags -> (techniques, tactics), for _split_tags
_TAGS: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
_TAGS_MAX = 4096


def _read_tags(tags: list[Any] | tuple[Any, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    techniques: list[str] = []
    tactics: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            continue
        if _TECHNIQUE.fullmatch(tag):
            techniques.append(tag.upper())
        elif tag.startswith("mitre_"):
            tactics.append(tag)
    return tuple(techniques), tuple(tactics)


def _drops(raw: dict[str, Any]) -> int:
    of = raw.get("output_fields")
    n = _int(of.get("n_drops")) if isinstance(of, dict) else None
    return n if n is not None and n > 0 else 1


def _ancestry_hint(source: Any, pid: int | None, ancestors: tuple[int, ...]) -> str | None:
    """What to turn on when a syscall alert cannot be tied to a run's process tree (plugin
    sources such as k8s_audit have no process to correlate)."""
    if source != "syscall":
        return None
    if pid is None:
        return NO_PID_HINT
    return None if ancestors else ANCESTRY_HINT


_APID2 = "proc.apid[2]"
_SID = "proc.sid"
_APID = re.compile(r"proc\.apid\[(\d+)\]")


def ancestors_of(of: dict[str, Any], pid: int | None,
                 container_id: str | None) -> tuple[int, ...]:
    """``_ancestors`` for any record carrying Falco's field names (Sysdig Secure's
    Falco-type events: ``content.fields``); () when it has no ancestry field."""
    if _APID2 in of or _SID in of:
        return _ancestors(of, pid, container_id)
    return ()


def _ancestors(of: dict[str, Any], pid: int | None,
               container_id: str | None) -> tuple[int, ...]:
    """The alert's ancestor pids past the parent, nearest first: ``proc.apid[2]``,
    ``proc.apid[3]`` ... (Falco's own process tree, as a rule's output or append_output
    prints them; gaps and ``<NA>`` skipped), then ``proc.sid``: the session leader, which
    is the stage the harness started (each stage runs in a session of its own) unless the
    attack called setsid itself. The session id is taken only for a process in the host's
    pid namespace (``proc.vpid == proc.pid``, or no vpid and no container): Falco may give
    a namespaced process's session id as seen inside its namespace."""
    out: list[tuple[int, int]] = []
    if _APID2 in of:
        for key, value in of.items():
            m = _APID.fullmatch(key)
            if m is None or int(m.group(1)) < 2:
                continue
            apid = _int(value)
            if apid and apid > 0:
                out.append((int(m.group(1)), apid))
        out.sort()
    chain = [apid for _, apid in out]
    sid = _int(of.get(_SID))
    vpid = _int(of.get("proc.vpid"))
    host = (vpid == pid) if vpid is not None else container_id is None
    if sid is not None and sid > 1 and host and sid != pid and sid not in chain:
        chain.append(sid)
    return tuple(chain)


def parse_time(text: str) -> float | None:
    """RFC 3339 with up to nanoseconds (Falco ``time``, Go's RFC3339Nano in Falcosidekick)
    to epoch seconds; no offset means UTC. None when it is not such a timestamp."""
    # Falco's own form, ``2025-11-03T14:02:11.123456789Z``, once its first 19 characters
    # (date and time to the second) were read by the full path below: the same sum
    secs = _SECONDS.get(text[:19])
    if (secs is not None and len(text) == 30 and text[19] == "." and text[29] == "Z"
            and text[20:29].isdecimal()):
        return secs + int(text[20:29]) / 1e9
    m = _TIME.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    # calendar.timegm's arithmetic, with the days before the month looked up once per month
    secs = (((_days_before(int(year), int(month)) + int(day) - 1) * 24 + int(hour)) * 60
            + int(minute)) * 60 + int(second)
    if len(_SECONDS) >= 4096:
        _SECONDS.clear()
    _SECONDS[text[:19]] = secs
    if sign:
        offset = int(oh) * 3600 + int(om) * 60
        secs += -offset if sign == "+" else offset
    return secs + int(frac[:9].ljust(9, "0")) / 1e9 if frac else float(secs)


#: the first 19 characters of a timestamp parse_time read (``YYYY-MM-DDTHH:MM:SS``) -> its
#: epoch seconds before any offset
_SECONDS: dict[str, int] = {}
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_MONTHS: dict[tuple[int, int], int] = {}


def _days_before(year: int, month: int) -> int:
    """Days from 1970-01-01 to the first of ``month`` (ValueError for a month or year that
    does not exist, as calendar.timegm)."""
    try:
        return _MONTHS[year, month]
    except KeyError:
        days = _MONTHS[year, month] = datetime.date(year, month, 1).toordinal() - _EPOCH_ORDINAL
        if len(_MONTHS) > 4096:
            _MONTHS.clear()
        return days


def _names_sync_rules(entry: Any) -> bool:
    """A ``rules_files`` entry is the sync rules file, or a rules directory holding it (as
    Falco's rules_file entries may be directories)."""
    path = Path(str(entry))
    if path.name == SYNC_RULES_FILE:
        return True
    try:
        return path.is_dir() and (path / SYNC_RULES_FILE).is_file()
    except OSError:
        return False


def _record_time(raw: dict[str, Any]) -> float:
    """A record's own time (``time``, else ``output_fields.evt.time``); the harness's clock
    when it has none."""
    of = raw.get("output_fields")
    return _observed_at(raw, of if isinstance(of, dict) else {}) or time.time()


def _observed_at(raw: dict[str, Any], of: dict[str, Any]) -> float:
    stamp = raw.get("time")
    if isinstance(stamp, str):
        parsed = parse_time(stamp)
        if parsed is not None:
            return parsed
    ns = _int(of.get("evt.time"))
    return ns / 1e9 if ns else 0.0
