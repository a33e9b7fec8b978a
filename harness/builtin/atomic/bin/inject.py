#!/usr/bin/env python3
"""Process injection into a child this script starts itself (never another process).

usage: inject.py poke|vmwrite|procmem
The child holds a 16-byte buffer and waits; the parent overwrites the buffer with
"shadowtest-inject" through ptrace PTRACE_POKEDATA, process_vm_writev or a write to
/proc/<child>/mem; the child reads its own buffer back. Prints
'injected <method> pid=<child> value=<what the child read>'. The child is killed at the end.
"""

import contextlib
import ctypes
import os
import signal
import sys

PTRACE_PEEKDATA, PTRACE_POKEDATA, PTRACE_ATTACH, PTRACE_DETACH = 2, 5, 16, 17
SYS_PROCESS_VM_WRITEV = 311
MARK = b"shadowtest-injec"  # 16 bytes: two ptrace words
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
libc.syscall.restype = ctypes.c_long


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def fail(what):
    print(f"{what} failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
    return 1


def main():
    method = sys.argv[1]
    buf = ctypes.create_string_buffer(b"original-content", 16)
    addr = ctypes.addressof(buf)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    child = os.fork()
    if child == 0:  # the target: wait for "go", then report what its buffer holds
        os.read(to_child_r, 1)
        os.write(to_parent_w, buf.raw)
        os.read(to_child_r, 1)
        os._exit(0)
    try:
        if method == "poke":
            if libc.ptrace(PTRACE_ATTACH, child, None, None) != 0:
                return fail("PTRACE_ATTACH")
            os.waitpid(child, 0x40000000)
            for off in (0, 8):
                word = int.from_bytes(MARK[off:off + 8], "little", signed=True)
                if libc.ptrace(PTRACE_POKEDATA, child, addr + off, word) != 0:
                    return fail("PTRACE_POKEDATA")
            libc.ptrace(PTRACE_DETACH, child, None, None)
        elif method == "vmwrite":
            src = ctypes.create_string_buffer(MARK, 16)
            local = IoVec(ctypes.addressof(src), 16)
            remote = IoVec(addr, 16)
            n = libc.syscall(ctypes.c_long(SYS_PROCESS_VM_WRITEV), ctypes.c_long(child),
                             ctypes.byref(local), ctypes.c_ulong(1), ctypes.byref(remote),
                             ctypes.c_ulong(1), ctypes.c_ulong(0))
            if n != 16:
                return fail("process_vm_writev")
        elif method == "procmem":
            with open(f"/proc/{child}/mem", "r+b", buffering=0) as mem:
                mem.seek(addr)
                mem.write(MARK)
        else:
            print(f"unknown method {method!r}: expected poke, vmwrite or procmem", file=sys.stderr)
            return 2
        os.write(to_child_w, b"g")
        got = os.read(to_parent_r, 16)
        print(f"injected {method} pid={child} value={got.decode(errors='replace')}")
        return 0 if got == MARK else 3
    finally:
        os.write(to_child_w, b"x")
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


if __name__ == "__main__":
    sys.exit(main())
