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
Prints ``READY`` once bpftrace's probes are attached. Stop it with SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def rfc3339(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


_client = httpx.Client(timeout=5)


def post(url: str, body: object) -> None:
    for _ in range(100):
        try:
            _client.post(url, json=body).raise_for_status()
        except httpx.TransportError:
            time.sleep(0.05)  # the receiver is not up yet
        else:
            return
    print(f"bridge: could not deliver to {url}", file=sys.stderr)


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
        fields = {"container.id": cid[:12] if cid else "host", "proc.pid": d["pid"],
                  "proc.ppid": d["ppid"], "proc.name": d["comm"], "evt.time": wall}
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--falco-url")
    parser.add_argument("--tetragon-file")
    parser.add_argument("--tetragon-rotate", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--sysdig-url")
    parser.add_argument("--sysdig-delay", type=float, default=0.0)
    parser.add_argument("--crowdstrike-url")
    parser.add_argument("--crowdstrike-delay", type=float, default=0.0)
    args = parser.parse_args()
    bridge = Bridge(args)
    proc = subprocess.Popen(["bpftrace", "-B", "none", "-f", "json", str(program_path())],
                            stdout=subprocess.PIPE, text=True)

    def stop(signum: int, frame: object) -> None:
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
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            outer = json.loads(line)
            payload = json.loads(outer["data"]) if outer.get("type") == "printf" else None
        except (ValueError, KeyError):
            continue
        if not isinstance(payload, dict):
            continue
        if payload.get("kind") == "ready":
            print("READY", flush=True)
        elif payload.get("kind") == "detection":
            bridge.emit(payload)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
