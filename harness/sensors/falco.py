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

import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from harness.core.detection import Detection
from harness.core.errors import ConfigError
from harness.core.health import Health
from harness.nodes.process import getpgid_every_cpu
from harness.sensors.falco_alerts import (
    DROP_RULE,
    METRICS_RULE,
    drops,
    normalise_alert,
    number,
    record_time,
)
from harness.sensors.falco_loss import LossLedger
from harness.sensors.jsonlines import JsonLinesSensor, decode_json
from harness.sensors.rulepack import empty, file_entry, files_pack, oci_pack
from harness.sensors.streams import HttpReceiver

#: the rule of ``harness/rulepacks/falco/shadowtest-sync.yaml``: one alert per sync marker
SYNC_RULE = "shadowtest sync marker"
SYNC_RULES_FILE = "shadowtest-sync.yaml"
#: getpgid(MARKER_BASE + token % 2^20): above any pid_max (4194304), so ESRCH; outside the
#: bundled bpftrace sensor's range (0x5ad00000-0x5adfffff) and the Tetragon sync policy's
#: 0x5af00000, so no sensor takes another's markers for its own
MARKER_BASE = 0x5AE00000

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
        return self._producer_silence(since, until) or self.loss_silence(since, until)

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
        at = record_time(raw)
        if at < self.first_seen or not self.first_seen:
            self.first_seen = at
        self.last_seen = max(self.last_seen, at)
        if rule == DROP_RULE:
            n = drops(raw)
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
        tid, cpu = number(of.get("thread.tid")), number(of.get("evt.cpu"))
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
        """Pure: one Falco alert to a Detection (``falco_alerts.normalise_alert``)."""
        return normalise_alert(raw, self.name, self.node)

    def rulepack(self) -> dict[str, Any]:
        """The falcoctl-pinned artifact (``rules_oci``, with the files listed), else the
        rules files Falco loads, in order; Falco's alerts carry no rule-pack version."""
        files = [Path(p) for p in self.rules_files]
        if self.rules_oci:
            pack = oci_pack(str(self.rules_oci))
            pack["files"] = [file_entry(p) for p in files]
            return pack
        if files:
            return files_pack(files)
        return empty(reason="falco alerts carry no rule-pack version: set rules_files = [...] "
                            "(the files falco loads) or rules_oci = 'repo:tag@sha256:...' "
                            "(the falcoctl-pinned artifact)")


def _sample(data: bytes) -> str:
    return data[:200].decode("utf-8", errors="replace")


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
