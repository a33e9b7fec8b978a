"""``harness.tools.art`` (shadowtest import-art) on ART-format files in tests/data/art."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from harness.core.atomic import check_atomic
from harness.tools.art import import_art, main
from harness.tools.artsafety import Unsafe, analyse

DATA = Path(__file__).resolve().parents[1] / "data" / "art"
ATOMICS = DATA / "atomics"

CONVERTED = {
    "art-t1003-008-1", "art-t1070-003-2", "art-t1082-1", "art-t1082-2", "art-t1222-002-1",
    "art-t1485-2", "art-t1560-001-1", "art-t1613-1",
}
# test name -> (file, line, key, reason fragment)
REFUSED = {
    "Read /etc/shadow with sudo": ("T1003.008", 29, "atomic_tests[1].executor.command",
                                   "sudo: changes identity"),
    "Add a root account to /etc/passwd": ("T1003.008", 40, "atomic_tests[2].executor.command",
                                          "redirects output to /etc/passwd, outside the run-owned"),
    "Attach gdb to PID 1": ("T1055.008", 11, "atomic_tests[0].executor.command", "gdb: attaches"),
    "Enter init's namespaces": ("T1055.008", 23, "atomic_tests[1].executor.command", "nsenter:"),
    "Read init's memory map": ("T1055.008", 34, "atomic_tests[2].executor.command", "touches /proc/1"),
    "Clear the user's bash history": ("T1070.003", 12, "atomic_tests[0].executor.command",
                                      "'~/.bash_history': only literal absolute paths"),
    "History cleared over SSH as a new user": ("T1070.003", 41, "atomic_tests[2].executor.command",
                                               "sshpass: reaches the network"),
    "Windows systeminfo": ("T1082", 49, "atomic_tests[2].supported_platforms", "supported only on windows"),
    "Inventory with PowerShell on Linux": ("T1082", 64, "atomic_tests[3].executor.name",
                                           "powershell executor"),
    "Check the BIOS by hand": ("T1082", 74, "atomic_tests[4].executor.name", "manual executor"),
    "Look at the audit status": ("T1089", 1, "attack_technique",
                                 "deprecated in ATT&CK; use T1562.001"),
    "Download a tool with curl": ("T1105", 11, "atomic_tests[0].input_arguments.remote_file",
                                  "is a URL (https://example.org/tool.sh)"),
    "Copy a tool from a LAN host": ("T1105", 28, "atomic_tests[1].executor.command",
                                    "non-loopback address 192.168.10.20"),
    "chmod the user's home recursively": ("T1222.002", 32, "atomic_tests[1].executor.command", "'$HOME'"),
    "Delete the root file system": ("T1485", 11, "atomic_tests[0].executor.command", "rm changes /, outside"),
    "Reboot with shutdown": ("T1529", 12, "atomic_tests[0].executor.command", "shutdown: shuts down"),
    "Load a kernel module with insmod": ("T1547.006", 24, "atomic_tests[0].executor.command",
                                         "insmod: loads or unloads kernel modules"),
    "Archive with an argument that has no default": ("T1560.001", 33,
                                                     "atomic_tests[1].input_arguments.input_folder",
                                                     "has no default"),
    "List containers with docker": ("T1613", 23, "atomic_tests[1].executor.command", "docker: drives"),
}


def test_import_art_converts_only_the_safe_tests(tmp_path: Path) -> None:
    report = import_art([ATOMICS], tmp_path)
    assert report.errors == []
    assert {c.id for c in report.converted} == CONVERTED
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.yaml" for i in CONVERTED)


def test_import_art_refuses_with_file_line_key_and_reason(tmp_path: Path) -> None:
    report = import_art([ATOMICS], tmp_path, dry_run=True)
    got = {r.test: r for r in report.refused}
    assert set(got) == set(REFUSED)
    for name, (tech, line, key, fragment) in REFUSED.items():
        r = got[name]
        assert (Path(r.path).name, r.line, r.key) == (f"{tech}.yaml", line, key), name
        assert fragment in r.reason, (name, r.reason)
        assert str(r).startswith(f"{r.path}:{line}: {key}: refused {name!r}: ")


def test_import_art_output_passes_the_atomic_loader(tmp_path: Path) -> None:
    import_art([ATOMICS], tmp_path)
    for path in sorted(tmp_path.glob("*.yaml")):
        errors, atomic = check_atomic(path)
        assert (errors, atomic is not None) == ([], True), path
        assert atomic is not None
        assert atomic.technique == path.stem.removeprefix("art-").rsplit("-", 1)[0].upper().replace("-", ".")


def test_import_art_keeps_the_source_and_freezes_arguments(tmp_path: Path) -> None:
    import yaml

    import_art([ATOMICS / "T1082"], tmp_path)
    doc = yaml.safe_load((tmp_path / "art-t1082-2.yaml").read_text())
    assert doc["source"] == {"kind": "art", "technique": "T1082", "number": 2,
                             "guid": "0f6c1a2e-1111-4a0b-9c3d-000000000002",
                             "name": "Hardware inventory into a staging file"}
    assert "input_arguments" not in doc
    assert "lscpu > /tmp/T1082-inventory/hw.txt" in doc["executor"]["command"]
    assert doc["precondition"] == [
        {"description": "/tmp/T1082-inventory does not exist yet (the atomic only touches paths it creates)",
         "command": "test ! -e /tmp/T1082-inventory && test ! -L /tmp/T1082-inventory"},
        {"description": "lscpu must be installed", "command": "command -v lscpu"},
    ]
    assert doc["executor"]["elevation_required"] is True
    assert doc["proof"]["command"] == "test -e /tmp/T1082-inventory/hw.txt"
    assert "apt-get" not in (tmp_path / "art-t1082-2.yaml").read_text()  # get_prereq never kept


def test_import_art_reports_malformed_and_schema_violating_files(tmp_path: Path) -> None:
    report = import_art([DATA / "bad"], tmp_path)
    assert [str(e).replace(str(DATA), "") for e in report.errors] == [
        "/bad/T1057.yaml:9: atomic_tests[0].timeout: unknown key 'timeout': expected one of "
        "auto_generated_guid, dependencies, dependency_executor_name, description, executor, "
        "input_arguments, name, supported_platforms, test_number",
        "/bad/T1057.yaml:12: atomic_tests[0].executor.name: expected one of 'manual', "
        "'powershell', 'sh', 'bash', 'command_prompt', got 'zsh'",
        "/bad/T1059.004.yaml:11: <root>: invalid YAML: mapping values are not allowed in this "
        "context; fix the syntax",
    ]
    assert list(tmp_path.iterdir()) == []


def test_import_art_technique_filter_and_dry_run(tmp_path: Path) -> None:
    report = import_art([ATOMICS], tmp_path, techniques=["T1003"], dry_run=True)
    assert [c.id for c in report.converted] == ["art-t1003-008-1"]
    assert {r.test for r in report.refused} == {"Read /etc/shadow with sudo",
                                                "Add a root account to /etc/passwd"}
    assert list(tmp_path.iterdir()) == []


def test_import_art_never_overwrites_other_content_without_force(tmp_path: Path) -> None:
    (tmp_path / "art-t1613-1.yaml").write_text("# mine\n")
    report = import_art([ATOMICS / "T1613"], tmp_path)
    assert [e.message for e in report.errors] == ["exists with other content: pass --force to overwrite it"]
    assert (tmp_path / "art-t1613-1.yaml").read_text() == "# mine\n"
    assert import_art([ATOMICS / "T1613"], tmp_path, force=True).errors == []
    assert import_art([ATOMICS / "T1613"], tmp_path).errors == []  # same content again: fine


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(ATOMICS), "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("import-art: 8 converted, 19 refused, 0 error(s) (dry run: nothing written)\n")
    assert main([str(DATA / "bad"), "--out", str(tmp_path)]) == 1
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2


def _sh(shell: str, text: str, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shell, "-c", text.replace("#{run_id}", run_id)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_converted_atomics_run_and_leave_nothing_behind(tmp_path: Path) -> None:
    """Each converted atomic really runs (preconditions, command, proof, cleanup) and its
    scratch paths and marker are gone afterwards."""
    import re

    import_art([ATOMICS], tmp_path)
    ran = 0
    for path in sorted(tmp_path.glob("*.yaml")):
        _, atomic = check_atomic(path)
        assert atomic is not None
        run_id = "st" + uuid.uuid4().hex[:12]
        if any(_sh(atomic.shell, p.command, run_id).returncode for p in atomic.precondition):
            continue  # a missing tool (lscpu, ...) is NOT_EXECUTED, not a failure
        act = _sh(atomic.shell, atomic.command, run_id)
        try:
            assert act.returncode == 0, (path.name, act.stderr)
            assert atomic.proof_stdout
            assert re.search(atomic.proof_stdout, act.stdout, re.MULTILINE)
            if atomic.proof_command:
                assert _sh(atomic.shell, atomic.proof_command, run_id).returncode == 0
        finally:
            assert _sh(atomic.shell, atomic.cleanup, run_id).returncode == 0
        owned = [w.split(" ")[0] for k, w in atomic.touches if k == "file" and "created" in w]
        assert [p for p in owned if Path(p).exists()] == [], path.name
        assert not Path(f"/tmp/shadowtest-art-{run_id}.ran").exists()
        ran += 1
    assert ran >= 6


@pytest.mark.parametrize(("command", "fragment"), [
    ("wget http://127.0.0.1/x -O /tmp/x", "names a URL"),
    ("cat /etc/hostname > /etc/motd", "outside the run-owned scratch paths"),
    ("sed -i 's/a/b/' /etc/hosts", "sed edits files in place"),
    ("echo x | tee -a /etc/shadow", "tee changes /etc/shadow"),
    ("rm -rf /tmp", "outside the run-owned scratch paths"),
    ("rm -rf /tmp/../etc", "rm changes /etc"),
    ("kill -9 1", "kill: signals processes"),
    ("modprobe dummy", "loads or unloads kernel modules"),
    ("reboot", "shuts down"),
    ("echo $(curl -s x)", "curl: downloads"),
    ("sleep 100 &", "background process"),
    ("base64 -d payload | sh", "sh: runs code"),
    ("find / -name x -delete", "find runs commands or deletes"),
    ("cat <<EOF > /tmp/x\nhi\nEOF", "here-document"),
    ("exec 3<>/dev/tcp/127.0.0.1/80", "/dev/tcp"),
    ("touch /tmp/*", "no variables, globs"),
    ("mystery-tool --go", "not a command the importer knows"),
    ("auditctl -D", "changes the audit system"),
    ("hostname evil", "sets the host name"),
    ("ip link set lo down", "changes network configuration"),
    ("useradd shadowuser1", "changes accounts"),
    ("echo x > /tmp/a &", "background process"),
])
def test_analyse_refuses(command: str, fragment: str) -> None:
    with pytest.raises(Unsafe, match=None) as info:
        analyse(command)
    assert fragment in str(info.value)


def test_analyse_accepts_reads_and_scratch_writes() -> None:
    effects = analyse(
        "id; uname -a 2>&1 | grep -i linux || true\n"
        "mkdir -p /tmp/a/b && cp /etc/hostname /tmp/a/b/h\n"
        "if [ -e /tmp/a/b/h ]; then cat /tmp/a/b/h > /dev/null; fi\n"
        "mv /tmp/a/b/h /tmp/a/c\nls -la $(dirname /etc/passwd)\n"
    )
    assert effects.writes == ["/tmp/a/b", "/tmp/a/b/h", "/tmp/a/c"]
    assert effects.removes == ["/tmp/a/b/h"]
    assert effects.reads[:2] == ["/etc/passwd", "/etc/hostname"]
    assert effects.commands == ["dirname", "id", "uname", "grep", "true", "mkdir", "cp", "[", "cat",
                                "mv", "ls"]
