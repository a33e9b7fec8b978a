"""Pure parser of the raw auditd log (auditd 3.0.9, ``log_format`` RAW or ENRICHED).

No I/O: the caller hands over lines; the parser returns the events they complete.

Line format (checked against real logs, see ``tests/data/auditd/session.log``)::

    [node=N ]type=T msg=audit(EPOCH.MS:SERIAL): k=v k="v" k=HEX ...[\\x1dK=v K="v" K={ ... }]

* **Split lines on "\\n" only.** The ENRICHED separator 0x1D is a line boundary for
  ``str.splitlines()``; a file iterated in text mode or ``text.split("\\n")`` is right.
* ``auditd`` never writes ``type=EOE`` to its log (EOE exists only on the netlink / plugin
  stream). A syscall event ends with its ``PROCTITLE`` record, which the kernel always
  emits last; ``EOE`` is honoured too when a stream carries it (and is not kept as a
  record).
* ``CONFIG_CHANGE`` is *not* a single-record event on kernel 6.18: it is followed by the
  ``SYSCALL`` (+ ``SOCKADDR``) + ``PROCTITLE`` of the auditctl ``sendto`` with the same serial.
* ``DAEMON_*`` records carry auditd's own serial counter, not the kernel's, so events are
  keyed by (timestamp text, serial), as ``ausearch`` does.

Grouping (like libauparse): an event is complete

1. at its ``PROCTITLE`` (or ``EOE``) record;
2. at once when its first record is a standalone type (``USER``, ``USER_*``,
   ``DAEMON_*``, ``CRED_*``, ``ANOM_*``, ... : the types auparse treats as one-record
   events, i.e. numbers < 1300 or >= 1700 except ``LOGIN``);
3. when a record arrives whose timestamp is more than ``eoe_timeout`` seconds later
   (auditd.conf ``end_of_event_timeout``, default 2);
4. when more than ``max_pending`` events are pending (oldest first);
5. on ``flush()`` (end of stream, or idle: ``flush(before=time.time() - 2)``).

Several events may be pending at once (records of different events can interleave).

Field values: quotes removed; values the kernel hex-encodes (unquoted ``name``,
``proctitle``, ``comm``, ``exe``, ``cwd``, ``key``, ``ocomm``, ... and the ``aN`` /
``aN[i]`` arguments of ``EXECVE``) are decoded (UTF-8, undecodable bytes as ``\\xNN``);
NULs in a decoded ``proctitle`` are kept (``AuditEvent.proctitle`` joins argv with
spaces); a multi-key ``key`` keeps its 0x01 separators (``AuditEvent.keys`` splits
them); chunked EXECVE arguments (``aN_len`` + ``aN[i]``) are joined into ``aN``.
``(null)``, ``(none)`` and ``?`` stay as they are. The enriched part after 0x1D is
merged into the same ``fields`` dict under its own (upper-case) names, e.g. ``SYSCALL``
= ``"ptrace"``, ``AUID`` = ``"unset"``, ``SADDR`` = ``"saddr_fam=netlink ..."`` (braces
removed); an enriched name never overwrites a raw one (it would be stored as
``NAME_ENRICHED``; upper-case enriched names and lower-case raw names do not collide
in practice). For user-space messages (``msg='...'``) ``msg`` holds the inner text and
the inner ``k=v`` pairs are merged in without overwriting; ``auditctl -m TEXT`` sends
``msg='text=TEXT exe="/usr/sbin/auditctl" hostname=? addr=? terminal=? res=success'``
and ``text`` is TEXT (spaces included).

A line is malformed (counted in ``malformed``, never raised) when it has no
``type=... msg=audit(SECONDS.MS:SERIAL):`` header, an unterminated quote or brace, ends
in a bare word (cut inside a name) or in ``name=`` (cut after ``=``). A line cut inside an
unquoted value cannot be told from a complete one. Blank lines are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["AuditEvent", "AuditLogParser", "AuditRecord", "parse_record"]

_HEADER = re.compile(
    r"(?:node=(?P<node>\S+) )?type=(?P<type>\S+) "
    r"msg=audit\((?P<ts>(?P<sec>\d+)\.(?P<frac>\d+)):(?P<serial>\d+)\):(?: |$)"
)
# Fields the kernel writes with audit_log_untrustedstring(): quoted, or hex when unsafe.
_ENCODED = frozenset({
    "name", "proctitle", "comm", "exe", "cwd", "path", "key", "ocomm", "data", "cmd",
    "acct", "dir", "file", "watch", "old-chardev", "new-chardev", "root_dir",
})
_EXECVE_ARG = re.compile(r"a\d+(?:\[\d+\])?")
_EXECVE_CHUNK = re.compile(r"(a\d+)\[(\d+)\]")
_HEXDIGITS = frozenset("0123456789ABCDEFabcdef")
_STANDALONE_PREFIXES = (
    "USER_", "DAEMON_", "CRED_", "ANOM_", "RESP_", "SERVICE_", "SYSTEM_", "ACCT_", "GRP_",
    "ADD_", "DEL_", "CHUSER", "CHGRP", "USYS_", "VIRT_", "ROLE_", "LABEL_", "MAC_UNLBL",
    "MAC_CALIPSO", "MAC_MAP", "MAC_IPSEC_ADD", "MAC_IPSEC_DEL",
)
_STANDALONE = frozenset({
    "USER", "KERNEL", "TRUSTED_APP", "DAC_CHECK", "MAC_CHECK", "TEST", "SOFTWARE_UPDATE",
})
_TRUE = frozenset({"yes", "success", "1"})
_FALSE = frozenset({"no", "failed", "0"})

_Token = tuple[str, str | None, str]  # (name, value or None for a bare word, quote char)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One log line. ``fields``: raw fields (decoded) plus enriched ones (upper case)."""

    type: str
    serial: int
    timestamp: float
    fields: dict[str, str] = field(default_factory=dict, hash=False)

    def get(self, name: str) -> str | None:
        """A field's value, None when absent."""
        return self.fields.get(name)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """All records of one event (same serial and timestamp), in arrival order."""

    serial: int
    timestamp: float
    records: tuple[AuditRecord, ...]

    # ------------------------------------------------------------ lookup
    @property
    def types(self) -> tuple[str, ...]:
        """Record types in arrival order, e.g. ("SYSCALL", "OBJ_PID", "PROCTITLE")."""
        return tuple(r.type for r in self.records)

    def record(self, type_: str) -> AuditRecord | None:
        """The first record of a type, None when the event has none."""
        return next((r for r in self.records if r.type == type_), None)

    def records_of(self, type_: str) -> tuple[AuditRecord, ...]:
        """Every record of a type."""
        return tuple(r for r in self.records if r.type == type_)

    def _first(self, name: str) -> str | None:
        """A field from SYSCALL when present, else from the first record that has it."""
        sc = self.record("SYSCALL")
        if sc is not None and name in sc.fields:
            return sc.fields[name]
        return next((r.fields[name] for r in self.records if name in r.fields), None)

    # ------------------------------------------------------------ convenience
    @property
    def keys(self) -> tuple[str, ...]:
        """Keys of the rule that matched (SYSCALL ``key``, 0x01-separated when several).

        Never taken from ``CONFIG_CHANGE``: there ``key`` names the rule being added or
        removed, not a match (see ``changed_rule_key``).
        """
        sc = self.record("SYSCALL")
        raw = sc.fields.get("key") if sc is not None else next(
            (r.fields["key"] for r in self.records
             if "key" in r.fields and r.type != "CONFIG_CHANGE"), None)
        if raw is None or raw == "(null)":
            return ()
        return tuple(k for k in raw.split("\x01") if k)

    @property
    def key(self) -> str | None:
        """First key of the matching rule; None for ``(null)`` or no key."""
        keys = self.keys
        return keys[0] if keys else None

    @property
    def changed_rule_key(self) -> str | None:
        """For a ``CONFIG_CHANGE`` (``op=add_rule`` / ``remove_rule``): the rule's key."""
        cc = self.record("CONFIG_CHANGE")
        value = cc.fields.get("key") if cc is not None else None
        return None if value in (None, "(null)") else value

    @property
    def syscall(self) -> str | None:
        """Syscall name (enriched ``SYSCALL``) or its number as text; None without SYSCALL."""
        sc = self.record("SYSCALL")
        if sc is None:
            return None
        return sc.fields.get("SYSCALL") or sc.fields.get("syscall")

    @property
    def pid(self) -> int | None:
        return _int(self._first("pid"))

    @property
    def ppid(self) -> int | None:
        return _int(self._first("ppid"))

    @property
    def comm(self) -> str | None:
        return self._first("comm")

    @property
    def exe(self) -> str | None:
        return self._first("exe")

    @property
    def cwd(self) -> str | None:
        rec = self.record("CWD")
        return rec.fields.get("cwd") if rec is not None else None

    @property
    def paths(self) -> tuple[str, ...]:
        """``name`` of every PATH record in ``item`` order (``(null)`` names left out)."""
        recs = sorted(self.records_of("PATH"), key=lambda r: _int(r.fields.get("item")) or 0)
        return tuple(n for r in recs if (n := r.fields.get("name")) and n != "(null)")

    @property
    def proctitle(self) -> str | None:
        """The process's argv joined by spaces (the kernel keeps at most 128 bytes)."""
        rec = self.record("PROCTITLE")
        value = rec.fields.get("proctitle") if rec is not None else None
        if value is None or value == "(null)":
            return None
        return " ".join(value.rstrip("\x00").split("\x00"))

    @property
    def argv(self) -> tuple[str, ...]:
        """Full argv of an exec from its EXECVE record; () without one."""
        rec = self.record("EXECVE")
        if rec is None:
            return ()
        argc = _int(rec.fields.get("argc")) or 0
        return tuple(rec.fields.get(f"a{i}", "") for i in range(argc))

    @property
    def opid(self) -> int | None:
        """Target pid of the first OBJ_PID record (ptrace / kill target)."""
        rec = self.record("OBJ_PID")
        return _int(rec.fields.get("opid")) if rec is not None else None

    @property
    def success(self) -> bool | None:
        """SYSCALL ``success``; else the first ``res`` (success/failed, 1/0); else None."""
        value = self._first("success")
        if value is None:
            value = next((r.fields["res"] for r in self.records if "res" in r.fields), None)
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        return None

    @property
    def user_msg(self) -> str | None:
        """Text of a ``type=USER`` message (``auditctl -m TEXT`` -> TEXT); else None."""
        rec = self.record("USER")
        if rec is None:
            return None
        return rec.fields.get("text", rec.fields.get("msg"))


