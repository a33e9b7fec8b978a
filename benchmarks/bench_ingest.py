#!/usr/bin/env python3
"""File-tail ingest + normalise rate of the Tetragon and Falco sensors, against a msgspec
typed-decode floor of the same file measured in the same run, on one core.

    .venv/bin/python benchmarks/bench_ingest.py [--out benchmarks/RESULTS.md]

Files (generated in a temp dir, from the recorded lines of tests/data):

- Tetragon export (one ``GetEventsResponse`` a line): mostly ``process_exec`` /
  ``process_exit``, some ``process_kprobe`` / ``process_tracepoint`` carrying a
  ``policy_name`` (the detections); 60 % of the processes in a Kubernetes pod (full ``pod``
  object with container and image), distinct pids, exec ids and times.
- Falco alerts (``json_output``): the 7 recorded alerts of alerts.jsonl with distinct pids and
  times, plus about 1 % ``Falco internal: syscall event drop`` alerts (lost events, not
  detections).

Measured, per product, ``--reps`` times interleaved (median reported), the process pinned to
one CPU (``os.sched_setaffinity``; threads started later inherit it):

- floor: ``msgspec.json.Decoder(<typed Structs of the documented schema>)`` decoding every line
  of the file, read in 1 MiB binary chunks split on newlines as a consumer would;
- ours, end to end: the real sensor with ``path=<file>, from_start=True``: subscribe, then
  ``start()`` (FileTail, inotify), then ``Subscription.wait`` until every expected detection is
  on the stream; rate = lines / (start -> wait returns); lost/malformed must be as expected;
- ours, ``on_line`` only: the file's lines (read and split beforehand, as ``FileTail`` hands
  them over) passed to ``sensor.on_line`` one by one: parsing alone, no file reading.

Stdlib + the project's own dependencies only.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _results  # benchmarks/_results.py (scripts run from this folder)
import msgspec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BEGIN = "<!-- bench_ingest:begin -->"
END = "<!-- bench_ingest:end -->"
GOAL = 0.5
CHUNK = 1 << 20
TETRAGON_DATA = REPO / "tests" / "data" / "tetragon"
FALCO_DATA = REPO / "tests" / "data" / "falco"


def log(msg: str) -> None:
    print(f"[bench_ingest] {msg}", file=sys.stderr, flush=True)


# =============================================================================================
# floors: typed Structs of the documented schemas (what a typical consumer decodes)
# =============================================================================================
class Image(msgspec.Struct):
    id: str = ""
    name: str = ""


class Container(msgspec.Struct):
    id: str = ""
    name: str = ""
    image: Image | None = None
    start_time: str = ""
    pid: int | None = None
    maybe_exec_probe: bool = False


class Pod(msgspec.Struct):
    namespace: str = ""
    name: str = ""
    container: Container | None = None
    pod_labels: dict[str, str] = {}
    workload: str = ""
    workload_kind: str = ""


class Process(msgspec.Struct):
    exec_id: str = ""
    pid: int | None = None
    uid: int | None = None
    cwd: str = ""
    binary: str = ""
    arguments: str = ""
    flags: str = ""
    start_time: str = ""
    auid: int | None = None
    pod: Pod | None = None
    docker: str = ""
    parent_exec_id: str = ""
    refcnt: int = 0
    tid: int | None = None
    in_init_tree: bool = False


class ProcessExec(msgspec.Struct):
    process: Process | None = None
    parent: Process | None = None
    ancestors: list[Process] = []


class ProcessExit(msgspec.Struct):
    process: Process | None = None
    parent: Process | None = None
    signal: str = ""
    status: int = 0
    time: str = ""
    ancestors: list[Process] = []


class ProcessKprobe(msgspec.Struct):
    process: Process | None = None
    parent: Process | None = None
    function_name: str = ""
    args: list[dict[str, Any]] | None = None
    return_: dict[str, Any] | None = msgspec.field(default=None, name="return")
    action: str = ""
    policy_name: str = ""
    return_action: str = ""
    message: str = ""
    tags: list[str] | None = None
    ancestors: list[Process] = []


class ProcessTracepoint(msgspec.Struct):
    process: Process | None = None
    parent: Process | None = None
    subsys: str = ""
    event: str = ""
    args: list[dict[str, Any]] | None = None
    policy_name: str = ""
    action: str = ""
    message: str = ""
    tags: list[str] | None = None
    ancestors: list[Process] = []


class RateLimitInfo(msgspec.Struct):
    number_of_dropped_process_events: int | str = 0


class GetEventsResponse(msgspec.Struct):
    process_exec: ProcessExec | None = None
    process_exit: ProcessExit | None = None
    process_kprobe: ProcessKprobe | None = None
    process_tracepoint: ProcessTracepoint | None = None
    process_lsm: ProcessKprobe | None = None
    process_uprobe: ProcessKprobe | None = None
    rate_limit_info: RateLimitInfo | None = None
    node_name: str = ""
    time: str = ""
    cluster_name: str = ""


class FalcoAlert(msgspec.Struct):
    time: str = ""
    rule: str = ""
    priority: str = ""
    output: str = ""
    source: str = ""
    hostname: str = ""
    tags: list[str] | None = None
    output_fields: dict[str, Any] | None = None


def floor_decode(path: Path, decoder: msgspec.json.Decoder[Any]) -> int:
    """Read ``path`` in binary chunks, split on newlines, decode every line; returns lines."""
    decode = decoder.decode
    n = 0
    partial = b""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for line in lines:
                if line:
                    decode(line)
                    n += 1
    if partial:
        decode(partial)
        n += 1
    return n


# =============================================================================================
# realistic files
# =============================================================================================
def _load(path: Path) -> list[dict[str, Any]]:
    """The file's well-formed JSON objects (edge/malformed files also hold broken lines)."""
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if isinstance(raw, dict):
            out.append(raw)
    return out


