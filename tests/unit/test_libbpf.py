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
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.core.errors import ConfigError
from harness.sensors.base import build_sensor, expect_key
from harness.sensors.bpftrace.rules import (
    HOOKS,
    INIT_PIDNS,
    RULES,
    VERSION,
    Raw,
    Rule,
    module_rules,
)
from harness.sensors.libbpf import SOURCES, LibbpfSensor, loader_argv, put_file, upload
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
    assert 'st_at(s->str[0], base0, "release_agent", 14)' in source  # basename: + NUL
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


# ---------------------------------------------------------------- put_file
class _Shell:
    """A node shell that records what would be written and run (its files are a dict)."""

    node = "fake"
    remote = True

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.runs: list[list[str]] = []

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.files[path] = data

    def run(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        self.runs.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, "", "")

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              stop_signal: signal.Signals = signal.SIGTERM) -> Any:
        raise AssertionError("not used")


def test_put_file_small_is_one_put() -> None:
    shell = _Shell()
    put_file(shell, "/n/x", b"a" * 100, 0o755)  # type: ignore[arg-type]
    assert shell.files == {"/n/x": b"a" * 100}
    assert shell.runs == []


def test_put_file_large_goes_in_parts_then_joins() -> None:
    shell = _Shell()
    data = bytes(range(256)) * 600  # 153600 bytes: 3 parts of at most 64 KiB
    put_file(shell, "/n/x", data, 0o755)  # type: ignore[arg-type]
    assert sorted(shell.files) == ["/n/x.part0", "/n/x.part131072", "/n/x.part65536"]
    assert b"".join(shell.files[f"/n/x.part{i}"] for i in (0, 65536, 131072)) == data
    assert shell.runs == [["sh", "-c", "cat /n/x.part0 /n/x.part65536 /n/x.part131072 > /n/x"
                           " && chmod 755 /n/x && rm -f /n/x.part0 /n/x.part65536 "
                           "/n/x.part131072"]]


class _Present(_Shell):
    """A node where ``test -f`` finds every file (the digest's folder is complete)."""

    def run(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        self.runs.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0 if argv[0] == "test" else 1, "", "")


class _Absent(_Shell):
    def run(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        self.runs.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 1 if argv[0] == "test" else 0, "", "")


def test_upload_leaves_a_file_that_is_there_alone() -> None:
    """A second sensor on the node must not rewrite a loader that is running (ETXTBSY)."""
    shell = _Present()
    upload(shell, "/var/lib/x/d1/shadowtest-sensor", b"elf", 0o755)  # type: ignore[arg-type]
    assert shell.files == {}
    assert shell.runs == [["test", "-f", "/var/lib/x/d1/shadowtest-sensor"]]


def test_upload_writes_aside_then_renames() -> None:
    shell = _Absent()
    upload(shell, "/var/lib/x/d1/sensor.bpf.o", b"obj", 0o644)  # type: ignore[arg-type]
    (aside, data), = shell.files.items()
    assert aside.startswith("/var/lib/x/d1/sensor.bpf.o.part-")
    assert data == b"obj"
    assert shell.runs[-1] == ["mv", "-f", aside, "/var/lib/x/d1/sensor.bpf.o"]


def test_upload_of_a_large_file_goes_gzipped_and_is_unpacked_aside() -> None:
    import gzip

    shell = _Absent()
    data = bytes(200_000)  # a BPF object's size: 4 parts plain, one gzipped
    upload(shell, "/var/lib/x/d1/sensor.bpf.o", data, 0o644)  # type: ignore[arg-type]
    (packed_at, packed), = shell.files.items()
    assert packed_at.startswith("/var/lib/x/d1/sensor.bpf.o.part-")
    assert packed_at.endswith(".gz")
    assert gzip.decompress(packed) == data
    aside = packed_at.removesuffix(".gz")
    script = shell.runs[-1][2]
    assert shell.runs[-1][:2] == ["sh", "-c"]
    assert script.startswith(f"gzip -dc {packed_at} > {aside} && chmod 644 {aside} && "
                             f"mv -f {aside} /var/lib/x/d1/sensor.bpf.o;")


def test_a_sensor_that_did_not_start_says_why() -> None:
    sensor = LibbpfSensor(name="compiled-runs")
    sensor.stream.close("compiled-runs did not start on node local: SensorError: boom")
    health = sensor.health()
    assert not health.up
    assert health.reason == "compiled-runs did not start on node local: SensorError: boom"


# ---------------------------------------------------------------- options, argv, expect_as
def test_loader_argv_names_object_node_ring_buffer_filter_and_modules() -> None:
    assert loader_argv("/l/shadowtest-sensor", "/l/sensor.bpf.o", "vm-6.1", ["kprobes"], 16,
                       "runs") == [
        "/l/shadowtest-sensor", "--object", "/l/sensor.bpf.o", "--node", "vm-6.1",
        "--ringbuf-mb", "16", "--filter", "runs", "--module", "kprobes"]


@pytest.mark.parametrize("bad", ["all", "", "runs,containers", 1])
def test_filter_is_one_of_the_loaders(bad: Any) -> None:
    with pytest.raises(ConfigError, match="filter must be one of 'none', 'runs', "
                                          "'runs\\+containers'") as err:
        build_sensor("ref", {"type": "libbpf", "filter": bad})
    assert err.value.key == "filter"


