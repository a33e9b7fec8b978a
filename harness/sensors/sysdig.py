"""Sysdig Secure, read through its Events API (``GET /secure/events/v1/events``).

A poller thread asks the backend for the events of a sliding time window, follows the
cursor pages, deduplicates by event id and pushes one Detection per new event. There is
no sync marker: a SaaS backend cannot be asked to flush. Instead, after every complete
poll covering events up to ``to``, the stream's watermark advances to ``to - delay``:
events that happened before it are assumed ingested, so a run whose end the watermark
has passed can be judged MISSED without waiting for the whole window.

The API token is read from the environment or a file (``env:NAME`` / ``file:PATH``, never
a literal) when the sensor starts, sent only as ``Authorization: Bearer``, and redacted
from everything this module reports.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import httpx

from harness.core.detection import Detection
from harness.core.errors import ConfigError
from harness.core.health import Health
from harness.core.schema import parse_duration
from harness.core.secrets import Secret, redact, resolve_secret
from harness.sensors.base import DetectionStream, SensorBase
from harness.sensors.rulepack import reported_pack
from harness.sensors.sysdig_events import integer, normalise_event

EVENTS_PATH = "/secure/events/v1/events"
#: the API refuses a ``from``/``to`` timeframe longer than two weeks
MAX_TIMEFRAME_NS = 14 * 24 * 3600 * 1_000_000_000
#: ``limit`` accepted by the API (default 25)
MAX_LIMIT = 200
#: a Retry-After above this is capped (the poll retries, the watermark just waits)
MAX_RETRY_AFTER = 60.0
#: a rate limit is reported as a health problem only once it lasts this long
RATE_LIMITED_DOWN_AFTER = 60.0

class _PollFailed(Exception):
    """One poll could not complete; ``reason`` is already redacted and says how to fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _State:
    up: bool = False
    reason: str = "sysdig sensor was never started"
    failing_since: float | None = None
    throttled_since: float | None = None
    polls: int = 0
    last_to_ns: int | None = None


