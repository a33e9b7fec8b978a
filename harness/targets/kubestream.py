"""The Kubernetes attach/exec stream made to look like a ``subprocess.Popen[str]``.

The official client's ``WSClient`` (binary mode) carries the channel protocol: 0 stdin,
1 stdout, 2 stderr, 3 the v1 Status, v5's 255 CLOSE. :class:`AttachProcess` pumps
channels 1 and 2 into real pipes from one thread, so :class:`harness.nodes.runner.RunnerSession`
reads lines and waits with the same code as for a local runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import IO, Any, Protocol, cast

from harness.core.errors import TargetError


class KubeStream(Protocol):
    """What the adapter uses of the official client's ``WSClient`` (binary mode)."""

    #: the negotiated channel protocol (``v5.channel.k8s.io`` can half-close stdin)
    subprotocol: str | None
    #: websocket-client's ``WebSocket`` (its ``sock``: the socket), None once closed
    sock: Any

    def is_open(self) -> bool: ...

    def update(self, timeout: float | None = 0) -> None: ...

    def read_channel(self, channel: int, timeout: float = 0) -> bytes: ...

    def write_stdin(self, data: bytes) -> None: ...

    def close_channel(self, channel: int) -> None: ...

    def close(self) -> None: ...


class _StdinChannel:
    """``stdin`` of the runner: channel 0 of the stream; ``close`` is EOF for the runner
    (v5: a CLOSE frame for channel 0; v4 cannot half-close, so the stream is closed)."""

    def __init__(self, ws: KubeStream, on_close: Callable[[], None]) -> None:
        self._ws = ws
        self._on_close = on_close
        self.closed = False

    def write(self, text: str) -> int:
        if self.closed:
            raise BrokenPipeError("stdin of the runner is closed")
        try:
            self._ws.write_stdin(text.encode())
        except Exception as exc:  # websocket errors: the stream is gone
            raise BrokenPipeError(f"the attach stream is gone: {exc}") from exc
        return len(text)

    def flush(self) -> None:
        """Every write is one websocket frame already."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._ws.subprotocol == "v5.channel.k8s.io":
                self._ws.close_channel(0)
                return
        except Exception:  # noqa: S110 - falls back to closing the whole stream
            pass
        self._on_close()


class AttachProcess:
    """A Kubernetes attach/exec stream (the client's WSClient, binary mode) that looks
    like a ``subprocess.Popen[str]`` to :class:`RunnerSession`: ``stdout``/``stderr`` are pipes a
    pump thread fills from channels 1 and 2, ``stdin`` writes channel 0. ``exit_code(wait)``
    gives the runner's exit status once the stream ended (the pod's terminated state, or
    channel 3's Status for an exec)."""

    def __init__(self, ws: KubeStream,
                 exit_code: Callable[[float], int | None] | None = None) -> None:
        self._ws = ws
        self._exit_code = exit_code
        out_r, self._out_w = os.pipe()
        err_r, self._err_w = os.pipe()
        os.set_blocking(self._err_w, False)  # stderr is best effort: never stalls stdout
        self._stdout = open(out_r, encoding="utf-8", errors="replace")  # noqa: SIM115
        self._stderr = open(err_r, encoding="utf-8", errors="replace")  # noqa: SIM115
        self._stdin = _StdinChannel(ws, self.kill)
        self._status = b""
        self.returncode: int | None = None
        self.signal_runner: Callable[[], None] | None = None
        self._pump = threading.Thread(target=self._run, name="kube-attach", daemon=True)
        self._pump.start()

    @property
    def stdin(self) -> IO[str]:
        return cast(IO[str], self._stdin)

    @property
    def stdout(self) -> IO[str]:
        return self._stdout

    @property
    def stderr(self) -> IO[str]:
        return self._stderr

    def write_line(self, text: str) -> None:
        self._stdin.write(text + "\n")

    def read_hello(self, timeout: float, where: str) -> dict[str, Any]:
        timer = threading.Timer(timeout, self.kill)
        timer.daemon = True  # never keeps the harness alive after a Ctrl-C
        try:
            timer.start()  # inside try: a Ctrl-C landing in start() still cancels it
            line = self._stdout.readline()
        finally:
            timer.cancel()
        if not line:
            self.kill()
            self._pump.join(timeout)
            err = self._stderr.read().strip()[:500]
            self.close()
            raise TargetError(f"{where}: the stage runner did not start (no hello line within "
                              f"{timeout:g} s): {err}")
        hello: dict[str, Any] = json.loads(line)
        return hello

    def _run(self) -> None:
        try:
            while self._ws.is_open():
                self._ws.update(timeout=None)
                self._drain()
        except Exception:  # noqa: S110 - a dropped connection ends the stream like EOF
            pass
        finally:
            with contextlib.suppress(Exception):
                self._drain()
            close_stream(self._ws)
            for fd in (self._out_w, self._err_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _drain(self) -> None:
        out, err, status = (self._ws.read_channel(n) for n in (1, 2, 3))
        if out:
            with contextlib.suppress(OSError):
                _write_all(self._out_w, out)
        if err:
            with contextlib.suppress(OSError):
                os.write(self._err_w, err)
        self._status += status

    def status(self) -> dict[str, Any] | None:
        """Channel 3's v1 Status (exec), once the stream ended."""
        if self._pump.is_alive() or not self._status:
            return None
        with contextlib.suppress(ValueError):
            data: dict[str, Any] = json.loads(self._status)
            return data
        return None

    def poll(self) -> int | None:
        if self.returncode is None and not self._pump.is_alive():
            self.returncode = self._code(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._pump.join(timeout)
        if self._pump.is_alive():
            raise subprocess.TimeoutExpired("kubernetes attach", timeout or 0)
        if self.returncode is None:
            self.returncode = self._code(timeout if timeout is not None else 60)
        if self.returncode is None:
            raise subprocess.TimeoutExpired("kubernetes attach (pod status)", timeout or 0)
        return self.returncode

    def _code(self, wait: float) -> int | None:
        status = self.status()
        if status is not None:
            if status.get("status") == "Success":
                return 0
            causes = (status.get("details") or {}).get("causes") or []
            for cause in causes:
                if cause.get("reason") == "ExitCode":
                    return int(cause.get("message", -1))
        return self._exit_code(wait) if self._exit_code else -1

    def terminate(self) -> None:
        if self.signal_runner is not None:
            with contextlib.suppress(TargetError):
                self.signal_runner()
                return
        self.kill()

    def close(self) -> None:
        """Drop the stream and close our ends of the pipes (RunnerSession.close does the same)."""
        self.kill()
        for pipe in (self._stdout, self._stderr):
            with contextlib.suppress(OSError):
                pipe.close()

    def kill(self) -> None:
        """Drop the stream: the pump ends (readers see EOF); the kubelet closes the
        runner's stdin (stdinOnce), so it runs its armed cleanup and exits."""
        sock = self._ws.sock.sock if self._ws.sock is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        close_stream(self._ws)


def close_stream(ws: KubeStream) -> None:
    """Close the client's stream *and* its socket: after a close frame from the server,
    websocket-client's ``close()`` returns without closing the socket."""
    with contextlib.suppress(Exception):
        ws.close()
    if ws.sock is not None:
        with contextlib.suppress(Exception):
            ws.sock.shutdown()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
