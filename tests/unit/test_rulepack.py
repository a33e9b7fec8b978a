"""Rule-pack identity of each sensor type: every sensor answers its own ``rulepack()``
(harness/sensors/rulepack.py has the helpers and the row's shape), and what a detection
reports about its rules is the ``SEEN`` field its sensor's ``normalise`` fills."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from harness.core.detection import Detection
from harness.sensors.auditd import AuditdSensor, rules_path
from harness.sensors.base import Sensor, SensorBase
from harness.sensors.bpftrace import BpftraceSensor, program_path
from harness.sensors.crowdstrike import CrowdStrikeSensor
from harness.sensors.falco import FalcoSensor
from harness.sensors.replay import ReplaySensor, records
from harness.sensors.rulepack import SEEN, describe, for_row, identity, rulepack_of, rulepacks_of
from harness.sensors.sysdig import SysdigSensor
from harness.sensors.tetragon import TetragonSensor
from harness.sensors.tracee import TraceeSensor

DATA = Path(__file__).resolve().parent.parent / "data"


def test_bpftrace_program_digest_and_header_version(tmp_path: Path) -> None:
    prog = tmp_path / "sensor.bt"
    prog.write_text("/*\n * shadowtest-rulepack: 7\n */\nBEGIN { }\n")
    pack = rulepack_of(BpftraceSensor(program=str(prog)))
    assert pack["kind"] == "file-digest"
    assert pack["sha256"] == hashlib.sha256(prog.read_bytes()).hexdigest()
    assert (pack["name"], pack["version"], pack["reason"]) == ("sensor.bt", "7", None)
    attached = rulepack_of(BpftraceSensor(program=str(prog), attach_output=str(tmp_path / "o")))
    assert attached["sha256"] == pack["sha256"]
    assert "attached to a running bpftrace" in attached["reason"]


def test_bundled_sensors_have_a_digest() -> None:
    for sensor in (AuditdSensor(), BpftraceSensor()):
        pack = rulepack_of(sensor)
        assert len(pack["sha256"]) == 64
    assert rulepack_of(AuditdSensor())["files"][0]["path"] == str(rules_path())
    assert rulepack_of(BpftraceSensor())["files"][0]["path"] == str(program_path())


def test_auditd_rules_header(tmp_path: Path) -> None:
    rules = tmp_path / "my.rules"
    rules.write_text("# shadowtest-rulepack: 2024.1\n-a always,exit -S ptrace -k T1055.008\n")
    assert rulepack_of(AuditdSensor(rules=str(rules)))["version"] == "2024.1"


def _falco(tmp_path: Path, **options: Any) -> FalcoSensor:
    return FalcoSensor(path=str(tmp_path / "alerts.json"), **options)


def test_falco_files_and_oci(tmp_path: Path) -> None:
    a, b = tmp_path / "falco_rules.yaml", tmp_path / "custom.yaml"
    a.write_text("- rule: a\n")
    b.write_text("- rule: b\n")
    files = rulepack_of(_falco(tmp_path, rules_files=[str(a), str(b)]))
    assert files["name"] == "falco_rules.yaml+custom.yaml"
    swapped = rulepack_of(_falco(tmp_path, rules_files=[str(b), str(a)]))
    assert swapped["sha256"] != files["sha256"]  # load order matters
    ref = "ghcr.io/falcosecurity/rules/falco-rules:3.2.0@sha256:" + "a" * 64
    oci = rulepack_of(_falco(tmp_path, rules_oci=ref))
    assert (oci["kind"], oci["version"], oci["sha256"]) == ("oci-digest", "3.2.0", "a" * 64)
    none = rulepack_of(_falco(tmp_path))
    assert none["kind"] == "none"
    assert "rules_files" in none["reason"]


def test_tetragon_policies_and_seen(tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: block-setns\n")
    sensor = TetragonSensor(path=str(tmp_path / "tetragon.log"), policy_files=[str(pol)])
    pack = rulepack_of(sensor)
    assert (pack["kind"], pack["policies"]) == ("policies", ["block-setns"])
    det = sensor.normalise({"process_kprobe": {"policy_name": "block-setns", "process": {}}})
    assert det is not None
    assert for_row(pack, [det])["seen"] == ["policy:block-setns"]
    bare = rulepack_of(TetragonSensor(path=str(tmp_path / "tetragon.log")))
    assert bare["kind"] == "policies"
    assert "no policy_files" in bare["reason"]


def test_versioned_products(tmp_path: Path) -> None:
    assert rulepack_of(TraceeSensor(path=str(tmp_path / "t.log"), version="0.22.0"))["version"] == "0.22.0"
    assert "no rule-pack version" in rulepack_of(SysdigSensor())["reason"]
    reported = rulepack_of(CrowdStrikeSensor(version="7.10"))
    assert (reported["kind"], reported["name"], reported["version"]) == ("reported", "crowdstrike", "7.10")


class _Mine(SensorBase):
    NAME: ClassVar[str] = "mine"


class _Own(_Mine):
    def rulepack(self) -> dict[str, Any]:
        return {"kind": "reported", "version": "9"}


def test_third_party_sensors() -> None:
    none = rulepack_of(_Mine())
    assert none["kind"] == "none"
    assert "'mine'" in none["reason"]
    own = rulepack_of(_Own())
    assert identity(own) == ("reported", None, "9", None)
    assert set(own) == set(none)  # completed with every key of the row's shape
    assert describe(None).startswith("absent")


def test_replay_reports_its_adapter(tmp_path: Path) -> None:
    rules = tmp_path / "my.rules"
    rules.write_text("# shadowtest-rulepack: 3\n")
    recording = tmp_path / "audit.log"
    recording.write_text("")
    replay = ReplaySensor(path=str(recording), format="auditd")
    replay.adapter = AuditdSensor(rules=str(rules))
    packs = rulepacks_of({"r": replay})
    assert packs["r"]["version"] == "3"
    assert packs["r"]["reason"] == f"replayed from {recording}: identity of the configured adapter"


# ----------------------------------------------------------------- seen
def _seen_as_before(d: Detection) -> set[str]:
    """What rulepack.seen_in read before each sensor filled ``SEEN``: the oracle."""
    out: set[str] = set()
    fields = d.fields or {}
    raw = d.raw if isinstance(d.raw, dict) else {}
    if fields.get("policy_name"):
        out.add(f"policy:{fields['policy_name']}")
    if fields.get("policy"):
        out.add(f"policy:{fields['policy']}")
    meta = raw.get("metadata")
    if isinstance(meta, dict) and meta.get("Version"):
        out.add(f"signature:{d.rule}@{meta['Version']}")
    for key in ("agent_version", "sensor_version"):
        if raw.get(key):
            out.add(f"{key}:{raw[key]}")
    device = raw.get("device")
    if isinstance(device, dict) and device.get("agent_version"):
        out.add(f"agent_version:{device['agent_version']}")
    return out


def _recorded(tmp_path: Path) -> Iterator[tuple[Sensor, dict[str, Any]]]:
    """Every record of the bundled product samples, with the sensor that reads it."""
    tetragon = TetragonSensor(path=str(tmp_path / "t.log"))
    tracee = TraceeSensor(path=str(tmp_path / "t.log"))
    for sensor, files in ((tetragon, ("tetragon/export.jsonl", "tetragon/edge.jsonl")),
                          (tracee, ("tracee/legacy.jsonl", "tracee/v1beta1.jsonl")),
                          (SysdigSensor(), ("sysdig/events.json",)),
                          (CrowdStrikeSensor(), ("crowdstrike/alerts.json",
                                                 "crowdstrike/container_detections.json"))):
        for name in files:
            for raw in records((DATA / name).read_text("utf-8", errors="replace")):
                yield sensor, raw


def test_each_sensor_reports_what_seen_in_read_before(tmp_path: Path) -> None:
    checked = 0
    seen_any: set[str] = set()
    for sensor, raw in _recorded(tmp_path):
        try:
            det = sensor.normalise(raw)
        except (KeyError, TypeError, ValueError):
            continue
        if det is None:
            continue
        checked += 1
        got = set(for_row(None, [det])["seen"])
        assert got == _seen_as_before(det), json.dumps(raw)[:300]
        seen_any |= got
    assert checked >= 10
    assert {s.split(":", 1)[0] for s in seen_any} >= {"policy", "signature"}


def test_seen_field_is_filled_by_normalise_for_a_falcon_alert() -> None:
    raw = {"composite_id": "c:1", "name": "Shadowtest", "device": {"agent_version": "7.10.1"},
           "sensor_version": "7.10"}
    det = CrowdStrikeSensor().normalise(raw)
    assert det is not None
    assert det.fields[SEEN] == ("sensor_version:7.10", "agent_version:7.10.1")


@pytest.mark.parametrize("fields", [{}, {SEEN: ()}])
def test_detections_reporting_nothing_add_nothing(fields: dict[str, Any]) -> None:
    pack = {"kind": "none", "seen": ["policy:kept"]}
    assert for_row(pack, [Detection("s", "r", fields=fields)])["seen"] == ["policy:kept"]
