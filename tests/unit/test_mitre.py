"""``harness.core.mitre``: the bundled ATT&CK table, id checks, and building the table from STIX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.core.mitre import (
    attack_version,
    build_table,
    check_technique,
    dump_table,
    full_name,
    main,
    techniques,
)


def test_table_is_attack_18_1_linux_and_containers() -> None:
    table = techniques()
    current = [t for t in table.values() if t.current]
    assert attack_version() == "18.1"
    assert (len(table), len(current)) == (420, 367)
    assert sum("." in t.id for t in current) > 200  # sub-techniques included
    assert all({"Linux", "Containers"} & set(t.platforms) for t in table.values())
    assert table["T1611"].tactics == ("privilege-escalation",)
    assert table["T1053.007"].platforms == ("Containers",)


@pytest.mark.parametrize(("value", "message"), [
    ("T1611", None),
    ("T1055.008", None),
    ("T12", "expected an ATT&CK id like T1611 or T1055.008, got 'T12'"),
    ("T9999", "T9999 is not in shadowtest's technique table (harness/schemas/techniques.json, "
              "ATT&CK v18.1); check the id or add it to the table"),
    ("T1089", "T1089 (Disabling Security Tools) is deprecated in ATT&CK; use T1562.001 "
              "(Impair Defenses: Disable or Modify Tools), which replaced it"),
    ("T1064", "T1064 (Scripting) is deprecated in ATT&CK with no replacement; pick a current "
              "technique from harness/schemas/techniques.json"),
    ("T1003.001", "T1003.001 (LSASS Memory) is an ATT&CK technique for Windows, not Linux or "
                  "containers: shadowtest's nodes are Linux; pick a Linux or Containers technique "
                  "from harness/schemas/techniques.json"),
    ("T1088", "T1088 (Bypass User Account Control) is an ATT&CK technique for Windows, deprecated "
              "in ATT&CK (replaced by T1548.002), not Linux or containers"),
])
def test_check_technique(value: str, message: str | None) -> None:
    got = check_technique(value)
    assert got == message if message is None or got is None else got.startswith(message), got


def test_full_name_joins_parent_and_sub_technique() -> None:
    assert full_name("T1055.008") == "Process Injection: Ptrace System Calls"
    assert full_name("T1611") == "Escape to Host"
    assert full_name("T9999") == "T9999"


def _pattern(stix: str, tid: str, name: str, platforms: list[str], tactics: list[str],
             **extra: Any) -> dict[str, Any]:
    return {"type": "attack-pattern", "id": stix, "name": name, "x_mitre_platforms": platforms,
            "external_references": [{"source_name": "mitre-attack", "external_id": tid}],
            "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": t} for t in tactics],
            **extra}


BUNDLE = [
    _pattern("ap--a", "T1611", "Escape to Host", ["Windows", "Linux", "Containers"],
             ["privilege-escalation"]),
    _pattern("ap--b", "T1055.008", "Ptrace System Calls", ["Linux"],
             ["defense-evasion", "privilege-escalation"]),
    _pattern("ap--c", "T1055", "Process Injection", ["Linux", "Windows"], ["defense-evasion"]),
    _pattern("ap--d", "T1166", "Setuid and Setgid", ["Linux"], ["persistence"], revoked=True),
    _pattern("ap--e", "T1206", "Sudo Caching", ["Linux"], ["persistence"], revoked=True),
    _pattern("ap--f", "T1548.003", "Sudo and Sudo Caching", ["Linux"], ["privilege-escalation"]),
    _pattern("ap--g", "T1064", "Scripting", ["Linux"], ["execution"], x_mitre_deprecated=True),
    _pattern("ap--h", "T1003.001", "LSASS Memory", ["Windows"], ["credential-access"]),
    {"type": "relationship", "relationship_type": "revoked-by", "source_ref": "ap--d", "target_ref": "ap--e"},
    {"type": "relationship", "relationship_type": "revoked-by", "source_ref": "ap--e", "target_ref": "ap--f"},
    {"type": "relationship", "relationship_type": "uses", "source_ref": "x", "target_ref": "ap--a"},
    {"type": "x-mitre-tactic", "id": "t"},
]


def test_build_table_filters_platforms_sorts_and_follows_revocations() -> None:
    table = build_table(BUNDLE, "18.1")
    assert [t["id"] for t in table["techniques"]] == ["T1055", "T1055.008", "T1064", "T1166", "T1206",
                                                      "T1548.003", "T1611"]
    rows = {t["id"]: t for t in table["techniques"]}
    assert rows["T1166"] == {"id": "T1166", "name": "Setuid and Setgid", "tactics": ["persistence"],
                             "platforms": ["Linux"], "revoked": True, "replaced_by": "T1548.003"}
    assert rows["T1064"]["deprecated"] is True
    assert "replaced_by" not in rows["T1064"]
    assert rows["T1611"]["platforms"] == ["Containers", "Linux"]
    assert table["elsewhere"] == {"T1003.001": {"name": "LSASS Memory", "platforms": ["Windows"]}}
    assert table["attack_version"] == "18.1"


def test_dump_table_round_trips_and_the_cli_writes_it(tmp_path: Path) -> None:
    table = build_table(BUNDLE, "18.1")
    assert json.loads(dump_table(table)) == table
    (tmp_path / "bundle.json").write_text(json.dumps({"type": "bundle", "objects": BUNDLE}))
    out = tmp_path / "techniques.json"
    assert main(["build", str(tmp_path / "bundle.json"), "--version", "18.1", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == table
    assert main(["build", str(tmp_path / "missing.json"), "--version", "18.1"]) == 1


def test_bundled_table_file_is_in_its_own_dump_format() -> None:
    path = Path(__file__).resolve().parents[2] / "harness" / "schemas" / "techniques.json"
    text = path.read_text(encoding="utf-8")
    assert dump_table(json.loads(text)) == text
