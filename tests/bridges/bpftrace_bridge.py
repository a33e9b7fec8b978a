#!/usr/bin/env python3
"""A bridge from the bundled bpftrace sensor to other products' output shapes.

It runs the real ``sensor.bt`` and re-emits every detection, as it happens, as
- a Falco ``http_output`` alert POSTed to ``--falco-url`` (rule names and tags of Falco's
  default rules),
- a Tetragon JSON export line appended to ``--tetragon-file`` (renamed at
  ``--tetragon-rotate`` bytes, as Tetragon rotates its export file),
- an event POSTed to a local Sysdig Secure server's ingest endpoint (``--sysdig-url``),
- an alert POSTed to a local CrowdStrike server's ingest endpoint (``--crowdstrike-url``),
so end-to-end tests exercise kernel event -> product-shaped output -> adapter -> verdict.

Prints ``READY`` once bpftrace's probes are attached, then writes ``--pidfile`` (the writer's
pid, as a product's pid file: the Tetragon adapter's sign of life); with
``--falco-metrics-interval S`` it also POSTs a "Falco internal: metrics snapshot" alert every
S seconds (Falco's ``metrics.output_rule``: the Falco adapter's heartbeat). If bpftrace
does not attach within ``--ready-timeout`` seconds, or exits, the bridge says why on stderr
and exits non-zero. One event it cannot deliver is reported on stderr and skipped: it never
ends the bridge. Stop it with SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from harness.sensors.bpftrace import program_path, scan_cgroups  # noqa: E402

FALCO_RULES = {
    "ptrace-pid1": ("PTRACE attached to process", "Warning",
                    ["maturity_stable", "host", "container", "process", "mitre_privilege_escalation",
                     "T1055.008"]),
    "etc-file-create": ("Write below etc", "Error",
                        ["maturity_sandbox", "host", "container", "filesystem", "mitre_persistence",
                         "T1098"]),
    "container-setns-mnt": ("Change thread namespace", "Notice",
                            ["maturity_sandbox", "host", "container", "process",
                             "mitre_privilege_escalation", "T1611"]),
}
TETRAGON_POLICIES = {  # setns carries no ATT&CK tag: the adapter's technique map supplies it
    "ptrace-pid1": ("shadowtest-ptrace", "__x64_sys_ptrace",
                    ["observability.process_injection", "T1055.008"]),
    "etc-file-create": ("shadowtest-etc-write", "security_file_open", ["observability.filesystem", "T1098"]),
    "container-setns-mnt": ("shadowtest-setns", "__x64_sys_setns", ["observability.namespace"]),
}


STARTED_NS = time.time_ns()  # the snapshots' falco.start_ts: one "Falco" for the bridge's life


def rfc3339(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


_client = httpx.Client(timeout=5)
_post_lock = threading.Lock()  # the heartbeat thread and the event loop share the client


def log(message: str) -> None:
    print(f"bridge: {message}", file=sys.stderr, flush=True)


def post(url: str, body: object, within: float = 10.0) -> bool:
    """POST ``body``; retry transport errors and 5xx for ``within`` seconds (the receiver
    may not be up yet, or busy). Never raises: a failure is reported and the caller goes on."""
    deadline = time.monotonic() + within
    last = ""
    while True:
        try:
            with _post_lock:
                resp = _client.post(url, json=body)
        except httpx.HTTPError as exc:  # connect refused, timeout, reset ...
            last = f"{exc.__class__.__name__}: {exc}"
        else:
            if resp.is_success:
                return True
            last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if resp.status_code < 500 and resp.status_code != 429:
                break  # the receiver refuses this body: retrying will not help
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    log(f"could not deliver to {url}: {last}")
    return False


class Bridge:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cgroups: dict[int, str] = {}
        self.host = os.uname().nodename

    def container_id(self, cgroup: int) -> str | None:
        if cgroup not in self.cgroups:
            self.cgroups = scan_cgroups()
        return self.cgroups.get(cgroup)

    def emit(self, d: dict) -> None:
        """Re-emit one detection of the rules the products' maps name; any other of
        sensor.bt's rules (fired by whatever else runs on a busy machine) is skipped: a
        KeyError here used to end the bridge, and every later row read MISSED."""
        if d.get("rule") not in FALCO_RULES:
            return
        cid = self.container_id(int(d["cgroup"]))
        wall = int(d.get("wall_ns") or time.time_ns())
        if self.args.falco_url:
            post(self.args.falco_url, self.falco(d, cid, wall))
        if self.args.tetragon_file:
            self.tetragon(d, cid, wall)
        if self.args.sysdig_url:
            post(self.args.sysdig_url, {"events": [self.sysdig(d, cid, wall)],
                                        "delay": self.args.sysdig_delay})
        if self.args.crowdstrike_url:
            post(self.args.crowdstrike_url, {"alerts": [self.crowdstrike(d, cid, wall)],
                                             "delay": self.args.crowdstrike_delay})

    def falco(self, d: dict, cid: str | None, wall: int) -> dict:
        rule, priority, tags = FALCO_RULES[d["rule"]]
        # what a Falco configured as the README says prints (append_output extra_fields):
        # the pid, its parent and the ancestors sensor.bt read (proc.apid[2..7])
        fields = {"container.id": cid[:12] if cid else "host", "proc.pid": d["pid"],
                  "proc.ppid": d["ppid"], "proc.name": d["comm"], "evt.time": wall}
        for n, apid in enumerate(d.get("ancestors") or (), start=2):
            fields[f"proc.apid[{n}]"] = apid or None
        if "path" in d:
            fields["fd.name"] = d["path"]
        output = f"{rule} (proc.name={d['comm']} proc.pid={d['pid']} container.id={fields['container.id']}"
        output += f" fd.name={d['path']})" if "path" in d else ")"
        return {"time": rfc3339(wall), "rule": rule, "priority": priority, "output": output,
                "source": "syscall", "hostname": self.host, "tags": tags, "output_fields": fields}

    def tetragon(self, d: dict, cid: str | None, wall: int) -> None:
        policy, function, tags = TETRAGON_POLICIES[d["rule"]]
        process = {"exec_id": f"bridge:{d['pid']}", "pid": d["pid"], "uid": d.get("uid", 0),
                   "binary": f"/proc/{d['pid']}/exe:{d['comm']}", "arguments": d.get("path", ""),
                   "docker": cid[:15] if cid else None, "pod": None}
        args = [{"file_arg": {"path": d["path"]}}] if "path" in d else [{"int_arg": d.get("target", 0)}]
        line = json.dumps({"process_kprobe": {
            "process": process, "parent": {"pid": d["ppid"], "exec_id": f"bridge:{d['ppid']}"},
            "ancestors": [{"pid": a} for a in d.get("ancestors", []) if a],
            "function_name": function, "args": args, "action": "KPROBE_ACTION_POST",
            "policy_name": policy, "tags": tags,
        }, "node_name": self.host, "time": rfc3339(wall)})
        path = Path(self.args.tetragon_file)
        if path.exists() and path.stat().st_size + len(line) > self.args.tetragon_rotate:
            path.rename(path.with_name(path.name + ".1"))  # Tetragon's rotation: rename, new file
        with path.open("a") as fh:
            fh.write(line + "\n")

    def sysdig(self, d: dict, cid: str | None, wall: int) -> dict:
        rule, priority, tags = FALCO_RULES[d["rule"]]
        return {"id": f"bridge-{wall}-{d['pid']}", "timestamp": wall, "originator": "linuxAgent",
                "category": "runtime", "source": "syscall", "raw_event_originator": "linuxAgent",
                "raw_event_category": "runtime", "engine": "falco", "name": "shadowtest policy",
                "severity": 2, "actions": [],
                "content": {"type": "workloadRuntimeDetection", "rule_name": rule, "rule_type": 6,
                            "rule_tags": tags, "output": rule, "priority": priority.lower(),
                            "fields": {"container.id": cid[:12] if cid else None,
                                       "proc.pid": str(d["pid"]), "proc.name": d["comm"],
                                       **({"fd.name": d["path"]} if "path" in d else {})}},
                "labels": {"host.hostName": self.host,
                           **({"container.id": cid[:12]} if cid else {})}}

    def crowdstrike(self, d: dict, cid: str | None, wall: int) -> dict:
        technique = {"ptrace-pid1": "T1055.008", "etc-file-create": "T1098",
                     "container-setns-mnt": "T1611"}[d["rule"]]
        stamp = dt.datetime.fromtimestamp(wall / 1e9, dt.UTC).isoformat()
        return {"composite_id": f"cid:ind:bridge-{wall}-{d['pid']}", "name": d["rule"],
                "technique_id": technique, "tactic_id": "TA0004", "severity": 70,
                "hostname": self.host, "container_id": cid, "local_process_id": str(d["pid"]),
                "filename": d["comm"], "cmdline": d.get("path", d["comm"]),
                "timestamp": stamp, "created_timestamp": stamp, "product": "epp"}


    def metrics_snapshot(self) -> dict:
        """Falco's ``metrics.output_rule`` alert (a sign of life, never a detection)."""
        return {"hostname": self.host, "output": "Falco metrics snapshot",
                "output_fields": {"evt.source": "syscall", "falco.hostname": self.host,
                                  "falco.version": "0.38.1", "falco.start_ts": STARTED_NS,
                                  "scap.n_drops": 0, "scap.n_drops_buffer_total": 0,
                                  "falco.outputs_queue_num_drops": 0},
                "priority": "Informational", "rule": "Falco internal: metrics snapshot",
                "source": "internal", "time": rfc3339(time.time_ns())}


