"""Falco HTTP receiver throughput on loopback: alerts/s with zero loss, against floors.

The receiver process (this one) is pinned to one CPU; the client runs in a subprocess pinned to
another CPU: an aiohttp ClientSession with ``--conns`` keep-alive connections, each posting
one Falco ``http_output`` alert per request (``Content-Type: application/json``, the recorded
release_agent alert of tests/data/falco/alerts.jsonl with a distinct ``proc.pid`` each).

Targets, interleaved per repetition, same client, same N:
- floor: a trivial aiohttp handler that returns 200 (same runner settings: no access log);
- floor: ``HttpReceiver`` with a no-op ``on_body`` (the receiver's HTTP machinery alone);
- ``FalcoSensor(listen="127.0.0.1:0")``: decode, normalise, push; zero loss is checked as
  every ``proc.pid`` sent present exactly once on the stream, lost = malformed = 0.

    .venv/bin/python benchmarks/bench_falco_webhook.py [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _results  # benchmarks/_results.py (scripts run from this folder)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TEMPLATE = REPO / "tests" / "data" / "falco" / "alerts.jsonl"
BEGIN = "<!-- bench_falco_webhook:begin -->"
END = "<!-- bench_falco_webhook:end -->"
TARGET_RATE = 10_000.0


def log(msg: str) -> None:
    print(f"[bench_falco_webhook] {msg}", file=sys.stderr, flush=True)


# =============================================================================================
# client (subprocess)
# =============================================================================================
def client_main(args: argparse.Namespace) -> int:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    template = json.loads(TEMPLATE.read_text(encoding="utf-8").splitlines()[0])
    total = args.warmup + args.n
    bodies = []
    for i in range(total):
        alert = {**template, "output_fields": {**template["output_fields"], "proc.pid": i}}
        bodies.append(json.dumps(alert, separators=(",", ":")).encode())
    run = _raw_client if args.client_kind == "raw" else _client
    result = asyncio.run(run(args.url, bodies, args.warmup, args.conns))
    print(json.dumps(result))
    return 0


class _KeepAlive(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection, one request in flight (no pipelining): writes a
    prebuilt request, reads the status line and Content-Length, then sends the next one."""

    def __init__(self, head: bytes, queue: list[bytes], statuses: dict[int, int],
                 lat: list[float]) -> None:
        self.head, self.queue, self.statuses, self.lat = head, queue, statuses, lat
        self.timed = False
        self.buf = b""
        self.t0 = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def run(self, timed: bool) -> asyncio.Future[None]:
        self.timed = timed
        self.done = asyncio.get_running_loop().create_future()
        self._send()
        return self.done

    def _send(self) -> None:
        if not self.queue:
            self.done.set_result(None)
            return
        body = self.queue.pop()
        assert self.transport is not None
        self.t0 = time.perf_counter()
        self.transport.write(self.head % len(body) + body)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        at = head.find(b"\r\ncontent-length:")
        length = int(head[at + 17:head.find(b"\r\n", at + 2)]) if at >= 0 else 0
        if len(self.buf) < end + 4 + length:
            return
        self.buf = self.buf[end + 4 + length:]
        status = int(head[9:12])
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if self.timed:
            self.lat.append(time.perf_counter() - self.t0)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("server closed the connection"))


