"""Transports shared by sensors: a subprocess's stdout, an inotify file tail, and an HTTP
receiver (aiohttp in a thread of its own) for products that POST their alerts.

The two readers work in a daemon thread and hand each line to a callback; neither sleeps in
a poll loop (PLATFORM.md: inotify p50 0.1-0.3 ms vs 5 ms for a 10 ms poll loop).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from inotify_simple import INotify, flags

from harness.core.errors import ConfigError, SensorError
from harness.sensors.rates import PeakRate

if TYPE_CHECKING:
    from aiohttp import web

#: largest HTTP request body the receiver takes (a larger one is answered 413)
MAX_BODY = 16 * 1024 * 1024

#: characters read at a time by FileTail
CHUNK = 1 << 18


class Delivery:
    """How a reader hands lines on, and what it does when one goes wrong. A line whose
    callback raises is that line's problem: it goes to ``on_bad_line`` (a sensor counts it
    malformed) and the reader reads on — one hostile line never blinds a sensor. A reader
    that cannot go on at all (its file or pipe failed) says why through ``on_failure`` (a
    sensor closes its stream: SENSOR_DOWN with the reason, never MISSED)."""

    def __init__(self, name: str, on_line: Callable[[str], None],
                 on_bad_line: Callable[[str], None] | None,
                 on_failure: Callable[[str], None] | None) -> None:
        self.name = name
        self.on_line = on_line
        self.on_bad_line = on_bad_line
        self.on_failure = on_failure
        #: lines whose callback raised, and the last such error (for a sensor's reason)
        self.bad_lines = 0
        self.last_error: str | None = None
        #: why the reader stopped early (None while it runs or after a normal end)
        self.failed: str | None = None

    def deliver(self, line: str) -> None:
        try:
            self.on_line(line)
        except Exception as exc:  # a bad line must never kill the reader thread
            self.bad_lines += 1
            self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            if self.on_bad_line is not None:
                self.on_bad_line(line)

    def fail(self, exc: BaseException) -> None:
        self.failed = f"{self.name}: the reader stopped: {type(exc).__name__}: {str(exc)[:300]}"
        if self.on_failure is not None:
            self.on_failure(self.failed)


class LineReader:
    """Reads a text pipe line by line in a thread (``select`` on text pipes strands lines);
    lines and failures are handed on as :class:`Delivery` says."""

    def __init__(self, pipe: IO[str], on_line: Callable[[str], None], on_eof: Callable[[], None],
                 name: str, *, on_bad_line: Callable[[str], None] | None = None,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self._pipe = pipe
        self.delivery = Delivery(name, on_line, on_bad_line, on_failure)
        self._on_eof = on_eof
        #: when the last line was read (epoch seconds; 0.0: none yet): the producer's sign of life
        self.last_line = 0.0
        #: when the output ended (the command exited or closed it); 0.0 while it runs
        self.ended_at = 0.0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        deliver = self.delivery.deliver
        try:
            for line in self._pipe:
                self.last_line = time.time()
                deliver(line.rstrip("\n"))
        except Exception as exc:  # the pipe itself failed: say so, never end silently
            self.delivery.fail(exc)
        self.ended_at = time.time()
        self._on_eof()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class FileTail:
    """Follows a growing file from its current end (or its start), woken by inotify.

    Follows rotation without skipping: when the file is renamed or replaced, the rest of
    the old file is read, then every file rotated out *after* it while the tail was behind
    (siblings named ``<name>.N`` or ``<stem>-<anything><suffix>[.gz]``, as auditd and
    lumberjack-style writers such as Tetragon's export name them, by inode and in order of
    modification), then the new file from its start. A rotated file it cannot read is
    counted lost (``on_lost``), so a row whose window it covers is SENSOR_DOWN, never MISSED.
    So is a generation removed before the tail got to it (a writer keeping fewer rotated
    files than the tail lags behind): every file created at the path is counted (inotify
    CREATE/MOVED_TO, a watch of its own that sees nothing else), and once the tail stands
    at the path's current file, generations created but never read are lost ones.
    Lines and failures are handed on as :class:`Delivery` says.
    """

    def __init__(self, path: Path, on_line: Callable[[str], None], name: str,
                 from_start: bool = False, *, on_bad_line: Callable[[str], None] | None = None,
                 on_failure: Callable[[str], None] | None = None,
                 on_lost: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.delivery = Delivery(name, on_line, on_bad_line, on_failure)
        self._on_lost = on_lost
        #: when the tail started, and when it last read a line (epoch seconds; 0.0: none yet)
        self.started_at = time.time()
        self.last_line = 0.0
        #: rotated files read in full while catching up, and those that could not be read
        self.caught_up: list[str] = []
        self.unreadable: list[str] = []
        self._stop = threading.Event()
        self._inotify = INotify()
        self._inotify.add_watch(str(path.parent), flags.CREATE | flags.MOVED_TO | flags.MODIFY)
        # files created at the path (rare events: this queue cannot overflow as MODIFY can)
        self._births = INotify()
        self._births.add_watch(str(path.parent), flags.CREATE | flags.MOVED_TO)
        self._born = 0  # generations created at the path since the tail started
        self._read = 0  # generations read (or counted unreadable) since it started
        self._skipped_gens = 0  # generations found missing so far
        #: bytes written to the path's generations since the tail started, and the peak
        #: rate they were written at (per second, over at least half a second; read from
        #: the files' sizes, not from how fast the tail read them): what the producer's
        #: rotation is sized from
        self._done = 0  # bytes written to the generations finished
        self._base = 0  # the size of the current file when the tail opened it
        self.rate = PeakRate()
        self._seen: set[int] = set()  # inodes read (or being read): never read twice
        self._opened_at = time.time()
        self._fh = self._open(from_start)
        self._read = 0  # the file there at start is not one created since
        self._born = 0
        self._partial: list[str] = []  # the last line read so far, in pieces
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def written(self) -> int:
        """Bytes written to the path's generations since the tail started (so far as read)."""
        fh = self._fh
        try:
            grown = os.fstat(fh.fileno()).st_size - self._base if fh is not None else 0
        except (OSError, ValueError):  # closed meanwhile
            grown = 0
        return self._done + grown

    def _open(self, from_start: bool) -> IO[str] | None:
        self._opened_at = time.time()
        try:
            fh = self.path.open(encoding="utf-8", errors="replace", newline="\n")
        except FileNotFoundError:
            return None
        st = os.fstat(fh.fileno())
        self._seen.add(st.st_ino)
        self._read += 1
        self._base = 0 if from_start else st.st_size
        if not from_start:
            fh.seek(0, os.SEEK_END)
        return fh

    def _drain(self) -> None:
        if self._fh is not None:
            self._drain_file(self._fh)

    def _drain_file(self, fh: IO[str]) -> None:
        """Every complete line written so far, in order; read in chunks of ``CHUNK``
        characters (a large backlog is not held in memory twice over)."""
        read, deliver = fh.read, self.delivery.deliver
        partial = self._partial
        while chunk := read(CHUNK):
            if "\n" not in chunk:  # a long line in pieces: joined once it ends
                partial.append(chunk)
                continue
            lines = chunk.split("\n")
            if partial:
                partial.append(lines[0])
                lines[0] = "".join(partial)
                partial.clear()
            if lines[-1]:
                partial.append(lines[-1])
            del lines[-1]
            if lines:
                self.last_line = time.time()  # once a chunk: the producer wrote something
            for line in lines:
                deliver(line)

    def _end_of_file(self) -> None:
        """The file ended: its last line without a newline is still a line."""
        if self._partial:
            self.last_line = time.time()
            self.delivery.deliver("".join(self._partial))
            self._partial = []

    def _rotated(self) -> bool:
        """Renamed/replaced (another inode at the path) or truncated in place (shorter than
        what was read): either way, read the new content from its start."""
        if self._fh is None:
            return self.path.exists()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if st.st_ino != os.fstat(self._fh.fileno()).st_ino:
            return True
        return st.st_size < self._fh.tell()

    def _is_sibling(self, name: str) -> bool:
        p = self.path
        if name == p.name:
            return False
        if name.startswith(p.name + "."):  # audit.log.1, app.log.2.gz
            return True
        rest = name.removesuffix(".gz")
        return bool(p.suffix) and rest.startswith(p.stem + "-") and rest.endswith(p.suffix)

    def _skipped(self) -> list[Path]:
        """Files rotated out after the one just finished, while the tail was behind:
        siblings not read yet, modified since that file was opened, oldest first."""
        found: list[tuple[float, str, Path]] = []
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return []
        for entry in entries:
            if not self._is_sibling(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not entry.is_file(follow_symlinks=False) or st.st_ino in self._seen:
                continue
            if st.st_mtime < self._opened_at - 1.0:
                continue  # rotated out before this tail followed that generation
            found.append((st.st_mtime, entry.name, Path(entry.path)))
        return [p for _, _, p in sorted(found)]

    def _catch_up(self) -> None:
        for rotated in self._skipped():
            try:
                with _open_text(rotated) as fh:
                    st = os.stat(rotated)
                    self._seen.add(st.st_ino)
                    self._done += st.st_size
                    self._drain_file(fh)
                    self._end_of_file()
            except (OSError, EOFError) as exc:  # gone, or compressed while we read it
                self._read += 1
                self.unreadable.append(f"{rotated}: {exc}")
                if self._on_lost is not None:
                    self._on_lost(1)  # at least one event: its windows cannot prove a miss
                continue
            self._read += 1
            self.caught_up.append(str(rotated))

    def _count_generations(self) -> None:
        """Generations created at the path but never read, once the tail stands at the
        current one: counted lost (at least one event each). The births are read *before*
        the path is checked, so every birth counted is of the current file or older."""
        name = self.path.name
        self._born += sum(1 for e in self._births.read(timeout=0) if e.name == name)
        now = time.monotonic()
        accounted = self._born <= self._read + self._skipped_gens
        if self._fh is None or (accounted and not self.rate.due(now)):
            return  # nothing to count nor to measure: no stat on every wake-up
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            return
        st = os.fstat(self._fh.fileno())
        if current != st.st_ino:
            return  # a rotation the loop has not followed yet
        self.rate.observe(now, self._done + st.st_size - self._base)
        missing = self._born - self._read - self._skipped_gens
        if missing > 0:
            self._skipped_gens += missing
            self.unreadable.append(f"{missing} generation(s) of {self.path} were rotated out "
                                   "and removed before the tail read them")
            if self._on_lost is not None:
                self._on_lost(missing)

    def _loop(self) -> None:
        import select

        try:
            while not self._stop.is_set():
                self._drain()
                if self._rotated():
                    self._drain()
                    self._end_of_file()
                    if self._fh is not None:
                        self._done += os.fstat(self._fh.fileno()).st_size - self._base
                        self._fh.close()
                        self._catch_up()
                    self._fh = self._open(from_start=True)
                    continue
                self._count_generations()
                ready, _, _ = select.select([self._inotify.fileno(), self._wake_r], [], [], 1.0)
                if self._inotify.fileno() in ready:
                    self._inotify.read(timeout=0)
            self._drain()
        except Exception as exc:  # the file or inotify failed: say so, never stop silently
            self.delivery.fail(exc)

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        if self._fh is not None:
            self._fh.close()
        self._inotify.close()
        self._births.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _open_text(path: Path) -> IO[str]:
    """A rotated log file as text (gzip-compressed when its name ends in .gz)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="\n")
    return path.open(encoding="utf-8", errors="replace", newline="\n")


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds, to about 10 ms plus the second
    ``btime`` rounds to); None when it does not run (or is a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    fields = stat.rpartition(")")[2].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"listen = {listen!r}: expected 'HOST:PORT' (e.g. '127.0.0.1:2801'; port 0 picks a "
            "free port)"
        )
    return host, int(port)


# ---------------------------------------------------------------- HTTP server thread
def listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port`` (port 0: a free one), bound in
    the caller's thread so that a taken port is reported there (OSError)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


class ServerThread:
    """An aiohttp application served on a listening socket from a daemon thread with its
    own event loop: the one lifecycle of the HTTP receiver and of the test suite's fake
    product APIs (tests/servers). ``build_app`` is called in that thread, inside its loop.

    ``start(sock)`` returns once the application serves (or raises SensorError with why it
    could not); ``stop()`` stops accepting, finishes the requests in flight (at most
    ``shutdown_timeout`` seconds), closes the connections and the socket, joins the thread."""

    def __init__(self, name: str, build_app: Callable[[], web.Application],
                 shutdown_timeout: float = 5.0, what: str = "HTTP server") -> None:
        self.name = name
        self.what = what
        self.build_app = build_app
        self.shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def started(self) -> bool:
        """``start`` ran and ``stop`` has not yet."""
        return self._thread is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set()

    def start(self, sock: socket.socket) -> None:
        if self._thread is not None:
            raise SensorError(f"{self.name}: already started")
        self._ready.clear()
        self._error = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(self._loop, sock),
                                        name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            self._error = TimeoutError("the server thread did not start within 30 s")
        if self._error is not None:
            self._thread.join(5)
            self._thread = None
            self._loop = None
            sock.close()
            raise SensorError(f"{self.name}: {self.what} failed to start: {self._error!r}")

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(self.shutdown_timeout + 5)
        self._thread = None
        self._loop = None
        self._ready.clear()

    def _run(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        asyncio.set_event_loop(loop)
        try:
            runner = loop.run_until_complete(self._setup(sock))
        except Exception as exc:  # reported to start(), in the caller's thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())  # waits for the requests in flight
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            sock.close()
            loop.close()

    async def _setup(self, sock: socket.socket) -> web.AppRunner:
        from aiohttp import web

        runner = web.AppRunner(self.build_app(), access_log=None,
                               shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
        return runner


# ---------------------------------------------------------------- HTTP receiver
class HttpReceiver:
    """An aiohttp server (``ServerThread``) for products that POST their alerts.

    POST/PUT on any path: ``on_body(body) -> (accepted, malformed)``; 200 when nothing was
    malformed, else 400 with the counts (the accepted records are on the stream either way).
    ``GET /healthz``: 200 ``{"status": "ok"}`` (as Falcosidekick answers). Bodies up to
    ``max_body`` bytes; a larger one is answered 413 and counted malformed.
    """

    def __init__(self, listen: str, on_body: Callable[[bytes], tuple[int, int]],
                 on_malformed: Callable[[str], None], name: str = "http",
                 max_body: int = MAX_BODY, shutdown_timeout: float = 5.0) -> None:
        self.host, self.want_port = _split_listen(listen)
        self.listen = listen
        self.on_body = on_body
        self.on_malformed = on_malformed
        self.name = name
        self.max_body = max_body
        self.port: int | None = None
        #: when the receiver started, and when the last request with a body came in (epoch
        #: seconds; 0.0: none yet): the producer's sign of life
        self.started_at = 0.0
        self.last_post = 0.0
        self._server = ServerThread(name, self._app, shutdown_timeout, "HTTP receiver")

    @property
    def url(self) -> str | None:
        if self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._server.running

    def start(self) -> None:
        """Bind, start serving; return once the socket is listening."""
        if self._server.started:
            raise SensorError(f"{self.name}: already started")
        try:
            import aiohttp  # noqa: F401 - fail here, in the caller's thread, when it is missing
        except ImportError as exc:  # pragma: no cover - aiohttp ships with the test extra
            raise SensorError(f"{self.name}: the HTTP receiver needs aiohttp "
                              "(pip install aiohttp)") from exc
        try:
            sock = listen(self.host, self.want_port)
        except OSError as exc:
            raise SensorError(f"{self.name}: cannot listen on {self.listen}: {exc}") from exc
        self.port = int(sock.getsockname()[1])
        self.started_at = time.time()
        self._server.start(sock)

    def stop(self) -> None:
        """Stop listening, finish the requests in flight (each one answered 200 was already
        pushed), close the connections and the socket, join the thread."""
        self._server.stop()

    def _app(self) -> web.Application:
        from aiohttp import web

        on_body, on_malformed, max_body = self.on_body, self.on_malformed, self.max_body
        receiver = self

        async def healthz(request: web.Request) -> web.StreamResponse:
            return web.json_response({"status": "ok"})

        async def post(request: web.Request) -> web.StreamResponse:
            receiver.last_post = time.time()  # even a bad body: someone is posting
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                on_malformed(f"{request.method} {request.path}: body larger than {max_body} "
                             f"bytes (Content-Length {request.content_length})")
                raise
            accepted, malformed = on_body(body)
            if malformed:
                return web.json_response({"accepted": accepted, "malformed": malformed},
                                         status=400)
            return web.Response()

        app = web.Application(client_max_size=max_body)
        app.router.add_get("/healthz", healthz)
        app.router.add_route("POST", "/{tail:.*}", post)
        app.router.add_route("PUT", "/{tail:.*}", post)
        return app
