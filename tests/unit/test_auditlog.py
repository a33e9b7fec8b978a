"""The raw auditd log parser, over a real recorded session (auditd 3.0.9, kernel 6.18).

session.log was recorded with harness/sensors/auditd/auditd.rules loaded plus one control rule
(``-S ptrace -F a0=0x10 -k shadowtest-control-ptrace``, added after them, so it only sees
attaches the pid-1 rule did not take): a PTRACE_ATTACH and a PTRACE_SEIZE of PID 1 inside
``unshare --pid --fork --mount-proc``, a PTRACE_ATTACH of an ordinary child, a
setns(CLONE_NEWNS) into the host mount namespace from ``unshare -m --pid --fork``, a
create + unlink of /etc/shadowtest-audit-sample-<8 hex>, and
``auditctl -m "shadowtest-sync 42"``.
malformed.log = real lines of that session + a line cut inside a quoted value + a junk
line + a line with a bad ``msg=audit(...)`` header.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.sensors.auditd.auditlog import AuditEvent, AuditLogParser, parse_record

DATA = Path(__file__).resolve().parent.parent / "data" / "auditd"
SAMPLE_NAME = re.compile(r"/etc/shadowtest-audit-sample-[0-9a-f]{8}")


def _lines(name: str) -> list[str]:
    # split on "\n" only: str.splitlines() also splits at the 0x1D enriched separator
    text = (DATA / name).read_text(encoding="utf-8", errors="replace")
    return text.split("\n")


def _parse(lines: list[str]) -> tuple[list[AuditEvent], AuditLogParser]:
    parser = AuditLogParser()
    events: list[AuditEvent] = []
    for line in lines:
        events.extend(parser.feed(line))
    events.extend(parser.flush())
    return events, parser


@pytest.fixture(scope="module")
def session() -> list[AuditEvent]:
    return _parse(_lines("session.log"))[0]


def _keyed(events: list[AuditEvent], key: str) -> list[AuditEvent]:
    return [e for e in events if e.key == key]


# ---------------------------------------------------------------- grouping
def test_parser_session_has_no_malformed_lines() -> None:
    _, parser = _parse(_lines("session.log"))
    assert (parser.malformed, parser.malformed_samples) == (0, [])


def test_parser_groups_every_line_into_one_event() -> None:
    lines = [x for x in _lines("session.log") if x.strip()]
    events, _ = _parse(lines)
    assert sum(len(e.records) for e in events) == len(lines)


def test_parser_groups_records_by_serial(session: list[AuditEvent]) -> None:
    mixed = [e for e in session
             if {(r.serial, r.timestamp) for r in e.records} != {(e.serial, e.timestamp)}]
    assert mixed == []


def test_parser_emits_each_serial_once(session: list[AuditEvent]) -> None:
    serials = [(e.timestamp, e.serial) for e in session]
    assert len(serials) == len(set(serials))


def test_parser_completes_events_without_eoe_or_flush() -> None:
    # auditd writes no EOE to disk: PROCTITLE and standalone types end every event
    parser = AuditLogParser()
    for line in _lines("session.log"):
        parser.feed(line)
    assert parser.pending == 0


def test_parser_syscall_event_ends_with_proctitle(session: list[AuditEvent]) -> None:
    ends = {e.types[-1] for e in session if "SYSCALL" in e.types}
    assert ends == {"PROCTITLE"}


def test_parser_config_change_is_grouped_with_its_syscall(session: list[AuditEvent]) -> None:
    shapes = {e.types[:2] for e in session if e.types[0] == "CONFIG_CHANGE"}
    assert shapes == {("CONFIG_CHANGE", "SYSCALL")}


def test_parser_feed_line_by_line_equals_feed_all() -> None:
    lines = _lines("session.log")
    one_by_one, _ = _parse(lines)
    parser = AuditLogParser()
    at_once = parser.feed("\n".join(lines)) + parser.flush()
    assert at_once == one_by_one


def test_parser_interleaved_events_complete_separately(session: list[AuditEvent]) -> None:
    lines = _lines("session.log")
    ptrace = [x for x in lines if ":1523):" in x]
    openat = [x for x in lines if ":1529):" in x]
    mixed = [ptrace[0], openat[0], openat[1], ptrace[1], openat[2], ptrace[2], *openat[3:]]
    events, _ = _parse(mixed)
    expected = [e for e in session if e.serial in (1523, 1529)]
    assert events == expected


def test_parser_eoe_completes_an_event() -> None:
    head = next(x for x in _lines("session.log") if x.startswith("type=CONFIG_CHANGE"))
    stamp = head.split(" ")[1].removesuffix(":")  # msg=audit(SECONDS.MS:SERIAL)
    parser = AuditLogParser()
    parser.feed(head)
    done = parser.feed(f"type=EOE {stamp}: ")
    assert [e.types for e in done] == [("CONFIG_CHANGE",)]


def test_parser_timeout_completes_a_stale_event() -> None:
    parser = AuditLogParser(eoe_timeout=2.0)
    parser.feed("type=SYSCALL msg=audit(1000.000:7): arch=c000003e syscall=59 key=(null)")
    done = parser.feed("type=SYSCALL msg=audit(1002.500:8): arch=c000003e syscall=59 key=(null)")
    assert [e.serial for e in done] == [7]


def test_parser_flush_before_keeps_recent_events() -> None:
    parser = AuditLogParser()
    parser.feed("type=SYSCALL msg=audit(1000.000:7): arch=c000003e syscall=59 key=(null)")
    parser.feed("type=SYSCALL msg=audit(1001.000:8): arch=c000003e syscall=59 key=(null)")
    assert ([e.serial for e in parser.flush(before=1000.5)], parser.pending) == ([7], 1)


def test_parser_same_serial_other_timestamp_is_another_event() -> None:
    parser = AuditLogParser()
    parser.feed("type=SYSCALL msg=audit(1000.000:7): arch=c000003e syscall=59 key=(null)")
    parser.feed("type=SYSCALL msg=audit(1000.004:7): arch=c000003e syscall=59 key=(null)")
    assert parser.pending == 2


# ---------------------------------------------------------------- the recorded attacks
def test_event_ptrace_pid1_has_technique_key(session: list[AuditEvent]) -> None:
    ptrace = _keyed(session, "T1055.008")
    assert [(e.syscall, e.records[0].get("a0"), e.records[0].get("a1")) for e in ptrace] == [
        ("ptrace", "10", "1"), ("ptrace", "4206", "1")]


def test_event_ptrace_pid1_opid_is_namespace_init(session: list[AuditEvent]) -> None:
    # the tracer is a child of PID 1 of its namespace: OBJ_PID opid (host pid) == its ppid
    assert {(e.opid == e.ppid, e.opid is not None) for e in _keyed(session, "T1055.008")} == {
        (True, True)}


def test_event_ptrace_other_pid_gets_no_pid1_key(session: list[AuditEvent]) -> None:
    control = _keyed(session, "shadowtest-control-ptrace")
    a1 = [e.records[0].fields["a1"] for e in control]
    assert [(x != "1", int(x, 16) == e.opid) for x, e in zip(a1, control, strict=True)] == [
        (True, True)]


def test_event_ptrace_pid1_key_only_on_pid1(session: list[AuditEvent]) -> None:
    assert {e.records[0].get("a1") for e in session if e.key == "T1055.008"} == {"1"}


def test_event_config_change_key_is_not_a_match(session: list[AuditEvent]) -> None:
    changes = [e for e in session if e.types[0] == "CONFIG_CHANGE" and e.changed_rule_key]
    assert {(e.key, e.changed_rule_key) for e in changes} >= {
        (None, "T1055.008"), (None, "T1611"), (None, "T1098")}


def test_event_setns_has_key_t1611(session: list[AuditEvent]) -> None:
    setns = _keyed(session, "T1611")
    assert [(e.syscall, e.records[0].get("a1"), e.success) for e in setns] == [
        ("setns", "20000", True)]


def test_event_etc_write_has_random_path(session: list[AuditEvent]) -> None:
    writes = _keyed(session, "T1098")
    named = [(e.syscall, [p for p in e.paths if SAMPLE_NAME.fullmatch(p)]) for e in writes]
    assert [(s, len(p)) for s, p in named] == [("openat", 1), ("unlink", 1)]


def test_event_etc_write_create_and_delete_same_name(session: list[AuditEvent]) -> None:
    names = {p for e in _keyed(session, "T1098") for p in e.paths if SAMPLE_NAME.fullmatch(p)}
    assert len(names) == 1


def test_event_user_msg_of_sync_marker(session: list[AuditEvent]) -> None:
    assert [e.user_msg for e in session if e.user_msg] == ["shadowtest-sync 42"]


def test_event_sync_marker_is_a_single_record_event(session: list[AuditEvent]) -> None:
    marker = next(e for e in session if e.user_msg)
    assert (marker.types, marker.exe, marker.success) == (("USER",), "/usr/sbin/auditctl", True)


def test_event_proctitle_decodes_hex_argv(session: list[AuditEvent]) -> None:
    marker_exec = next(e for e in session
                       if e.key == "shadowtest-proc" and e.argv[:2] == ("/usr/sbin/auditctl", "-m"))
    assert marker_exec.argv == ("/usr/sbin/auditctl", "-m", "shadowtest-sync 42")


def test_event_proctitle_joins_argv_with_spaces(session: list[AuditEvent]) -> None:
    openat = _keyed(session, "T1098")[0]
    assert openat.proctitle == "/usr/bin/python3.11 /tmp/staud/actions.py"


def test_event_process_tree_fields(session: list[AuditEvent]) -> None:
    execs = [e for e in session if e.key == "shadowtest-proc"]
    assert [e for e in execs if e.pid is None or e.ppid is None] == [] != execs


def test_record_enriched_fields_do_not_overwrite_raw(session: list[AuditEvent]) -> None:
    sc = _keyed(session, "T1055.008")[0].records[0]
    assert (sc.get("syscall"), sc.get("SYSCALL"), sc.get("auid"), sc.get("AUID")) == (
        "101", "ptrace", "4294967295", "unset")


def test_record_enriched_braces_value(session: list[AuditEvent]) -> None:
    sockaddr = next(r for e in session for r in e.records if r.type == "SOCKADDR")
    assert sockaddr.get("SADDR") == "saddr_fam=netlink nlnk-fam=16 nlnk-pid=0"


def test_record_daemon_start(session: list[AuditEvent]) -> None:
    first = session[0]
    assert (first.types, first.records[0].get("op"), first.records[0].get("format")) == (
        ("DAEMON_START",), "start", "enriched")


# ---------------------------------------------------------------- malformed input
def test_parser_counts_malformed_lines_without_raising() -> None:
    _, parser = _parse(_lines("malformed.log"))
    assert parser.malformed == 3


def test_parser_malformed_samples_hold_the_bad_lines() -> None:
    _, parser = _parse(_lines("malformed.log"))
    assert [s[:18] for s in parser.malformed_samples] == [
        "type=PATH msg=audi", "\x00\x07\ufffd\ufffd garbage \x1b[31m", "type=SYSCALL msg=a"]


def test_parser_malformed_log_still_yields_real_events() -> None:
    events, _ = _parse(_lines("malformed.log"))
    assert [(e.serial, e.types) for e in events] == [
        (1523, ("SYSCALL", "OBJ_PID", "PROCTITLE")),
        (1529, ("SYSCALL", "CWD", "PATH", "PROCTITLE")),
        (1532, ("USER",)),
        (8698, ("DAEMON_END",)),
    ]


def test_parser_keeps_at_most_ten_samples() -> None:
    parser = AuditLogParser()
    for i in range(15):
        parser.feed(f"junk {i}")
    assert (parser.malformed, len(parser.malformed_samples)) == (15, 10)


def test_parser_ignores_blank_lines() -> None:
    parser = AuditLogParser()
    assert (parser.feed(""), parser.feed("   "), parser.malformed) == ([], [], 0)


@pytest.mark.parametrize(
    "line",
    [
        "type=SYSCALL msg=audit(1000.000:7): arch=c000003e syscall=59 comm=\"pyth",
        "type=SYSCALL msg=audit(1000.000:7): arch=c000003e syscall=59 comm=",
        "type=SYSCALL msg=audit(1000.000:7): arch=c000003e syscall=59 co",
        "type=SYSCALL msg=audit(1000.000:7): arch=c000003e key=(null)\x1dARCH=x86_64 AUID=\"un",
        "type=SYSCALL msg=audit(1000.000): arch=c000003e",
        "type=SYSCALL msg=audit(abc.def:7): arch=c000003e",
        "msg=audit(1000.000:7): arch=c000003e",
        "\x00\xff\xfe",
        "type=SOCKADDR msg=audit(1000.000:7): saddr=01\x1dSADDR={ saddr_fam=local",
    ],
)
def test_parse_record_truncated_or_junk_is_none(line: str) -> None:
    assert parse_record(line) is None


def test_parse_record_hex_path_name_is_decoded() -> None:
    line = next(x for x in _lines("session.log") if 'name="/etc/"' in x)
    hexed = line.replace('name="/etc/"', "name=" + b"/etc/a b".hex().upper())
    record = parse_record(hexed)
    assert (record.get("name") if record else None) == "/etc/a b"


def test_parse_record_timestamp_and_serial() -> None:
    record = parse_record('type=CWD msg=audit(1732370000.123:4567): cwd="/"')
    got = (record.timestamp, record.serial, record.type) if record else None
    assert got == (1732370000.123, 4567, "CWD")


def test_parse_record_multi_key_is_split() -> None:
    key = b"T1611\x01T1098".hex().upper()
    parser = AuditLogParser()
    parser.feed(f"type=SYSCALL msg=audit(1000.000:7): syscall=308 key={key}")
    event = parser.feed('type=PROCTITLE msg=audit(1000.000:7): proctitle="x"')[0]
    assert (event.key, event.keys) == ("T1611", ("T1611", "T1098"))


def test_parse_record_null_key_is_none() -> None:
    parser = AuditLogParser()
    parser.feed("type=SYSCALL msg=audit(1000.000:7): syscall=59 key=(null)")
    event = parser.feed("type=PROCTITLE msg=audit(1000.000:7): proctitle=6C73")[0]
    assert (event.key, event.proctitle) == (None, "ls")


def test_parse_record_execve_chunked_argument_is_joined() -> None:
    part0, part1 = "héllo ".encode().hex().upper(), "wörld".encode().hex().upper()
    line = (f"type=EXECVE msg=audit(1000.000:7): argc=2 a0=\"sh\" a1_len=24 "
            f"a1[0]={part0} a1[1]={part1}")
    record = parse_record(line)
    assert (record.get("a1") if record else None) == "héllo wörld"
