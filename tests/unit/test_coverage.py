"""``harness.tools.coverage``: which Tetragon enforcement actions no scenario exercises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.tools.coverage import cover, main, match_block, read_scenarios
from harness.tools.tracingpolicy import Action, load_documents, read_policies

DATA = Path(__file__).resolve().parents[1] / "data" / "tetragon-policies"
VALID = DATA / "valid"
MALFORMED = DATA / "malformed"

CONFIG = """\
[tool.shadowtest]
scenarios = ["scenarios"]

[tool.shadowtest.sensors.tg]
type = "tetragon"
techniques = { "block-setns" = "T1611", "ptrace-guard:__x64_sys_ptrace" = "T1055.008" }

[tool.shadowtest.sensors.auditd]
type = "auditd"
"""

#: what every test scenario needs to load (the harness's loader reads them)
LOADABLE = "name: a test scenario\natomic: etc-file-create\ncontexts: [namespace]\n"


def _loadable(text: str) -> str:
    """``text`` (a scenario from its ``id:`` line) with a name, an atomic and contexts."""
    head, _, rest = text.partition("\n")
    return f"{head}\n{LOADABLE}{rest}"


#: scenario id -> file text; the known answers are in EXERCISED below
SCENARIOS = {
    "persistence/etc-write": """\
id: etc-write
technique: T1098
expect:
  tetragon:
    rule: etc-write-kill
    fields: {function_name: {regex: "sys_write$"}}
    enforce: {action: sigkill}
""",
    "collection/file-open": """\
id: file-open
technique: T1005
expect:
  tg:
    rule: {prefix: file-open}
    fields: {action: KPROBE_ACTION_OVERRIDE}
""",
    "collection/fd-install": """\
id: fd-install
technique: T1005
expect:
  tetragon:
    rule: file-open-guard
    enforce: {action: override}
""",
    "privilege-escalation/setns": """\
id: setns
technique: T1611
expect:
  tg:
    technique: T1611
    enforce: {action: sigkill}
""",
    "privilege-escalation/ptrace": """\
id: ptrace
technique: T1055.008
expect:
  auditd: {rule: T1055}
""",
    "collection/lsm-open": """\
id: lsm-open
technique: T1005
expect:
  tetragon: {gap: "LSM hooks are off on the CI kernels"}
overrides:
  - kernel: ">=6.1"
    expect:
      tetragon:
        rule: lsm-file-open-deny
        enforce: {action: deny}
""",
    "benign/quiet": """\
id: quiet
benign: true
""",
}

#: (policy, hook, selector, action) -> scenarios exercising it, given SCENARIOS and CONFIG
EXERCISED: dict[tuple[str, str, int, str], set[str]] = {
    ("etc-write-kill", "sys_write", 0, "Sigkill"): {"etc-write (rule, enforce)"},
    ("etc-write-kill", "sys_write", 1, "Signal"): {"etc-write (rule, enforce)"},
    ("file-open-guard", "security_file_open", 0, "Override"):
        {"file-open (rule, detection only)", "fd-install (rule, enforce)"},
    ("file-open-guard", "fd_install", 0, "Sigkill"): set(),
    ("lsm-file-open-deny", "file_open", 0, "Override"): {"lsm-open (rule, enforce)"},
    ("block-setns", "sys_setns", 0, "Sigkill"): {"setns (technique, enforce)"},
    ("ptrace-guard", "sys_ptrace", 0, "NotifyEnforcer"): {"ptrace (technique, detection only)"},
    ("no-shell-in-payments", "security_bprm_check", 0, "Sigkill"): set(),
    ("setns-tracepoint-kill", "raw_syscalls:sys_enter", 0, "Sigkill"): {"setns (tag, enforce)"},
}


@pytest.fixture
def catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project in tmp_path (the working directory): CONFIG as shadowtest.toml, SCENARIOS."""
    (tmp_path / "shadowtest.toml").write_text(CONFIG, encoding="utf-8")
    for name, text in SCENARIOS.items():
        path = tmp_path / "scenarios" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_loadable(text), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _key(a: Action) -> tuple[str, str, int, str]:
    return a.policy, a.hook, a.selector, a.action


def _sensors() -> dict[str, Any]:
    return {"tg": {"type": "tetragon",
                   "techniques": {"block-setns": "T1611", "ptrace-guard:__x64_sys_ptrace": "T1055.008"}},
            "auditd": {"type": "auditd"}}


