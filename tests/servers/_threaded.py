"""A real aiohttp application served from its own thread and event loop, on loopback: the
harness's own server lifecycle (``harness.sensors.streams.ServerThread``, the one the
sensors' HTTP receiver runs on), with the application a fake product API builds."""

from __future__ import annotations

from typing import Self

from aiohttp import web

from harness.sensors.streams import ServerThread, listen


class ThreadedApp:
    """Subclasses build the application (``build_app``); ``ServerThread`` owns the
    lifecycle: ``with Server(...) as s: s.url``, or ``start()`` / ``stop()``."""

    NAME = "test-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server = ServerThread(self.NAME, self.build_app, shutdown_timeout=25.0,
                                    what="test server")

    def build_app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        sock = listen(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        self._server.start(sock)
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
