"""The bundled bpftrace programs are generated from one rule table
(``harness.sensors.bpftrace.rules``) and detect exactly what rule pack 2's hand-written
programs did.

rulepack2-handwritten.json = every detection printf (probe, rule, format) and every
path-word constant of the hand-written sensor.bt and sensor-kprobes.bt, and every
detection printf of the hand-written enforce.bt (commit a822713).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.core.mitre import check_technique
from harness.sensors.bpftrace import MODULES, program_path
from harness.sensors.bpftrace import generate as gen
from harness.sensors.bpftrace.rules import HOOKS, RULES, VERSION, PathMatch, hook, module_rules

DATA = Path(__file__).resolve().parent.parent / "data" / "bpftrace"
OLD = json.loads((DATA / "rulepack2-handwritten.json").read_text())
PROBE = re.compile(r"^(tracepoint:\S+|kprobe:\S+)\s*$")
DETECTION = re.compile(r'printf\("(\{\\"kind\\":\\"detection\\".*?)",\s*$')


def _detections(text: str) -> list[tuple[str, str]]:
    """(probe, printf format) of every detection printf of a bpftrace program."""
    out, probe = [], ""
    for line in text.splitlines():
        if m := PROBE.match(line):
            probe = m.group(1)
        if m := DETECTION.search(line):
            out.append((probe, m.group(1).replace('\\"', '"')))
    return out


def _generated() -> str:
    return gen.sensor_program() + "\n" + gen.module_program("kprobes")


def test_committed_programs_and_docs_are_the_rule_tables() -> None:
    stale = [str(p.relative_to(gen.HERE.parents[2])) for p in gen.stale()]
    assert stale == [], (f"{stale} differ from what harness/sensors/bpftrace/rules.py "
                         f"generates: run `{gen.COMMAND}` and commit the result")


def test_check_reports_stale_files_and_how_to_regenerate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(gen, "HERE", tmp_path)
    (tmp_path / "sensor.bt").write_text(gen.sensor_program().replace("ptrace-pid1", "x"))
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert f"stale: {tmp_path / 'sensor.bt'} (regenerate: {gen.COMMAND})" in err
    assert "RULES.md" in err  # missing counts as stale
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
    assert (tmp_path / "sensor.bt").read_text() == program_path().read_text()


def test_every_detection_line_of_rule_pack_2_is_printed_by_the_same_probe() -> None:
    """Same rules, techniques, severities, hooks and line formats as the hand-written
    programs: each (probe, printf format) pair, no more and no fewer."""
    old = sorted((d["probe"], d["format"]) for d in OLD["detections"])
    new = sorted(_detections(_generated()))
    assert new == old


def test_enforce_program_prints_enforce_1s_lines_and_acts_in_scope_only() -> None:
    old = sorted((d["probe"], d["format"]) for d in OLD["enforce_detections"])
    text = gen.enforce_program()
    assert sorted(_detections(text)) == old
    for probe in text.split("\ntracepoint:")[1:]:
        if "detection" in probe:  # the scope is decided before the kill, in every probe
            assert probe.index("if ($scoped") < probe.index('signal("KILL");')
    assert "shadowtest-enforce: 1" in text.split("*/", 1)[0]


def test_rule_technique_pairs_are_rule_pack_2s() -> None:
    old = {(d["rule"], json.loads(re.sub(r"%\w+", "0", d["format"].replace("\\n", "")).replace(
        '"0"', '""'))["technique"]) for d in OLD["detections"]}
    assert {(r.name, r.technique) for r in RULES} == old
    assert len({r.name for r in RULES}) == len(RULES)


#: basenames rule pack 3 no longer matches anywhere: ld-preload-write and core-pattern-write
#: match the real paths only (/etc/ld.so.preload, /proc/sys/kernel/core_pattern), not a
#: look-alike file of that name in any directory (issue 15)
DROPPED_BASENAMES = ("ld.so.preload", "core_pattern")


def _word_text(word: str) -> str:
    return int(word, 16).to_bytes(8, "little").rstrip(b"\0").decode("latin-1")


def test_every_path_word_of_rule_pack_2_is_compared_but_the_dropped_basenames() -> None:
    new = {int(c, 16) for c in re.findall(r"0x[0-9a-f]+", gen.sensor_program())}
    missing = [c for c in OLD["word_constants"] if int(c, 16) not in new]
    assert missing  # the dropped basenames' words are gone...
    assert all(any(_word_text(c) in b for b in DROPPED_BASENAMES) for c in missing), [
        _word_text(c) for c in missing]  # ...and nothing else


def test_each_hook_is_probed_once_and_walks_the_ancestors_once() -> None:
    text = gen.sensor_program()
    probes = [line for line in text.splitlines() if PROBE.match(line)]
    assert len(probes) == len(set(probes))
    assert probes.count("tracepoint:syscalls:sys_enter_openat") == 1
    rule_probes = [p for p in probes if not p.endswith("sys_enter_getpgid")]
    assert text.count("$a6 = $a5->real_parent;") == len(rule_probes)
    assert text.count("while ($i < 64)") == 1  # one basename scan (openat)
    assert len(rule_probes) == len({h for r in module_rules("") for h in r.hooks})


def test_header_and_docs_list_every_rule_with_its_technique() -> None:
    header = gen.sensor_program().split("*/", 1)[0]
    docs = gen.rules_markdown()
    for r in RULES:
        row = f"{r.name:<26}{r.technique:<11}{r.severity:<8}"
        assert (row in header) == (r.module == ""), r.name
        assert f"| `{r.name}` | {r.technique} | {r.severity} |" in docs
    assert f"shadowtest-rulepack: {VERSION}" in header
    assert VERSION == "3"
    assert docs.count("\n| `") == len(RULES)


def test_rules_name_known_techniques_and_existing_hooks() -> None:
    for r in RULES:
        assert check_technique(r.technique) is None, r.name
        for h in r.hooks:
            hook(h)
    assert {h.name for h in HOOKS} == {h for r in RULES for h in r.hooks}


def test_optional_modules_are_the_sensors_modules() -> None:
    assert {r.module for r in RULES} - {""} == set(MODULES)
    assert {name for name, _ in MODULES.values()} == {
        p.name for p in gen.outputs() if p.suffix == ".bt"} - {"sensor.bt", "enforce.bt"}


def _word_match(path: str, match: PathMatch) -> bool:
    """What the generated word compares decide, evaluated on ``path``'s bytes."""
    buf = path.encode() + b"\0" * 32
    if match.kind == "basename":
        end = buf.index(b"\0")
        slash = max((i + 1 for i in range(min(end, 64)) if buf[i] == ord("/")), default=0)
        buf = buf[slash:]
        lit = match.value + "\0"
    else:
        lit = match.value + ("\0" if match.kind == "exact" else "")
    return all(int.from_bytes(buf[off:off + 8], "little") & mask == value
               for off, mask, value in gen.words(lit))


