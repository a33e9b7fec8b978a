"""Transports shared by sensors: a subprocess's stdout and an inotify file tail.

Both read in a daemon thread and hand each line to a callback; neither sleeps in
a poll loop (PLATFORM.md: inotify p50 0.1-0.3 ms vs 5 ms for a 10 ms poll loop).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from inotify_simple import INotify, flags

#: characters read at a time by FileTail
CHUNK = 1 << 18


class LineReader:
    """Reads a text pipe line by line in a thread (``select`` on text pipes strands lines)."""

    def __init__(self, pipe: IO[str], on_line: Callable[[str], None], on_eof: Callable[[], None],
                 name: str) -> None:
        self._pipe = pipe
        self._on_line = on_line
        self._on_eof = on_eof
        #: when the last line was read (epoch seconds; 0.0: none yet): the producer's sign of life
        self.last_line = 0.0
        #: when the output ended (the command exited or closed it); 0.0 while it runs
        self.ended_at = 0.0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        for line in self._pipe:
            self.last_line = time.time()
            self._on_line(line.rstrip("\n"))
        self.ended_at = time.time()
        self._on_eof()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class FileTail:
    """Follows a growing file from its current end (or ``offset``), woken by inotify.

    Follows rotation: when the file is renamed or replaced, the rest of the old file
    is read and the new file is opened from its start.
    """

    def __init__(self, path: Path, on_line: Callable[[str], None], name: str,
                 from_start: bool = False) -> None:
        self.path = path
        self._on_line = on_line
        #: when the tail started, and when it last read a line (epoch seconds; 0.0: none yet)
        self.started_at = time.time()
        self.last_line = 0.0
        self._stop = threading.Event()
        self._inotify = INotify()
        self._inotify.add_watch(str(path.parent), flags.CREATE | flags.MOVED_TO | flags.MODIFY)
        self._fh = self._open(from_start)
        self._partial: list[str] = []  # the last line read so far, in pieces
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _open(self, from_start: bool) -> IO[str] | None:
        try:
            fh = self.path.open(encoding="utf-8", errors="replace", newline="\n")
        except FileNotFoundError:
            return None
        if not from_start:
            fh.seek(0, os.SEEK_END)
        return fh

    def _drain(self) -> None:
        """Every complete line written so far, in order; read in chunks of ``CHUNK``
        characters (a large backlog is not held in memory twice over)."""
        if self._fh is None:
            return
        read, on_line = self._fh.read, self._on_line
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
                on_line(line)

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

    def _loop(self) -> None:
        import select

        while not self._stop.is_set():
            self._drain()
            if self._rotated():
                self._drain()
                if self._partial:  # the old file's last line had no newline: still a line
                    self.last_line = time.time()
                    self._on_line("".join(self._partial))
                if self._fh is not None:
                    self._fh.close()
                self._fh = self._open(from_start=True)
                self._partial = []
                continue
            ready, _, _ = select.select([self._inotify.fileno(), self._wake_r], [], [], 1.0)
            if self._inotify.fileno() in ready:
                self._inotify.read(timeout=0)
        self._drain()

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        if self._fh is not None:
            self._fh.close()
        self._inotify.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


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