@dataclass(slots=True)
class _Pending:
    serial: int
    timestamp: float
    records: list[AuditRecord]


class AuditLogParser:
    """Groups log lines into events. Never raises on bad input; counts it instead."""

    def __init__(self, *, eoe_timeout: float = 2.0, max_pending: int = 4096,
                 max_samples: int = 10) -> None:
        self.eoe_timeout = eoe_timeout
        self.max_pending = max_pending
        self.max_samples = max_samples
        self.malformed = 0
        self._samples: list[str] = []
        self._pending: dict[tuple[str, int], _Pending] = {}

    @property
    def malformed_samples(self) -> list[str]:
        """The first ``max_samples`` malformed lines (each cut to 300 characters)."""
        return list(self._samples)

    @property
    def pending(self) -> int:
        """How many events are still waiting for more records."""
        return len(self._pending)

    def feed(self, line: str) -> list[AuditEvent]:
        """One line (or several separated by "\\n"); returns the events they complete."""
        done: list[AuditEvent] = []
        for one in line.split("\n"):
            done.extend(self._feed_one(one))
        return done

    def flush(self, before: float | None = None) -> list[AuditEvent]:
        """Pending events (all, or those with timestamp < ``before``), oldest first."""
        keys = [k for k, p in self._pending.items() if before is None or p.timestamp < before]
        return [_event(self._pending.pop(k)) for k in keys]

    # ------------------------------------------------------------ internals
    def _bad(self, line: str) -> list[AuditEvent]:
        self.malformed += 1
        if len(self._samples) < self.max_samples:
            self._samples.append(line[:300])
        return []

    def _feed_one(self, line: str) -> list[AuditEvent]:
        line = line.rstrip("\r")
        if not line.strip():
            return []
        try:
            parsed = _parse(line)
        except (ValueError, IndexError, UnicodeError, OverflowError):
            parsed = None
        if parsed is None:
            return self._bad(line)
        ts_text, rec = parsed
        key = (ts_text, rec.serial)
        done: list[AuditEvent] = []
        # events that cannot grow any more because time moved on
        stale = [k for k, p in self._pending.items()
                 if k != key and rec.timestamp - p.timestamp > self.eoe_timeout]
        done.extend(_event(self._pending.pop(k)) for k in stale)
        if rec.type == "EOE":
            ended = self._pending.pop(key, None)
            if ended is not None:
                done.append(_event(ended))
            return done
        pend = self._pending.get(key)
        if pend is None:
            pend = self._pending[key] = _Pending(rec.serial, rec.timestamp, [])
        pend.records.append(rec)
        if rec.type == "PROCTITLE" or (len(pend.records) == 1 and _standalone(rec.type)):
            done.append(_event(self._pending.pop(key)))
        while len(self._pending) > self.max_pending:
            oldest = next(iter(self._pending))
            done.append(_event(self._pending.pop(oldest)))
        return done


