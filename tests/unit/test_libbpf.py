"""The compiled reference sensor without a kernel: its generated sources are the rule
table's, its loader's recorded output reads as the bpftrace sensor's, its options, its
command line, and ``expect_as`` (whose expectations judge it).

host-6.18.jsonl = the real loader (ci/libbpf-sensor.sh) on this development machine's
6.18 kernel, recorded with --ringbuf-mb 1: ready, a sync marker on each of the 2 CPUs,
an ld-preload-write detection, a shadow-read by a task whose comm is ``we"ird\\name\\x01``
(JSON escaping), 3000 shadow-reads while the loader was SIGSTOPped (1830 lost: the ring
buffer was full; the 1167 delivered after the first three are cut from the file), a
second marker round, heartbeats.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.core.errors import ConfigError
from harness.sensors.base import build_sensor, expect_key
from harness.sensors.bpftrace.rules import HOOKS, RULES, VERSION, Raw, Rule, module_rules
from harness.sensors.libbpf import SOURCES, LibbpfSensor, loader_argv
from harness.sensors.libbpf import generate as gen

DATA = Path(__file__).resolve().parent.parent / "data" / "libbpf"
HEADER = ("kind", "rule", "technique", "severity", "pid", "tid", "ppid", "ancestors",
          "comm", "cgroup", "pidns", "mntns", "uid", "ts_ns", "wall_ns")


def _feed(name: str) -> LibbpfSensor:
    sensor = LibbpfSensor(node="local")
    sensor._ncpu = 2
    for line in (DATA / name).read_text().splitlines():
        sensor.on_line(line)
    return sensor


# ---------------------------------------------------------------- generated sources
def test_committed_sources_are_the_rule_tables() -> None:
    stale = [p.name for p in gen.stale()]
    assert stale == [], (f"{stale} differ from what harness/sensors/bpftrace/rules.py "
                         f"generates: run `{gen.COMMAND}` and commit the result")


def test_check_reports_stale_files_and_how_to_regenerate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(gen, "HERE", tmp_path)
    (tmp_path / "sensor.bpf.c").write_text(gen.bpf_source().replace("ptrace-pid1", "x"))
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert f"stale: {tmp_path / 'sensor.bpf.c'} (regenerate: {gen.COMMAND})" in err
    assert "rules.h" in err  # missing counts as stale
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0


def test_rules_h_lists_every_rule_at_its_index_with_its_fields() -> None:
    text = gen.rules_header()
    rows = re.findall(r'^\t\{"([^"]+)", "([^"]+)", "([^"]+)", "([^"]*)", (\d+), \{(.*)\}\},$',
                      text, re.MULTILINE)
    assert [(n, t, s, m) for n, t, s, m, _, _ in rows] == [
        (r.name, r.technique, r.severity, r.module) for r in RULES]
    for (_, _, _, _, count, fields), rule in zip(rows, RULES, strict=True):
        names = re.findall(r'\{"([^"]+)", \'(.)\', (\d)\}', fields)
        assert int(count) == len(rule.emits) == len(names)
        assert [n for n, _, _ in names] == [f.name for f in rule.emits]
        kinds = {"int": "i", "long": "l", "uint": "u", "str": "s"}
        assert [k for _, k, _ in names] == [kinds[f.type] for f in rule.emits]
    assert f'#define ST_RULEPACK "{VERSION}"' in text


def test_each_rule_is_a_block_of_its_hooks_programs_emitting_its_index() -> None:
    source = gen.bpf_source()
    programs = dict(re.findall(r"^int st_(\w+)\(.*?\n\{\n(.*?)\n\}$", source, re.MULTILINE | re.DOTALL))
    for index, rule in enumerate(RULES):
        for hook in rule.hooks:
            body = programs[hook]
            assert f"/* {rule.name} ({rule.technique}): {rule.summary} */" in body
            assert f"st_emit(task, {index});" in body
    hooked = {h.name for h in HOOKS if any(h.name in r.hooks for r in RULES)}
    assert set(programs) == hooked
    prelude = (gen.HERE / "prelude.bpf.h").read_text()
    assert 'SEC("tracepoint/syscalls/sys_enter_getpgid")' in prelude  # the sync marker


def test_the_kprobe_module_is_an_optional_program() -> None:
    optional = re.findall(r'^\t\{"(st_\w+)", "(\w+)"\},$', gen.rules_header(), re.MULTILINE)
    assert optional == [(f"st_{h}", "kprobes") for r in module_rules("kprobes") for h in r.hooks]
    assert 'SEC("kprobe/commit_creds")' in gen.bpf_source()


def test_a_raw_predicate_without_c_is_refused_by_name() -> None:
    rule = RULES[0]
    bare = Rule(rule.name, rule.technique, rule.severity, rule.hooks,
                (Raw("something only bpftrace can say", cond="1"),), (), "x")
    hook = next(h for h in HOOKS if h.name == rule.hooks[0])
    with pytest.raises(ValueError, match=r"something only bpftrace can say.*no C"):
        gen._program(hook, [(0, bare)])


def test_path_matches_compare_the_nul_for_exact_and_basename() -> None:
    source = gen.bpf_source()
    assert 'st_prefix(s->str[0], "/etc/shadow", 12)' in source  # exact: 11 bytes + NUL
    assert 'st_prefix(s->str[0], "/etc/sudoers.d/", 15)' in source  # prefix: no NUL
    assert 'st_at(s->str[0], base0, "ld.so.preload", 14)' in source  # basename: + NUL
    assert '!st_prefix(comm, "dpkg", 5)' in source


# ---------------------------------------------------------------- the loader's output
def test_loader_lines_are_bpftrace_printf_envelopes_with_sensor_bt_header() -> None:
    payloads = [json.loads(json.loads(line)["data"])
                for line in (DATA / "host-6.18.jsonl").read_text().splitlines()
                if json.loads(line)["type"] == "printf"]
    dets = [p for p in payloads if p["kind"] == "detection"]
    assert dets
    assert all(tuple(p)[:len(HEADER)] == HEADER for p in dets)
    assert all(len(p["ancestors"]) == 6 for p in dets)


def test_on_line_yields_detections_markers_and_loss() -> None:
    sensor = _feed("host-6.18.jsonl")
    dets = sensor.stream.snapshot()
    assert [d.rule for d in dets] == ["ld-preload-write", *["shadow-read"] * 4]
    weird = next(d for d in dets if d.comm != "python")
    assert weird.comm == 'we"ird\\name\x01'  # escaped by the loader, decoded intact
    assert weird.names == ("/etc/shadow",)
    assert weird.ppid == dets[0].pid
    assert dets[0].fields["flags"] & 0x43  # opened for write
    assert sensor.ready["engine"] == "libbpf"
    assert sensor.ready["programs"] == 17  # 16 hooks + the marker (no kprobes here)
    assert sensor._ready.is_set()
    assert sensor._markers == {4242: {0, 1}, 4243: {0, 1}}
    assert sensor.stream.lost == 1830
    assert sensor.stream.malformed == 0
    assert dets[0].observed_at == pytest.approx(
        json.loads(json.loads((DATA / "host-6.18.jsonl").read_text().splitlines()[3])["data"])
        ["wall_ns"] / 1e9)


def test_an_error_line_is_kept_as_the_reason() -> None:
    sensor = LibbpfSensor(node="vm-6.1")
    sensor.on_line(json.dumps({"type": "printf", "data": json.dumps(
        {"kind": "error", "reason": "the sensor's BPF programs do not load on vm-6.1 (x)"}) + "\n"}))
    assert sensor.error == "the sensor's BPF programs do not load on vm-6.1 (x)"
    assert not sensor._ready.is_set()


# ---------------------------------------------------------------- options, argv, expect_as
def test_loader_argv_names_object_node_ring_buffer_and_modules() -> None:
    assert loader_argv("/l/shadowtest-sensor", "/l/sensor.bpf.o", "vm-6.1", ["kprobes"], 16) == [
        "/l/shadowtest-sensor", "--object", "/l/sensor.bpf.o", "--node", "vm-6.1",
        "--ringbuf-mb", "16", "--module", "kprobes"]


@pytest.mark.parametrize("bad", [0, 3, 2048, True, "8"])
def test_ringbuf_mb_must_be_a_power_of_two_in_range(bad: Any) -> None:
    with pytest.raises(ConfigError, match="ringbuf_mb must be a power of two from 1 to 1024"):
        build_sensor("ref", {"type": "libbpf", "ringbuf_mb": bad})


def test_the_compiled_sensor_is_judged_by_the_bpftrace_expectations() -> None:
    sensor = build_sensor("ref", {"type": "libbpf"})
    assert expect_key("ref", sensor) == "bpftrace"
    other = build_sensor("falco-kmod", {"type": "falco", "path": "/var/log/falco.json",
                                        "expect_as": "falco"})
    assert expect_key("falco-kmod", other) == "falco"
    assert expect_key("auditd", build_sensor("auditd", {"type": "auditd"})) == "auditd"


@pytest.mark.parametrize("bad", ["", "  ", 3, ["falco"]])
def test_expect_as_must_name_a_sensor(bad: Any) -> None:
    with pytest.raises(ConfigError, match="expect_as must name the sensor") as err:
        build_sensor("x", {"type": "auditd", "expect_as": bad})
    assert err.value.key == "expect_as"


def test_rulepack_is_the_sources_with_the_tables_version() -> None:
    pack = LibbpfSensor().rulepack()
    assert pack["kind"] == "file-digest"
    assert [Path(f["path"]).name for f in pack["files"]] == [p.name for p in SOURCES]
    assert pack["version"] == VERSION
