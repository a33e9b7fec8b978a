"""A real local Sysdig Secure Events API (``/secure/events/v1``), for tests and bridges.

aiohttp in a thread, on 127.0.0.1 and a free port. Implements what the SDK's
``SecureEventsApi`` documents: Bearer auth, ``from``/``to`` in ns (both required unless a
``cursor`` is given, never together with one, timeframe at most 2 weeks), ``limit``
(default 25, 1-200), newest first, opaque ``page.next``/``page.prev`` cursors (keyset:
events ingested while a client pages do not shift its pages), a minimal ``filter``
(``key op value`` joined by ``and``), ``X-RateLimit-Limit`` on every answer, and
``GET /events/{id}`` and ``/supported-filters``. For tests: injected 429 (with
Retry-After) or 5xx for the next K requests, an ingestion delay per event (visible only
``delay`` seconds after ``ingest``, server clock), a request log, and
``POST /_shadowtest/ingest`` so another process can feed it.

Run alone: ``SYSDIG_SECURE_API_TOKEN=... python -m tests.servers.sysdig_server`` prints
the URL it listens on, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any

from aiohttp import web

from tests.servers._threaded import ThreadedApp

API = "/secure/events/v1"
TWO_WEEKS_NS = 14 * 24 * 3600 * 1_000_000_000
DEFAULT_LIMIT = 25
MAX_LIMIT = 200

#: attributes of the event itself / of its content; any dotted key is looked up in
#: ``labels`` then ``content.fields``
_TOP = ("id", "name", "severity", "originator", "category", "source", "engine",
        "rawEventOriginator", "rawEventCategory")
_CONTENT = ("ruleName", "ruleTags", "ruleType", "ruleSubType", "policyId", "type")
_ALIASES = {"containerId": "container.id", "policyName": "name", "hostName": "host.hostName",
            "namespace": "kubernetes.namespace.name", "podName": "kubernetes.pod.name"}
SUPPORTED_FILTERS: list[dict[str, Any]] = [
    {"id": key, "type": kind, "operands": ops}
    for key, kind, ops in (
        ("ruleName", "string", ["=", "!=", "in", "not in", "contains", "starts with"]),
        ("ruleTags", "string", ["=", "!=", "in", "not in", "contains"]),
        ("ruleType", "number", ["=", "!=", "in", "not in"]),
        ("policyId", "number", ["=", "!=", "in", "not in"]),
        ("name", "string", ["=", "!=", "in", "not in", "contains", "starts with"]),
        ("severity", "number", ["=", "!=", "in", "not in"]),
        ("originator", "string", ["=", "!=", "in", "not in"]),
        ("category", "string", ["=", "!=", "in", "not in"]),
        ("source", "string", ["=", "!=", "in", "not in"]),
        ("engine", "string", ["=", "!=", "in", "not in"]),
        ("containerId", "string", ["=", "!=", "in", "not in", "starts with", "exists", "not exists"]),
        ("container.id", "string", ["=", "!=", "in", "not in", "starts with", "exists", "not exists"]),
        ("container.name", "string", ["=", "!=", "in", "not in", "contains", "starts with"]),
        ("host.hostName", "string", ["=", "!=", "in", "not in", "contains", "starts with"]),
        ("kubernetes.cluster.name", "string", ["=", "!=", "in", "not in", "contains"]),
        ("kubernetes.namespace.name", "string", ["=", "!=", "in", "not in", "contains"]),
        ("kubernetes.pod.name", "string", ["=", "!=", "in", "not in", "contains", "starts with"]),
        ("proc.name", "string", ["=", "!=", "in", "not in", "contains", "starts with"]),
    )
]


class BadRequest(Exception):
    """A 400 with the API's Error body."""