def _rfc3339(t: float) -> str:
    sec = int(t)
    ns = round((t - sec) * 1e9) % 1_000_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{ns:09d}Z"


def _exec_id(node: str, ktime: int, pid: int) -> str:
    return base64.b64encode(f"{node}:{ktime}:{pid}".encode()).decode()


class _TetragonLines:
    """Export lines from the recorded ones: ~42 % exec, ~42 % exit, ~10 % kprobe, ~6 %
    tracepoint; hook events carry a policy_name; 60 % of the processes in a pod."""

    POLICIES = ("harness-observe", "cgroup-release-agent", "block-ptrace-attach",
                "file-monitoring", "privileged-exec", "namespace-changes")

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        export = _load(TETRAGON_DATA / "export.jsonl")
        edge = _load(TETRAGON_DATA / "edge.jsonl")
        self.exec_t = next(r for r in export if "process_exec" in r)
        self.exit_t = next(r for r in export if "process_exit" in r)
        self.tps = [r for r in export if "process_tracepoint" in r]
        self.kps = [edge[0], edge[1]]  # full pod + ancestors; host process with SIGKILL
        self.pod_t = edge[0]["process_kprobe"]["process"]["pod"]
        self.workloads = [f"svc-{i}-{self.rng.randrange(16**6):06x}" for i in range(40)]

    def pick(self, i: int) -> tuple[str, dict[str, Any]]:
        r = self.rng.random()
        if r < 0.42:
            return "process_exec", self.exec_t
        if r < 0.84:
            return "process_exit", self.exit_t
        if r < 0.94:
            return "process_kprobe", self.kps[i % 2]
        return "process_tracepoint", self.tps[i % len(self.tps)]

    def pod(self) -> tuple[dict[str, Any], str]:
        rng = self.rng
        pod = copy.deepcopy(self.pod_t)
        wl = self.workloads[rng.randrange(len(self.workloads))]
        cid = f"{rng.getrandbits(256):064x}"
        pod.update(name=f"{wl}-{rng.randrange(16**5):05x}", namespace="team-" + wl[4:6],
                   workload=wl, pod_labels={"app": wl, "tier": "backend",
                                            "pod-template-hash": wl[-6:],
                                            "app.kubernetes.io/part-of": "shop"})
        pod["container"].update(id="containerd://" + cid, pid=1 + rng.randrange(200),
                                name=wl.split("-")[0])
        return pod, cid

    def line(self, i: int) -> tuple[str, str]:
        rng = self.rng
        kind, tmpl = self.pick(i)
        raw = copy.deepcopy(tmpl)
        ev = raw[kind]
        t = 1_795_000_000.0 + i * 0.0004 + rng.random() * 0.0003
        pid = 2000 + (i * 7919) % 4_000_000
        ppid = max(2, pid - 1 - rng.randrange(50))
        ktime = int(t * 1e9) - 123_456_789
        node = "node-" + str(i % 3)
        proc = ev.get("process") or {}
        proc.update(pid=pid, tid=pid, exec_id=_exec_id(node, ktime, pid),
                    parent_exec_id=_exec_id(node, ktime - 9_000_000, ppid),
                    start_time=_rfc3339(t - 0.002))
        proc.pop("pod", None)
        proc.pop("docker", None)
        parent = ev.get("parent")
        if isinstance(parent, dict):
            parent.update(pid=ppid, tid=ppid, exec_id=proc["parent_exec_id"],
                          start_time=_rfc3339(t - 0.01))
            parent.pop("pod", None)
        if rng.random() < 0.6:  # a process in a Kubernetes pod (process and parent)
            pod, cid = self.pod()
            proc["pod"] = pod
            proc["docker"] = cid[:15]
            if isinstance(parent, dict):
                parent["pod"] = pod
        if kind in ("process_kprobe", "process_tracepoint"):
            ev["policy_name"] = self.POLICIES[rng.randrange(len(self.POLICIES))]
        if kind == "process_exit":
            ev["time"] = _rfc3339(t)
            if rng.random() < 0.05:
                ev["signal"] = "SIGKILL"
        raw["node_name"] = node
        raw["time"] = _rfc3339(t)
        return kind, json.dumps(raw, separators=(",", ":")) + "\n"