@pytest.mark.parametrize("path", [
    "/etc/sudoers", "/etc/sudoers.d/x", "/etc/sudoers2", "/etc/sudoers.d", "/etc/shadow",
    "/etc/gshadow", "/etc/shadow-", "/etc/shadow.lock", "/var/run/secrets/kubernetes.io/t",
    "/run/secrets/kube", "/run/secrets/kub", "/proc/1/mem", "/proc/self/environ", "/proc/12/environ",
    "/proc/thread-self/environ", "/x/release_agent", "release_agent", "/a/release_agent2",
    "/etc/ld.so.preload", "/etc/ld.so.preload.bak", "/etc/core_pattern", "/etc/systemd/system/a",
    "/etc/systemd/systemx", "/dev/sda1", "cgroup", "cgroup2", "", "/"])
def test_word_compares_mean_prefix_exact_and_basename(path: str) -> None:
    values = {"/etc/sudoers", "/etc/sudoers.d/", "/etc/shadow", "/etc/gshadow", "/proc/",
              "/var/run/secrets/kube", "/run/secrets/kube", "/proc/self/", "/proc/thread-self/",
              "/etc/systemd/system/", "/dev/", "cgroup"}
    for value in values:
        assert _word_match(path, PathMatch("prefix", value)) == path.startswith(value), value
        assert _word_match(path, PathMatch("exact", value)) == (path == value), value
    for name in ("release_agent", "core_pattern", "ld.so.preload", "mem", "environ"):
        got = _word_match(path, PathMatch("basename", name))
        assert got == (path.rsplit("/", 1)[-1] == name), name


@pytest.mark.skipif(shutil.which("bpftrace") is None or os.geteuid() != 0,
                    reason="needs bpftrace and root (it compiles against this kernel's BTF)")
def test_generated_programs_compile_within_the_bpf_stack_limit(tmp_path: Path) -> None:
    """bpftrace's LLVM refuses a probe whose stack passes 512 bytes (the openat probe
    holds 12 rules): compile sensor.bt plus its modules as the sensor loads them, and
    enforce.bt."""
    program = tmp_path / "sensor.bt"
    program.write_text(_generated())
    for argv in (["bpftrace", "--emit-elf", str(tmp_path / "sensor.o"), str(program)],
                 ["bpftrace", "--unsafe", "--emit-elf", str(tmp_path / "enforce.o"),
                  str(program_path("enforce.bt"))]):
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "stack limit" not in res.stderr