@dataclass(frozen=True)
class Request:
    """One request the server answered."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    status: int
    retry_after: str | None = None


@dataclass(frozen=True)
class _Query:
    start: int
    end: int
    filter: str | None


@dataclass(frozen=True)
class _Cursor:
    query: _Query
    direction: str  # "next": older than anchor; "prev": newer than anchor
    anchor: tuple[int, str]


@dataclass
class _Stored:
    visible_at: float
    event: dict[str, Any]

    @property
    def key(self) -> tuple[int, str]:
        return int(self.event["timestamp"]), str(self.event["id"])


@dataclass
class _Faults:
    pending: deque[tuple[int, float | None]] = field(default_factory=deque)


class SysdigServer(ThreadedApp):
    """``with SysdigServer(token) as server: server.url ...``; ``start()``/``stop()`` too."""

    NAME = "sysdig-server"

    def __init__(self, token: str, rate_limit: int = 100, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(host, port)
        self.token = token
        self.rate_limit = rate_limit
        self._lock = threading.Lock()
        self._events: list[_Stored] = []
        self._cursors: dict[str, _Cursor] = {}
        self._faults = _Faults()
        self._log: list[Request] = []

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get(f"{API}/events", self._list)
        app.router.add_get(f"{API}/events/{{event_id}}", self._one)
        app.router.add_get(f"{API}/supported-filters", self._filters)
        app.router.add_post("/_shadowtest/ingest", self._ingest_http)
        return app

    # ------------------------------------------------------------ test controls
    def ingest(self, events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
               delay: float = 0.0) -> list[str]:
        """Store event(s), visible ``delay`` seconds from now; returns their ids (an
        ``id`` and a ``timestamp`` = now are given to events without them)."""
        batch = [events] if isinstance(events, Mapping) else list(events)
        visible_at = time.time() + max(0.0, float(delay))
        stored = []
        for raw in batch:
            event = dict(raw)
            event.setdefault("id", uuid.uuid4().hex)
            event.setdefault("timestamp", time.time_ns())
            if not isinstance(event["timestamp"], int) or isinstance(event["timestamp"], bool):
                raise TypeError(f"event {event['id']}: timestamp must be an integer (ns)")
            stored.append(_Stored(visible_at, event))
        with self._lock:
            self._events.extend(stored)
        return [str(s.event["id"]) for s in stored]

    def fail_next(self, k: int, status: int = 503) -> None:
        """The next ``k`` API requests get ``status`` (5xx) instead of an answer."""
        with self._lock:
            self._faults.pending.extend([(status, None)] * k)

    def throttle_next(self, k: int, retry_after: float = 1.0) -> None:
        """The next ``k`` API requests get 429 with ``Retry-After: retry_after``."""
        with self._lock:
            self._faults.pending.extend([(429, retry_after)] * k)

    def clear_faults(self) -> None:
        """Drop the injected faults not yet served."""
        with self._lock:
            self._faults.pending.clear()

    def requests(self, path: str | None = None) -> list[Request]:
        """Requests answered so far (optionally only those for ``path``)."""
        with self._lock:
            return [r for r in self._log if path is None or r.path == path]

    def visible(self) -> list[dict[str, Any]]:
        now = time.time()
        with self._lock:
            return [s.event for s in self._events if s.visible_at <= now]

    # ------------------------------------------------------------ HTTP
    @web.middleware
    async def _record(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                      ) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except web.HTTPException as exc:  # unknown path or method: logged, then aiohttp's answer
            self._note(request, exc.status, None)
            raise
        if request.path.startswith(API) and resp.status != 500:
            resp.headers["X-RateLimit-Limit"] = str(self.rate_limit)
        self._note(request, resp.status, resp.headers.get("Retry-After"))
        return resp

    def _note(self, request: web.Request, status: int, retry_after: str | None) -> None:
        with self._lock:
            self._log.append(Request(time.time(), request.method, request.path,
                                     dict(request.query), status, retry_after))

    def _gate(self, request: web.Request) -> web.Response | None:
        """Auth, then an injected fault: the response to send instead, or None."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized", "Access denied.")
        with self._lock:
            fault = self._faults.pending.popleft() if self._faults.pending else None
        if fault is None:
            return None
        status, retry_after = fault
        if status == 429:
            resp = _error(429, "too_many_requests", "Too many requests.")
            resp.headers["Retry-After"] = _num(retry_after or 1)
            return resp
        return _error(status, "internal_server_error", "Internal server error.")

    async def _list(self, request: web.Request) -> web.Response:
        denied = self._gate(request)
        if denied is not None:
            return denied
        try:
            return web.json_response(self._page(request.query))
        except BadRequest as exc:
            return _error(400, "bad_request", str(exc))

    async def _one(self, request: web.Request) -> web.Response:
        denied = self._gate(request)
        if denied is not None:
            return denied
        wanted = request.match_info["event_id"]
        for event in self.visible():
            if str(event["id"]) == wanted:
                return web.json_response(event)
        return _error(404, "resource_not_found", f"event {wanted} not found")

    async def _filters(self, request: web.Request) -> web.Response:
        denied = self._gate(request)
        if denied is not None:
            return denied
        return web.json_response({"data": SUPPORTED_FILTERS})

    async def _ingest_http(self, request: web.Request) -> web.Response:
        """Body: a list of events, or ``{"events": [...], "delay": seconds}``."""
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "bad_request", "body must be JSON")
        delay: Any = request.query.get("delay", 0.0)
        if isinstance(body, dict):
            delay = body.get("delay", delay)
            body = body.get("events")
        if not isinstance(body, list) or not all(isinstance(e, dict) for e in body):
            return _error(400, "bad_request", "expected a list of events or {events: [...], delay}")
        try:
            ids = self.ingest(body, float(delay))
        except (TypeError, ValueError) as exc:
            return _error(400, "bad_request", str(exc))
        return web.json_response({"ingested": len(ids), "ids": ids}, status=202)

    # ------------------------------------------------------------ list semantics
    def _resolve(self, params: Mapping[str, str]) -> tuple[_Query, tuple[int, str] | None, str]:
        """The query, the anchor and direction of a cursor (None for a first page)."""
        cursor_token = params.get("cursor")
        if cursor_token is not None:
            if "from" in params or "to" in params:
                raise BadRequest("from/to and cursor are mutually exclusive")
            with self._lock:
                cursor = self._cursors.get(cursor_token)
            if cursor is None:
                raise BadRequest("invalid cursor")
            return cursor.query, cursor.anchor, cursor.direction
        if "from" not in params or "to" not in params:
            raise BadRequest("time criteria required: from and to (ns), or a cursor")
        start, end = _ns(params["from"], "from"), _ns(params["to"], "to")
        if start > end:
            raise BadRequest("from must not be after to")
        if end - start > TWO_WEEKS_NS:
            raise BadRequest("the timeframe between from and to must be at most 2 weeks")
        return _Query(start, end, params.get("filter") or None), None, "next"

    def _page(self, params: Mapping[str, str]) -> dict[str, Any]:
        limit = _limit(params.get("limit"))
        query, anchor, direction = self._resolve(params)
        match = parse_filter(query.filter)
        now = time.time()
        with self._lock:
            stored = list(self._events)
        matching = sorted(
            (s for s in stored if s.visible_at <= now and query.start <= s.key[0] <= query.end
             and match(s.event)),
            key=lambda s: s.key, reverse=True,
        )
        if anchor is None:
            items = matching[:limit]
        elif direction == "next":
            items = [s for s in matching if s.key < anchor][:limit]
        else:
            newer = [s for s in matching if s.key > anchor]
            items = newer[-limit:]
        page: dict[str, Any] = {"total": len(matching)}
        if items:
            first, last = items[0].key, items[-1].key
            if any(s.key < last for s in matching):
                page["next"] = self._cursor(_Cursor(query, "next", last))
            if any(s.key > first for s in matching):
                page["prev"] = self._cursor(_Cursor(query, "prev", first))
        return {"page": page, "data": [s.event for s in items]}

    def _cursor(self, cursor: _Cursor) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._cursors[token] = cursor
        return token


