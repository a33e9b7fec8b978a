"""The kernel audit interface over netlink, in process: what ``auditctl -s`` and
``auditctl -m`` do, without a subprocess per run (each was one per health check and one
per sync marker on the local node).

Only on this machine (a remote node's commands go through its control runner). Every
function raises ``OSError`` when the kernel refuses (no CAP_AUDIT_CONTROL, not the initial
namespaces, audit compiled out); callers fall back to ``auditctl``.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import sys
import time

NETLINK_AUDIT = 9
AUDIT_GET = 1000
AUDIT_USER = 1005
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
#: struct audit_status, in order (the names ``auditctl -s`` prints); later kernels append
STATUS_FIELDS = ("mask", "enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost",
                 "backlog", "feature_bitmap", "backlog_wait_time", "backlog_wait_time_actual")
_seq = itertools.count(int(time.time()) & 0xFFFF)


def _exchange(msg_type: int, payload: bytes, want: int | None, timeout: float) -> bytes:
    """Send one request; return the body of the reply of type ``want`` (None: the ack's).
    The kernel sends an AUDIT_GET reply from a thread of its own, so it may come after the
    ack: read until both are in."""
    seq = next(_seq)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        sock.sendto(_HEADER.pack(_HEADER.size + len(payload), msg_type,
                                 NLM_F_REQUEST | NLM_F_ACK, seq, 0) + payload, (0, 0))
        acked, body = False, None
        deadline = time.monotonic() + timeout
        while not (acked and (want is None or body is not None)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no audit netlink reply to message type {msg_type}")
            data = sock.recv(65536)
            off = 0
            while off + _HEADER.size <= len(data):
                length, typ, _, rseq, _ = _HEADER.unpack_from(data, off)
                if length < _HEADER.size:
                    break
                chunk = data[off + _HEADER.size:off + length]
                off += (length + 3) & ~3
                if rseq != seq:
                    continue
                if typ == NLMSG_ERROR:
                    err = struct.unpack_from("=i", chunk)[0] if len(chunk) >= 4 else 0
                    if err:
                        raise OSError(-err, f"audit netlink message type {msg_type}: "
                                            f"{os.strerror(-err)}")
                    acked = True
                elif typ == want:
                    body = chunk
    return body if body is not None else b""


def status(timeout: float = 2.0) -> dict[str, int]:
    """The kernel's audit status as ``auditctl -s`` names it (enabled, pid, lost, ...)."""
    body = _exchange(AUDIT_GET, b"", AUDIT_GET, timeout)
    count = min(len(body) // 4, len(STATUS_FIELDS))
    values = struct.unpack_from(f"={count}I", body)
    return dict(zip(STATUS_FIELDS[:count], values, strict=True))


def user_message(text: str, timeout: float = 2.0) -> None:
    """An AUDIT_USER message, formatted as ``auditctl -m text`` formats it (the record the
    audit log then holds is the same: ``msg='text=... exe=... res=success'``)."""
    payload = (f"text={text} exe=\"{sys.executable}\" hostname=? addr=? terminal=? "
               f"res=success").encode() + b"\0"
    _exchange(AUDIT_USER, payload, None, timeout)
