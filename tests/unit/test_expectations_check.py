"""``harness.tools.expectations_check``: the catalogue's expectations against real rule packs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from harness.__main__ import main
from harness.builtin import ATOMICS
from harness.core.errors import ScenarioError
from harness.core.scenario import Scenario, check_scenario, load_atomics
from harness.core.yamlfile import load_lined
from harness.sensors.rulepack import HEADER
from harness.tools.expectations_check import (
    Rule,
    check,
    contexts_scope,
    parse_falco,
    parse_tetragon,
    parse_tracee,
)
from harness.tools.tracingpolicy import load_documents

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ROOT.parent / "shared" / "upstream"   # CI has ../shared beside the clone (read-only)
PACK = ROOT / "harness" / "rulepacks" / "tetragon"
FALCO = UPSTREAM / "falco-rules"
UPSTREAM_ARGS = [
    "--falco-rules", str(FALCO / "falco_rules.yaml"),
    "--falco-available", str(FALCO / "falco-incubating_rules.yaml"),
    "--falco-available", str(FALCO / "falco-sandbox_rules.yaml"),
    "--tracee-detectors", str(UPSTREAM / "tracee-detectors" / "detectors.json"),
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _scenario(tmp_path: Path, expect: str, contexts: str = "[host, namespace]",
              technique: str = "T1055.008") -> Scenario:
    atomics, _ = load_atomics([ATOMICS])
    path = _write(tmp_path, "s.yaml", f"id: s\nname: s\natomic: ptrace-attach\narguments: {{pid: 1}}\n"
                                      f"contexts: {contexts}\ntechnique: {technique}\nexpect:\n{expect}")
    errors, scenario = check_scenario(path, atomics)
    assert errors == []
    assert scenario is not None
    return scenario


def _problems(scenario: Scenario, product: str, rules: list[Rule], files: frozenset[str] = frozenset()
              ) -> list[str]:
    lines = load_lined(scenario.path).line
    return [f"{f.line}: {f.problem}" for f in check(scenario, product, product, rules, set(files), lines)]


# ---------------------------------------------------------------- falco
FALCO_TEXT = """\
- macro: spawned_process
  condition: evt.type = execve
- rule: Stable host
  condition: spawned_process
  tags: [maturity_stable, host, container, T1055.008]
- rule: Container only
  condition: spawned_process
  tags: [maturity_stable, container, T1611]
- rule: Incubating
  condition: spawned_process
  tags: [maturity_incubating, host, T1098]
- rule: Disabled
  condition: spawned_process
  enabled: false
  tags: [maturity_stable, T1057]
- rule: Disabled
  override: {enabled: replace}
  enabled: true
"""


def test_parse_falco_names_techniques_scope_lines_and_loading(tmp_path: Path) -> None:
    rules = {r.name: r for r in parse_falco(load_lined(_write(tmp_path, "r.yaml", FALCO_TEXT)),
                                            maturities=["stable"])}
    assert list(rules) == ["Stable host", "Container only", "Incubating", "Disabled"]
    assert rules["Stable host"].techniques == ("T1055.008",)
    assert (rules["Stable host"].line, rules["Container only"].line) == (3, 6)
    assert rules["Container only"].scope == {"container"}
    assert not rules["Incubating"].loaded
    assert rules["Incubating"].why_not == "maturity_incubating not loaded"
    assert rules["Disabled"].loaded  # enabled again by the override entry


def test_parse_falco_file_not_loaded(tmp_path: Path) -> None:
    rules = parse_falco(load_lined(_write(tmp_path, "r.yaml", FALCO_TEXT)), loaded=False)
    assert {r.why_not for r in rules} == {"file not loaded"}


@pytest.mark.parametrize(("text", "line"), [
    ("rule: not a list\n", 1),
    ("- rule: ok\n  condition: x\n- just a string\n", 3),
    ("- rule: [a, b]\n  condition: x\n", 1),
])
def test_parse_falco_malformed_is_a_file_line_error(tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_falco(load_lined(_write(tmp_path, "bad.yaml", text)))
    assert exc.value.line == line


def test_parse_falco_upstream_stable_file() -> None:
    rules = {r.name: r for r in parse_falco(load_lined(FALCO / "falco_rules.yaml"))}
    ptrace = rules["PTRACE attached to process"]
    assert ptrace.techniques == ("T1055.008",)
    assert ptrace.scope == {"host", "container"}
    assert rules["Detect release_agent File Container Escapes"].scope == {"container"}
    sandbox = {r.name: r for r in parse_falco(load_lined(FALCO / "falco-sandbox_rules.yaml"), loaded=False)}
    assert not sandbox["Write below etc"].loaded


# ---------------------------------------------------------------- tetragon
def _policy(tmp_path: Path, body: str, kind: str = "TracingPolicy") -> Rule | None:
    path = _write(tmp_path, "p.yaml", f"apiVersion: cilium.io/v1alpha1\nkind: {kind}\n"
                                      f"metadata:\n  name: p\nspec:\n{body}")
    (doc,) = load_documents(path)
    return parse_tetragon(doc, {"q": "T1005"})


TWO_HOOKS = """\
  tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    tags: ["mitre.T1098"]
  - subsystem: syscalls
    event: sys_enter_openat
    tags: ["mitre.T1003.008"]