class SysdigSensor(SensorBase):
    """Polls Sysdig Secure's Events API for runtime detections.

    ``url`` is the region's base URL, for example ``https://secure.sysdig.com`` (US East,
    us1), ``https://us2.app.sysdig.com`` (US West, us2), ``https://app.us4.sysdig.com``
    (us4), ``https://eu1.app.sysdig.com`` (EU Central, eu1) or ``https://app.au1.sysdig.com``
    (AP Sydney, au1); see Sysdig's "SaaS Regions and IP Ranges" page for the others.
    ``token`` is ``env:NAME`` or ``file:PATH`` (a Sysdig Secure API token or service
    account token). ``filter`` is passed to the API as is (e.g.
    ``kubernetes.cluster.name="prod"``); ``limit`` is the page size (1-200).
    ``poll_interval`` (s) is the time between polls; ``delay`` (s) is the backend's
    expected ingestion delay: every run's window is extended by it and the watermark
    trails the last poll by it. ``lookback`` (s) is how far back the first poll reads.
    ``timeout`` (s) bounds each HTTP request. Durations accept numbers or ``"30s"``/``"2m"``.
    """

    NAME: ClassVar[str] = "sysdig"

    def __init__(self, name: str = "sysdig", url: str = "https://secure.sysdig.com",
                 token: str = "env:SYSDIG_SECURE_API_TOKEN",  # noqa: S107 - a reference, not a value
                 filter: str | None = None,
                 limit: int = 100, poll_interval: float | str = 2.0, delay: float | str = 30.0,
                 lookback: float | str = 300.0, timeout: float | str = 10.0,
                 verify_tls: bool = True, node: str | None = None, version: str | None = None) -> None:
        where = f"[tool.shadowtest.sensors.{name}]"
        self.name = name
        self.version = version  # rule-pack / policy version (results rows' rulepack only)
        self.url = str(url).rstrip("/")
        if not re.match(r"^https?://[^/\s]+", self.url):
            raise ConfigError(
                f"{where} url: expected the region's base URL like https://us2.app.sysdig.com, "
                f"got {redact(self.url)!r}"
            )
        self.token = str(token)
        self.filter = filter or None
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ConfigError(f"{where} limit: expected an integer from 1 to {MAX_LIMIT}, got {limit!r}")
        self.limit = limit
        self.poll_interval = _seconds(poll_interval, f"{where} poll_interval", positive=True)
        self.delay = _seconds(delay, f"{where} delay", positive=False)
        self.lookback = _seconds(lookback, f"{where} lookback", positive=True)
        self.timeout = _seconds(timeout, f"{where} timeout", positive=True)
        self.verify_tls = bool(verify_tls)
        self.node = node
        self.stream = DetectionStream(name)
        #: events are re-read this far behind the last poll's end: an event that happened
        #: before ``to`` may become visible up to ``delay`` later
        self.overlap = self.delay + self.poll_interval
        self._secret: Secret | None = None
        self._client: httpx.Client | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state = _State()
        self._seen: dict[str, int] = {}
        self._rate_limit: str | None = None

    def __repr__(self) -> str:
        return (f"SysdigSensor(name={self.name!r}, url={redact(self.url)!r}, "
                f"token={self._token_source()!r}, filter={self.filter!r})")

    def _token_source(self) -> str:
        kind, _, ref = self.token.partition(":")
        return self.token if kind in ("env", "file") and ref else "<literal, refused>"

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Resolve the token (ConfigError for a literal or a missing variable/file), poll
        once synchronously, then keep polling in a thread. Bad credentials and an
        unreachable backend do not raise: ``health()`` is down with the reason."""
        self._secret = resolve_secret(self.token, f"[tool.shadowtest.sensors.{self.name}] token")
        self._client = httpx.Client(
            headers={"Authorization": f"Bearer {self._secret.reveal()}",
                     "Accept": "application/json", "User-Agent": "shadowtest"},
            timeout=httpx.Timeout(self.timeout), verify=self.verify_tls, follow_redirects=False,
        )
        self._stop.clear()
        with self._lock:
            self._state = _State(up=True, reason="")
        self.poll()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + MAX_RETRY_AFTER)
            self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None
        with self._lock:
            if self._state.up:
                self._state.up, self._state.reason = False, f"{self.name}: sensor stopped"

    def health(self) -> Health:
        if self.stream.closed:
            return Health(False, self.stream.closed)
        with self._lock:
            up, reason = self._state.up, self._state.reason
        if not up:
            return Health(False, reason)
        if self._thread is not None and not self._thread.is_alive():
            return Health(False, f"{self.name}: the poller thread ended")
        return Health(True, lost=self.stream.lost, malformed=self.stream.malformed)

    def sync(self) -> str | None:
        """No marker can be sent through a SaaS backend: the watermark closes windows."""
        return None

    def rulepack(self) -> dict[str, Any]:
        """Sysdig's events name their policy (``seen``), not a rule-pack version: the
        configured ``version``."""
        return reported_pack("sysdig", self.version)

    # ------------------------------------------------------------ polling
    def _loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except Exception as exc:  # a bug must not silently freeze the watermark
                self._down(f"{self.name}: poller failed: {type(exc).__name__}: {redact(str(exc))}")
                return

    def poll(self) -> bool:
        """One complete poll: every window chunk and every page, then the watermark.
        Returns whether it completed; a failure is recorded in ``health()``."""
        now_ns = time.time_ns()
        with self._lock:
            last_to = self._state.last_to_ns
        # never less than the overlap: a late event must still be inside the next window
        start_ns = max(0, now_ns - int(max(self.lookback, self.overlap) * 1e9))
        if last_to is not None:
            start_ns = max(start_ns, last_to - int(self.overlap * 1e9))
        try:
            for frm, to in split_timeframe(start_ns, now_ns):
                self._push(self._query(frm, to))
        except _PollFailed as exc:
            self._down(exc.reason)
            return False
        self._prune(start_ns)
        with self._lock:
            self._state.last_to_ns = now_ns
            self._state.polls += 1
            self._state.up, self._state.reason = True, ""
            self._state.failing_since = self._state.throttled_since = None
        self.stream.advance(now_ns / 1e9 - self.delay)
        return True

    def _query(self, frm: int, to: int) -> list[dict[str, Any]]:
        """Every event of [frm, to]: the first page by time, the next ones by cursor."""
        params: dict[str, str | int] = {"from": frm, "to": to, "limit": self.limit}
        if self.filter:
            params["filter"] = self.filter
        events: list[dict[str, Any]] = []
        cursors: set[str] = set()
        while True:
            body = self._get(params)
            data = body.get("data")
            page = body.get("page")
            if not isinstance(data, list) or not isinstance(page, dict | None):
                raise _PollFailed(f"{self.name}: unexpected response from {self._endpoint()}: "
                                  "expected {page, data[]} (is url the region's base URL?)")
            for event in data:
                if isinstance(event, dict):
                    events.append(event)
                else:
                    self.stream.count_malformed(redact(repr(event)))
            cursor = page.get("next") if isinstance(page, dict) else None
            if not cursor:
                return events
            if cursor in cursors:
                raise _PollFailed(f"{self.name}: the API returned the same page cursor twice")
            cursors.add(cursor)
            # from/to and cursor are mutually exclusive: the cursor carries the timeframe
            params = {"cursor": str(cursor), "limit": self.limit}
            if self.filter:
                params["filter"] = self.filter

    def _get(self, params: Mapping[str, str | int]) -> dict[str, Any]:
        """One request, retried on 429 (after Retry-After) and on 5xx/timeouts (bounded
        exponential backoff while the backend has been failing for < 3 poll intervals)."""
        assert self._client is not None
        attempt = 0
        while True:
            if self._stop.is_set():
                raise _PollFailed(f"{self.name}: sensor stopping")
            try:
                resp = self._client.get(self._endpoint(), params=dict(params))
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise _PollFailed(
                    f"{self.name}: cannot connect to {self._endpoint()}: {_exc_text(exc)}; "
                    "check url (the region's base URL) and the network path to it"
                ) from None
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                self._transient(f"{type(exc).__name__} from {self._endpoint()}: {_exc_text(exc)}",
                                attempt)
                attempt += 1
                continue
            self._rate_limit = resp.headers.get("X-RateLimit-Limit", self._rate_limit)
            status = resp.status_code
            if status == 200:
                try:
                    body = resp.json()
                except ValueError:
                    raise _PollFailed(f"{self.name}: {self._endpoint()} answered 200 with a body "
                                      "that is not JSON (is url the region's base URL?)") from None
                if not isinstance(body, dict):
                    raise _PollFailed(f"{self.name}: unexpected response from {self._endpoint()}")
                with self._lock:
                    self._state.throttled_since = None
                return body
            if status == 429:
                self._throttled(resp)
                continue
            if status >= 500:
                self._transient(f"{_status(resp)} from {self._endpoint()}", attempt)
                attempt += 1
                continue
            raise _PollFailed(self._refused(resp))

    def _endpoint(self) -> str:
        return redact(self.url + EVENTS_PATH)

    def _refused(self, resp: httpx.Response) -> str:
        """The reason for a 4xx that retrying cannot fix (never contains the token)."""
        status = resp.status_code
        detail = _error_message(resp)
        source = self._secret.source if self._secret else self._token_source()
        if status == 401:
            fix = f"check the API token ({source}) and that url is your account's region"
        elif status == 403:
            fix = (f"the token ({source}) lacks permission to read Secure events: use a token "
                   "of a user or service account with the Secure events read permission")
        elif status == 404:
            fix = "url must be the region's base URL, e.g. https://us2.app.sysdig.com"
        elif status == 400:
            fix = "check filter (see GET /secure/events/v1/supported-filters) and limit"
        else:
            fix = "check the sensor's configuration"
        return redact(f"{self.name}: {_status(resp)} from {self._endpoint()}{detail}: {fix}")

    def _throttled(self, resp: httpx.Response) -> None:
        wait = min(retry_after(resp.headers.get("Retry-After"), self.poll_interval), MAX_RETRY_AFTER)
        now = time.time()
        with self._lock:
            since = self._state.throttled_since = self._state.throttled_since or now
        if now - since > max(3 * self.poll_interval, RATE_LIMITED_DOWN_AFTER):
            limit = f" (X-RateLimit-Limit {self._rate_limit}/min)" if self._rate_limit else ""
            self._down(f"{self.name}: rate limited by {self._endpoint()} for {now - since:.0f}s"
                       f"{limit}: raise poll_interval or limit, or share the token less")
        if self._stop.wait(wait):
            raise _PollFailed(f"{self.name}: sensor stopping")

    def _transient(self, what: str, attempt: int) -> None:
        """A 5xx or a timeout: back off and retry while the failure is younger than three
        poll intervals; past that, give up this poll with health down."""
        now = time.time()
        with self._lock:
            since = self._state.failing_since = self._state.failing_since or now
        budget = 3 * self.poll_interval - (now - since)
        if budget <= 0:
            raise _PollFailed(redact(
                f"{self.name}: the backend keeps failing: {what} (for {now - since:.1f}s, "
                f"more than 3 x poll_interval); check Sysdig's status page or url"
            ))
        backoff = min(0.05 * 2 ** attempt, self.poll_interval, budget)
        if self._stop.wait(backoff):
            raise _PollFailed(f"{self.name}: sensor stopping")

    def _down(self, reason: str) -> None:
        with self._lock:
            self._state.up, self._state.reason = False, redact(reason)

    def _push(self, events: list[dict[str, Any]]) -> None:
        """New events (by id), oldest first, each normalised and stamped with when it was read."""
        fresh: list[tuple[int, str, dict[str, Any]]] = []
        for event in events:
            eid = event.get("id")
            if eid is None:
                self.stream.count_malformed(redact(repr(event)))
                continue
            key = str(eid)
            if key in self._seen:
                continue
            ts = integer(event.get("timestamp")) or 0
            self._seen[key] = ts
            fresh.append((ts, key, event))
        fresh.sort(key=lambda item: (item[0], item[1]))
        for _, _, event in fresh:
            try:
                det = self.normalise(event)
            except (TypeError, ValueError, KeyError, AttributeError):
                det = None
            if det is None:
                self.stream.count_malformed(redact(repr(event)))
                continue
            self.stream.push(replace(det, received_at=time.time()))

    def _prune(self, start_ns: int) -> None:
        """Forget ids that no later poll can return again (older than its window)."""
        horizon = start_ns - int(self.overlap * 1e9)
        for key in [k for k, ts in self._seen.items() if ts and ts < horizon]:
            del self._seen[key]

    @property
    def polls(self) -> int:
        """Complete polls so far."""
        return self._state.polls

    # ------------------------------------------------------------ parsing
    def normalise(self, raw: Any) -> Detection | None:
        """Pure: one Event of the Events API to a Detection (``sysdig_events.normalise_event``)."""
        return normalise_event(raw, self.name)


# ---------------------------------------------------------------- helpers (pure)
def split_timeframe(frm: int, to: int, most: int = MAX_TIMEFRAME_NS) -> Iterator[tuple[int, int]]:
    """[frm, to] in ns as consecutive chunks of at most ``most`` (the API's 2 weeks)."""
    start = min(frm, to)
    while True:
        end = min(start + most, to)
        yield start, end
        if end >= to:
            return
        start = end


def retry_after(value: str | None, default: float) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return default
    return max(0.0, when.timestamp() - time.time())


def _seconds(value: float | str, what: str, positive: bool) -> float:
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: expected seconds or a duration like 30s or 2m, got {value!r}") from None
    if seconds < 0 or (positive and seconds == 0):
        raise ConfigError(f"{what}: expected a {'positive' if positive else 'non-negative'} "
                          f"duration, got {value!r}")
    return seconds


def _status(resp: httpx.Response) -> str:
    return f"{resp.status_code} {resp.reason_phrase}".rstrip()


def _error_message(resp: httpx.Response) -> str:
    """The API's ``Error.message`` (or the start of the body), for the reason."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()[:200]
        return f" ({text})" if text else ""
    if isinstance(body, dict) and body.get("message"):
        return f" ({str(body['message'])[:200]})"
    return ""


def _exc_text(exc: Exception) -> str:
    return redact(str(exc) or type(exc).__name__)[:300]