def parse_record(line: str) -> AuditRecord | None:
    """One line to a record, or None when it is malformed. Pure; never raises."""
    try:
        parsed = _parse(line.rstrip("\r\n"))
    except (ValueError, IndexError, UnicodeError, OverflowError):
        return None
    return parsed[1] if parsed is not None else None


def _event(p: _Pending) -> AuditEvent:
    return AuditEvent(p.serial, p.timestamp, tuple(p.records))


def _standalone(type_: str) -> bool:
    """Types libauparse treats as one-record events (see module docstring)."""
    if type_ in _STANDALONE or type_.startswith(_STANDALONE_PREFIXES):
        return True
    m = re.fullmatch(r"UNKNOWN\[(\d+)\]", type_)
    if m is None:
        return False
    num = int(m.group(1))
    return (num < 1300 and num != 1006) or num >= 1700


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _parse(line: str) -> tuple[str, AuditRecord] | None:
    m = _HEADER.match(line)
    if m is None:
        return None
    type_ = m.group("type")
    raw, sep, enriched = line[m.end():].partition("\x1d")
    tokens = _tokens(raw)
    if tokens is None or not _complete(tokens):
        return None
    fields: dict[str, str] = {}
    if m.group("node"):
        fields["node"] = m.group("node")
    _add_raw(type_, tokens, fields)
    if sep:
        etokens = _tokens(enriched)
        if etokens is None or not _complete(etokens):
            return None
        for name, value, _quote in etokens:
            if value is not None:
                fields[name if name not in fields else f"{name}_ENRICHED"] = value
    ts = float(f"{m.group('sec')}.{m.group('frac')}")
    return m.group("ts"), AuditRecord(type_, int(m.group("serial")), ts, fields)


