"""``ServerThread``: the one lifecycle of an aiohttp application served from a thread of its
own (the sensors' HTTP receiver and the test suite's fake product APIs run on it)."""

from __future__ import annotations

import socket

import httpx
import pytest
from aiohttp import web

from harness.core.errors import SensorError
from harness.sensors.streams import ServerThread, listen
from tests.servers._threaded import ThreadedApp


def _app() -> web.Application:
    async def hello(request: web.Request) -> web.StreamResponse:
        return web.json_response({"hello": request.path})

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    return app


def test_serves_until_stopped_then_refuses_connections() -> None:
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = ServerThread("t", _app)
    server.start(sock)
    try:
        assert server.running
        assert server.started
        assert httpx.get(f"http://127.0.0.1:{port}/x").json() == {"hello": "/x"}
        with listen("127.0.0.1", 0) as other, pytest.raises(SensorError, match="t: already started"):
            server.start(other)
    finally:
        server.stop()
    assert not server.running
    assert not server.started
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/x")
    server.stop()  # twice: nothing to do


def test_an_app_that_cannot_be_built_is_reported_by_start() -> None:
    def broken() -> web.Application:
        raise RuntimeError("no routes today")

    sock = listen("127.0.0.1", 0)
    server = ServerThread("t", broken, what="fake API")
    with pytest.raises(SensorError, match=r"t: fake API failed to start: RuntimeError\('no routes today'\)"):
        server.start(sock)
    assert not server.started
    assert sock.fileno() == -1  # closed


def test_a_taken_port_is_an_oserror_in_the_callers_thread() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken, pytest.raises(OSError, match="in use"):
        listen("127.0.0.1", taken.getsockname()[1])


class _Hello(ThreadedApp):
    NAME = "hello-server"

    def build_app(self) -> web.Application:
        return _app()


def test_test_servers_run_on_the_harness_lifecycle() -> None:
    with _Hello() as server:
        assert server.port != 0
        assert httpx.get(server.url + "/y").json() == {"hello": "/y"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/y")
