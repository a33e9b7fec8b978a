"""CrowdStrike Falcon as a sensor: alerts (or container runtime detections) polled from the
Falcon API through FalconPy.

Transport is FalconPy itself (``crowdstrike-falconpy``), so what is tested is what runs:

* ``OAuth2.login()``: ``POST {base_url}/oauth2/token`` (form ``client_id``, ``client_secret``,
  ``member_cid``), explicitly before a poll whenever the token is missing or within
  FalconPy's renew window (120 s) of expiry, so a refused token is reported with its
  status instead of being hidden behind FalconPy's silent re-login;
* ``source = "alerts"``: ``Alerts.query_alerts_v2`` (``GET /alerts/queries/alerts/v2``,
  FQL on ``created_timestamp`` plus the user's ``filter``, ``sort=created_timestamp|asc``,
  ``limit``/``offset`` paging read from ``meta.pagination.total``), then
  ``Alerts.get_alerts_v2`` (``POST /alerts/entities/alerts/v2``, body ``composite_ids``) in
  batches of 1000 for the ids not seen yet;
* ``source = "container"``: ``ContainerDetections.search_runtime_detections``
  (``GET /container-security/combined/runtime-detections/v2``, FQL on ``detect_timestamp``,
  ``limit`` <= 100, ``offset`` paging);
* ``OAuth2.logout()`` on ``stop``: ``POST {base_url}/oauth2/revoke``.

Both query endpoints page by offset up to offset + limit = 10000. Alerts are sorted on a
field that never changes (``created_timestamp|asc``, as the API documentation advises for
paging on live data), so a window with more alerts than that is continued from the newest
``created_timestamp`` read (keyset paging); container detections cannot be sorted by time,
so what is beyond the ceiling is counted as lost (the run is SENSOR_DOWN, never MISSED).

Windows overlap by ``delay``: an alert that is created (or indexed) up to ``delay`` seconds
after its event is still inside the next query, and duplicates are dropped by composite id
(detection id for container detections). After each complete poll up to ``to`` the stream's
watermark moves to ``to - delay``: every event before it has been delivered.

``base_url`` is the Falcon cloud of the API client (a region name is accepted too):

* us-1: ``https://api.crowdstrike.com`` (default)
* us-2: ``https://api.us-2.crowdstrike.com``
* eu-1: ``https://api.eu-1.crowdstrike.com``
* us-gov-1 (GovCloud): ``https://api.laggar.gcw.crowdstrike.com``

Credentials are ``env:NAME`` or ``file:PATH`` references, resolved in ``start`` and never
shown: not in ``repr``, not in Health reasons (every reason goes through ``redact``, and
the OAuth2 access token is registered for redaction as soon as it is issued).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

from falconpy import Alerts

from harness.core.detection import Detection
from harness.core.errors import ConfigError, SensorError
from harness.core.health import Health
from harness.core.secrets import redact, resolve_secret
from harness.sensors.base import DetectionStream, SensorBase
from harness.sensors.crowdstrike import api
from harness.sensors.crowdstrike.api import RETRIES, TIMEOUT, FalconClient, PollFailed, dig, integer
from harness.sensors.crowdstrike.falcon import epoch, first_text, normalise_falcon
from harness.sensors.rulepack import reported_pack

log = logging.getLogger(__name__)

REGIONS: dict[str, str] = {
    "us-1": "https://api.crowdstrike.com",
    "us-2": "https://api.us-2.crowdstrike.com",
    "eu-1": "https://api.eu-1.crowdstrike.com",
    "us-gov-1": "https://api.laggar.gcw.crowdstrike.com",
}
SOURCES = ("alerts", "container")
ALERTS_SORT = "created_timestamp|asc"
#: offset + limit ceiling of GetQueriesAlertsV2 and GetRuntimeDetectionsCombinedV2
MAX_WINDOW = 10_000
ALERTS_MAX_LIMIT = 10_000
CONTAINER_MAX_LIMIT = 100
#: composite ids per PostEntitiesAlertsV2 call
ENTITY_BATCH = 1000
SEEN_MAX = 200_000


class CrowdStrikeSensor(SensorBase):
    """CrowdStrike Falcon alerts (or container runtime detections), polled through FalconPy.

    Options (``[tool.shadowtest.sensors.<name>]``, ``type = "crowdstrike"``):

    base_url: the API client's cloud (us-1 ``https://api.crowdstrike.com``, us-2
        ``https://api.us-2.crowdstrike.com``, eu-1 ``https://api.eu-1.crowdstrike.com``,
        gov ``https://api.laggar.gcw.crowdstrike.com``) or its region name.
    client_id, client_secret: ``env:NAME`` or ``file:PATH`` (never a literal).
    member_cid: child CID (Flight Control / MSSP parents only).
    source: ``alerts`` (Alerts API, scope Alerts: Read) or ``container`` (container runtime
        detections).
    filter: extra FQL ANDed to the time range, e.g. ``technique_id:'T1611'`` or
        ``namespace:'shadowtest'``.
    poll_interval: seconds between polls; delay: expected ingestion delay in seconds (the
        query windows overlap by it, and a run waits that much longer); lookback: seconds
        before ``start`` the first query reaches back; limit: page size (<= 10000 for
        alerts, <= 100 for container detections); verify_tls: check the API's certificate.
    """

    NAME: ClassVar[str] = "crowdstrike"

    def __init__(self, name: str = "crowdstrike", base_url: str = "https://api.crowdstrike.com",
                 client_id: str = "env:FALCON_CLIENT_ID",
                 client_secret: str = "env:FALCON_CLIENT_SECRET",  # noqa: S107 (a reference)
                 member_cid: str | None = None, source: str = "alerts", filter: str | None = None,
                 poll_interval: float = 5.0, delay: float = 60.0, lookback: float = 600.0,
                 limit: int = 100, verify_tls: bool = True, node: str | None = None,
                 version: str | None = None) -> None:
        where = f"[tool.shadowtest.sensors.{name}]"
        self.name = name
        self.version = version  # sensor / content version (results rows' rulepack only)
        self.base_url = _base_url(base_url, where)
        self.client_id = _secret_ref(client_id, "client_id", where)
        self.client_secret = _secret_ref(client_secret, "client_secret", where)
        self.member_cid = member_cid or None
        if source not in SOURCES:
            raise ConfigError(f"{where}: source: expected one of {', '.join(SOURCES)}, got {source!r}")
        self.source = source
        self.filter = filter.strip() if filter and filter.strip() else None
        self.poll_interval = _number(poll_interval, "poll_interval", where, minimum=0.01)
        self.delay = _number(delay, "delay", where, minimum=0.0)
        self.lookback = _number(lookback, "lookback", where, minimum=0.0)
        ceiling = ALERTS_MAX_LIMIT if source == "alerts" else CONTAINER_MAX_LIMIT
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= ceiling:
            raise ConfigError(
                f"{where}: limit: expected an integer from 1 to {ceiling} for source = {source!r} "
                f"(the API's page size maximum), got {limit!r}")
        self.limit = limit
        self.verify_tls = bool(verify_tls)
        self.node = node
        self.stream = DetectionStream(name)
        #: complete polls (diagnostics)
        self.polls = 0
        self._lock = threading.Lock()
        self._down: str | None = f"{name}: not started"
        self._fatal = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = FalconClient(name, self.base_url, self.client_id, self.client_secret,
                                   self.member_cid, source, self.filter, self.poll_interval,
                                   self._stop)
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lost_keys: OrderedDict[tuple[str, float, int], None] = OrderedDict()
        self._floor = 0.0
        self._since = 0.0

    def __repr__(self) -> str:
        return redact(
            f"CrowdStrikeSensor(name={self.name!r}, base_url={self.base_url!r}, "
            f"source={self.source!r}, client_id={self.client_id!r}, "
            f"client_secret={self.client_secret!r}, member_cid={self.member_cid!r}, "
            f"filter={self.filter!r}, delay={self.delay})"
        )

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Resolve the credentials, get a token and run the first poll synchronously (so
        health is known before a scenario acts), then poll in a thread. Backend errors
        (refused credentials, unreachable API, 5xx) are reported by ``health``, never
        raised; a credential reference that cannot be resolved raises SensorError."""
        if self._thread is not None:
            return
        where = f"[tool.shadowtest.sensors.{self.name}]"
        try:
            cid = resolve_secret(self.client_id, f"{where} client_id")
            secret = resolve_secret(self.client_secret, f"{where} client_secret")
        except ConfigError as exc:
            reason = redact(f"{self.name}: {exc}")
            self._set_down(reason)
            raise SensorError(reason) from None
        for value, ref in ((cid, self.client_id), (secret, self.client_secret)):
            if not value.reveal():
                reason = f"{self.name}: {ref} is empty; set it to the Falcon API client's credential"
                self._set_down(reason)
                raise SensorError(reason)
        self._stop.clear()
        self._fatal = False
        self.client.open(cid.reveal(), secret.reveal(), self.verify_tls)
        now = time.time()
        self._floor = now - self.lookback
        self._since = self._floor
        self._poll_once()
        if self._fatal:
            return
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and revoke the token (``POST /oauth2/revoke``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT[0] + TIMEOUT[1])
            self._thread = None
        self.client.close()
        with self._lock:
            self._down = f"{self.name}: stopped"

    def health(self) -> Health:
        with self._lock:
            down = self._down
        if down is not None:
            return Health(False, redact(down), lost=self.stream.lost, malformed=self.stream.malformed)
        return Health(True, lost=self.stream.lost, malformed=self.stream.malformed)

    def sync(self) -> str | None:
        """A SaaS API cannot be asked for a marker: the watermark closes the window."""
        return None

    def rulepack(self) -> dict[str, Any]:
        """Falcon's records name its sensor version (``seen``), not a rule-pack version: the
        configured ``version``."""
        return reported_pack("crowdstrike", self.version)

    @property
    def rate_limited(self) -> int:
        """Answers 429 honoured so far (diagnostics)."""
        return self.client.rate_limited

    @property
    def retried(self) -> int:
        """Retries after a 5xx or an unreachable API so far (diagnostics)."""
        return self.client.retried

    # ------------------------------------------------------------ polling
    def _loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self._poll_once()
            if self._fatal:
                return

    def _poll_once(self) -> None:
        to = time.time()
        try:
            self.client.ensure_token()
            if self.source == "alerts":
                self._poll_alerts(self._since, to)
            else:
                self._poll_container(self._since, to)
        except PollFailed as exc:
            if not self._stop.is_set():
                self._set_down(exc.reason)
            if exc.fatal:
                self._fatal = True
                self.stream.close(redact(exc.reason))
            return
        except Exception as exc:  # the poller thread must survive anything FalconPy raises
            self._set_down(f"{self.name}: unexpected {type(exc).__name__} while polling "
                           f"{self.base_url}: {exc}")
            return
        self._set_up()
        self._since = max(self._floor, to - self.delay)
        self.polls += 1
        self.stream.advance(to - self.delay)

    def _poll_alerts(self, since: float, to: float) -> None:
        svc = self.client.alerts()
        what = f"GET {self.client.api()}/alerts/queries/alerts/v2 (Alerts.query_alerts_v2)"
        lower = since
        while True:
            offset = total = 0
            top = lower
            fql = self._fql("created_timestamp", lower, to)
            while not offset or offset + self.limit <= MAX_WINDOW:
                res = self.client.request(what, partial(svc.query_alerts_v2, filter=fql, sort=ALERTS_SORT,
                                                  limit=self.limit, offset=offset))
                body = api.body(res)
                ids = [str(i) for i in body.get("resources") or [] if i]
                total = integer(dig(body, "meta", "pagination", "total"), offset + len(ids))
                self._fetch_alerts(svc, [i for i in dict.fromkeys(ids) if i not in self._seen])
                top = max([top, *(self._seen.get(i, lower) for i in ids)])
                offset += len(ids)
                if not ids or offset >= total:
                    return
            # offset ceiling reached: continue from the newest created_timestamp read
            if top <= lower:
                self._lost(("alerts", lower, total), total - offset)
                return
            lower = top

    def _fetch_alerts(self, svc: Alerts, ids: list[str]) -> None:
        what = f"POST {self.client.api()}/alerts/entities/alerts/v2 (Alerts.get_alerts_v2)"
        for start in range(0, len(ids), ENTITY_BATCH):
            batch = ids[start:start + ENTITY_BATCH]
            res = self.client.request(what, partial(svc.get_alerts_v2, composite_ids=batch), accept=(404,))
            alerts = [a for a in api.body(res).get("resources") or [] if isinstance(a, Mapping)]
            for alert in sorted(alerts, key=lambda a: epoch(a.get("created_timestamp")) or 0.0):
                key = str(alert.get("composite_id") or alert.get("id") or "")
                if key and key not in self._seen:
                    self._deliver(alert, key, epoch(alert.get("created_timestamp")) or 0.0)

    def _poll_container(self, since: float, to: float) -> None:
        svc = self.client.containers()
        what = (f"GET {self.client.api()}/container-security/combined/runtime-detections/v2 "
                "(ContainerDetections.search_runtime_detections)")
        fql = self._fql("detect_timestamp", since, to)
        offset = 0
        while True:
            res = self.client.request(what, partial(svc.search_runtime_detections, filter=fql,
                                              limit=self.limit, offset=offset))
            body = api.body(res)
            items = [d for d in body.get("resources") or [] if isinstance(d, Mapping)]
            total = integer(dig(body, "meta", "pagination", "total"), offset + len(items))
            for item in sorted(items, key=lambda d: epoch(d.get("detect_timestamp")) or 0.0):
                key = _container_key(item)
                if key not in self._seen:
                    self._deliver(item, key, epoch(item.get("detect_timestamp")) or 0.0)
            offset += len(items)
            if not items or offset >= total:
                return
            if offset + self.limit > MAX_WINDOW:
                self._lost(("container", since, total), total - offset)
                return

    def _lost(self, key: tuple[str, float, int], n: int) -> None:
        """Count what is beyond the offset ceiling once, not again on every overlapping poll."""
        if n > 0 and key not in self._lost_keys:
            self._lost_keys[key] = None
            if len(self._lost_keys) > 1000:
                self._lost_keys.popitem(last=False)
            self.stream.count_lost(n)

    def _deliver(self, raw: Mapping[str, Any], key: str, ts: float) -> None:
        try:
            det = self.normalise(raw)
        except Exception:  # a record this code cannot read is counted, not fatal
            det = None
        if det is None:
            self.stream.count_malformed(json.dumps(raw, default=str)[:200])
        else:
            self.stream.push(replace(det, received_at=time.time()))
        self._seen[key] = ts
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)

    def _fql(self, field: str, since: float, to: float) -> str:
        fql = f"{field}:>='{_iso(since)}'+{field}:<='{_iso(to, up=True)}'"
        if self.filter:
            fql += "+" + (f"({self.filter})" if _top_level_or(self.filter) else self.filter)
        return fql

    # ------------------------------------------------------------ state
    def _set_down(self, reason: str) -> None:
        reason = redact(reason)
        with self._lock:
            changed = self._down != reason
            self._down = reason
        if changed:
            log.warning("%s", reason)

    def _set_up(self) -> None:
        with self._lock:
            was, self._down = self._down, None
        if was is not None:
            log.info("%s: polling %s", self.name, self.client.api())

    # ------------------------------------------------------------ parsing
    def normalise(self, raw: Any) -> Detection | None:
        """Pure: one Falcon alert (Alerts API v2) or one container runtime detection to a
        Detection (``received_at`` is stamped on delivery); None when it is not a mapping or
        carries nothing to name it by."""
        return normalise_falcon(raw, self.name)


