"""``harness.core.atomic.check_atomic`` on real YAML files: the model, and file:line: key errors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.builtin import BUILTIN
from harness.core.atomic import Atomic, InputArgument, Precondition, check_atomic
from harness.core.errors import ScenarioError
from harness.core.scenario import load_atomics
from harness.core.shellquote import shell_quote

# Line numbers below are this text's (see the comments at the right).
ATOMIC = """\
id: ptrace-attach
name: ptrace attach to a process
description: PTRACE_ATTACH to a target pid, check TracerPid, then detach.
technique: T1055.008
supported_platforms: [linux, containers]
touches:
  - {kind: process, what: "pid #{pid} of the run's private PID namespace"}
input_arguments:
  pid: {description: "pid to attach to, as seen in the context", type: integer, default: 1}
precondition:
  - description: runs in a private PID namespace
    command: test "$(readlink /proc/self/ns/pid)" != "#{host_pidns}"
executor:
  name: sh
  command: "python3 #{bin}/ptrace_attach.py #{pid}"
  cleanup_command: "true"
  timeout: 10s
proof:
  stdout: "^attached pid=#{pid} tracer=[1-9]"
"""
#  1 id            6 touches          11 - description   16 cleanup_command
#  2 name          7   - {kind...}    12   command       17 timeout
#  3 description   8 input_arguments  13 executor        18 proof
#  4 technique     9   pid            14 name            19 stdout
#  5 platforms    10 precondition     15 command


def _edit(text: str, line: int, new: str) -> str:
    """``text`` with its line ``line`` (1-based) replaced by ``new`` (may hold newlines)."""
    lines = text.split("\n")
    lines[line - 1] = new
    return "\n".join(lines)


def _write(tmp_path: Path, text: str, name: str = "ptrace-attach") -> Path:
    path = tmp_path / "atomic" / f"{name}.yaml"
    (path.parent / "bin").mkdir(parents=True, exist_ok=True)
    (path.parent / "bin" / "ptrace_attach.py").touch()  # the helper #{bin}/ptrace_attach.py
    path.write_text(text, encoding="utf-8")
    return path


def test_check_atomic_names_a_missing_bin_helper(tmp_path: Path) -> None:
    path = _write(tmp_path, ATOMIC)
    (path.parent / "bin" / "ptrace_attach.py").unlink()
    err = _only_error(path)
    assert (err.line, err.key) == (15, "executor.command")
    assert "helper #{bin}/ptrace_attach.py does not exist" in str(err)
    assert str(path.parent / "bin" / "ptrace_attach.py") in str(err)


def _only_error(path: Path) -> ScenarioError:
    errors, atomic = check_atomic(path)
    assert atomic is None
    assert len(errors) == 1, errors
    return errors[0]


# ---------------------------------------------------------------- valid
def test_check_atomic_loads_a_valid_file(tmp_path: Path) -> None:
    path = _write(tmp_path, ATOMIC)
    assert check_atomic(path) == ([], Atomic(  # noqa: S604 - a field named shell, no subprocess
        id="ptrace-attach", name="ptrace attach to a process", technique="T1055.008",
        path=path, command="python3 #{bin}/ptrace_attach.py #{pid}", shell="sh",
        cleanup="true", timeout=10.0,
        precondition=(Precondition(
            "runs in a private PID namespace",
            'test "$(readlink /proc/self/ns/pid)" != "#{host_pidns}"'),),
        proof_command=None, proof_stdout="^attached pid=#{pid} tracer=[1-9]",
        touches=(("process", "pid #{pid} of the run's private PID namespace"),),
        arguments={"pid": 1},
        description="PTRACE_ATTACH to a target pid, check TracerPid, then detach.",
        inputs={"pid": InputArgument("pid", "integer", "pid to attach to, as seen in the context",
                                     default=1)},
    ))


def test_check_atomic_defaults_timeout_and_cleanup(tmp_path: Path) -> None:
    text = _edit(_edit(ATOMIC, 16, "# no cleanup"), 17, "# no timeout")
    errors, atomic = check_atomic(_write(tmp_path, text))
    assert errors == []
    assert atomic is not None
    assert (atomic.timeout, atomic.cleanup) == (30.0, "")


@pytest.mark.parametrize(
    "path", sorted((BUILTIN / "atomic").glob("*.yaml")),
    ids=lambda p: p.stem,
)
def test_check_atomic_bundled_files_are_valid(path: Path) -> None:
    errors, atomic = check_atomic(path)
    assert (errors, atomic is not None) == ([], True)


def test_load_atomics_keeps_good_files_and_reports_bad_ones(tmp_path: Path) -> None:
    _write(tmp_path, ATOMIC)
    bad = _write(tmp_path, _edit(ATOMIC, 1, "id: ptrace-attach"), name="ptrace-seize")
    atomics, errors = load_atomics([tmp_path / "atomic"])
    assert list(atomics) == ["ptrace-attach"]
    assert [str(e) for e in errors] == [
        f"{bad}:1: id: expected 'ptrace-seize' (the file name), got 'ptrace-attach'"
    ]


# ---------------------------------------------------------------- errors: file:line: key
@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        pytest.param(_edit(ATOMIC, 5, "platforms: [linux]"), 5, "platforms",
                     "unknown key 'platforms': expected one of description, executor, id,",
                     id="unknown-top-level-key"),
        pytest.param(_edit(ATOMIC, 16, '  cleanup: "true"'), 16, "executor.cleanup",
                     "unknown key 'cleanup': expected one of cleanup_command, command,",
                     id="unknown-executor-key"),
        pytest.param(_edit(ATOMIC, 7, '  - {kind: process, what: "x", path: /etc}'), 7,
                     "touches[0].path", "unknown key 'path': expected one of kind, what",
                     id="unknown-key-in-list-item"),
        pytest.param(_edit(ATOMIC, 17, "  timeout: 10 seconds"), 17, "executor.timeout",
                     "expected a value matching ^[0-9]+", id="bad-duration"),
        pytest.param(_edit(ATOMIC, 4, "technique: T12"), 4, "technique",
                     "expected an ATT&CK id like T1611 or T1055.008, got 'T12'",
                     id="bad-technique-format"),
        pytest.param(_edit(ATOMIC, 4, "technique: T9999"), 4, "technique",
                     "T9999 is not in shadowtest's technique table", id="unknown-technique"),
        pytest.param(_edit(ATOMIC, 4, "technique: T1089"), 4, "technique",
                     "T1089 (Disabling Security Tools) is deprecated in ATT&CK; use T1562.001",
                     id="deprecated-technique"),
        pytest.param(_edit(ATOMIC, 1, "id: ptrace-seize"), 1, "id",
                     "expected 'ptrace-attach' (the file name), got 'ptrace-seize'",
                     id="id-is-not-file-name"),
        pytest.param(_edit(ATOMIC, 15, '  command: "python3 #{bin}/ptrace_attach.py #{target}"'),
                     15, "executor.command",
                     "placeholder #{target} is not an input argument: expected one of ",
                     id="undeclared-placeholder-in-command"),
        pytest.param(_edit(ATOMIC, 12, "    command: test -d /proc/#{target}"), 12,
                     "precondition[0].command", "placeholder #{target} is not an input argument",
                     id="undeclared-placeholder-in-precondition"),
        pytest.param(_edit(ATOMIC, 19, '  stdout: "^attached pid=#{target}"'), 19,
                     "proof.stdout", "placeholder #{target} is not an input argument",
                     id="undeclared-placeholder-in-proof"),
        pytest.param(_edit(ATOMIC, 15, "  command: python3 #{bin}/ptrace_attach.py"), 15,
                     "executor.command", "unquoted value followed by ' #{...}'",
                     id="yaml-comment-trap"),
        pytest.param(_edit(ATOMIC, 15, "  command: #{python} #{bin}/ptrace_attach.py"), 15,
                     "executor.command", "unquoted value followed by ' #{...}'",
                     id="yaml-comment-trap-whole-value"),
        pytest.param(_edit(ATOMIC, 2, "name: ptrace: attach"), 2, "<root>",
                     "invalid YAML: mapping values are not allowed in this context", id="yaml-syntax"),
        pytest.param(_edit(ATOMIC, 17, "  timeout: 10s\n  timeout: 20s"), 18,
                     "executor.timeout", "duplicate key", id="duplicate-key"),
        pytest.param(_edit(_edit(ATOMIC, 18, ""), 19, ""), 1, "<root>",
                     "'proof' is a required property; add it", id="missing-required"),
        pytest.param("- id: ptrace-attach\n", 1, "<root>",
                     "expected a mapping at the top of the atomic file, got list", id="not-a-mapping"),
    ],
)
def test_check_atomic_error_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    path = _write(tmp_path, text)
    err = _only_error(path)
    assert str(err).startswith(f"{path}:{line}: {key}: {message}")
    assert (err.path, err.line) == (str(path), line)


def test_check_atomic_empty_file_error_names_file_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    err = _only_error(path)
    assert str(err).startswith(f"{path}:1: <root>: expected a mapping")


def test_check_atomic_undeclared_placeholder_lists_known_values(tmp_path: Path) -> None:
    path = _write(tmp_path, _edit(ATOMIC, 15, '  command: "#{python} #{target}"'))
    message = _only_error(path).message
    known = re.search(r"expected one of (.*); add it under input_arguments", message)
    assert known is not None
    assert known.group(1).split(", ") == sorted([
        "bin", "host_mntns", "host_mntns_fd", "host_pidns", "ns_init_pid", "pid", "python",
        "run_id",
    ])


# ---------------------------------------------------------------- render
def test_atomic_render_fills_and_quotes_placeholders(tmp_path: Path) -> None:
    _, atomic = check_atomic(_write(tmp_path, ATOMIC))
    assert atomic is not None
    assert atomic.render(atomic.command, {"bin": "/opt/a b", "pid": 1}) == (
        "python3 '/opt/a b'/ptrace_attach.py 1")
    assert atomic.render(atomic.proof_stdout or "", {"pid": "1.5"}, quote=re.escape) == (
        r"^attached pid=1\.5 tracer=[1-9]")


def test_atomic_render_unknown_placeholder_raises(tmp_path: Path) -> None:
    _, atomic = check_atomic(_write(tmp_path, ATOMIC))
    assert atomic is not None
    with pytest.raises(ScenarioError, match=r"placeholder #\{bin\} has no value"):
        atomic.render(atomic.command, {"pid": 1})


# ---------------------------------------------------------------- typed input arguments
def _args(tmp_path: Path, *lines: str) -> Path:
    """ATOMIC with its input_arguments replaced by ``lines`` (the first is at line 9)."""
    return _write(tmp_path, _edit(ATOMIC, 9, "\n".join(f"  {ln}" for ln in lines)))


def test_check_atomic_reads_typed_input_arguments(tmp_path: Path) -> None:
    path = _args(tmp_path,
                 "pid: {description: a pid, type: integer, default: '1'}",
                 "mode: {description: how, type: enum, values: [attach, seize], default: seize}",
                 "dir: {description: where, type: path}",
                 "glob: {description: a shell pattern, type: string, default: '*.conf', raw: true}",
                 "ratio: {description: how much, type: float, default: 2}")
    errors, atomic = check_atomic(path)
    assert (errors, atomic is not None) == ([], True)
    assert atomic is not None
    assert atomic.inputs == {
        "pid": InputArgument("pid", "integer", "a pid", default=1),
        "mode": InputArgument("mode", "enum", "how", default="seize", values=("attach", "seize")),
        "dir": InputArgument("dir", "path", "where"),
        "glob": InputArgument("glob", "string", "a shell pattern", default="*.conf", raw=True),
        "ratio": InputArgument("ratio", "float", "how much", default=2.0),
    }
    # an argument without a default has no entry: every scenario must give it
    assert atomic.arguments == {"pid": 1, "mode": "seize", "glob": "*.conf", "ratio": 2.0}


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        pytest.param("pid: {description: a pid, type: integer, default: one}",
                     "input_arguments.pid.default", "expected an integer, got 'one'",
                     id="integer-default"),
        pytest.param("pid: {description: a pid, type: integer, default: true}",
                     "input_arguments.pid.default",
                     "expected type ['string', 'number'], got True (YAML reads yes/no/true/false",
                     id="boolean-default"),
        pytest.param("pid: {description: a pid, type: enum, default: a}", "input_arguments.pid.type",
                     "an enum argument lists its allowed values: add values: [a, b, ...]",
                     id="enum-without-values"),
        pytest.param("pid: {description: a pid, type: enum, values: [a, b], default: c}",
                     "input_arguments.pid.default", "expected one of 'a', 'b', got 'c'",
                     id="enum-default-not-allowed"),
        pytest.param("pid: {description: a pid, type: string, values: [a]}",
                     "input_arguments.pid.values",
                     "values are for type enum, got type 'string': use type: enum or remove values",
                     id="values-without-enum"),
        pytest.param("pid: {description: a pid, type: path, default: ~/x}",
                     "input_arguments.pid.default",
                     "expected a literal path, got '~/x': values are shell-quoted, so ~, $VAR",
                     id="path-with-tilde"),
        pytest.param("pid: {description: a pid, type: url, default: x}", "input_arguments.pid.type",
                     "expected one of 'string', 'integer', 'float', 'path', 'enum', got 'url'",
                     id="unknown-type"),
        pytest.param("pid: {description: a pid, type: integer, raw: yes please}",
                     "input_arguments.pid.raw", "expected type boolean", id="raw-not-boolean"),
        pytest.param("pid: {description: a pid, type: integer}\n  bin: {description: x, type: path}",
                     "input_arguments.bin", "'bin' is a value the harness sets at run time",
                     id="runtime-value-name"),
    ],
)
def test_check_atomic_bad_input_argument_names_file_line_and_key(
    tmp_path: Path, line: str, key: str, message: str
) -> None:
    path = _args(tmp_path, line)
    err = _only_error(path)
    assert str(err).startswith(f"{path}:{err.line}: {key}: {message}")
    assert err.line in (9, 10)


# ---------------------------------------------------------------- quoting contexts
@pytest.mark.parametrize(
    ("command", "where", "fix"),
    [
        pytest.param('"echo `cat #{pid}`"', "a `...` command substitution",
                     "use $(...) instead of backticks", id="backtick"),
        pytest.param('"cat <<EOF\\n#{pid}\\nEOF\\n"', "a here-document",
                     'set a variable before it (v=#{pid}) and use "$v" in it', id="heredoc"),
        pytest.param('"true # #{pid}"', "a shell comment", "remove it from the comment",
                     id="comment"),
        pytest.param("echo \\#{pid}", "a word right after \\ or $", "remove the \\ or $ before it",
                     id="after-backslash"),
        pytest.param("echo $#{pid}", "a word right after \\ or $", "remove the \\ or $ before it",
                     id="after-dollar"),
        pytest.param("\"echo $'#{pid}'\"", "a $'...' string", "use '...' or \"...\" instead",
                     id="ansi-c"),
    ],
)
def test_check_atomic_placeholder_where_no_value_can_be_quoted_is_an_error(
    tmp_path: Path, command: str, where: str, fix: str
) -> None:
    path = _write(tmp_path, _edit(ATOMIC, 15, f"  command: {command}"))
    err = _only_error(path)
    assert (err.line, err.key) == (15, "executor.command")
    assert err.message == (f"#{{pid}} is inside {where}, where its value cannot be shell-quoted "
                           f"(values are quoted so that each is one literal word): {fix}")


def test_check_atomic_raw_argument_may_sit_anywhere(tmp_path: Path) -> None:
    text = _edit(_edit(ATOMIC, 15, '  command: "echo `echo #{pid}`"'), 9,
                 "  pid: {description: a pid, type: integer, default: 1, raw: true}")
    errors, atomic = check_atomic(_write(tmp_path, text))
    assert (errors, atomic is not None) == ([], True)


HOSTILE = ["x; touch {marker}", "$(touch {marker})", "`touch {marker}`", "a'b\"c\\\\d$HOME",
           "' ; touch {marker} ; '", "\" ; touch {marker} ; \"", "line\ntouch {marker}", "*", "",
           "-n", "#{pid}"]


def _sh(shell: str, script: str) -> str:
    res = subprocess.run([shell, "-c", script], capture_output=True, text=True, check=True,
                         timeout=10)
    return res.stdout


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize("template", [
    "printf '[%s]' #{v}", "printf '[%s]' pre-#{v}-post", 'printf "[%s]" "#{v}"',
    "printf '[%s]' \"in $(printf '%s' \"#{v}\") double\"", "printf '[%s]' 'single #{v} quote'",
    "printf '[%s]' $(printf '%s' #{v} | wc -c)", "x=#{v}; printf '[%s]' \"$x\"",
])
@pytest.mark.parametrize("hostile", HOSTILE)
def test_atomic_render_value_is_one_literal_word_and_never_runs(
    tmp_path: Path, shell: str, template: str, hostile: str
) -> None:
    marker = tmp_path / "pwned"
    value = hostile.replace("{marker}", str(marker))
    atomic = Atomic(id="a", name="a", technique="T1611", path=tmp_path / "a.yaml", command="",
                    inputs={"v": InputArgument("v")})
    out = _sh(shell, atomic.render(template, {"v": value}))
    literal = _sh(shell, template.replace("#{v}", "VALUE")).replace("VALUE", value)
    if "wc -c" in template:
        literal = f"[{len(value.encode())}]"
    assert out == literal  # exactly one word, byte for byte: printf saw one argument
    assert not marker.exists()


def test_atomic_render_pastes_a_raw_argument_as_it_is(tmp_path: Path) -> None:
    atomic = Atomic(id="a", name="a", technique="T1611", path=tmp_path / "a.yaml", command="",
                    inputs={"v": InputArgument("v", raw=True), "w": InputArgument("w")})
    rendered = atomic.render('ls #{v} "#{w}" #{w} #{run_id}', {"v": "*.conf | wc -l", "w": "a b",
                                                             "run_id": "st1"})
    assert rendered == "ls *.conf | wc -l \"a b\" 'a b' st1"


def test_atomic_render_with_a_quote_function_escapes_every_value_with_it(tmp_path: Path) -> None:
    atomic = Atomic(id="a", name="a", technique="T1611", path=tmp_path / "a.yaml", command="",
                    inputs={"v": InputArgument("v", raw=True)})
    values = {"v": "a.b c", "run_id": "st1"}
    assert atomic.render("^#{v} #{run_id}$", values, re.escape) == r"^a\.b\ c st1$"
    assert atomic.render("the file #{v}", values, str) == "the file a.b c"


def test_atomic_render_refuses_a_value_where_it_cannot_be_quoted(tmp_path: Path) -> None:
    atomic = Atomic(id="a", name="a", technique="T1611", path=tmp_path / "a.yaml", command="")
    with pytest.raises(ScenarioError, match=r"#\{run_id\}: a value cannot be quoted inside a `"):
        atomic.render("echo `echo #{run_id}`", {"run_id": "st1"})


@given(value=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=40),
       context=st.sampled_from(["plain", "double", "single"]))
@settings(max_examples=60, deadline=None)
def test_shell_quote_any_text_is_one_literal_word(value: str, context: str) -> None:
    template = {"plain": "printf %s V", "double": 'printf %s "V"', "single": "printf %s 'V'"}
    script = template[context].replace("V", shell_quote(value, context))
    res = subprocess.run(["sh", "-c", script], capture_output=True, check=True, timeout=10)
    assert res.stdout == value.encode()