# ---------------------------------------------------------------- policies
def test_read_policies_lists_every_enforcement_action() -> None:
    actions, errors, notes = read_policies([VALID])
    assert errors == []
    assert sorted(map(_key, actions)) == sorted(EXERCISED)
    assert notes == [f"{VALID / 'multi.yaml'}:24: note: kind 'ConfigMap' is not a tracing policy; skipped"]


def test_read_policies_action_identity_and_arguments() -> None:
    actions, _, _ = read_policies([VALID])
    by_key = {_key(a): a for a in actions}
    signal = by_key[("etc-write-kill", "sys_write", 1, "Signal")]
    assert (signal.kind, signal.args, signal.effects, signal.line) == ("kprobe", {"argSig": 9},
                                                                       frozenset({"kill"}), 61)
    assert signal.key == "spec.kprobes[2].selectors[1].matchActions[0]"
    assert "__x64_sys_write" in signal.functions
    override = by_key[("lsm-file-open-deny", "file_open", 0, "Override")]
    assert (override.kind, override.event, override.describe()) == ("lsmhook", "process_lsm",
                                                                     "Override(argError=-1)")
    namespaced = by_key[("no-shell-in-payments", "security_bprm_check", 0, "Sigkill")]
    assert (namespaced.name, namespaced.mode) == ("payments/no-shell-in-payments", "monitor")
    tracepoint = by_key[("setns-tracepoint-kill", "raw_syscalls:sys_enter", 0, "Sigkill")]
    assert (tracepoint.kind, tracepoint.functions, tracepoint.tags) == ("tracepoint", ("sys_enter",),
                                                                        ("mitre.T1611",))


def test_read_policies_counts_no_post_signal_15_or_fd_actions() -> None:
    actions, _, _ = read_policies([VALID / "observe-only.yaml", VALID / "etc-write-kill.yaml"])
    assert [a.action for a in actions] == ["Sigkill", "Signal"]


def test_load_documents_lines_are_lines_of_the_file() -> None:
    docs = load_documents(VALID / "multi.yaml")
    assert [d.data["metadata"]["name"] for d in docs] == ["block-setns", "tetragon-extra", "ptrace-guard"]
    assert docs[2].line(("metadata", "name")) == 34
    assert docs[2].line(("spec", "kprobes", 0, "selectors", 0, "matchActions", 0, "action")) == 52


@pytest.mark.parametrize(("name", "line", "key", "message"), [
    ("bad-indent.yaml", 9, "<root>", "invalid YAML: mapping values are not allowed here"),
    ("unknown-action.yaml", 11, "spec.kprobes[0].selectors[0].matchActions[0].action",
     "expected one of 'Post', 'FollowFD'"),
    ("selectors-not-a-list.yaml", 8, "spec.lsmhooks[0].selectors",
     "expected type array, got {'matchActions'"),
    ("missing-spec.yaml", 1, "<root>", "'spec' is a required property; add it"),
])
def test_read_policies_malformed_file_says_file_line_key(name: str, line: int, key: str,
                                                         message: str) -> None:
    _, errors, _ = read_policies([MALFORMED / name])
    assert len(errors) == 1
    assert str(errors[0]).startswith(f"{MALFORMED / name}:{line}: {key}: {message}")


def test_read_policies_errors_in_a_later_document_carry_file_lines() -> None:
    _, errors, _ = read_policies([MALFORMED / "multi-second-bad.yaml"])
    assert [(e.line, e.key) for e in errors] == [
        (13, "kind"), (20, "spec.kprobes[0].selectors[0].matchAction")]
    assert "unknown key 'matchAction': expected one of matchActions" in errors[1].message


def test_read_policies_hints_how_to_fix() -> None:
    _, errors, _ = read_policies([MALFORMED / "selectors-not-a-list.yaml", MALFORMED / "unknown-action.yaml"])
    assert [e.message.rsplit("; ", 1)[1] for e in errors] == [
        "write the selectors as a list: 'selectors:' then '- matchArgs: ...'",
        "use an action name spelt as in Tetragon's CRD, e.g. Sigkill, Override, Signal"]


# ---------------------------------------------------------------- matching
def _action(**over: Any) -> Action:
    base: dict[str, Any] = {
        "policy": "etc-write-kill", "namespace": None, "kind": "kprobe", "hook": "sys_write",
        "functions": ("sys_write", "__x64_sys_write"), "event": "process_kprobe", "selector": 0,
        "index": 0, "action": "Sigkill", "args": {}, "effects": frozenset({"kill"}), "tags": (),
        "path": Path("p.yaml"), "line": 1, "key": "spec.kprobes[0].selectors[0].matchActions[0]"}
    return Action(**{**base, **over})