def _add_raw(type_: str, tokens: list[_Token], fields: dict[str, str]) -> None:
    chunks: dict[str, dict[int, bytes]] = {}
    for name, value, quote in tokens:
        if value is None or name in fields:
            continue
        fields[name] = _decode(type_, name, value, quote)
        if name == "msg" and quote == "'":
            _merge_user_msg(fields, value)
        elif type_ == "EXECVE" and (c := _EXECVE_CHUNK.fullmatch(name)) is not None:
            chunks.setdefault(c.group(1), {})[int(c.group(2))] = _raw_bytes(value, quote)
    for arg, parts in chunks.items():  # aN_len=L aN[0]=.. aN[1]=..: one long argument
        if arg not in fields and sorted(parts) == list(range(len(parts))):
            data = b"".join(parts[i] for i in range(len(parts)))
            fields[arg] = data.decode("utf-8", errors="backslashreplace")


def _complete(tokens: list[_Token]) -> bool:
    """False when the text ends in a bare word or in ``name=`` (a cut line)."""
    if not tokens:
        return True
    _name, value, quote = tokens[-1]
    return value is not None and (value != "" or quote != "")


def _tokens(text: str) -> list[_Token] | None:
    """``name=value`` tokens; None when a quote or brace is not closed."""
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        j = i
        while j < n and text[j] not in " =":
            j += 1
        if j >= n or text[j] == " ":
            out.append((text[i:j], None, ""))
            i = j
            continue
        name = text[i:j]
        j += 1
        if j < n and text[j] == '"':
            end = text.find('"', j + 1)
        elif j < n and text[j] == "'":
            end = text.rfind("'")  # msg='...' is last and may hold single quotes
            end = end if end > j else -1
        elif j < n and text[j] == "{":
            end = text.find("}", j + 1)
        else:
            end = text.find(" ", j)
            end = n if end < 0 else end
            out.append((name, text[j:end], ""))
            i = end
            continue
        if end < 0:
            return None
        quote = text[j]
        value = text[j + 1:end].strip() if quote == "{" else text[j + 1:end]
        out.append((name, value, quote))
        i = end + 1
    return out


def _decode(type_: str, name: str, value: str, quote: str) -> str:
    if quote or not value or len(value) % 2 or not set(value) <= _HEXDIGITS:
        return value
    if name in _ENCODED or (type_ == "EXECVE" and _EXECVE_ARG.fullmatch(name)):
        return bytes.fromhex(value).decode("utf-8", errors="backslashreplace")
    return value


def _merge_user_msg(fields: dict[str, str], inner: str) -> None:
    """Flatten ``msg='k=v ...'`` of user-space messages into ``fields`` (no overwrite)."""
    rest = inner
    if inner.startswith("text="):
        cut = inner.rfind(" exe=")
        text, rest = (inner[5:cut], inner[cut:]) if cut >= 0 else (inner[5:], "")
        fields.setdefault("text", text)
    for name, value, _quote in _tokens(rest) or []:
        if value is not None:
            fields.setdefault(name, value)


def _raw_bytes(value: str, quote: str) -> bytes:
    if not quote and value and len(value) % 2 == 0 and set(value) <= _HEXDIGITS:
        return bytes.fromhex(value)
    return value.encode("utf-8", errors="surrogateescape")
