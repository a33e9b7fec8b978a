"""``harness.core.scenario.check_scenario`` on real YAML files: the model, and file:line: key errors."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from harness.builtin import BUILTIN
from harness.core.atomic import Atomic
from harness.core.errors import ScenarioError
from harness.core.scenario import check_scenario, load_atomics, scenario_files
from harness.core.verdict import Expectation

ROOT = Path(__file__).resolve().parents[2]

ATOMICS = {
    "ptrace-attach": """\
id: ptrace-attach
name: ptrace attach to a process
technique: T1055.008
supported_platforms: [linux, containers]
touches:
  - {kind: process, what: "pid #{pid} of the run's private PID namespace"}
input_arguments:
  pid: {description: "pid to attach to, as seen in the context", type: integer, default: 1}
executor:
  name: sh
  command: "python3 #{bin}/ptrace_attach.py #{pid}"
  timeout: 10s
proof:
  stdout: "^attached pid=#{pid} tracer=[1-9]"
""",
    "read-hostname": """\
id: read-hostname
name: Read /etc/hostname
technique: T1082
touches:
  - {kind: file, what: /etc/hostname (read only)}
input_arguments: {}
executor:
  name: sh
  command: cat /etc/hostname
proof:
  stdout: "."
""",
}

# Line numbers below are this text's (see the comments at the right).
SCENARIO = """\
id: ptrace-pid1
name: ptrace of PID 1 inside a container
technique: T1055.008
atomic: ptrace-attach
arguments: {pid: 1}
contexts: [namespace, host]
window: 5s
expect:
  auditd:
    technique: T1055.008
    rule: T1055.008
    fields: {syscall: ptrace}