@pytest.mark.parametrize(("block", "technique", "techniques", "expected"), [
    ({"rule": "etc-write-kill"}, None, {}, ("rule", False)),
    ({"rule": "other"}, None, {}, None),
    ({"rule": {"regex": "^etc-"}}, None, {}, ("rule", False)),
    ({"fields": {"policy_name": {"contains": "write"}}}, None, {}, ("fields", False)),
    ({"rule": "etc-write-kill", "fields": {"function_name": "__x64_sys_write"}}, None, {}, ("rule", False)),
    ({"rule": "etc-write-kill", "fields": {"function_name": "sys_openat"}}, None, {}, None),
    ({"rule": "etc-write-kill", "fields": {"action": "KPROBE_ACTION_SIGKILL"}}, None, {}, ("rule", False)),
    ({"rule": "etc-write-kill", "fields": {"event": "process_lsm"}}, None, {}, None),
    ({"rule": "etc-write-kill", "fields": {"args": "anything"}}, None, {}, ("rule", False)),
    ({"gap": "not seen"}, "T1098", {"etc-write-kill": "T1098"}, None),
    ({"rule": "etc-write-kill", "enforce": {"action": "sigkill"}}, None, {}, ("rule", True)),
    ({"rule": "etc-write-kill", "enforce": {"action": "deny"}}, None, {}, None),
    ({"rule": "etc-write-kill", "enforce": {}}, None, {}, ("rule", True)),
    ({}, "T1098", {"etc-write-kill": "T1098"}, ("technique", False)),
    ({}, "T1098", {"etc-write-kill:__x64_sys_write": "T1098", "etc-write-kill": "T1005"},
     ("technique", False)),
    ({"technique": "T1005"}, "T1098", {"etc-write-kill": "T1098"}, None),
    ({"enforce": {"action": "sigkill"}}, "T1098", {}, None),
])
def test_match_block_known_answers(block: dict[str, Any], technique: str | None,
                                   techniques: dict[str, str],
                                   expected: tuple[str, bool] | None) -> None:
    assert match_block(_action(), block, technique, techniques) == expected


def test_match_block_technique_from_tags_wins_and_parent_id_matches() -> None:
    tagged = _action(tags=("observability.filesystem", "mitre.T1055.008"))
    assert match_block(tagged, {}, "T1055", {"etc-write-kill": "T1098"}) == ("tag", False)
    assert match_block(tagged, {}, "T1098", {"etc-write-kill": "T1098"}) is None


def test_match_block_notify_enforcer_fits_the_enforcement_it_carries() -> None:
    kill = _action(action="NotifyEnforcer", args={"argSig": 9}, effects=frozenset({"kill"}))
    block = {"rule": "etc-write-kill", "enforce": {"action": "override"}}
    assert match_block(kill, block, None, {}) is None
    either = _action(action="NotifyEnforcer", effects=frozenset({"kill", "override"}))
    assert match_block(either, block, None, {}) == ("rule", True)


def test_cover_known_answers(catalogue: Path) -> None:
    actions, _, _ = read_policies([VALID])
    scenarios, errors = read_scenarios([catalogue / "scenarios"])
    covered, match_errors = cover(actions, scenarios, _sensors())
    assert errors == match_errors == []
    assert {_key(a): {m.text() for m in found} for a, found in covered} == EXERCISED


def test_cover_literal_tetragon_sensor_without_configuration(catalogue: Path) -> None:
    actions, _, _ = read_policies([VALID / "etc-write-kill.yaml"])
    scenarios, _ = read_scenarios([catalogue / "scenarios"])
    covered, _ = cover(actions, scenarios, {})
    assert [[m.sensor for m in found] for _, found in covered] == [["tetragon"], ["tetragon"]]


def test_read_scenarios_malformed_matcher_is_a_file_line_error(tmp_path: Path) -> None:
    """The harness's loader refuses the matcher (before coverage could trip on it)."""
    path = tmp_path / "bad.yaml"
    path.write_text(_loadable("id: bad\ntechnique: T1098\nexpect:\n  tetragon:\n    rule: {regex: '('}\n"),
                    encoding="utf-8")
    scenarios, errors = read_scenarios([path])
    assert scenarios == []
    assert [str(e).split(": expected")[0] for e in errors] == [f"{path}:8: expect.tetragon.rule"]


