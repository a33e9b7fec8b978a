"""A real local CrowdStrike Falcon API (the part FalconPy's ``OAuth2``, ``Alerts`` and
``ContainerDetections`` call), for tests and bridges.

aiohttp in a thread, on 127.0.0.1 and a free port. Implements:

* ``POST /oauth2/token`` (form ``client_id``, ``client_secret``, optional ``member_cid``) ->
  201 ``{"access_token", "token_type": "bearer", "expires_in"}``; an unknown client id -> 400
  ``Failed to generate access token for clientID=<id>.`` (the API echoes the id); a wrong
  secret -> ``bad_secret_status`` (403 by default, ``Failed to issue access token - Not
  Authorized``; 401 ``access denied, invalid client credentials`` when set to 401). Never
  sends ``X-Cs-Region``: FalconPy would "autodiscover" the region and switch its base URL
  to the real cloud.
* ``POST /oauth2/revoke`` (``Authorization: basic``, form ``token``) -> 200.
* ``GET /alerts/queries/alerts/v2`` (GetQueriesAlertsV2): FQL ``filter`` (subset below),
  ``sort`` (``field|asc``/``field|desc``, default ``created_timestamp|desc``), ``limit``
  (default 100, 1-10000), ``offset``, or ``after`` (an opaque token from the previous page's
  ``meta.pagination.after``); offset + limit must stay <= ``max_window`` (10000) -> 400.
  Answers composite ids in ``resources`` and ``meta.pagination{offset,limit,total,after}``.
* ``POST /alerts/entities/alerts/v2`` (PostEntitiesAlertsV2): body ``{"composite_ids": [...]}``
  (at most ``max_entities``) -> the alerts in ``resources``; unknown ids in ``errors`` (404
  when none is found).
* ``GET /container-security/combined/runtime-detections/v2`` (GetRuntimeDetectionsCombinedV2):
  FQL ``filter``, ``limit`` (default 100, 1-100), ``offset`` -> detections in ``resources``.
* Bearer check on every API path: 401 ``access denied, invalid bearer token`` with the API's
  error body (``meta{query_time,powered_by,trace_id}``, ``errors[{code,message}]``) when the
  token is missing, unknown, revoked or expired; 403 ``access denied, authorization failed``
  without the scope (``alerts:read``, ``container:read`` here).
* ``X-RateLimit-Limit``/``X-RateLimit-Remaining`` on every API answer.

FQL subset: ``field:'value'`` (``*`` wildcard), ``field:!'value'``, ``field:>='v'``, ``<=``,
``>``, ``<`` (ISO timestamps and numbers compare as such), ``field:['a','b']`` (any of),
bare values (numbers, true/false), ``+`` = AND, ``,`` = OR (AND binds tighter), parentheses,
dotted fields (``device.hostname``).

For tests: ``ingest``/``ingest_container`` with an ingestion delay (visible only ``delay``
seconds later, server clock), ``throttle_next`` (429 with ``X-RateLimit-RetryAfter`` as
epoch seconds, or ``Retry-After``), ``fail_next`` (5xx), ``expire_tokens``, a request log,
and ``POST /_shadowtest/ingest`` (``{"alert": {...}}`` or ``{"container_detection": {...}}``,
optional ``"delay"``) so another process can feed it.

Run alone: ``FALCON_CLIENT_ID=... FALCON_CLIENT_SECRET=... python -m
tests.servers.crowdstrike_server`` prints the URL it listens on, then serves until
interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fnmatch
import json
import math
import os
import re
import secrets
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.servers._threaded import ThreadedApp

ALERTS_QUERY = "/alerts/queries/alerts/v2"
ALERTS_ENTITIES = "/alerts/entities/alerts/v2"
RUNTIME_DETECTIONS = "/container-security/combined/runtime-detections/v2"
SCOPES = {ALERTS_QUERY: "alerts:read", ALERTS_ENTITIES: "alerts:read",
          RUNTIME_DETECTIONS: "container:read"}
RATE_LIMIT = 6000


class BadRequest(Exception):
    """A 400 with the API's error body."""