"""
#  1 id         4 atomic      7 window     10 technique
#  2 name       5 arguments   8 expect     11 rule
#  3 technique  6 contexts    9 auditd     12 fields

BENIGN = """\
id: quiet-hostname
name: "Benign: read /etc/hostname"
benign: true
atomic: read-hostname
contexts: [host, namespace]
"""


def _edit(text: str, line: int, new: str) -> str:
    """``text`` with its line ``line`` (1-based) replaced by ``new`` (may hold newlines)."""
    lines = text.split("\n")
    lines[line - 1] = new
    return "\n".join(lines)


@pytest.fixture
def atomics(tmp_path: Path) -> dict[str, Atomic]:
    for name, text in ATOMICS.items():
        path = tmp_path / "atomic" / f"{name}.yaml"
        (path.parent / "bin").mkdir(parents=True, exist_ok=True)
        for helper in re.findall(r"#\{bin\}/([\w.-]+)", text):
            (path.parent / "bin" / helper).touch()
        path.write_text(text, encoding="utf-8")
    loaded, errors = load_atomics([tmp_path / "atomic"])
    assert errors == []
    return loaded


def _write(tmp_path: Path, text: str, name: str = "ptrace-pid1",
           tactic: str = "privilege-escalation") -> Path:
    path = tmp_path / "scenarios" / tactic / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _only_error(path: Path, atomics: dict[str, Atomic]) -> ScenarioError:
    errors, scenario = check_scenario(path, atomics)
    assert scenario is None
    assert len(errors) == 1, errors
    return errors[0]


# ---------------------------------------------------------------- valid
def test_check_scenario_loads_a_valid_pair(tmp_path: Path, atomics: dict[str, Atomic]) -> None:
    path = _write(tmp_path, SCENARIO)
    errors, scenario = check_scenario(path, atomics)
    assert errors == []
    assert scenario is not None
    assert (scenario.id, scenario.name, scenario.path, scenario.tactic) == (
        "ptrace-pid1", "ptrace of PID 1 inside a container", path, "privilege-escalation")
    assert scenario.atomic is atomics["ptrace-attach"]
    assert (scenario.contexts, scenario.technique, scenario.benign) == (
        ("namespace", "host"), "T1055.008", False)
    assert (scenario.window, scenario.arguments) == (5.0, {"pid": 1})


def test_check_scenario_window_is_none_when_absent(
    tmp_path: Path, atomics: dict[str, Atomic]
) -> None:
    _, scenario = check_scenario(_write(tmp_path, _edit(SCENARIO, 7, "")), atomics)
    assert scenario is not None
    assert scenario.window is None


def test_check_scenario_arguments_default_from_the_atomic(
    tmp_path: Path, atomics: dict[str, Atomic]
) -> None:
    _, scenario = check_scenario(_write(tmp_path, _edit(SCENARIO, 5, "")), atomics)
    assert scenario is not None
    assert scenario.arguments == {"pid": 1}


def test_scenario_expectation_from_expect_block(tmp_path: Path, atomics: dict[str, Atomic]) -> None:
    _, scenario = check_scenario(_write(tmp_path, SCENARIO), atomics)
    assert scenario is not None
    assert scenario.expectation("auditd") == Expectation(
        technique="T1055.008", rule="T1055.008", fields={"syscall": "ptrace"})


def test_scenario_expectation_defaults_to_the_scenario_technique(
    tmp_path: Path, atomics: dict[str, Atomic]
) -> None:
    _, scenario = check_scenario(_write(tmp_path, SCENARIO), atomics)
    assert scenario is not None
    assert scenario.expectation("bpftrace") == Expectation(technique="T1055.008")


def test_scenario_benign_expects_nothing(tmp_path: Path, atomics: dict[str, Atomic]) -> None:
    path = _write(tmp_path, BENIGN, name="quiet-hostname", tactic="benign")
    errors, scenario = check_scenario(path, atomics)
    assert errors == []
    assert scenario is not None
    assert (scenario.benign, scenario.technique, scenario.tactic) == (True, None, "benign")
    assert scenario.expectation("auditd") == Expectation(technique=None)
    assert scenario.expectation("bpftrace").benign


def test_check_scenario_bundled_files_are_valid() -> None:
    atomics, errors = load_atomics([BUILTIN / "atomic"])
    assert errors == []
    paths = scenario_files([BUILTIN / "scenarios"])
    assert paths
    for path in paths:
        assert check_scenario(path, atomics)[0] == [], path


# ---------------------------------------------------------------- errors: file:line: key
@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        pytest.param(_edit(SCENARIO, 7, "windw: 5s"), 7, "windw",
                     "unknown key 'windw': expected one of arguments, atomic, benign,",
                     id="unknown-top-level-key"),
        pytest.param(_edit(SCENARIO, 11, "    rules: T1055.008"), 11, "expect.auditd.rules",
                     "unknown key 'rules': expected one of enforce, fields, gap, requires, rule, "
                     "severity, technique",
                     id="unknown-key-under-expect-sensor"),
        pytest.param(_edit(SCENARIO, 12, "    fields: {syscall: {glob: ptr*}}"), 12,
                     "expect.auditd.fields.syscall",
                     "expected a scalar (exact match) or a one-key mapping "
                     "{prefix|contains|regex: ...}, got {'glob': 'ptr*'}",
                     id="unknown-matcher-operator"),
        pytest.param(_edit(SCENARIO, 6, "contexts: [namespace, vm]"), 6, "contexts[1]",
                     "expected one of 'host', 'namespace', 'container-privileged', "
                     "'container-hostpid', 'container-hostetc', 'pod', 'pod-hostpid', "
                     "'pod-privileged', got 'vm'", id="bad-context"),
        pytest.param(_edit(SCENARIO, 3, "technique: T12"), 3, "technique",
                     "expected an ATT&CK id like T1611 or T1055.008, got 'T12'",
                     id="bad-technique-format"),
        pytest.param(_edit(SCENARIO, 3, "technique: T9999"), 3, "technique",
                     "T9999 is not in shadowtest's technique table", id="unknown-technique"),
        pytest.param(_edit(SCENARIO, 3, "technique: T1089"), 3, "technique",
                     "T1089 (Disabling Security Tools) is deprecated in ATT&CK; use T1562.001",
                     id="deprecated-technique"),
        pytest.param(_edit(SCENARIO, 10, "    technique: T1089"), 10, "expect.auditd.technique",
                     "T1089 (Disabling Security Tools) is deprecated in ATT&CK; use T1562.001",
                     id="deprecated-technique-under-expect"),
        pytest.param(_edit(SCENARIO, 3, ""), 1, "<root>",
                     "'technique' is a required property; add it (or benign: true)",
                     id="missing-technique"),
        pytest.param(_edit(SCENARIO, 1, "id: ptrace-pid2"), 1, "id",
                     "expected 'ptrace-pid1' (the file name), got 'ptrace-pid2'",
                     id="id-is-not-file-name"),
        pytest.param(_edit(SCENARIO, 4, "atomic: ptrace-seize"), 4, "atomic",
                     "unknown atomic 'ptrace-seize': expected one of ptrace-attach, read-hostname",
                     id="unknown-atomic"),
        pytest.param(_edit(SCENARIO, 5, "arguments: {pid: 1, signal: 9}"), 5, "arguments.signal",
                     "atomic 'ptrace-attach' has no input argument 'signal': expected one of pid",
                     id="undeclared-argument"),
        pytest.param(_edit(SCENARIO, 2, "name: ptrace: of PID 1"), 2, "<root>",
                     "invalid YAML: mapping values are not allowed in this context", id="yaml-syntax"),
        pytest.param(_edit(SCENARIO, 8, "window: 10s\nexpect:"), 8, "window",
                     "duplicate key: each key may appear once", id="duplicate-key"),
        pytest.param(_edit(SCENARIO, 2, "name: ptrace of PID #{pid}"), 2, "name",
                     "unquoted value followed by ' #{...}': YAML reads that as a comment",
                     id="yaml-comment-trap"),
        pytest.param("- id: ptrace-pid1\n", 1, "<root>",
                     "expected a mapping at the top of the scenario file, got list", id="not-a-mapping"),
    ],
)
def test_check_scenario_error_names_file_line_and_key(
    tmp_path: Path, atomics: dict[str, Atomic], text: str, line: int, key: str, message: str
) -> None:
    path = _write(tmp_path, text)
    err = _only_error(path, atomics)
    assert str(err).startswith(f"{path}:{line}: {key}: {message}")
    assert (err.path, err.line) == (str(path), line)


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        pytest.param(_edit(BENIGN, 4, "technique: T1082\natomic: read-hostname"), 4,
                     "technique", "a benign control has no technique; remove it",
                     id="benign-with-technique"),
        pytest.param(BENIGN + "expect:\n  auditd: {rule: x}\n", 6, "expect",
                     "a benign control expects nothing; remove expect", id="benign-with-expect"),
    ],
)
def test_check_scenario_benign_error_names_file_line_and_key(
    tmp_path: Path, atomics: dict[str, Atomic], text: str, line: int, key: str, message: str
) -> None:
    path = _write(tmp_path, text, name="quiet-hostname", tactic="benign")
    err = _only_error(path, atomics)
    assert str(err).startswith(f"{path}:{line}: {key}: {message}")


def test_check_scenario_reports_every_schema_error_by_line(
    tmp_path: Path, atomics: dict[str, Atomic]
) -> None:
    text = _edit(_edit(SCENARIO, 7, "windw: 5s"), 6, "contexts: [vm]")
    path = _write(tmp_path, text)
    errors, scenario = check_scenario(path, atomics)
    assert scenario is None
    assert [(e.line, e.key) for e in errors] == [(6, "contexts[0]"), (7, "windw")]


def test_check_scenario_empty_file_error_names_file_line_and_key(
    tmp_path: Path, atomics: dict[str, Atomic]
) -> None:
    path = _write(tmp_path, "")
    err = _only_error(path, atomics)
    assert str(err).startswith(f"{path}:1: <root>: expected a mapping")


# ---------------------------------------------------------------- per-kernel overrides
OVERRIDES = SCENARIO + """\
overrides:
  - kernel: "<5.8"
    expect:
      auditd: {gap: "no setns auditing before 5.8 in this rule pack"}
  - features: [kprobes]
    expect:
      auditd: {technique: T1055.008, rule: kprobe-rule}