def test_every_rule_but_the_usermode_helpers_is_behind_the_filter() -> None:
    """A rule reports only what the filter lets through, except what a kernel usermode helper
    runs (never in a run's tree): in a program with only filtered rules the filter is the
    first thing (nothing read for the rest), in a mixed one each filtered rule is gated."""
    source = gen.bpf_source()
    programs = dict(re.findall(r"^int st_(\w+)\(.*?\n\{\n(.*?)\n\}$", source, re.MULTILINE | re.DOTALL))
    assert [r.name for r in RULES if gen.exempt(r)] == ["usermode-helper-exec"]
    for hook, body in programs.items():
        rules = [r for r in RULES if hook in r.hooks]
        head = body.split("\n\n")[0]
        if not any(gen.exempt(r) for r in rules):
            assert "if (!st_traced(task))\n\t\treturn 0;" in head, hook
            assert head.index("st_traced") < head.index("if (!s)") + 40, hook
        else:
            assert "int traced = st_traced(task);" in head, hook
            for r in rules:
                block = body.split(f"/* {r.name} ")[1].split("\n\t}\n")[0]
                assert ("if (traced" in block) != gen.exempt(r), (hook, r.name)


def test_the_announce_magic_is_the_stage_runners() -> None:
    from harness.nodes.remote import stagerunner
    from harness.sensors import falco, tetragon
    from harness.sensors.bpftrace import MARKER_BASE

    event_h = (gen.HERE / "event.h").read_text()
    base = stagerunner.ANNOUNCE_BASE
    assert f"#define ST_ANNOUNCE_BASE {base:#x}" in event_h
    assert f"#define ST_ANNOUNCE_LAST {base + 0xFFFF:#x}" in event_h
    assert f"#define ST_INIT_PIDNS {INIT_PIDNS}U" in event_h
    assert base > 4 * 1024 * 1024  # above PID_MAX_LIMIT: never a real pid
    announce = range(base, base + 0x10000)
    # no sensor's sync marker is taken for an announcement (nor the other way round)
    for first, last in ((MARKER_BASE, MARKER_BASE + 0xFFFFF),
                        (falco.MARKER_BASE, falco.MARKER_BASE + 0xFFFFF),
                        (tetragon.MARKER_PID, tetragon.MARKER_PID)):
        assert last < announce.start or first > announce[-1], hex(first)


def test_a_runs_loss_scope_is_its_own_and_never_zero() -> None:
    from harness.nodes.remote.stagerunner import loss_scope

    scopes = {loss_scope(f"run-{i}") for i in range(2000)}
    assert 0 not in scopes
    assert all(0 < s <= 0xFFFF for s in scopes)
    assert len(scopes) > 1900  # 16 bits: concurrent runs rarely share one
    assert loss_scope("") == 0
    assert loss_scope("abc") == loss_scope("abc")


@pytest.mark.parametrize("bad", [0, 3, 2048, True, "8"])
def test_ringbuf_mb_must_be_a_power_of_two_in_range(bad: Any) -> None:
    with pytest.raises(ConfigError, match='ringbuf_mb must be "auto" or a power of two from 1'):
        build_sensor("ref", {"type": "libbpf", "ringbuf_mb": bad})


@pytest.mark.parametrize(("rate", "mb"), [(None, 8), (0.0, 8), (8000.0, 8), (9000.0, 16),
                                          (100_000.0, 128), (5e6, 256)])
def test_auto_ring_holds_a_second_of_the_measured_peak(rate: float | None, mb: int) -> None:
    from harness.sensors.libbpf import EVENT_BYTES, HEADROOM_S, ring_mb_for

    assert ring_mb_for(rate) == mb
    if rate and mb < 256:  # it holds the headroom, and half of it would not
        assert mb << 20 >= rate * EVENT_BYTES * HEADROOM_S > (mb << 19) or mb == 8


def test_the_rate_meter_reads_the_offered_rate_from_heartbeats(tmp_path: Path) -> None:
    from harness.sensors.libbpf import LibbpfSensor
    from harness.sensors.rates import load_rate, save_rate

    sensor = LibbpfSensor(cache_dir=str(tmp_path))
    meter = sensor.rate

    def beat(ts_ns: int, events: int, lost: int) -> None:
        sensor.on_line(json.dumps({"type": "printf", "data": json.dumps(
            {"kind": "heartbeat", "ts_ns": ts_ns, "events": events, "lost": lost})}))

    beat(1_000_000_000, 0, 0)
    assert meter.peak is None  # one heartbeat: no rate yet
    beat(2_000_000_000, 900, 100)  # 1000 offered in 1 s
    beat(2_500_000_000, 2900, 600)  # 2500 in 0.5 s
    beat(3_500_000_000, 3000, 600)
    assert meter.peak == pytest.approx(5000.0)
    assert sensor.stream.malformed == 0
    path = tmp_path / "rate-local-none.json"
    assert load_rate(path) is None
    save_rate(path, meter.peak)
    assert load_rate(path) == pytest.approx(5000.0)
    path.write_text("{not json")
    assert load_rate(path) is None  # a bad file: not measured, the default size
    path.write_text('{"peak_per_s": -3}')
    assert load_rate(path) is None


def test_auto_sizes_the_loaders_ring_from_the_last_measured_peak(tmp_path: Path) -> None:
    from harness.sensors.libbpf import LibbpfSensor
    from harness.sensors.rates import save_rate

    sensor = LibbpfSensor(cache_dir=str(tmp_path), filter="runs", load_modules=False)
    argv = sensor.loader_args("/l", "/o")
    assert argv[argv.index("--ringbuf-mb") + 1] == "8"  # nothing measured yet
    save_rate(tmp_path / "rate-local-runs.json", 100_000.0)
    argv = sensor.loader_args("/l", "/o")
    assert argv[argv.index("--ringbuf-mb") + 1] == "128"
    fixed = LibbpfSensor(cache_dir=str(tmp_path), filter="runs", ringbuf_mb=4,
                         load_modules=False)
    argv = fixed.loader_args("/l", "/o")
    assert argv[argv.index("--ringbuf-mb") + 1] == "4"  # a configured size is kept


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
