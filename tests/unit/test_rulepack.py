"""Rule-pack identity of each sensor type (harness/sensors/rulepack.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

from harness.core.detection import Detection
from harness.sensors.rulepack import describe, for_row, identity, rulepack_of


def test_bpftrace_program_digest_and_header_version(tmp_path: Path) -> None:
    prog = tmp_path / "sensor.bt"
    prog.write_text("/*\n * shadowtest-rulepack: 7\n */\nBEGIN { }\n")
    pack = rulepack_of(SimpleNamespace(NAME="bpftrace", program=prog, attach_output=None))
    assert pack["kind"] == "file-digest"
    assert pack["sha256"] == hashlib.sha256(prog.read_bytes()).hexdigest()
    assert (pack["name"], pack["version"]) == ("sensor.bt", "7")


def test_bundled_sensors_have_a_digest() -> None:
    from harness.sensors.auditd import rules_path
    from harness.sensors.bpftrace import program_path

    for ns in (SimpleNamespace(NAME="auditd", rules_file=rules_path()),
               SimpleNamespace(NAME="bpftrace", program=program_path())):
        assert len(rulepack_of(ns)["sha256"]) == 64


def test_auditd_rules_header(tmp_path: Path) -> None:
    rules = tmp_path / "my.rules"
    rules.write_text("# shadowtest-rulepack: 2024.1\n-a always,exit -S ptrace -k T1055.008\n")
    assert rulepack_of(SimpleNamespace(NAME="auditd", rules_file=rules))["version"] == "2024.1"


def test_falco_files_and_oci(tmp_path: Path) -> None:
    a, b = tmp_path / "falco_rules.yaml", tmp_path / "custom.yaml"
    a.write_text("- rule: a\n")
    b.write_text("- rule: b\n")
    files = rulepack_of(SimpleNamespace(NAME="falco", rules_files=[str(a), str(b)], rules_oci=None))
    assert files["name"] == "falco_rules.yaml+custom.yaml"
    swapped = rulepack_of(SimpleNamespace(NAME="falco", rules_files=[str(b), str(a)], rules_oci=None))
    assert swapped["sha256"] != files["sha256"]  # load order matters
    ref = "ghcr.io/falcosecurity/rules/falco-rules:3.2.0@sha256:" + "a" * 64
    oci = rulepack_of(SimpleNamespace(NAME="falco", rules_files=None, rules_oci=ref))
    assert (oci["kind"], oci["version"], oci["sha256"]) == ("oci-digest", "3.2.0", "a" * 64)
    none = rulepack_of(SimpleNamespace(NAME="falco", rules_files=None, rules_oci=None))
    assert none["kind"] == "none"
    assert "rules_files" in none["reason"]


def test_tetragon_policies_and_seen(tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text("apiVersion: cilium.io/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: block-setns\n")
    pack = rulepack_of(SimpleNamespace(NAME="tetragon", policy_files=[str(pol)]))
    assert pack["policies"] == ["block-setns"]
    det = Detection("tetragon", "block-setns", fields={"policy_name": "block-setns"})
    assert for_row(pack, [det])["seen"] == ["policy:block-setns"]


def test_versioned_products_and_unknown() -> None:
    assert rulepack_of(SimpleNamespace(NAME="tracee", version="0.22.0"))["version"] == "0.22.0"
    assert "no rule-pack version" in rulepack_of(SimpleNamespace(NAME="sysdig", version=None))["reason"]
    assert rulepack_of(SimpleNamespace(NAME="mine"))["kind"] == "none"
    own = rulepack_of(SimpleNamespace(NAME="mine", rulepack=lambda: {"kind": "reported", "version": "9"}))
    assert identity(own) == ("reported", None, "9", None)
    assert describe(None).startswith("absent")