def payload_of(line: str) -> dict | None:
    """The JSON payload of one bpftrace ``-f json`` printf line (None: another line)."""
    try:
        outer = json.loads(line)
        if not isinstance(outer, dict) or outer.get("type") != "printf":
            return None
        payload = json.loads(outer["data"])
    except (ValueError, KeyError, TypeError):
        return None
    return payload if isinstance(payload, dict) else None


def pump(pipe: IO[str], into: queue.Queue[str | None]) -> None:
    """bpftrace's stdout, line by line, into a queue (None at its end): the main thread can
    then wait for READY with a timeout."""
    for line in pipe:
        into.put(line)
    into.put(None)


def echo(pipe: IO[str], tail: collections.deque[str]) -> None:
    """bpftrace's stderr to ours (never left unread: a full pipe would stall bpftrace)."""
    for line in pipe:
        tail.append(line.rstrip())
        sys.stderr.write(f"bpftrace: {line}")
        sys.stderr.flush()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--falco-url")
    parser.add_argument("--falco-metrics-interval", type=float, default=0.0,
                        help="POST a Falco metrics snapshot every S seconds (0: never)")
    parser.add_argument("--tetragon-file")
    parser.add_argument("--tetragon-rotate", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--sysdig-url")
    parser.add_argument("--sysdig-delay", type=float, default=0.0)
    parser.add_argument("--crowdstrike-url")
    parser.add_argument("--crowdstrike-delay", type=float, default=0.0)
    parser.add_argument("--pidfile", help="written with this process's pid once READY")
    parser.add_argument("--ready-timeout", type=float, default=120.0,
                        help="seconds bpftrace may take to attach (a busy machine is slow)")
    return parser.parse_args()


def wait_ready(lines: queue.Queue[str | None], errors: collections.deque[str],
               proc: subprocess.Popen[str], timeout: float) -> str | None:
    """Wait for bpftrace's ``ready`` line; None when it came, else why not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return (f"bpftrace did not attach within --ready-timeout {timeout:g} s (a busy "
                    "machine compiles and attaches slowly: raise it); bpftrace said: "
                    f"{' | '.join(errors) or 'nothing'}")
        if line is None:
            return (f"bpftrace exited with code {proc.wait()} before attaching: "
                    f"{' | '.join(errors) or 'no message'} (run as root, bpftrace installed?)")
        payload = payload_of(line)
        if payload is not None and payload.get("kind") == "ready":
            return None


def heartbeat(bridge: Bridge, stopping: threading.Event) -> None:
    """Falco's metrics snapshots, every ``--falco-metrics-interval`` seconds."""
    while not stopping.wait(bridge.args.falco_metrics_interval):
        post(bridge.args.falco_url, bridge.metrics_snapshot(), within=1.0)


def serve(bridge: Bridge, lines: queue.Queue[str | None]) -> None:
    """Re-emit every detection until bpftrace's output ends."""
    while (line := lines.get()) is not None:
        payload = payload_of(line)
        if payload is None or payload.get("kind") != "detection":
            continue
        try:
            bridge.emit(payload)
        except Exception:  # one event that cannot be re-emitted must not end the bridge
            log(f"could not re-emit {payload!r}: {traceback.format_exc(limit=3)}")


def main() -> int:
    args = parse_args()
    bridge = Bridge(args)
    pidfile = Path(args.pidfile) if args.pidfile else None
    proc = subprocess.Popen(["bpftrace", "-B", "none", "-f", "json", str(program_path())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    assert proc.stdout is not None
    assert proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    errors: collections.deque[str] = collections.deque(maxlen=5)
    threading.Thread(target=pump, args=(proc.stdout, lines), daemon=True).start()
    threading.Thread(target=echo, args=(proc.stderr, errors), daemon=True).start()
    stopping = threading.Event()

    def halt() -> None:
        for _ in range(20):  # bpftrace 0.17 may drop a SIGINT while busy
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(0.3)
            except subprocess.TimeoutExpired:
                continue
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        halt()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    # READY, with a deadline: an unbounded wait would hang the test that started us
    failed = wait_ready(lines, errors, proc, args.ready_timeout)
    if failed:
        halt()
        log(failed)
        return 2
    print("READY", flush=True)
    if pidfile is not None:
        pidfile.write_text(f"{os.getpid()}\n")
    if args.falco_url and args.falco_metrics_interval > 0:
        threading.Thread(target=heartbeat, args=(bridge, stopping), name="metrics",
                         daemon=True).start()
    serve(bridge, lines)
    code = proc.wait()
    stopping.set()
    log(f"bpftrace exited with code {code}: {' | '.join(errors) or 'no message'}")
    if pidfile is not None:
        pidfile.unlink(missing_ok=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