# ---------------------------------------------------------------- command line
def test_main_default_threshold_fails_below_all(catalogue: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # the table's width: no cell folded
    assert main([str(VALID)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == ("coverage: 6/9 enforcement actions exercised with an enforce "
                                    "expectation (66.7%)")
    assert "UNCOVERED" in out
    assert "fd-install (rule, enforce)" in out
    assert "below the threshold 100%" in err
    assert "note: kind 'ConfigMap' is not a tracing policy; skipped" in err


@pytest.mark.parametrize(("argv", "code"), [
    (["--threshold", "0.6"], 0),
    (["--threshold", "0.7"], 1),
    (["--threshold", "0.7", "--require-enforce"], 1),
    (["--threshold", "0.6", "--require-enforce"], 0),
    (["--threshold", "1.5"], 2),
    (["--scenarios", "missing-dir"], 2),
])
def test_main_threshold_and_exit_codes(catalogue: Path, argv: list[str], code: int) -> None:
    assert main([str(VALID), *argv]) == code


def test_main_threshold_from_config_and_cli_wins(catalogue: Path) -> None:
    config = catalogue / "shadowtest.toml"
    config.write_text(CONFIG + "\n[tool.shadowtest.coverage]\nthreshold = 0.6\n", encoding="utf-8")
    assert main([str(VALID)]) == 0
    assert main([str(VALID), "--threshold", "0.9"]) == 1


def test_main_config_errors_are_usage_errors(catalogue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = catalogue / "shadowtest.toml"
    config.write_text(CONFIG + "\n[tool.shadowtest.coverage]\ntreshold = 0.75\n", encoding="utf-8")
    assert main([str(VALID)]) == 2
    assert "[tool.shadowtest.coverage] unknown key 'treshold': expected one of threshold" in \
        capsys.readouterr().err


def test_main_require_enforce_counts_enforce_expectations_only(
        catalogue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(VALID), "--require-enforce"])
    assert capsys.readouterr().out.splitlines()[-1] == (
        "coverage: 6/9 enforcement actions exercised with an enforce expectation (66.7%)")


def test_main_user_scenarios_add_to_the_bundled_ones(
        catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line per action, whatever the terminal
    user = tmp_path / "user"
    user.mkdir()
    shell = ("id: payments-shell\ntechnique: T1059.004\nexpect:\n  tetragon:\n"
             "    rule: no-shell-in-payments\n    enforce: {action: sigkill}\n")
    (user / "payments-shell.yaml").write_text(_loadable(shell) + "---\n", encoding="utf-8")
    (user / "fd.yaml").write_text(_loadable(
        "id: fd\ntechnique: T1005\nexpect:\n  tg:\n"
        "    fields: {policy_name: file-open-guard, function_name: fd_install}\n"
        "    enforce: {action: sigkill}\n"), encoding="utf-8")
    assert main([str(VALID), "--scenarios", str(user)]) == 3  # payments-shell.yaml: two documents
    assert "payments-shell.yaml" in capsys.readouterr().err
    (user / "payments-shell.yaml").write_text(_loadable(shell), encoding="utf-8")
    assert main([str(VALID), "--scenarios", str(user)]) == 1  # ptrace-guard: detection only
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == ("coverage: 8/9 enforcement actions exercised with an enforce "
                                    "expectation (88.9%)")
    assert "detection only" in out


def test_main_malformed_policy_exits_3_with_every_error(
        catalogue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(VALID), str(MALFORMED)]) == 3
    err = capsys.readouterr().err
    where = f"{MALFORMED / 'unknown-action.yaml'}:11"
    assert f"{where}: spec.kprobes[0].selectors[0].matchActions[0].action:" in err
    assert f"{MALFORMED / 'bad-indent.yaml'}:9: <root>: invalid YAML" in err
    assert "6 malformed file error(s)" in err


def test_main_missing_policy_dir_or_no_policy_file_is_a_usage_error(
        catalogue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-dir"]) == 2
    assert "POLICY_DIR no-such-dir: no such file or directory" in capsys.readouterr().err
    (catalogue / "empty").mkdir()
    assert main(["empty"]) == 2


def test_main_no_enforcement_action_is_full_coverage_with_a_note(
        catalogue: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(VALID / "observe-only.yaml")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == ("coverage: 0/0 enforcement actions exercised with an enforce "
                                    "expectation (100%)")
    assert "no enforcement action" in err


def test_main_json_report(catalogue: Path) -> None:
    assert main([str(VALID), "--threshold", "0.5", "--json", "out/coverage.json"]) == 0
    report = json.loads((catalogue / "out" / "coverage.json").read_text(encoding="utf-8"))
    assert (report["covered"], report["total"], report["threshold"]) == (6, 9, 0.5)
    uncovered = [(a["policy"], a["hook"], a["file"].rsplit("/", 1)[1], a["line"])
                 for a in report["actions"] if not a["covered"]]
    assert uncovered == [("file-open-guard", "fd_install", "file-open-guard.yaml", 40),
                         ("ptrace-guard", "sys_ptrace", "multi.yaml", 52),
                         ("no-shell-in-payments", "security_bprm_check", "namespaced.yaml", 26)]
    ptrace = next(a for a in report["actions"] if a["policy"] == "ptrace-guard")
    assert ptrace["exercised_by"] == [{"scenario": "ptrace", "sensor": "tg", "how": "technique",
                                       "enforce": False}]


# ---------------------------------------------------------------- issue 14: two false results
REAL = DATA / "real"


def test_main_sigkill_seen_but_not_expected_is_uncovered(
        catalogue: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A real agent's Sigkill (etc-write-enforce) that a scenario detects without expecting the
    kill (the bundled etc-write-enforced: no tetragon enforce block) is not exercised: exit 1."""
    monkeypatch.setenv("COLUMNS", "250")
    (catalogue / "shadowtest.toml").write_text('[tool.shadowtest]\nscenarios = ["builtin"]\n',
                                              encoding="utf-8")
    assert main([str(REAL)]) == 1
    out = capsys.readouterr().out
    assert "UNCOVERED" in out
    assert "etc-write-enforced (tag, detection only)" in out
    assert out.splitlines()[-1] == ("coverage: 0/1 enforcement actions exercised with an enforce "
                                    "expectation (0%)")


def test_main_sigkill_expected_by_the_sensor_block_is_covered(
        catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "etc-write-enforced-tg.yaml").write_text(_loadable(
        "id: etc-write-enforced-tg\ntechnique: T1098\nexpect:\n  tetragon:\n"
        "    rule: etc-write-enforce\n    enforce: {action: sigkill}\n"), encoding="utf-8")
    assert main([str(REAL), "--scenarios", str(user)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "coverage: 1/1 enforcement actions exercised with an enforce expectation (100%)")


def test_main_enforce_for_another_sensor_does_not_cover(catalogue: Path, tmp_path: Path) -> None:
    """An enforce expectation for bpftrace-enforce/lsm says nothing of Tetragon's kill."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "other.yaml").write_text(_loadable(
        "id: other\ntechnique: T1098\nexpect:\n  lsm:\n    rule: etc-file-create\n"
        "    enforce: {action: deny}\n  tetragon: {rule: etc-write-enforce}\n"), encoding="utf-8")
    assert main([str(REAL), "--scenarios", str(user)]) == 1


def test_read_policies_document_without_kind_is_a_note_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yaml").write_text(
        "services:\n  tetragon:\n    image: quay.io/cilium/tetragon\n", encoding="utf-8")
    (tmp_path / "tetragon.yaml").write_text("export-filename: /var/log/tetragon.log\n---\n"
                                            + (REAL / "90-etc-write-enforce.yaml").read_text("utf-8"),
                                            encoding="utf-8")
    actions, errors, notes = read_policies([tmp_path])
    assert errors == []
    assert [a.policy for a in actions] == ["etc-write-enforce"]
    assert [n.split(": note: ")[0].rsplit("/", 1)[1] for n in notes] == [
        "docker-compose.yaml:1", "tetragon.yaml:1"]
    assert all("without a kind" in n and "skipped" in n for n in notes)


def test_read_policies_kindless_policy_is_still_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("apiVersion: cilium.io/v1alpha1\nmetadata: {name: x}\n"
                                     "spec:\n  kprobes: []\n", encoding="utf-8")
    _, errors, notes = read_policies([tmp_path])
    assert notes == []
    assert len(errors) == 1
    assert "kind" in str(errors[0])


def test_read_scenarios_uses_the_harness_loader(tmp_path: Path) -> None:
    """A file the loader refuses (unknown key) is an error, not silently read as YAML."""
    (tmp_path / "x.yaml").write_text(_loadable("id: x\ntechnique: T1098\nexpectz: {}\n"),
                                     encoding="utf-8")
    views, errors = read_scenarios([tmp_path])
    assert views == []
    assert [e.key for e in errors] == ["expectz"]