# ---------------------------------------------------------------- filter
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|'
                    r"(?P<op>!=|=|\(|\)|,)|(?P<word>[A-Za-z_][\w.]*))")


def parse_filter(text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """``ruleName = "x" and containerId in ("a", "b") and proc.name starts with "py"``:
    a predicate on an event. Raises BadRequest on anything else."""
    if not text or not text.strip():
        return lambda event: True
    tokens = _tokens(text)
    conds: list[Callable[[Mapping[str, Any]], bool]] = []
    pos = 0
    while True:
        cond, pos = _condition(tokens, pos, text)
        conds.append(cond)
        if pos == len(tokens):
            break
        if tokens[pos] != ("word", "and"):
            raise BadRequest(f"filter {text!r}: expected 'and' at {tokens[pos][1]!r}")
        pos += 1
    return lambda event: all(c(event) for c in conds)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise BadRequest(f"filter {text!r}: cannot parse at {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None
        value = m[kind]
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append((kind, value))
        pos = m.end()
    return out


def _condition(tokens: list[tuple[str, str]], pos: int,
               text: str) -> tuple[Callable[[Mapping[str, Any]], bool], int]:
    def at(i: int) -> tuple[str, str]:
        return tokens[i] if i < len(tokens) else ("end", "")

    kind, key = at(pos)
    if kind != "word":
        raise BadRequest(f"filter {text!r}: expected an attribute, got {key!r}")
    getter = _attribute(key, text)
    pos += 1
    words = []
    while at(pos)[0] == "word" and at(pos)[1] in ("not", "in", "exists", "starts", "with",
                                                   "contains"):
        words.append(at(pos)[1])
        pos += 1
    if not words:
        kind, op = at(pos)
        if kind != "op" or op not in ("=", "!="):
            raise BadRequest(f"filter {text!r}: expected an operator after {key!r}")
        pos += 1
    else:
        op = " ".join(words)
    if op in ("exists", "not exists"):
        want = op == "exists"
        return (lambda e: bool(getter(e)) == want), pos
    if op in ("in", "not in"):
        values, pos = _value_list(tokens, pos, f"filter {text!r}: {op}")
        inside = op == "in"
        return (lambda e: any(v in values for v in getter(e)) == inside), pos
    kind, value = at(pos)
    if kind not in ("str", "num"):
        raise BadRequest(f"filter {text!r}: expected a value after {key} {op}")
    pos += 1
    tests: dict[str, Callable[[Iterable[str]], bool]] = {
        "=": lambda got: value in got,
        "!=": lambda got: value not in got,
        "contains": lambda got: any(value in g for g in got),
        "starts with": lambda got: any(g.startswith(value) for g in got),
    }
    if op not in tests:
        raise BadRequest(f"filter {text!r}: unsupported operator {op!r}")
    check = tests[op]
    return (lambda e: check(getter(e))), pos


def _value_list(tokens: list[tuple[str, str]], pos: int, where: str) -> tuple[list[str], int]:
    """``( value, value, ... )`` from ``pos``; the values and the position after ``)``."""
    def at(i: int) -> tuple[str, str]:
        return tokens[i] if i < len(tokens) else ("end", "")

    if at(pos) != ("op", "("):
        raise BadRequest(f"{where}: expected (")
    values: list[str] = []
    pos += 1
    while True:
        kind, value = at(pos)
        if kind not in ("str", "num"):
            raise BadRequest(f"{where}: expected a value in the list")
        values.append(value)
        kind, value = at(pos + 1)
        pos += 2
        if (kind, value) == ("op", ")"):
            return values, pos
        if (kind, value) != ("op", ","):
            raise BadRequest(f"{where}: expected , or ) in the list")


def _attribute(key: str, text: str) -> Callable[[Mapping[str, Any]], list[str]]:
    """The event's value(s) of a filter attribute, as strings."""
    key = _ALIASES.get(key, key)

    def strings(value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, list):
            return [str(v) for v in value if v is not None]
        return [str(value)]

    if key in _TOP:
        return lambda e: strings(e.get(key))
    if key in _CONTENT:
        return lambda e: strings((e.get("content") or {}).get(key))
    if "." in key:
        def lookup(e: Mapping[str, Any]) -> list[str]:
            labels = e.get("labels") or {}
            fields = (e.get("content") or {}).get("fields") or {}
            return strings(labels.get(key) if labels.get(key) is not None else fields.get(key))
        return lookup
    raise BadRequest(f"filter {text!r}: unsupported attribute {key!r} "
                     f"(see GET {API}/supported-filters)")


# ---------------------------------------------------------------- helpers
def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": kind, "message": message, "details": []}, status=status)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _ns(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer timestamp in nanoseconds, got {text!r}") from None
    if value < 0:
        raise BadRequest(f"{name}: must be >= 0")
    return value


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"limit: expected an integer, got {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"limit: must be between 1 and {MAX_LIMIT}, got {value}")
    return value


def make_event(rule: str = "Terminal shell in container", *, timestamp: int | None = None,
               event_id: str | None = None, tags: Sequence[str] = ("MITRE_T1059_command_and_scripting",
                                                                   "mitre_execution", "container"),
               severity: int = 4, container_id: str | None = None, host: str = "node-1",
               policy: str = "Sysdig Runtime Notable Events", output: str | None = None,
               fields: Mapping[str, Any] | None = None, labels: Mapping[str, str] | None = None,
               actions: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A runtime (falco engine) policy event as the Events API returns it (wire camelCase)."""
    cfields: dict[str, Any] = {"proc.name": "sh", "proc.cmdline": "sh -c id", "proc.pid": "4242",
                               "proc.ppid": "4241", "user.name": "root"}
    lab: dict[str, str] = {"host.hostName": host}
    if container_id is not None:
        cfields["container.id"] = container_id[:12]
        lab["container.id"] = container_id[:12]
        lab["container.name"] = "shadowtest"
    cfields.update(fields or {})
    lab.update(labels or {})
    return {
        "id": event_id or uuid.uuid4().hex,
        "timestamp": timestamp if timestamp is not None else time.time_ns(),
        "originator": "policy",
        "category": "runtime",
        "source": "syscall",
        "sourceDetails": {"type": "workload", "subType": "container" if container_id else "host"},
        "rawEventOriginator": "linuxAgent",
        "rawEventCategory": "runtime",
        "engine": "falco",
        "name": policy,
        "description": "Notable runtime events",
        "severity": severity,
        "actions": [dict(a) for a in actions],
        "content": {
            "type": "workloadRuntimeDetection",
            "policyId": 1001,
            "ruleName": rule,
            "ruleType": 6,
            "ruleSubType": 1,
            "ruleTags": list(tags),
            "output": output or f"{rule} (user=root proc.cmdline=sh -c id)",
            "fields": cfields,
            "priority": "warning",
        },
        "labels": lab,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--token-env", default="SYSDIG_SECURE_API_TOKEN",
                        help="environment variable holding the Bearer token the server accepts")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    token = os.environ.get(args.token_env)
    if not token:
        parser.error(f"set {args.token_env} to the token the server must accept")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with SysdigServer(token, port=args.port) as server:
        print(server.url, flush=True)  # the bridge reads the URL
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