async def _raw_client(url: str, bodies: list[bytes], warmup: int, conns: int) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n").encode()
    statuses: dict[int, int] = {}
    lat: list[float] = []
    loop = asyncio.get_running_loop()
    warm = list(reversed(bodies[:warmup]))
    protos: list[_KeepAlive] = []
    for _ in range(conns):
        _, proto = await loop.create_connection(
            lambda: _KeepAlive(head, warm, statuses, lat), host, port)
        protos.append(proto)
    await asyncio.gather(*(p.run(False) for p in protos))
    timed = list(reversed(bodies[warmup:]))
    for p in protos:
        p.queue = timed
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(p.run(True) for p in protos))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for p in protos:
        assert p.transport is not None
        p.transport.close()
    lat.sort()
    return {"elapsed": elapsed, "cpu": cpu, "statuses": {str(k): v for k, v in statuses.items()},
            "lat_p50_ms": lat[len(lat) // 2] * 1e3, "lat_p99_ms": lat[int(len(lat) * 0.99)] * 1e3}


async def _client(url: str, bodies: list[bytes], warmup: int, conns: int) -> dict[str, Any]:
    import aiohttp

    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=conns)
    statuses: dict[int, int] = {}
    lat: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(queue: list[bytes], timed: bool) -> None:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if timed:
                    lat.append(time.perf_counter() - t0)

        warm = list(reversed(bodies[:warmup]))
        await asyncio.gather(*(worker(warm, False) for _ in range(conns)))
        timed = list(reversed(bodies[warmup:]))
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(timed, True) for _ in range(conns)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    lat.sort()
    return {"elapsed": elapsed, "cpu": cpu, "statuses": {str(k): v for k, v in statuses.items()},
            "lat_p50_ms": lat[len(lat) // 2] * 1e3, "lat_p99_ms": lat[int(len(lat) * 0.99)] * 1e3}


# =============================================================================================
# servers (this process)
# =============================================================================================
class TrivialServer:
    """The floor: a plain aiohttp app whose POST handler reads the body and returns 200, in
    its own thread and loop (the receiver's runner settings: no access log)."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="floor-http")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        from aiohttp import web

        async def ok(request: web.Request) -> web.Response:
            await request.read()  # without it aiohttp drains the body itself, slower
            return web.Response()

        async def setup() -> web.AppRunner:
            app = web.Application(client_max_size=16 * 1024 * 1024)
            app.router.add_post("/", ok)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, self._sock, backlog=1024).start()
            return runner

        asyncio.set_event_loop(self._loop)
        runner = self._loop.run_until_complete(setup())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._sock.close()

    def check(self, sent: int) -> dict[str, Any]:
        return {}


class NoopReceiver:
    """Floor 2: HttpReceiver (the sensor's HTTP machinery) with an on_body that does nothing."""

    def __init__(self) -> None:
        from harness.sensors.falco import HttpReceiver

        self.receiver = HttpReceiver("127.0.0.1:0", lambda body: (1, 0), lambda line: None,
                                     "noop-http")

    @property
    def url(self) -> str:
        assert self.receiver.url is not None
        return self.receiver.url

    def start(self) -> None:
        self.receiver.start()

    def stop(self) -> None:
        self.receiver.stop()

    def check(self, sent: int) -> dict[str, Any]:
        return {}


class SensorTarget:
    """The real thing: FalcoSensor(listen=...) and its zero-loss check."""

    def __init__(self) -> None:
        from harness.sensors.falco import FalcoSensor

        self.sensor = FalcoSensor(listen="127.0.0.1:0")

    @property
    def url(self) -> str:
        assert self.sensor.url is not None
        return self.sensor.url

    def start(self) -> None:
        self.sensor.start()

    def stop(self) -> None:
        self.sensor.stop()

    def check(self, sent: int) -> dict[str, Any]:
        stream = self.sensor.stream
        seen, _ = stream.wait(0, lambda ds: len(ds) >= sent, None, time.time() + 10)
        pids = sorted(d.pid for d in seen if d.pid is not None)
        return {"received": len(seen), "exact": pids == list(range(sent)),
                "lost": stream.lost, "malformed": stream.malformed}


TARGETS: list[tuple[str, Callable[[], Any]]] = [
    ("floor: trivial aiohttp handler (reads body, 200)", TrivialServer),
    ("floor: HttpReceiver, no-op on_body", NoopReceiver),
    ("FalcoSensor(listen=...) receiver", SensorTarget),
]


def run_once(make: Callable[[], Any], args: argparse.Namespace, client_cpu: int | None,
             kind: str) -> dict[str, Any]:
    target = make()
    target.start()
    try:
        cmd = [sys.executable, __file__, "--client", target.url, "-n", str(args.n),
               "--warmup", str(args.warmup), "--conns", str(args.conns), "--client-kind", kind]
        if client_cpu is not None:
            cmd += ["--cpu", str(client_cpu)]
        gc_time = [0.0, 0.0, 0.0]  # seconds in collections of generation 0, 1, 2
        started: list[float] = []

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started.append(time.perf_counter())
            elif started:
                gc_time[info["generation"]] += time.perf_counter() - started.pop()

        gc.callbacks.append(on_gc)
        cpu0, t0 = time.process_time(), time.perf_counter()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        finally:
            gc.callbacks.remove(on_gc)
        server_cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        res.update(target.check(args.warmup + args.n))
    finally:
        target.stop()
        del target
        gc.collect()  # the sensor and its receiver hold each other: free this run's alerts now
    res["rate"] = args.n / res["elapsed"]
    # the server process is idle while the client builds its bodies; CPU per alert is the
    # server's whole-run CPU over everything it received (warm-up included)
    res["server_us_per_alert"] = server_cpu / (args.n + args.warmup) * 1e6
    res["gc_us_per_alert"] = sum(gc_time) / (args.n + args.warmup) * 1e6
    res["gc_full_us_per_alert"] = gc_time[2] / (args.n + args.warmup) * 1e6
    res["client_cpu_pct"] = 100.0 * res["cpu"] / res["elapsed"]
    res["wall"] = wall
    return res


# =============================================================================================
# report
# =============================================================================================
def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


CLIENTS = {
    "aiohttp": "aiohttp.ClientSession client",
    "raw": "lean asyncio keep-alive client",
}


def _rows(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> list[list[str]]:
    floor = statistics.median(r["rate"] for r in results[TARGETS[0][0]])
    rows = []
    for name, _ in TARGETS:
        rs = results[name]
        rate = statistics.median(r["rate"] for r in rs)
        statuses: dict[str, int] = {}
        for r in rs:
            for k, v in r["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        if "received" in rs[0]:
            ok = all(r["exact"] and r["lost"] == 0 and r["malformed"] == 0 for r in rs)
            loss = (f"{'0' if ok else '**LOSS**'} ({sum(r['received'] for r in rs):,}/"
                    f"{len(rs) * (args.n + args.warmup):,} pids, each once)")
        else:
            loss = "n/a"
        rows.append([
            name, f"**{rate:,.0f}**", " / ".join(f"{r['rate']:,.0f}" for r in rs),
            f"{rate / floor:.2f}x",
            f"{statistics.median(r['lat_p50_ms'] for r in rs):.2f} / "
            f"{statistics.median(r['lat_p99_ms'] for r in rs):.2f}",
            f"{statistics.median(r['server_us_per_alert'] for r in rs):.0f}",
            f"{statistics.median(r['gc_us_per_alert'] for r in rs):.0f} "
            f"({statistics.median(r['gc_full_us_per_alert'] for r in rs):.0f})",
            f"{statistics.median(r['client_cpu_pct'] for r in rs):.0f}%",
            ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items())), loss,
        ])
    return rows


def _machine() -> str:
    import aiohttp

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}, Python "
            f"{platform.python_version()}, aiohttp {aiohttp.__version__}")


def render(results: dict[str, dict[str, list[dict[str, Any]]]], args: argparse.Namespace,
           pinning: str, started: dt.datetime) -> str:
    exe = Path(sys.executable)
    exe_txt = str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else str(exe)
    header = ["target", "alerts/s (median)", "runs", "ratio to floor", "latency ms p50 / p99",
              "server CPU us/alert",
              "of which GC us/alert (full collections)", "client CPU", "HTTP statuses", "loss"]
    out = [
        BEGIN,
        "## Falco HTTP receiver (`benchmarks/bench_falco_webhook.py`)",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; machine: {_machine()}",
        f"- Command: `{exe_txt} benchmarks/bench_falco_webhook.py"
        f"{' --out ' + str(args.out) if args.out else ''}`; N={args.n:,} alerts per run (after "
        f"{args.warmup:,} warm-up), {args.conns} keep-alive connections, {args.reps} runs per "
        "target and client, interleaved; one alert per POST (the recorded release_agent alert, "
        "1.2 KB, distinct `proc.pid`), `Content-Type: application/json`",
        f"- CPUs: {pinning}",
        "- alerts/s = N / client wall time, first timed request to last response; latency = one "
        "request's round trip at the client; server CPU = the receiver process's CPU time over "
        "the run / alerts it received; client CPU near 100% means the client is the limit. "
        "Floor = a plain aiohttp app whose handler reads the body and returns 200 (the same "
        "client, the same run); a handler that does not read the body is slower in aiohttp "
        "3.14 (aiohttp drains it).",
        "- Clients: `aiohttp` = aiohttp.ClientSession (TCPConnector limit = connections); "
        "`raw` = asyncio protocol per keep-alive connection, one request in flight each (no "
        "pipelining), prebuilt request bytes: a lighter client, so the receiver is the limit.",
        "- GC = time in CPython's cyclic collector in the receiver process (gc.callbacks), "
        "full collections in brackets: the stream keeps every detection, so each full "
        "collection walks all alerts received so far (the p99 latency spikes).",
    ]
    summary = []
    for kind, label in CLIENTS.items():
        if kind not in results:
            continue
        res = results[kind]
        out += ["", f"### Client: {label} (`{kind}`)", "",
                table(header, _rows(res, args))]
        floor = statistics.median(r["rate"] for r in res[TARGETS[0][0]])
        rate = statistics.median(r["rate"] for r in res[TARGETS[-1][0]])
        zero = all(r["exact"] and r["lost"] == 0 and r["malformed"] == 0
                   for r in res[TARGETS[-1][0]])
        summary.append(
            f"- {label}: receiver {rate:,.0f} alerts/s, {'zero loss' if zero else '**LOSS**'}, "
            f"{rate / floor:.2f}x the trivial-handler floor ({floor:,.0f}/s); goal "
            f"{TARGET_RATE:,.0f}/s {'met' if rate >= TARGET_RATE else '**not met**'}.")
    out += ["", "### Summary (generated)", "", *summary, END]
    return "\n".join(out)


def write_section(path: Path, section: str) -> None:
    _results.write_section(path, section, BEGIN, END)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="replace this script's section of a markdown file")
    ap.add_argument("-n", type=int, default=50_000, help="timed alerts per run")
    ap.add_argument("--warmup", type=int, default=2_000, help="untimed alerts first")
    ap.add_argument("--conns", type=int, default=8, help="keep-alive connections")
    ap.add_argument("--reps", type=int, default=3, help="runs per target")
    ap.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--clients", choices=("aiohttp", "raw", "both"), default="both",
                    help="which client(s) to measure with")
    ap.add_argument("--client-kind", choices=("aiohttp", "raw"), default="aiohttp",
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        args.url = args.client
        return client_main(args)

    started = dt.datetime.now(dt.UTC)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[0]})  # before any server thread: they inherit it
        client_cpu: int | None = cpus[1]
        pinning = f"receiver process pinned to CPU {cpus[0]}, client process to CPU {cpus[1]}"
    else:
        client_cpu = None
        pinning = "**one CPU only: receiver and client share it (not pinned)**"
    kinds = list(CLIENTS) if args.clients == "both" else [args.clients]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        kind: {name: [] for name, _ in TARGETS} for kind in kinds}
    for rep in range(args.reps):
        for kind in kinds:
            for name, make in TARGETS:
                res = run_once(make, args, client_cpu, kind)
                results[kind][name].append(res)
                extra = {k: res[k] for k in ("received", "exact", "lost", "malformed") if k in res}
                log(f"rep {rep + 1}/{args.reps} [{kind}] {name}: {res['rate']:,.0f} alerts/s, "
                    f"server {res['server_us_per_alert']:.0f} us/alert (GC "
                    f"{res['gc_us_per_alert']:.0f}), {res['statuses']} {extra}")
    section = render(results, args, pinning, started)
    print(section)
    if args.out:
        write_section(args.out, section)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