"""


def test_parse_tetragon_second_hook_on_a_tracepoint_wins(tmp_path: Path) -> None:
    rule = _policy(tmp_path, TWO_HOOKS)
    assert rule is not None
    assert (rule.name, rule.techniques) == ("p", ("T1003.008",))
    assert rule.scope == {"host", "container"}


def test_parse_tetragon_namespaced_policy_is_container_only(tmp_path: Path) -> None:
    rule = _policy(tmp_path, TWO_HOOKS, kind="TracingPolicyNamespaced")
    assert rule is not None
    assert rule.scope == {"container"}


def test_parse_tetragon_other_kind_is_none_and_bad_policy_raises(tmp_path: Path) -> None:
    (doc,) = load_documents(_write(tmp_path, "c.yaml", "kind: ConfigMap\nmetadata: {name: x}\n"))
    assert parse_tetragon(doc) is None
    with pytest.raises(ScenarioError):
        _policy(tmp_path, "  kprobes:\n  - call: x\n    selectors: {matchArgs: []}\n")


def test_parse_tetragon_upstream_file_monitoring_is_noisy() -> None:
    docs = load_documents(UPSTREAM / "tetragon-examples" / "tracingpolicy" / "filename_monitoring.yaml")
    rule = parse_tetragon(docs[0])
    assert rule is not None
    assert rule.name == "file-monitoring"
    assert rule.techniques == ()
    assert "/etc/ld.so.cache" in rule.noisy


def test_project_tetragon_pack_one_technique_per_policy_tagged_versioned_quiet() -> None:
    names = []
    for path in sorted([*PACK.glob("*.yaml"), *PACK.glob("kprobe/*.yaml")]):
        if path.name == "shadowtest-sync.yaml":  # another pack's file, another contract
            continue
        head = "\n".join(path.read_text(encoding="utf-8").splitlines()[:40])
        assert HEADER.search(head), f"{path}: no '# shadowtest-rulepack: N' header"
        docs = load_documents(path)
        assert len(docs) == 1
        rule = parse_tetragon(docs[0])
        assert rule is not None
        assert len(rule.techniques) == 1, f"{path}: {rule.techniques}"
        assert rule.noisy == ""
        spec = docs[0].data["spec"]
        hooks = spec.get("tracepoints", []) + spec.get("kprobes", []) + spec.get("lsmhooks", [])
        assert all(h.get("tags") == [f"mitre.{rule.techniques[0]}"] for h in hooks), path
        points = [(h.get("subsystem"), h.get("event")) for h in spec.get("tracepoints", [])]
        assert len(points) == len(set(points)), f"{path}: two hooks on one tracepoint collide"
        names.append(rule.name)
    assert len(names) == len(set(names)) >= 25


# ---------------------------------------------------------------- tracee
def test_parse_tracee_scope_constants_and_lines() -> None:
    rules = {r.name: r for r in parse_tracee(load_lined(UPSTREAM / "tracee-detectors" / "detectors.json"))}
    poke = rules["ptrace_code_injection"]
    assert (poke.aliases, poke.techniques) == (("TRC-103",), ("T1055.008",))
    assert poke.constants == ("PTRACE_POKETEXT", "PTRACE_POKEDATA")
    assert rules["docker_abuse"].scope == {"container"}
    assert rules["stdio_over_socket"].scope == {"host", "container"}
    assert poke.line is not None


def test_parse_tracee_malformed_entry_is_a_file_line_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.json", json.dumps([{"id": "TRC-1", "event": "a"}, {"id": "TRC-2"}], indent=1))
    with pytest.raises(ScenarioError) as exc:
        parse_tracee(load_lined(path))
    assert exc.value.line == 6


# ---------------------------------------------------------------- check
STABLE = Rule("falco", "PTRACE attached to process", ("T1055.008",), "falco_rules.yaml")
CONTAINER = Rule("falco", "In container", ("T1055.008",), "falco_rules.yaml", scope=frozenset({"container"}))
OTHER = Rule("falco", "Other", ("T1611",), "falco_rules.yaml")
SANDBOX = Rule("falco", "Sandboxed", ("T1055.008",), "falco-sandbox_rules.yaml", loaded=False,
               why_not="file not loaded")
POKE = Rule("tracee", "ptrace_code_injection", ("T1055.008",), "detectors.json", aliases=("TRC-103",),
            constants=("PTRACE_POKETEXT", "PTRACE_POKEDATA"))


@pytest.mark.parametrize(("expect", "rules", "problem"), [
    ("  falco: {rule: PTRACE attached to process}\n", [STABLE], None),
    ("  falco: {rule: PTRACE attached}\n", [STABLE], "8: rule 'PTRACE attached' is not in the falco pack"),
    ("  falco: {rule: Sandboxed}\n", [SANDBOX], "8: rule 'Sandboxed' is not loaded"),
    ("  falco: {rule: Other}\n", [OTHER], "8: rule 'Other' does not carry T1055.008"),
    ("  falco: {rule: In container}\n", [CONTAINER],
     "8: rule 'In container' fires only in container processes; context(s) host can never match"),
    ("  auditd: {rule: T1055.008}\n", [OTHER],
     "7: no expect block: must report T1055.008, which no loaded falco rule carries for context(s) "
     "host, namespace"),
    ("  falco: {technique: T1055}\n", [STABLE], None),
    ("  falco: {gap: \"falco_rules.yaml: none\"}\n", [STABLE],
     "8: gap, but loaded rule(s) carrying T1055.008 can fire in every context of the scenario"),
    ("  falco: {gap: \"falco_rules.yaml: 'PTRACE attached to process' needs ...\"}\n", [STABLE], None),
    ("  falco: {gap: \"falco_rules.yaml: 'In container' fires in containers only\"}\n", [CONTAINER], None),
    ("  falco: {gap: \"'Write below etc' is in falco-sandbox.yaml\"}\n", [SANDBOX],
     "8: gap note cites 'falco-sandbox.yaml', 'Write below etc', not in the falco packs"),
    ("  falco: {gap: \"nothing matches this\"}\n", [], "8: gap note names no upstream file or rule"),
    ("  falco: {gap: \"'PTRACE attached to process' is not in the default falco_rules.yaml\"}\n", [STABLE],
     "8: gap note says a rule is not loaded, but the pack loads it and it carries T1055.008 in every "
     "context of the scenario"),
])
def test_check_falco_findings(tmp_path: Path, expect: str, rules: list[Rule], problem: str | None) -> None:
    files = frozenset({"falco_rules.yaml", "falco-sandbox_rules.yaml"})
    assert _problems(_scenario(tmp_path, expect), "falco", rules, files) == ([problem] if problem else [])


@pytest.mark.parametrize(("note", "problem"), [
    ("TRC-103 (ptrace_code_injection) matches PTRACE_POKETEXT only; this atomic uses PTRACE_POKEDATA",
     "8: gap note says TRC-103 matches PTRACE_POKETEXT"),
    ("TRC-103 (ptrace_code_injection) matches PTRACE_POKETEXT and PTRACE_POKEDATA requests; "
     "PTRACE_ATTACH is neither", None),
    ("TRC-999 does not exist", "8: gap note cites 'TRC-999', not in the tracee packs"),
])
def test_check_tracee_gap_notes(tmp_path: Path, note: str, problem: str | None) -> None:
    scenario = _scenario(tmp_path, f"  tracee: {{gap: \"{note}\"}}\n")
    found = _problems(scenario, "tracee", [POKE], frozenset({"detectors.json"}))
    assert found[:1] == ([problem] if problem else [])  # TRC-999: TRC-103 uncited also covers it


def test_check_overrides_are_checked_at_their_line(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "  falco: {rule: PTRACE attached to process}\n"
                                   "overrides:\n  - kernel: '<5.8'\n    expect:\n      falco: {rule: Nope}\n")
    assert _problems(scenario, "falco", [STABLE]) == ["12: rule 'Nope' is not in the falco pack"]


def test_contexts_scope_host_is_host_everything_else_a_container() -> None:
    assert contexts_scope(["host", "namespace", "container-privileged", "pod"]) == {"host", "container"}
    assert contexts_scope(["namespace"]) == {"container"}


# ---------------------------------------------------------------- command line
@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(ROOT)  # [tool.shadowtest] scenarios = ["builtin"]
    return ROOT


def test_main_upstream_and_project_packs_zero_findings(project: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """CI: the catalogue holds for upstream Falco (stable loaded) and Tracee, and the
    project's Tetragon pack."""
    code = main(["expectations", "check", *UPSTREAM_ARGS, "--tetragon-policies", str(PACK)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"^expectations check: 0 finding\(s\) in \d+ scenario\(s\)", out, re.MULTILINE)


def test_main_upstream_tetragon_examples_need_the_project_pack(
        project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_json = tmp_path / "f.json"
    code = main(["expectations", "check", *UPSTREAM_ARGS, "--tetragon-policies",
                 str(UPSTREAM / "tetragon-examples"), "--json", str(out_json)])
    out, err = capsys.readouterr()
    findings = json.loads(out_json.read_text(encoding="utf-8"))
    assert code == 1
    assert findings
    assert {f["sensor"] for f in findings} == {"tetragon"}
    # every finding is "the project's pack is not loaded": no rule carries the technique, or
    # a note/override names one of its policies or files (the evasion variants' kprobe rule)
    assert all("no loaded tetragon rule carries" in f["problem"]
               or "shadowtest-t1098-etc-write" in f["problem"]
               or "'10-t1098-etc-write.yaml'" in f["problem"] for f in findings), findings
    assert any("no loaded tetragon rule carries" in f["problem"] for f in findings)
    assert all("harness/rulepacks/tetragon" in f["fix"] for f in findings)
    assert "warning: tetragon policy 'file-monitoring'" in err
    assert "pack has:" in out
    assert "fix:" in out


def test_main_usage_errors_exit_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["expectations", "check"]) == 2
    assert "no rule pack given" in capsys.readouterr().err
    assert main(["expectations", "check", "--tracee-detectors", "no-such.json"]) == 2
    assert "no-such.json: no such file or directory" in capsys.readouterr().err


def test_main_malformed_pack_exits_3_with_file_line(project: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path, "rules.yaml", "- rule: a\n  condition: x\n  tags: [T1055\n")
    assert main(["expectations", "check", "--falco-rules", str(bad)]) == 3
    assert f"{bad}:" in capsys.readouterr().err
    policy = tmp_path / "p"
    policy.mkdir()
    hook = {"call": "x", "selectors": {"matchArgs": []}}  # selectors must be a list
    _write(policy, "p.yaml", yaml.safe_dump({"apiVersion": "cilium.io/v1alpha1", "kind": "TracingPolicy",
                                             "metadata": {"name": "p"}, "spec": {"kprobes": [hook]}}))
    assert main(["expectations", "check", "--tetragon-policies", str(policy)]) == 3
    assert f"{policy / 'p.yaml'}:" in capsys.readouterr().err


def test_main_every_falco_file_loaded_names_the_gaps_that_close(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The catalogue is written for a default Falco (stable only): with the incubating and
    sandbox files loaded, the gaps their rules close are findings, each naming the rule."""
    code = main(["expectations", "check", *(a for f in ("falco_rules.yaml", "falco-incubating_rules.yaml",
                                                        "falco-sandbox_rules.yaml")
                                            for a in ("--falco-rules", str(FALCO / f)))])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"persistence/etc-write\.yaml:\d+: falco: gap note says a rule is not loaded", out)
    assert "fix: expect it (rule: 'Write below etc')" in out
    assert "fix: expect it (rule: 'Schedule Cron Jobs')" in out