# ---------------------------------------------------------------- helpers
def _base_url(value: str, where: str) -> str:
    text = str(value).strip()
    if "://" in text:
        return text.rstrip("/")
    if text.lower() in REGIONS:
        return REGIONS[text.lower()]
    raise ConfigError(
        f"{where}: base_url: expected the API URL of the Falcon cloud or its region "
        f"({', '.join(f'{k} {v}' for k, v in REGIONS.items())}), got {text!r}")


def _secret_ref(value: str, key: str, where: str) -> str:
    text = str(value)
    kind, _, ref = text.partition(":")
    if kind in ("env", "file") and ref:
        return text
    raise ConfigError(f"{where}: {key}: expected 'env:VARIABLE' or 'file:/path/to/secret', got a "
                      "literal value; never put credentials in a config file")


def _number(value: float, key: str, where: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
        raise ConfigError(f"{where}: {key}: expected a number of seconds >= {minimum}, got {value!r}")
    return float(value)


def _iso(ts: float, up: bool = False) -> str:
    """Epoch seconds -> FQL's ISO 8601 in ms, rounded down (a lower bound) or ``up`` (an
    upper bound: the query must cover everything up to ``ts``)."""
    ms = math.ceil(ts * 1000) if up else math.floor(ts * 1000)
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _container_key(item: Mapping[str, Any]) -> str:
    ident = first_text(item, "detection_id", "id", "composite_id")
    if ident:
        return ident
    parts = (first_text(item, "container_id"), first_text(item, "detect_timestamp"), first_text(item, "name"))
    return "|".join(p or "" for p in parts)


def _top_level_or(fql: str) -> bool:
    """Whether ``fql`` has a ``,`` (OR) outside quotes, brackets and parentheses."""
    depth = 0
    quoted = False
    for ch in fql:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "([":
            depth += 1
        elif not quoted and ch in ")]":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            return True
    return False


__all__ = ["REGIONS", "RETRIES", "SOURCES", "CrowdStrikeSensor"]