"""


def test_overrides_replace_a_sensors_expectation_on_matching_kernels(
        tmp_path: Path, atomics: dict[str, Atomic]) -> None:
    errors, scenario = check_scenario(_write(tmp_path, OVERRIDES), atomics)
    assert errors == []
    assert scenario is not None
    default = scenario.expectation("auditd")
    assert default.rule == "T1055.008"
    assert scenario.expectation("auditd", {"kernel": "6.1.0-56-amd64", "kprobes": False}) == default
    old = scenario.expectation("auditd", {"kernel": "5.4.0-150-generic", "kprobes": True})
    assert old.gap == "no setns auditing before 5.8 in this rule pack"  # first match wins
    assert scenario.expectation("auditd", {"kernel": "6.12.1", "kprobes": True}).rule == "kprobe-rule"
    assert scenario.expectation("bpftrace", {"kernel": "5.4.0"}).technique == "T1055.008"


@pytest.mark.parametrize(("edit", "key", "message"), [
    ('  - kernel: "<5.8"\n    expect: {}', "overrides[0].expect", "expected minProperties 1, got {}"),
    ("  - expect:\n      auditd: {rule: x}", "overrides[0]", "expected anyOf [{'required': ['kernel']}"),
    ('  - kernel: "<5.8"\n    colour: red\n    expect:\n      auditd: {rule: x}', "overrides[0]",
     "unknown key 'colour'"),
])
def test_override_errors_name_file_line_and_key(tmp_path: Path, atomics: dict[str, Atomic],
                                                edit: str, key: str, message: str) -> None:
    path = _write(tmp_path, SCENARIO + "overrides:\n" + edit + "\n")
    err = _only_error(path, atomics)
    assert f"{path}:" in str(err)
    assert f": {key}" in str(err)
    assert message in str(err)


# ---------------------------------------------------------------- known gaps
GAP_BLOCK = """\
  falco: {gap: "no default rule for PTRACE_SEIZE"}