def tetragon_file(path: Path, n: int, seed: int = 7) -> dict[str, Any]:
    """``n`` export lines (see _TetragonLines). Returns counts and sizes."""
    gen = _TetragonLines(seed)
    kinds = {"process_exec": 0, "process_exit": 0, "process_kprobe": 0, "process_tracepoint": 0}
    size = 0
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            kind, line = gen.line(i)
            size += len(line.encode())
            kinds[kind] += 1
            fh.write(line)
    detections = kinds["process_kprobe"] + kinds["process_tracepoint"]
    return {"lines": n, "bytes": size, "detections": detections, "kinds": kinds, "lost": 0}


def falco_file(path: Path, n: int, seed: int = 11) -> dict[str, Any]:
    """``n`` alert lines: the recorded alerts with distinct pids/times; ~1 % drop alerts."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    alerts = _load(FALCO_DATA / "alerts.jsonl")
    drop_t = _load(FALCO_DATA / "drops.jsonl")[0]
    t0 = 1_762_178_531.0
    size = detections = lost = 0
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            t = t0 + i * 0.0005 + rng.random() * 0.0004
            ns = int(t * 1e9)
            if rng.random() < 0.01:
                raw = copy.deepcopy(drop_t)
                k = 1 + rng.randrange(20)
                raw["output_fields"]["n_drops"] = str(k)
                lost += k
            else:
                raw = copy.deepcopy(alerts[i % len(alerts)])
                of = raw["output_fields"]
                pid = 2000 + (i * 7919) % 4_000_000
                if "proc.pid" in of:
                    of["proc.pid"] = pid
                    of["proc.ppid"] = max(2, pid - 1 - rng.randrange(50))
                of["evt.time"] = ns
                detections += 1
            raw["time"] = _rfc3339(ns / 1e9)
            line = json.dumps(raw, separators=(",", ":")) + "\n"
            size += len(line.encode())
            fh.write(line)
    return {"lines": n, "bytes": size, "detections": detections, "lost": lost}


# =============================================================================================
# measurements
# =============================================================================================
class _GcTimer:
    """Time spent in CPython's cyclic collector while active (gc.callbacks)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.full = 0
        self._t = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._t
            self.full += info.get("generation") == 2

    def __enter__(self) -> _GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def _settle() -> None:
    gc.collect()


def measure_floor(path: Path, decoder: msgspec.json.Decoder[Any], lines: int) -> dict[str, Any]:
    _settle()
    with _GcTimer() as g:
        t0 = time.perf_counter()
        n = floor_decode(path, decoder)
        elapsed = time.perf_counter() - t0
    assert n == lines, (n, lines)
    return {"elapsed": elapsed, "rate": lines / elapsed, "gc": g.total, "gc_full": g.full}


def measure_tail(make: Callable[[str], Any], path: Path, info: dict[str, Any]) -> dict[str, Any]:
    """The real sensor tailing ``path`` from its start until every detection is pushed."""
    sensor = make(str(path))
    expected = info["detections"]
    _settle()
    sub = sensor.stream.subscribe()
    with _GcTimer() as g:
        t0 = time.perf_counter()
        sensor.start()
        try:
            seen, _ = sub.wait(lambda ds: len(ds) >= expected, None, time.time() + 600)
            elapsed = time.perf_counter() - t0
        finally:
            sensor.stop()
    got = len(seen)
    res = {"elapsed": elapsed, "rate": info["lines"] / elapsed, "det_rate": got / elapsed,
           "detections": got, "malformed": sub.malformed(), "lost": sub.lost(),
           "gc": g.total, "gc_full": g.full}
    del seen, sensor, sub
    return res