@dataclass(frozen=True)
class Request:
    """One request the server answered."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    status: int
    #: the response's headers
    headers: dict[str, str]
    #: the request's JSON body (None for forms: the token request carries the secret)
    body: Any = None
    user_agent: str = ""


@dataclass
class _Stored:
    visible_at: float
    record: dict[str, Any]


@dataclass
class _Fault:
    status: int
    path: str | None
    retry_after: float | None = None
    header: str = "X-RateLimit-RetryAfter"


@dataclass
class _State:
    alerts: dict[str, _Stored] = field(default_factory=dict)
    detections: dict[str, _Stored] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    faults: deque[_Fault] = field(default_factory=deque)
    log: list[Request] = field(default_factory=list)


class CrowdStrikeServer(ThreadedApp):
    """``with CrowdStrikeServer(client_id, client_secret) as server: server.url ...``."""

    NAME = "crowdstrike-server"

    def __init__(self, client_id: str, client_secret: str, *, token_ttl: int = 1799,
                 scopes: Iterable[str] = ("alerts:read", "container:read"),
                 bad_secret_status: int = 403, max_window: int = 10_000, max_entities: int = 1000,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.scopes = set(scopes)
        self.bad_secret_status = bad_secret_status
        self.max_window = max_window
        self.max_entities = max_entities
        self._lock = threading.Lock()
        self._s = _State()

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_post("/oauth2/revoke", self._revoke)
        app.router.add_get(ALERTS_QUERY, self._query_alerts)
        app.router.add_post(ALERTS_ENTITIES, self._get_alerts)
        app.router.add_get(RUNTIME_DETECTIONS, self._runtime_detections)
        app.router.add_post("/_shadowtest/ingest", self._ingest_http)
        return app

    # ------------------------------------------------------------ test controls
    def ingest(self, alerts: Mapping[str, Any] | Sequence[Mapping[str, Any]],
               delay: float = 0.0) -> list[str]:
        """Store alert(s), visible ``delay`` seconds from now; returns their composite ids.
        Alerts without them get a ``composite_id`` and ``created_timestamp``/``timestamp`` =
        now (ISO 8601, as the API writes them)."""
        batch = [alerts] if isinstance(alerts, Mapping) else list(alerts)
        visible_at = time.time() + max(0.0, float(delay))
        out = []
        with self._lock:
            for raw in batch:
                alert = dict(raw)
                now = iso(time.time())
                alert.setdefault("composite_id",
                                 f"{'0' * 32}:ind:{uuid.uuid4().hex}:{uuid.uuid4().int % 10**11}")
                alert.setdefault("created_timestamp", now)
                alert.setdefault("timestamp", alert["created_timestamp"])
                self._s.alerts[str(alert["composite_id"])] = _Stored(visible_at, alert)
                out.append(str(alert["composite_id"]))
        return out

    def ingest_container(self, detections: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                         delay: float = 0.0) -> list[str]:
        """Store container runtime detection(s), visible ``delay`` seconds from now; returns
        their ``detection_id``s (given, with ``detect_timestamp`` = now, when missing)."""
        batch = [detections] if isinstance(detections, Mapping) else list(detections)
        visible_at = time.time() + max(0.0, float(delay))
        out = []
        with self._lock:
            for raw in batch:
                det = dict(raw)
                det.setdefault("detection_id", uuid.uuid4().hex)
                det.setdefault("detect_timestamp", iso(time.time()))
                self._s.detections[str(det["detection_id"])] = _Stored(visible_at, det)
                out.append(str(det["detection_id"]))
        return out

    def fail_next(self, k: int, status: int = 503, path: str | None = None) -> None:
        """The next ``k`` API requests (to ``path`` only, when given) get ``status``."""
        with self._lock:
            self._s.faults.extend(_Fault(status, path) for _ in range(k))

    def throttle_next(self, k: int, retry_after: float = 1.0, path: str | None = None,
                      header: str = "X-RateLimit-RetryAfter") -> None:
        """The next ``k`` API requests (to ``path`` only, when given) get 429. With the
        default header, ``X-RateLimit-RetryAfter`` is the epoch second (rounded up) at which
        the client may retry, as CrowdStrike sends it; ``header="Retry-After"`` sends the
        standard header in seconds instead."""
        with self._lock:
            self._s.faults.extend(_Fault(429, path, retry_after, header) for _ in range(k))

    def clear_faults(self) -> None:
        """Drop every injected 429/5xx not answered yet."""
        with self._lock:
            self._s.faults.clear()

    def expire_tokens(self) -> None:
        """Every issued token is now unknown (the next API request gets 401)."""
        with self._lock:
            self._s.tokens.clear()

    @property
    def tokens(self) -> list[str]:
        with self._lock:
            return list(self._s.tokens)

    def requests(self, path: str | None = None) -> list[Request]:
        """Requests answered so far (optionally only those for ``path``)."""
        with self._lock:
            return [r for r in self._s.log if path is None or r.path == path]

    # ------------------------------------------------------------ HTTP
    @web.middleware
    async def _record(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                      ) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body and request.path != "/oauth2/token":
            raw = await request.read()
            with contextlib.suppress(ValueError):
                body = json.loads(raw) if raw else None
        try:
            resp = await self._gate(request) or await handler(request)
        except web.HTTPException as exc:  # unknown path or method: logged, then aiohttp's answer
            self._note(request, exc.status, {}, body)
            raise
        if request.path in SCOPES:
            resp.headers.setdefault("X-RateLimit-Limit", str(RATE_LIMIT))
            resp.headers.setdefault("X-RateLimit-Remaining", str(RATE_LIMIT - 1))
        self._note(request, resp.status, dict(resp.headers), body)
        return resp

    def _note(self, request: web.Request, status: int, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self._s.log.append(Request(time.time(), request.method, request.path,
                                       dict(request.query), status, headers, body,
                                       request.headers.get("User-Agent", "")))

    async def _gate(self, request: web.Request) -> web.StreamResponse | None:
        """Bearer token and scope for API paths, then an injected fault: the response to
        send instead of the handler's, or None."""
        if request.path.startswith("/_shadowtest/"):
            return None
        if request.path in SCOPES:
            auth = request.headers.get("Authorization", "")
            token = auth[7:] if auth[:7].lower() == "bearer " else ""
            with self._lock:
                expires = self._s.tokens.get(token)
            if expires is None or expires <= time.time():
                return error(401, "access denied, invalid bearer token")
            if SCOPES[request.path] not in self.scopes:
                return error(403, "access denied, authorization failed")
        with self._lock:
            fault = next((f for f in self._s.faults
                          if f.path is None or request.path.startswith(f.path)), None)
            if fault is not None:
                self._s.faults.remove(fault)
        if fault is None:
            return None
        if fault.status != 429:
            return error(fault.status, "internal server error" if fault.status == 500
                         else "service unavailable")
        resp = error(429, "API rate limit exceeded.")
        wait = fault.retry_after or 0.0
        resp.headers["X-RateLimit-Limit"] = str(RATE_LIMIT)
        resp.headers["X-RateLimit-Remaining"] = "0"
        if fault.header == "Retry-After":
            resp.headers["Retry-After"] = str(math.ceil(wait))
        else:
            resp.headers["X-RateLimit-RetryAfter"] = str(math.ceil(time.time() + wait))
        return resp

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        cid, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        if not cid or not secret:
            return error(400, "client_id and client_secret are required")
        if cid != self.client_id:
            return error(400, f"Failed to generate access token for clientID={cid}.")
        if not secrets.compare_digest(secret, self.client_secret):
            message = ("access denied, invalid client credentials" if self.bad_secret_status == 401
                       else "Failed to issue access token - Not Authorized")
            return error(self.bad_secret_status, message)
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._s.tokens[token] = time.time() + self.token_ttl
        return web.json_response(
            {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl},
            status=201)

    async def _revoke(self, request: web.Request) -> web.Response:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("Authorization", "").partition(" ")[2] != expected:
            return error(401, "access denied, invalid client credentials")
        form = await request.post()
        with self._lock:
            self._s.tokens.pop(str(form.get("token", "")), None)
        return web.json_response({"meta": meta(), "resources": [], "errors": []})

    async def _query_alerts(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = _int_param(q, "limit", 100, 1, 10_000)
            offset = _decode_after(q["after"]) if q.get("after") else _int_param(q, "offset", 0, 0, None)
            _check_window(offset, limit, self.max_window)
            match = parse_filter(q.get("filter"))
            order = _sorter(q.get("sort") or "created_timestamp|desc")
        except BadRequest as exc:
            return error(400, str(exc))
        now = time.time()
        with self._lock:
            hits = [s.record for s in self._s.alerts.values() if s.visible_at <= now and match(s.record)]
        hits = order(hits)
        page = hits[offset:offset + limit]
        pagination: dict[str, Any] = {"offset": offset, "limit": limit, "total": len(hits)}
        if offset + len(page) < len(hits):
            pagination["after"] = _encode_after(offset + len(page))
        return web.json_response({"meta": meta(pagination=pagination),
                                  "resources": [a["composite_id"] for a in page], "errors": []})

    async def _get_alerts(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return error(400, "invalid JSON body")
        ids = body.get("composite_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return error(400, "composite_ids: expected a list of strings")
        if len(ids) > self.max_entities:
            return error(400, f"composite_ids: at most {self.max_entities} ids per request")
        now = time.time()
        with self._lock:
            found = {i: self._s.alerts[i].record for i in ids
                     if i in self._s.alerts and self._s.alerts[i].visible_at <= now}
        missing = [{"code": 404, "message": f"Alert not found: {i}"} for i in ids if i not in found]
        status = 404 if ids and not found else 200
        return web.json_response({"meta": meta(), "resources": list(found.values()),
                                  "errors": missing}, status=status)

    async def _runtime_detections(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = _int_param(q, "limit", 100, 1, 100)
            offset = _int_param(q, "offset", 0, 0, None)
            _check_window(offset, limit, self.max_window)
            match = parse_filter(q.get("filter"))
            order = _sorter(q["sort"]) if q.get("sort") else (lambda items: items)
        except BadRequest as exc:
            return error(400, str(exc))
        now = time.time()
        with self._lock:
            hits = [s.record for s in self._s.detections.values()
                    if s.visible_at <= now and match(s.record)]
        hits = order(hits)
        return web.json_response({
            "meta": meta(pagination={"offset": offset, "limit": limit, "total": len(hits)}),
            "resources": hits[offset:offset + limit], "errors": []})

    async def _ingest_http(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return error(400, "invalid JSON body")
        if not isinstance(body, dict):
            return error(400, "expected an object")
        delay = float(body.get("delay", 0.0))
        if isinstance(body.get("alert"), dict):
            ids = self.ingest(body["alert"], delay)
        elif isinstance(body.get("container_detection"), dict):
            ids = self.ingest_container(body["container_detection"], delay)
        else:
            return error(400, "expected 'alert' or 'container_detection'")
        return web.json_response({"ids": ids}, status=201)


# ---------------------------------------------------------------- answers
def meta(**extra: Any) -> dict[str, Any]:
    return {"query_time": 0.001, "powered_by": "shadowtest-crowdstrike-server",
            "trace_id": str(uuid.uuid4()), **extra}


def error(status: int, message: str) -> web.Response:
    """The API's error body: ``{"meta": {...}, "errors": [{"code", "message"}]}``."""
    return web.json_response({"meta": meta(), "resources": [],
                              "errors": [{"code": status, "message": message}]}, status=status)


def iso(ts: float) -> str:
    """Epoch seconds -> the API's ISO 8601 (UTC, microseconds, ``Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _int_param(q: Mapping[str, str], key: str, default: int, low: int, high: int | None) -> int:
    if key not in q:
        return default
    try:
        value = int(q[key])
    except ValueError:
        raise BadRequest(f"{key}: expected an integer, got {q[key]!r}") from None
    if value < low or (high is not None and value > high):
        raise BadRequest(f"{key}: expected {low} to {high}, got {value}" if high is not None
                         else f"{key}: expected >= {low}, got {value}")
    return value


def _check_window(offset: int, limit: int, ceiling: int) -> None:
    if offset + limit > ceiling:
        raise BadRequest(f"offset + limit must be less than or equal to {ceiling} "
                         f"(got offset {offset}, limit {limit})")


def _encode_after(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _decode_after(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["o"])
    except (ValueError, KeyError, TypeError):
        raise BadRequest("after: invalid pagination token") from None


def _sorter(text: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    m = re.fullmatch(r"(?P<field>[A-Za-z0-9_.]+?)(?:[|.](?P<dir>asc|desc))?", text.strip())
    if m is None:
        raise BadRequest(f"sort: expected field|asc or field|desc, got {text!r}")
    fld, direction = m.group("field"), m.group("dir") or "asc"

    def key(item: Mapping[str, Any]) -> tuple[int, Any, str]:
        value = _lookup(item, fld)
        if value is None:
            return (1, 0, "")
        ts = _when(value)
        return (0, ts if ts is not None else str(value), str(item.get("composite_id", "")))

    def order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        present = [i for i in items if _lookup(i, fld) is not None]
        absent = [i for i in items if _lookup(i, fld) is None]
        return sorted(present, key=key, reverse=direction == "desc") + absent

    return order


# ---------------------------------------------------------------- FQL subset
_TERM = re.compile(r"^(?P<field>[A-Za-z0-9_.]+):(?P<op>!|>=|<=|>|<)?(?P<value>.+)$", re.S)


def parse_filter(text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """The FQL subset described in the module docstring -> a predicate (BadRequest when the
    filter is outside it)."""
    if text is None or not text.strip():
        return lambda _item: True
    return _expr(text.strip())


def _expr(text: str) -> Callable[[Mapping[str, Any]], bool]:
    alternatives = [[_atom(t) for t in _split(alt, "+")] for alt in _split(text, ",")]
    return lambda item: any(all(t(item) for t in conj) for conj in alternatives)


def _atom(text: str) -> Callable[[Mapping[str, Any]], bool]:
    text = text.strip()
    if not text:
        raise BadRequest("Invalid filter: empty expression")
    if text.startswith("(") and _closing(text, 0) == len(text) - 1:
        return _expr(text[1:-1].strip())
    m = _TERM.match(text)
    if m is None:
        raise BadRequest(f"Invalid filter: cannot parse {text!r}")
    fld, op, raw = m.group("field"), m.group("op") or "", m.group("value").strip()
    values = _values(raw)
    if op in (">=", "<=", ">", "<"):
        if len(values) != 1:
            raise BadRequest(f"Invalid filter: {op} takes one value in {text!r}")
        bound = values[0]
        return lambda item: _compare(_lookup(item, fld), op, bound)

    def equal(item: Mapping[str, Any]) -> bool:
        got = _lookup(item, fld)
        items = got if isinstance(got, list) else [got]
        return any(_equal(g, v) for g in items if g is not None for v in values)

    if op == "!":
        return lambda item: not equal(item)
    return equal


def _values(raw: str) -> list[str]:
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise BadRequest(f"Invalid filter: unterminated list {raw!r}")
        return [_scalar(v) for v in _split(raw[1:-1], ",") if v.strip()]
    return [_scalar(raw)]


def _scalar(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1].replace("\\'", "'")
    if "'" in raw or not raw:
        raise BadRequest(f"Invalid filter: bad value {raw!r}")
    return raw


def _equal(got: Any, want: str) -> bool:
    text = str(got).lower() if isinstance(got, bool) else str(got)
    if "*" in want:
        return fnmatch.fnmatchcase(text.lower(), want.lower())
    return text == want


def _compare(got: Any, op: str, bound: str) -> bool:
    if got is None:
        return False
    a: Any
    b: Any
    ta, tb = _when(got), _when(bound)
    if ta is not None and tb is not None:
        a, b = ta, tb
    else:
        try:
            a, b = float(got), float(bound)
        except (TypeError, ValueError):
            a, b = str(got), bound
    return bool({">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}[op])


def _when(value: Any) -> float | None:
    """An ISO 8601 timestamp -> epoch seconds (None for anything else)."""
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip().replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _lookup(item: Mapping[str, Any], path: str) -> Any:
    node: Any = item
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _split(text: str, sep: str) -> list[str]:
    """``text`` split on ``sep`` outside quotes, brackets and parentheses."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'" and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise BadRequest(f"Invalid filter: unbalanced {ch!r} in {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quoted or depth:
        raise BadRequest(f"Invalid filter: unbalanced quotes or brackets in {text!r}")
    parts.append(text[start:])
    return parts


def _closing(text: str, open_at: int) -> int:
    depth, quoted = 0, False
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--id-env", default="FALCON_CLIENT_ID")
    parser.add_argument("--secret-env", default="FALCON_CLIENT_SECRET")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    cid, secret = os.environ.get(args.id_env), os.environ.get(args.secret_env)
    if not cid or not secret:
        parser.error(f"set {args.id_env} and {args.secret_env} to the credentials to accept")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with CrowdStrikeServer(cid, secret, port=args.port) as server:
        print(server.url, flush=True)  # the bridge reads the URL
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