"""


def test_scenario_expectation_gap_is_a_known_gap_of_the_scenario_technique(
    tmp_path: Path, atomics: dict[str, Atomic]
) -> None:
    errors, scenario = check_scenario(_write(tmp_path, SCENARIO + GAP_BLOCK), atomics)
    assert errors == []
    assert scenario is not None
    assert scenario.expectation("falco") == Expectation(
        technique="T1055.008", gap="no default rule for PTRACE_SEIZE")
    assert scenario.expectation("auditd").gap is None


def test_check_scenario_gap_excludes_the_other_keys(
    tmp_path: Path, atomics: dict[str, Atomic]
) -> None:
    text = SCENARIO + '  falco: {gap: "no rule", rule: "PTRACE attached to process"}\n'
    err = _only_error(_write(tmp_path, text), atomics)
    assert (err.line, err.key) == (13, "expect.falco")
    assert "'gap' declares a known gap and excludes technique, rule" in str(err)


def test_check_scenario_gap_must_not_be_empty(tmp_path: Path, atomics: dict[str, Atomic]) -> None:
    err = _only_error(_write(tmp_path, SCENARIO + '  falco: {gap: ""}\n'), atomics)
    assert err.key == "expect.falco.gap"


# ---------------------------------------------------------------- typed, quoted arguments
DROP = """\
id: drop-file
name: Drop a file
technique: T1098
touches:
  - {kind: file, what: "#{dir}/#{note}"}