def measure_on_line(make: Callable[[str], Any], path: Path, info: dict[str, Any]) -> dict[str, Any]:
    """``sensor.on_line`` for each line already read: parsing and normalising alone."""
    lines = _text_lines(path)  # untimed; released before the next measurement
    assert len(lines) == info["lines"]
    sensor = make(str(path))
    on_line = sensor.on_line
    _settle()
    with _GcTimer() as g:
        t0 = time.perf_counter()
        for line in lines:
            on_line(line)
        elapsed = time.perf_counter() - t0
    got = len(sensor.stream.snapshot())
    res = {"elapsed": elapsed, "rate": len(lines) / elapsed, "det_rate": got / elapsed,
           "detections": got, "malformed": sensor.stream.malformed, "lost": sensor.stream.lost,
           "gc": g.total, "gc_full": g.full}
    del sensor, lines
    return res


def _text_lines(path: Path) -> list[str]:
    """The lines as FileTail hands them over (UTF-8, errors replaced, newline stripped)."""
    data = path.read_bytes().decode("utf-8", errors="replace")
    return data.split("\n")[:-1]


def run_product(name: str, path: Path, info: dict[str, Any], decoder: msgspec.json.Decoder[Any],
                make: Callable[[str], Any], reps: int) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {"floor": [], "tail": [], "on_line": []}
    floor_decode(path, decoder)  # warm the page cache and the decoder
    for rep in range(reps):
        out["floor"].append(measure_floor(path, decoder, info["lines"]))
        out["tail"].append(measure_tail(make, path, info))
        out["on_line"].append(measure_on_line(make, path, info))
        log(f"{name} rep {rep + 1}/{reps}: floor {out['floor'][-1]['rate']:,.0f}/s, tail "
            f"{out['tail'][-1]['rate']:,.0f}/s, on_line {out['on_line'][-1]['rate']:,.0f}/s")
    for kind in ("tail", "on_line"):
        for r in out[kind]:
            if r["detections"] != info["detections"] or r["malformed"] != 0 or (
                    r["lost"] != info["lost"]):
                raise SystemExit(f"{name} {kind}: detections {r['detections']} (expected "
                                 f"{info['detections']}), malformed {r['malformed']} (expected 0), "
                                 f"lost {r['lost']} (expected {info['lost']})")
    return out


def tetragon_sensor(path: str) -> Any:
    from harness.sensors.tetragon import TetragonSensor

    return TetragonSensor(path=path, from_start=True)


def falco_sensor(path: str) -> Any:
    from harness.sensors.falco import FalcoSensor

    return FalcoSensor(path=path, from_start=True)


# =============================================================================================
# report
# =============================================================================================
def med(rs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rs)


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}, Python "
            f"{platform.python_version()}, msgspec {msgspec.__version__}")


