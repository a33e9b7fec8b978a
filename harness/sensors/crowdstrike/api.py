"""The Falcon API as the sensor calls it: FalconPy's OAuth2 and service classes, with the
harness's request policy around every call: 429 honoured (``X-RateLimit-RetryAfter`` /
``Retry-After``), 5xx and unreachable APIs retried with backoff, one re-login on 401, and a
refusal turned into a reason that says what to fix (``PollFailed``). Every reason goes
through ``redact``; the OAuth2 access token is registered for redaction when issued."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from falconpy import Alerts, ContainerDetections, OAuth2, Result

from harness.core.secrets import Secret, redact
from harness.sensors.crowdstrike.falcon import mapping

#: attempts after the first for a 5xx or an unreachable API, backing off 0.25, 0.5, 1 s
RETRIES = 3
BACKOFF = 0.25
#: consecutive 429 answers honoured in one poll before the poll is given up
MAX_RATE_WAITS = 10
MAX_RATE_WAIT = 300.0
#: (connect, read) seconds for every request FalconPy makes
TIMEOUT = (10.0, 60.0)
USER_AGENT = "shadowtest-crowdstrike/0.1.0"


class PollFailed(Exception):
    """A poll could not complete; ``fatal``: retrying with the same settings cannot help."""

    def __init__(self, reason: str, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


class FalconClient:
    """One API client's session: its OAuth2 token and service objects, and the request
    policy. ``name`` prefixes every reason; ``client_id``/``client_secret`` are the secret
    references (never the values) named in reasons; ``stop`` ends any wait."""

    def __init__(self, name: str, base_url: str, client_id: str, client_secret: str,
                 member_cid: str | None, source: str, filter: str | None,
                 poll_interval: float, stop: threading.Event) -> None:
        self.name = name
        self.base_url = base_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.member_cid = member_cid
        self.source = source
        self.filter = filter
        self.poll_interval = poll_interval
        self.stop = stop
        #: answers 429 honoured, retries after a 5xx/unreachable (diagnostics)
        self.rate_limited = 0
        self.retried = 0
        self.auth: OAuth2 | None = None
        self._session: requests.Session | None = None
        self._alerts: Alerts | None = None
        self._containers: ContainerDetections | None = None

    def open(self, client_id: str, client_secret: str, verify_tls: bool) -> None:
        """A new HTTP session and OAuth2 object for these credential values."""
        self._session = requests.Session()
        self.auth = OAuth2(client_id=client_id, client_secret=client_secret,
                           member_cid=self.member_cid, base_url=self.base_url,
                           ssl_verify=verify_tls, timeout=TIMEOUT, user_agent=USER_AGENT,
                           session=self._session)

    def close(self) -> None:
        """Revoke the token (``POST /oauth2/revoke``) and close the session."""
        auth, self.auth = self.auth, None
        if auth is not None and auth.token_value and not auth.token_stale:
            with contextlib.suppress(Exception):
                auth.logout()
        if self._session is not None:
            self._session.close()
            self._session = None
        self._alerts = None
        self._containers = None

    def alerts(self) -> Alerts:
        if self._alerts is None:
            self._alerts = Alerts(auth_object=self.auth)
        return self._alerts

    def containers(self) -> ContainerDetections:
        if self._containers is None:
            self._containers = ContainerDetections(auth_object=self.auth)
        return self._containers

    def api(self) -> str:
        return self.auth.base_url if self.auth is not None else self.base_url

    def ensure_token(self) -> None:
        auth = self.auth
        if auth is None:
            raise PollFailed(f"{self.name}: not started")
        if auth.token_value and not auth.token_stale:
            return
        url = f"{auth.base_url}/oauth2/token"
        self.request(f"OAuth2 token request to {url}", auth.login, token=True)
        if not auth.token_value:
            raise PollFailed(f"{self.name}: OAuth2 token request to {url} returned no access_token")
        Secret(auth.token_value, f"{self.name} OAuth2 access token")  # registered for redact()

    def request(self, what: str, call: Callable[[], Any], *, token: bool = False,
                 accept: tuple[int, ...] = ()) -> dict[str, Any]:
        """One FalconPy call, honouring 429 (X-RateLimit-RetryAfter / Retry-After), retrying
        5xx and connection errors (bounded), re-authenticating once on 401."""
        failures = rate_waits = 0
        reauthenticated = False
        while True:
            res = _as_dict(call())
            status = integer(res.get("status_code"), 0)
            headers = mapping(res.get("headers"))
            if (status == 201 if token else 200 <= status < 300) or status in accept:
                return res
            message = _error_message(res)
            if status == 429:
                rate_waits += 1
                if rate_waits > MAX_RATE_WAITS:
                    raise PollFailed(f"{self.name}: {what} is still rate limited (429) after "
                                      f"{MAX_RATE_WAITS} waits; lower the poll rate "
                                      "(poll_interval) or share fewer API clients")
                self.rate_limited += 1
                self.pause(retry_after(headers, self.poll_interval))
                continue
            if status == 401 and not token and not reauthenticated and self.auth is not None:
                reauthenticated = True  # token revoked or expired early: one fresh login
                self.auth.token_expiration = 0
                self.ensure_token()
                continue
            unreachable = status == 500 and not headers  # FalconPy's result for a requests error
            if unreachable or status >= 500 or status == 0:
                failures += 1
                if failures <= RETRIES:
                    self.retried += 1
                    self.pause(BACKOFF * 2 ** (failures - 1))
                    continue
                if unreachable or status == 0:
                    raise PollFailed(
                        f"{self.name}: cannot reach {self.api()} ({what}): {message}; check "
                        "base_url (the API client's cloud), the network and any proxy")
                raise PollFailed(f"{self.name}: {what} failed with {status} ({message}) "
                                  f"{failures} times in a row")
            raise self._refused(what, status, message, token)

    def _refused(self, what: str, status: int, message: str, token: bool) -> PollFailed:
        if token:
            member = " and member_cid" if self.member_cid else ""
            return PollFailed(
                f"{self.name}: {what} failed with {status} ({message}): check "
                f"{self.client_id}/{self.client_secret}{member}, and that the API client "
                f"belongs to the {self.base_url} cloud", fatal=status in (400, 401, 403))
        if status == 401:
            return PollFailed(f"{self.name}: {what} failed with 401 ({message}) even with a fresh "
                               f"token: check {self.client_id}/{self.client_secret}")
        if status == 403:
            scope = "Alerts: Read" if self.source == "alerts" else "a container security read scope"
            return PollFailed(f"{self.name}: {what} failed with 403 ({message}): the API client "
                               f"lacks the {scope} scope; add it to the API client in the Falcon "
                               "console (API clients and keys)")
        if status == 400 and self.filter:
            return PollFailed(f"{self.name}: {what} refused the query with 400 ({message}): check "
                               f"filter = {self.filter!r} (FQL)")
        return PollFailed(f"{self.name}: {what} failed with {status} ({message})")

    def pause(self, seconds: float) -> None:
        if self.stop.wait(min(max(seconds, 0.0), MAX_RATE_WAIT)):
            raise PollFailed(f"{self.name}: stopped")


def _as_dict(res: Any) -> dict[str, Any]:
    """FalconPy answers a dict (status_code, headers, body), or a ``Result`` in pythonic mode."""
    if isinstance(res, dict):
        return res
    full = res.full_return if isinstance(res, Result) else None
    if isinstance(full, dict):
        return full
    return {"status_code": 0, "headers": {}, "body": {"errors": [{"message": repr(res)[:200]}]}}


def body(res: Mapping[str, Any]) -> dict[str, Any]:
    body = res.get("body")
    return body if isinstance(body, dict) else {}


def dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def integer(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _error_message(res: Mapping[str, Any]) -> str:
    errors = body(res).get("errors")
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


def retry_after(headers: Mapping[str, Any], default: float) -> float:
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