input_arguments:
  dir: {description: where, type: path}
  note: {description: the file's name and content, type: string, default: hello}
  mode: {description: file mode, type: enum, values: ["0644", "0600"], default: "0644"}
  count: {description: copies, type: integer, default: 1}
executor:
  name: sh
  command: >-
    printf '%s\\n' #{note} > "#{dir}/#{note}" && chmod #{mode} #{dir}/#{note} &&
    printf 'wrote [%s] %s time(s)\\n' '#{note}' #{count}
proof:
  stdout: "^wrote \\\\[#{note}\\\\]"
"""

DROP_SCENARIO = """\
id: drop-note
name: Drop a note
technique: T1098
atomic: drop-file
arguments:
  dir: /tmp
contexts: [host]
"""
#  1 id  2 name  3 technique  4 atomic  5 arguments  6   dir  7 contexts


@pytest.fixture
def drop(tmp_path: Path) -> dict[str, Atomic]:
    path = tmp_path / "atomic" / "drop-file.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DROP, encoding="utf-8")
    loaded, errors = load_atomics([path.parent])
    assert errors == []
    return loaded


def test_check_scenario_arguments_are_checked_and_normalised(
    tmp_path: Path, drop: dict[str, Atomic]
) -> None:
    text = _edit(DROP_SCENARIO, 6, "  dir: /var/tmp\n  count: '3'\n  mode: '0600'")
    errors, scenario = check_scenario(_write(tmp_path, text, name="drop-note"), drop)
    assert errors == []
    assert scenario is not None
    assert scenario.arguments == {"dir": "/var/tmp", "note": "hello", "mode": "0600", "count": 3}


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        pytest.param("  dir: /tmp\n  count: three", "arguments.count",
                     "expected an integer, got 'three' (input argument 'count' of atomic "
                     "'drop-file', type integer)", id="integer"),
        pytest.param("  dir: /tmp\n  mode: '0777'", "arguments.mode",
                     "expected one of '0644', '0600', got '0777' (input argument 'mode'", id="enum"),
        pytest.param("  dir: ~/notes", "arguments.dir",
                     "expected a literal path, got '~/notes': values are shell-quoted, so ~, $VAR "
                     "and `...` are not expanded; give the path itself", id="path-tilde"),
        pytest.param("  dir: $HOME", "arguments.dir", "expected a literal path, got '$HOME'",
                     id="path-variable"),
        pytest.param("  dir: /tmp\n  note: no", "arguments.note",
                     "expected type ['string', 'number'], got False (YAML reads yes/no/true/false",
                     id="yaml-boolean"),
        pytest.param("  note: x", "arguments",
                     "atomic 'drop-file' needs a value for its input argument 'dir' (it has no "
                     "default): add arguments: {dir: ...}", id="missing-required"),
    ],
)
def test_check_scenario_bad_argument_names_file_line_and_key(
    tmp_path: Path, drop: dict[str, Atomic], line: str, key: str, message: str
) -> None:
    path = _write(tmp_path, _edit(DROP_SCENARIO, 6, line), name="drop-note")
    err = _only_error(path, drop)
    assert str(err).startswith(f"{path}:{err.line}: {key}: {message}")
    assert err.line in (5, 6, 7)


@pytest.mark.parametrize("hostile", [
    "x; touch pwned", "$(touch pwned)", "`touch pwned`", "' ; touch pwned #", '" ; touch pwned #',
    "a\ntouch pwned", "$(id)",
])
def test_scenario_argument_reaches_the_command_as_one_literal_word(
    tmp_path: Path, drop: dict[str, Atomic], hostile: str
) -> None:
    """A hostile string value loads (it is a valid string) and reaches every place of the
    command, unquoted, in "..." and in '...', as itself: the file's name and content and
    the proof line, never code."""
    out = tmp_path / "out"
    out.mkdir()
    text = _edit(DROP_SCENARIO, 6, f"  dir: {out}\n  note: {json.dumps(hostile)}")
    errors, scenario = check_scenario(_write(tmp_path, text, name="drop-note"), drop)
    assert errors == []
    assert scenario is not None
    atomic = scenario.atomic
    values = {**scenario.arguments, "run_id": "st0123456789ab"}
    res = subprocess.run(["sh", "-c", atomic.render(atomic.command, values)], capture_output=True,
                         text=True, check=False, timeout=10, cwd=tmp_path)
    assert (res.returncode, res.stderr) == (0, "")
    assert [p.name for p in out.iterdir()] == [hostile]
    assert (out / hostile).read_text() == hostile + "\n"
    assert res.stdout == f"wrote [{hostile}] 1 time(s)\n"
    assert re.search(atomic.render(atomic.proof_stdout or "", values, re.escape), res.stdout)
    assert not (tmp_path / "pwned").exists()