def render(results: dict[str, dict[str, Any]], infos: dict[str, dict[str, Any]],
           args: argparse.Namespace, cpu: int, started: dt.datetime) -> str:
    exe = Path(sys.executable)
    exe_txt = str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else str(exe)
    rows = []
    summary = []
    for name, res in results.items():
        info = infos[name]
        floor = med(res["floor"], "rate")
        for kind, label in (("floor", "floor: msgspec typed decode (binary chunks)"),
                            ("tail", "ours: FileTail -> on_line -> normalise -> stream"),
                            ("on_line", "ours: on_line only (lines pre-read)")):
            rs = res[kind]
            rate = med(rs, "rate")
            det = "-" if kind == "floor" else f"{med(rs, 'det_rate'):,.0f}"
            no_gc = statistics.median(info["lines"] / (r["elapsed"] - r["gc"]) for r in rs)
            rows.append([name, label, f"{rate:,.0f}", f"**{rate / floor:.2f}**", det,
                         f"{med(rs, 'elapsed') * 1000:,.0f}", f"{1e6 / rate:.2f}",
                         f"{med(rs, 'gc') * 1000:,.0f} "
                         f"({statistics.median(r['gc_full'] for r in rs):.0f})",
                         f"{no_gc / floor:.2f}"])
        tail = med(res["tail"], "rate")
        ratio = tail / floor
        summary.append(
            f"- {name}: file-tail ingest + normalise {tail:,.0f} lines/s "
            f"({med(res['tail'], 'det_rate'):,.0f} detections/s) = **{ratio:.2f}x** the typed "
            f"decode floor ({floor:,.0f} lines/s); goal >= {GOAL}: "
            f"{'met' if ratio >= GOAL else '**not met**'}; on_line alone "
            f"{med(res['on_line'], 'rate') / floor:.2f}x; GC "
            f"{100 * med(res['tail'], 'gc') / med(res['tail'], 'elapsed'):.0f} % of the "
            "file-tail time.")
    files = []
    for name, info in infos.items():
        kinds = info.get("kinds")
        mix = (" (" + ", ".join(f"{k} {v:,}" for k, v in kinds.items()) + ")") if kinds else ""
        files.append(f"  - {name}: {info['lines']:,} lines{mix}, {info['bytes'] / 1e6:,.1f} MB, "
                     f"{info['bytes'] / info['lines']:,.0f} B/line; {info['detections']:,} "
                     f"detections expected, {info['lost']:,} lost events (drop alerts)")
    return "\n".join([
        BEGIN,
        "## File-tail ingest (`benchmarks/bench_ingest.py`)",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; machine: {_machine()}",
        f"- Command: `{exe_txt} benchmarks/bench_ingest.py"
        f"{' --out ' + str(args.out) if args.out else ''}`; {args.reps} repetitions per "
        f"target, interleaved, medians; the process pinned to CPU {cpu}",
        "- Files (generated from tests/data, distinct pids / exec ids / times):",
        *files,
        "- floor = `msgspec.json.Decoder(<typed Structs of the documented schema>)` over every "
        "line, the file read in 1 MiB binary chunks split on newlines (Tetragon: "
        "GetEventsResponse with exec/exit/kprobe/tracepoint/lsm/uprobe events, process with "
        "pod/container/image, parent, ancestors, args, tags ...; Falco: time, rule, priority, "
        "output, source, hostname, tags, output_fields as dict[str, Any]).",
        "- ours, file tail = the real sensor (`path=<file>, from_start=True`): subscribe, "
        "`start()`, `Subscription.wait` until every expected detection is on the stream; "
        "elapsed = start -> wait returns; lost/malformed checked. ours, on_line = the same lines "
        "(pre-read, UTF-8 with errors replaced, as FileTail hands them over) passed to "
        "`sensor.on_line`.",
        "- GC = time in CPython's cyclic collector during the measurement (full collections "
        "in brackets): the stream keeps every detection (with its decoded record, `raw`, and "
        "`fields`), so each full collection walks all of them; the floor keeps nothing. "
        "'ratio without the GC time' = lines / (elapsed - GC) over the floor, for reading only.",
        "",
        table(["product", "path", "lines/s", "ratio to floor", "detections/s", "elapsed ms",
               "us/line", "GC ms (full)", "ratio without the GC time"], rows),
        "",
        "### Summary (generated)",
        "",
        *summary,
        END,
    ])


def write_section(path: Path, section: str) -> None:
    _results.write_section(path, section, BEGIN, END)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="replace this script's section of a markdown file")
    ap.add_argument("--tetragon-n", type=int, default=200_000, help="Tetragon export lines")
    ap.add_argument("--falco-n", type=int, default=200_000, help="Falco alert lines")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per target")
    ap.add_argument("--cpu", type=int, help="CPU to pin to (default: the last allowed one)")
    ap.add_argument("--only", choices=("tetragon", "falco"), help="measure one product only")
    args = ap.parse_args()
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    started = dt.datetime.now(dt.UTC)
    results: dict[str, dict[str, Any]] = {}
    infos: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_ingest-") as tmp:
        products = [
            ("Tetragon", "tetragon.log", tetragon_file, args.tetragon_n,
             msgspec.json.Decoder(GetEventsResponse), tetragon_sensor),
            ("Falco", "falco_events.json", falco_file, args.falco_n,
             msgspec.json.Decoder(FalcoAlert), falco_sensor),
        ]
        for name, fname, gen, n, decoder, make in products:
            if args.only and args.only != name.lower():
                continue
            path = Path(tmp) / fname
            infos[name] = gen(path, n)
            log(f"{name}: {n:,} lines, {infos[name]['bytes'] / n:,.0f} B/line, "
                f"{infos[name]['detections']:,} detections")
            results[name] = run_product(name, path, infos[name], decoder, make, args.reps)
            path.unlink()
    section = render(results, infos, args, cpu, started)
    print(section)
    if args.out:
        write_section(args.out, section)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
