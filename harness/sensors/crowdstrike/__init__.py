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

import contextlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any, ClassVar

import requests
from falconpy import Alerts, ContainerDetections, OAuth2

from harness.core.detection import Detection
from harness.core.errors import ConfigError, SensorError
from harness.core.health import Health
from harness.core.secrets import Secret, redact, resolve_secret
from harness.sensors.base import DetectionStream, SensorBase
from harness.sensors.crowdstrike.falcon import _epoch, _mapping, _text, normalise_falcon

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
#: attempts after the first for a 5xx or an unreachable API, backing off 0.25, 0.5, 1 s
RETRIES = 3
BACKOFF = 0.25
#: consecutive 429 answers honoured in one poll before the poll is given up
MAX_RATE_WAITS = 10
MAX_RATE_WAIT = 300.0
#: (connect, read) seconds for every request FalconPy makes
TIMEOUT = (10.0, 60.0)
USER_AGENT = "shadowtest-crowdstrike/0.1.0"
SEEN_MAX = 200_000


class _PollFailed(Exception):
    """A poll could not complete; ``fatal``: retrying with the same settings cannot help."""

    def __init__(self, reason: str, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


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
        #: complete polls, answers 429 honoured, retries after a 5xx/unreachable (diagnostics)
        self.polls = 0
        self.rate_limited = 0
        self.retried = 0
        self._lock = threading.Lock()
        self._down: str | None = f"{name}: not started"
        self._fatal = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: requests.Session | None = None
        self._auth: OAuth2 | None = None
        self._alerts: Alerts | None = None
        self._containers: ContainerDetections | None = None
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
        self._session = requests.Session()
        self._auth = OAuth2(client_id=cid.reveal(), client_secret=secret.reveal(),
                            member_cid=self.member_cid, base_url=self.base_url,
                            ssl_verify=self.verify_tls, timeout=TIMEOUT, user_agent=USER_AGENT,
                            session=self._session)
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
        auth, self._auth = self._auth, None
        if auth is not None and auth.token_value and not auth.token_stale:
            with contextlib.suppress(Exception):
                auth.logout()
        if self._session is not None:
            self._session.close()
            self._session = None
        self._alerts = None
        self._containers = None
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

    # ------------------------------------------------------------ polling
    def _loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self._poll_once()
            if self._fatal:
                return

    def _poll_once(self) -> None:
        to = time.time()
        try:
            self._ensure_token()
            if self.source == "alerts":
                self._poll_alerts(self._since, to)
            else:
                self._poll_container(self._since, to)
        except _PollFailed as exc:
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
        if self._alerts is None:
            self._alerts = Alerts(auth_object=self._auth)
        svc = self._alerts
        what = f"GET {self._api()}/alerts/queries/alerts/v2 (Alerts.query_alerts_v2)"
        lower = since
        while True:
            offset = total = 0
            top = lower
            fql = self._fql("created_timestamp", lower, to)
            while not offset or offset + self.limit <= MAX_WINDOW:
                res = self._request(what, partial(svc.query_alerts_v2, filter=fql, sort=ALERTS_SORT,
                                                  limit=self.limit, offset=offset))
                body = _body(res)
                ids = [str(i) for i in body.get("resources") or [] if i]
                total = _int(_dig(body, "meta", "pagination", "total"), offset + len(ids))
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
        what = f"POST {self._api()}/alerts/entities/alerts/v2 (Alerts.get_alerts_v2)"
        for start in range(0, len(ids), ENTITY_BATCH):
            batch = ids[start:start + ENTITY_BATCH]
            res = self._request(what, partial(svc.get_alerts_v2, composite_ids=batch), accept=(404,))
            alerts = [a for a in _body(res).get("resources") or [] if isinstance(a, Mapping)]
            for alert in sorted(alerts, key=lambda a: _epoch(a.get("created_timestamp")) or 0.0):
                key = str(alert.get("composite_id") or alert.get("id") or "")
                if key and key not in self._seen:
                    self._deliver(alert, key, _epoch(alert.get("created_timestamp")) or 0.0)

    def _poll_container(self, since: float, to: float) -> None:
        if self._containers is None:
            self._containers = ContainerDetections(auth_object=self._auth)
        svc = self._containers
        what = (f"GET {self._api()}/container-security/combined/runtime-detections/v2 "
                "(ContainerDetections.search_runtime_detections)")
        fql = self._fql("detect_timestamp", since, to)
        offset = 0
        while True:
            res = self._request(what, partial(svc.search_runtime_detections, filter=fql,
                                              limit=self.limit, offset=offset))
            body = _body(res)
            items = [d for d in body.get("resources") or [] if isinstance(d, Mapping)]
            total = _int(_dig(body, "meta", "pagination", "total"), offset + len(items))
            for item in sorted(items, key=lambda d: _epoch(d.get("detect_timestamp")) or 0.0):
                key = _container_key(item)
                if key not in self._seen:
                    self._deliver(item, key, _epoch(item.get("detect_timestamp")) or 0.0)
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

    # ------------------------------------------------------------ requests
    def _api(self) -> str:
        return self._auth.base_url if self._auth is not None else self.base_url

    def _ensure_token(self) -> None:
        auth = self._auth
        if auth is None:
            raise _PollFailed(f"{self.name}: not started")
        if auth.token_value and not auth.token_stale:
            return
        url = f"{auth.base_url}/oauth2/token"
        self._request(f"OAuth2 token request to {url}", auth.login, token=True)
        if not auth.token_value:
            raise _PollFailed(f"{self.name}: OAuth2 token request to {url} returned no access_token")
        Secret(auth.token_value, f"{self.name} OAuth2 access token")  # registered for redact()

    def _request(self, what: str, call: Callable[[], Any], *, token: bool = False,
                 accept: tuple[int, ...] = ()) -> dict[str, Any]:
        """One FalconPy call, honouring 429 (X-RateLimit-RetryAfter / Retry-After), retrying
        5xx and connection errors (bounded), re-authenticating once on 401."""
        failures = rate_waits = 0
        reauthenticated = False
        while True:
            res = _as_dict(call())
            status = _int(res.get("status_code"), 0)
            headers = _mapping(res.get("headers"))
            if (status == 201 if token else 200 <= status < 300) or status in accept:
                return res
            message = _error_message(res)
            if status == 429:
                rate_waits += 1
                if rate_waits > MAX_RATE_WAITS:
                    raise _PollFailed(f"{self.name}: {what} is still rate limited (429) after "
                                      f"{MAX_RATE_WAITS} waits; lower the poll rate "
                                      "(poll_interval) or share fewer API clients")
                self.rate_limited += 1
                self._pause(_retry_after(headers, self.poll_interval))
                continue
            if status == 401 and not token and not reauthenticated and self._auth is not None:
                reauthenticated = True  # token revoked or expired early: one fresh login
                self._auth.token_expiration = 0
                self._ensure_token()
                continue
            unreachable = status == 500 and not headers  # FalconPy's result for a requests error
            if unreachable or status >= 500 or status == 0:
                failures += 1
                if failures <= RETRIES:
                    self.retried += 1
                    self._pause(BACKOFF * 2 ** (failures - 1))
                    continue
                if unreachable or status == 0:
                    raise _PollFailed(
                        f"{self.name}: cannot reach {self._api()} ({what}): {message}; check "
                        "base_url (the API client's cloud), the network and any proxy")
                raise _PollFailed(f"{self.name}: {what} failed with {status} ({message}) "
                                  f"{failures} times in a row")
            raise self._refused(what, status, message, token)

    def _refused(self, what: str, status: int, message: str, token: bool) -> _PollFailed:
        if token:
            member = " and member_cid" if self.member_cid else ""
            return _PollFailed(
                f"{self.name}: {what} failed with {status} ({message}): check "
                f"{self.client_id}/{self.client_secret}{member}, and that the API client "
                f"belongs to the {self.base_url} cloud", fatal=status in (400, 401, 403))
        if status == 401:
            return _PollFailed(f"{self.name}: {what} failed with 401 ({message}) even with a fresh "
                               f"token: check {self.client_id}/{self.client_secret}")
        if status == 403:
            scope = "Alerts: Read" if self.source == "alerts" else "a container security read scope"
            return _PollFailed(f"{self.name}: {what} failed with 403 ({message}): the API client "
                               f"lacks the {scope} scope; add it to the API client in the Falcon "
                               "console (API clients and keys)")
        if status == 400 and self.filter:
            return _PollFailed(f"{self.name}: {what} refused the query with 400 ({message}): check "
                               f"filter = {self.filter!r} (FQL)")
        return _PollFailed(f"{self.name}: {what} failed with {status} ({message})")

    def _pause(self, seconds: float) -> None:
        if self._stop.wait(min(max(seconds, 0.0), MAX_RATE_WAIT)):
            raise _PollFailed(f"{self.name}: stopped")

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
            log.info("%s: polling %s", self.name, self._api())

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


def _as_dict(res: Any) -> dict[str, Any]:
    """FalconPy answers a dict (status_code, headers, body) unless pythonic mode is on."""
    if isinstance(res, dict):
        return res
    full = getattr(res, "full_return", None)
    if isinstance(full, dict):
        return full
    return {"status_code": 0, "headers": {}, "body": {"errors": [{"message": repr(res)[:200]}]}}


def _body(res: Mapping[str, Any]) -> dict[str, Any]:
    body = res.get("body")
    return body if isinstance(body, dict) else {}


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _error_message(res: Mapping[str, Any]) -> str:
    errors = _body(res).get("errors")
    if isinstance(errors, list) and errors:
        first = errors[0]
        text = str(first.get("message") if isinstance(first, Mapping) else first)
    else:
        text = "no error message"
    return redact(" ".join(text.split()))[:300]


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if str(key).lower() == name.lower():
            return str(value)
    return None


def _retry_after(headers: Mapping[str, Any], default: float) -> float:
    """Seconds to wait: CrowdStrike's ``X-RateLimit-RetryAfter`` (epoch seconds), else a
    standard ``Retry-After`` (seconds or an HTTP date), else ``default``."""
    now = time.time()
    value = _header(headers, "X-RateLimit-RetryAfter")
    if value is not None:
        with contextlib.suppress(ValueError):
            at = float(value)
            return max(0.0, at - now) if at > 1e9 else max(0.0, at)
    value = _header(headers, "Retry-After")
    if value is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value))
        with contextlib.suppress(TypeError, ValueError, IndexError):
            return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    return default


def _iso(ts: float, up: bool = False) -> str:
    """Epoch seconds -> FQL's ISO 8601 in ms, rounded down (a lower bound) or ``up`` (an
    upper bound: the query must cover everything up to ``ts``)."""
    ms = math.ceil(ts * 1000) if up else math.floor(ts * 1000)
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _container_key(item: Mapping[str, Any]) -> str:
    ident = _text(item, "detection_id", "id", "composite_id")
    if ident:
        return ident
    parts = (_text(item, "container_id"), _text(item, "detect_timestamp"), _text(item, "name"))
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
