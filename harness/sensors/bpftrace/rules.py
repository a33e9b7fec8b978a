"""The bundled eBPF sensor's rule table: the ONE source of ``sensor.bt``,
``sensor-kprobes.bt``, ``enforce.bt`` (:data:`ENFORCEMENTS`), their header tables and
``RULES.md``.

Product-neutral data: what each rule watches (a hook: a syscall-entry tracepoint, a sched
tracepoint or a kprobe), the argument and path predicates that must all hold, and the
fields its detection carries. ``harness.sensors.bpftrace.generate`` compiles the table to
bpftrace 0.17; a CO-RE libbpf sensor can compile the same table. The few conditions that
are not data (a sockaddr, a socket behind an fd, an exe name, a credential) are
:class:`Raw` predicates: bpftrace text, marked as such, with a description for the docs.

Every detection line starts with the same header (kind, rule, technique, severity, pid,
tid, ppid, ancestors, comm, cgroup, pidns, mntns, uid, ts_ns, wall_ns), then the rule's
:class:`Field` s in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: rule pack version: the ``shadowtest-rulepack`` header of the generated programs (bump
#: when what a rule matches or emits changes)
VERSION = "3"

#: the initial pid namespace's inum (PROC_PID_INIT_INO): "in a container" is any other
INIT_PIDNS = 4026531836

O_WRONLY_RDWR_CREAT = 0x43  # O_WRONLY 1 | O_RDWR 2 | O_CREAT 0x40: "opened for write"
O_CREAT = 0x40

#: comms excluded from etc-file-create (package managers; spoofable, as Falco's "Write below etc")
PACKAGE_MANAGERS = ("dpkg", "apt", "apt-get", "rpm", "dnf", "yum")


@dataclass(frozen=True)
class Hook:
    """Where rules attach. ``args`` maps the table's logical argument names (``path``,
    ``flags``, ...) to the event's own field names."""

    name: str
    kind: Literal["syscall", "tracepoint", "kprobe"]
    event: str  # syscall name, "category:name" of a tracepoint, or the kprobed function
    args: tuple[tuple[str, str], ...] = ()
    #: a section title in the generated program (hooks of one section follow each other)
    section: str = ""
    #: logical arguments the call implies (creat = open with O_CREAT|O_WRONLY|O_TRUNC):
    #: predicates on them are decided when the program is generated
    consts: tuple[tuple[str, int], ...] = ()

    def const(self, name: str) -> int | None:
        return next((v for k, v in self.consts if k == name), None)

    def arg(self, name: str) -> str:
        for logical, actual in self.args:
            if logical == name:
                return actual
        raise KeyError(f"hook {self.name!r} has no argument {name!r} "
                       f"(it has {[a for a, _ in self.args]}); add it to the hook's args")


# ------------------------------------------------------------------ predicates
@dataclass(frozen=True)
class FlagsAny:
    """``(arg & mask) != 0``"""

    arg: str
    mask: int


@dataclass(frozen=True)
class FlagsNone:
    """``(arg & mask) == 0``"""

    arg: str
    mask: int


@dataclass(frozen=True)
class ArgIn:
    """``arg`` is one of ``values``."""

    arg: str
    values: tuple[int, ...]


@dataclass(frozen=True)
class ArgNotIn:
    """``arg`` is none of ``values``."""

    arg: str
    values: tuple[int, ...]


@dataclass(frozen=True)
class ArgCmp:
    """``arg <op> value``"""

    arg: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: int


@dataclass(frozen=True)
class NotCaller:
    """``arg`` (a pid) is not the caller's own (host) tgid."""

    arg: str


@dataclass(frozen=True)
class InContainer:
    """The caller's active pid namespace is not the initial one (:data:`INIT_PIDNS`)."""


@dataclass(frozen=True)
class ParentIs:
    """The caller's parent has host tgid ``tgid`` (2 = kthreadd: a kernel usermode helper)."""

    tgid: int


@dataclass(frozen=True)
class CommNotIn:
    """The caller's comm is none of ``names``."""

    names: tuple[str, ...]


PathKind = Literal["prefix", "exact", "basename"]


@dataclass(frozen=True)
class PathMatch:
    """``prefix``: the literal argument starts with ``value``; ``exact``: equals it;
    ``basename``: the part after its last ``/`` equals it (within the first 64 bytes)."""

    kind: PathKind
    value: str


@dataclass(frozen=True)
class Path:
    """The path argument ``arg`` matches ANY of ``any_of`` (``negate``: none of them).

    ``read`` is how the bpftrace program reads it: ``words`` compares little-endian
    8-byte words of the caller's memory (no string on the BPF stack), ``string`` reads
    the string once (``str()``) and compares with ``strncmp`` (what a rule that also
    prints the string does). Prefix matches only may be read as ``string``."""

    arg: str
    any_of: tuple[PathMatch, ...]
    negate: bool = False
    read: Literal["words", "string"] = "words"


@dataclass(frozen=True)
class Raw:
    """NOT data: a condition for what the table cannot express, written once per compiler.
    ``setup`` are bpftrace statements run first (their variables may feed ``Field``
    values); ``cond`` is the bpftrace expression; ``c_setup``/``c_cond`` are the same in C
    for the compiled sensor (``harness.sensors.libbpf``: ``task``, the scratch ``s``, the
    hook's arguments ``a_<name>``; empty = the rule is not compiled); ``describe`` says
    what it means, for the docs."""

    describe: str
    cond: str
    setup: tuple[str, ...] = ()
    c_setup: tuple[str, ...] = ()
    c_cond: str = ""


Predicate = (FlagsAny | FlagsNone | ArgIn | ArgNotIn | ArgCmp | NotCaller | InContainer
             | ParentIs | CommNotIn | Path | Raw)


@dataclass(frozen=True)
class Field:
    """One detection field after the header. ``value``: a logical argument of the hook,
    or (``raw``) a bpftrace expression, e.g. a variable a :class:`Raw` predicate set;
    ``c`` is then the C statement that stores it in ``{dst}`` (a ``long`` or a
    ``char[ST_STR]``) for the compiled sensor."""

    name: str
    type: Literal["int", "long", "uint", "str"]
    value: str
    raw: bool = False
    c: str = ""


@dataclass(frozen=True)
class Rule:
    """A detection rule: every predicate in ``when`` holds on one of ``hooks``."""

    name: str
    technique: str
    severity: Literal["low", "medium", "high"]
    hooks: tuple[str, ...]
    when: tuple[Predicate, ...]
    emits: tuple[Field, ...]
    summary: str  # what it matches, one line, for the header table and RULES.md
    #: "" = the base program (sensor.bt); else an optional module loaded only on nodes
    #: whose kernel has the feature (``MODULES`` in harness.sensors.bpftrace)
    module: str = ""


def _sys(name: str, *args: str, section: str = "") -> Hook:
    return Hook(name, "syscall", name, tuple((a.split("=")[0], a.split("=")[-1]) for a in args),
                section or name)


#: hooks in program order; ``args``: logical=event field
HOOKS: tuple[Hook, ...] = (
    _sys("ptrace", "request", "pid"),
    _sys("setns", "fd", "flags"),
    _sys("openat", "path=filename", "flags", section="file opens"),
    _sys("open", "path=filename", "flags", section="file opens"),
    # openat2's flags are a member of struct open_how (args->how)
    _sys("openat2", "path=filename", "flags=how.flags", section="file opens"),
    Hook("creat", "syscall", "creat", (("path", "pathname"),), "file opens",
         consts=(("flags", 0x241),)),
    _sys("mount", "source=dev_name", "fstype=type", "target=dir_name"),
    _sys("connect", "addr=uservaddr", "addrlen"),
    _sys("process_vm_writev", "pid"),
    Hook("exec", "tracepoint", "sched:sched_process_exec", (("filename", "filename"),), "exec"),
    _sys("unlinkat", "path=pathname", section="unlink"),
    _sys("unlink", "path=pathname", section="unlink"),
    _sys("fchmodat", "path=filename", "mode", section="chmod"),
    _sys("chmod", "path=filename", "mode", section="chmod"),
    _sys("dup2", "oldfd", "newfd", section="dup"),
    _sys("dup3", "oldfd", "newfd", section="dup"),
    Hook("commit_creds", "kprobe", "commit_creds", (), "commit_creds"),
)

_WRITE = FlagsAny("flags", O_WRONLY_RDWR_CREAT)
_READ = FlagsNone("flags", O_WRONLY_RDWR_CREAT)
_OPEN_FIELDS = (Field("path", "str", "path"), Field("flags", "int", "flags"))
_PTRACE_FIELDS = (Field("request", "long", "request"), Field("target", "long", "pid"))
_SETNS_FIELDS = (Field("fd", "int", "fd"), Field("nstype", "int", "flags"))
_MOUNT_FIELDS = (Field("path", "str", "source"), Field("fstype", "str", "fstype"),
                 Field("target", "str", "target"))
_PROC = PathMatch("prefix", "/proc/")
_CLONE_NEWNS = 0x00020000


def _paths(*matches: tuple[PathKind, str]) -> Path:
    return Path("path", tuple(PathMatch(kind, value) for kind, value in matches))


def _basename(name: str) -> Path:
    return Path("path", (PathMatch("basename", name),))


#: the rules, in the order of the header table and RULES.md
RULES: tuple[Rule, ...] = (
    # PTRACE_ATTACH = 16, PTRACE_SEIZE = 0x4206; pid as passed (namespace-local)
    Rule("ptrace-pid1", "T1055.008", "high", ("ptrace",),
         (ArgIn("request", (16, 0x4206)), ArgCmp("pid", "==", 1)), _PTRACE_FIELDS,
         "ptrace ATTACH/SEIZE of pid 1"),
    # PTRACE_POKETEXT = 4, PTRACE_POKEDATA = 5: writing another process's memory
    Rule("ptrace-poke", "T1055.008", "high", ("ptrace",),
         (ArgIn("request", (4, 5)),), _PTRACE_FIELDS, "ptrace POKETEXT/POKEDATA"),
    Rule("container-setns-mnt", "T1611", "high", ("setns",),
         (ArgIn("flags", (0, _CLONE_NEWNS)), InContainer()), _SETNS_FIELDS,
         "container setns into a mnt ns"),
    Rule("container-setns-ns", "T1611", "high", ("setns",),
         (ArgNotIn("flags", (0, _CLONE_NEWNS)), InContainer()), _SETNS_FIELDS,
         "container setns, any other ns type"),
    Rule("container-mount-blockdev", "T1611", "high", ("mount",),
         (Path("source", (PathMatch("prefix", "/dev/"),)), InContainer()), _MOUNT_FIELDS,
         "container mount of a /dev/ source"),
    Rule("container-cgroup-v1-mount", "T1611", "medium", ("mount",),
         (Path("fstype", (PathMatch("exact", "cgroup"),)), InContainer()), _MOUNT_FIELDS,
         "container mount of a cgroup v1 hierarchy"),
    Rule("release-agent-write", "T1611", "high", ("openat",),
         (_WRITE, _basename("release_agent")), _OPEN_FIELDS,
         "open for write of .../release_agent"),
    Rule("core-pattern-write", "T1611", "high", ("openat",),
         (_WRITE, _paths(("exact", "/proc/sys/kernel/core_pattern"))), _OPEN_FIELDS,
         "open for write of /proc/sys/kernel/core_pattern"),
    Rule("usermode-helper-exec", "T1611", "high", ("exec",), (ParentIs(2),),
         (Field("path", "str", "filename"),),
         "exec by a kernel usermode helper (a child of kthreadd: release_agent, "
         "core_pattern pipe, modprobe)"),
    Rule("container-runtime-socket", "T1611", "high", ("connect",),
         (ArgCmp("addrlen", ">", 13), ArgCmp("addrlen", "<=", 110), Raw(
             "an AF_UNIX sockaddr whose path ends in docker.sock, containerd.sock or "
             "crio.sock (addrlen = 2 + strlen(path), +1 when the caller counts the NUL)",
             setup=("$sa = (uint64)args->uservaddr;",
                    "$fam = *(uint16 *)uptr($sa);",
                    "$end = $sa + (uint64)args->addrlen;",
                    "if (*(uint8 *)uptr($end - 1) == 0) { $end = $end - 1; }"),
             cond=('$fam == 1 && (strncmp(str(uptr($end - 11)), "docker.sock", 12) == 0 || '
                   'strncmp(str(uptr($end - 15)), "containerd.sock", 16) == 0 || '
                   'strncmp(str(uptr($end - 9)), "crio.sock", 10) == 0)'),
             c_setup=("__u64 len = (__u32)a_addrlen;",
                      "st_bound(len, 0x7f);",
                      "bpf_probe_read_user(s->aux, len, (void *)a_addr);",
                      "__u16 fam = *(__u16 *)s->aux;",
                      "__u32 end = len;",
                      "if (s->aux[(end - 1) & ST_MASK] == 0)",
                      "\tend = end - 1;"),
             c_cond=('fam == 1 && (st_suffix(s->aux, end, "docker.sock", 11) || '
                     'st_suffix(s->aux, end, "containerd.sock", 15) || '
                     'st_suffix(s->aux, end, "crio.sock", 9))'))),
         (Field("path", "str", "str(uptr($sa + 2))", raw=True,
                c="bpf_probe_read_user_str({dst}, ST_STR, (void *)(a_addr + 2));"),),
         "connect() to a unix socket named docker.sock, containerd.sock or crio.sock"),
    Rule("process-vm-write", "T1055", "high", ("process_vm_writev",), (NotCaller("pid"),),
         (Field("target", "long", "pid"),), "process_vm_writev into another process"),
    Rule("proc-mem-write", "T1055.009", "high", ("openat",),
         (_WRITE, Path("path", (_PROC,)), _basename("mem")), _OPEN_FIELDS,
         "open for write of /proc/<pid>/mem"),
    Rule("etc-file-create", "T1098", "medium", ("openat", "open", "openat2", "creat"),
         (FlagsAny("flags", O_CREAT),
          Path("path", (PathMatch("prefix", "/etc/"),), read="string"),
          CommNotIn(PACKAGE_MANAGERS)),
         (Field("path", "str", "path"),),
         "O_CREAT under /etc/ (open, openat, openat2, creat; not by dpkg/apt/rpm/dnf/yum)"),
    Rule("sudoers-write", "T1548.003", "high", ("openat",),
         (_WRITE, _paths(("prefix", "/etc/sudoers.d/"), ("exact", "/etc/sudoers"))),
         _OPEN_FIELDS, "open for write under /etc/sudoers.d/ or of /etc/sudoers"),
    Rule("cron-write", "T1053.003", "high", ("openat",),
         (_WRITE, _paths(("prefix", "/etc/cron.d/"), ("exact", "/etc/crontab"))),
         _OPEN_FIELDS, "open for write under /etc/cron.d/ or of /etc/crontab"),
    Rule("systemd-unit-write", "T1543.002", "high", ("openat",),
         (_WRITE, _paths(("prefix", "/etc/systemd/system/"))), _OPEN_FIELDS,
         "open for write under /etc/systemd/system/"),
    Rule("shell-profile-write", "T1546.004", "medium", ("openat",),
         (_WRITE, _paths(("prefix", "/etc/profile.d/"))), _OPEN_FIELDS,
         "open for write under /etc/profile.d/"),
    Rule("ld-preload-write", "T1574.006", "high", ("openat",),
         (_WRITE, _paths(("exact", "/etc/ld.so.preload"))), _OPEN_FIELDS,
         "open for write of /etc/ld.so.preload"),
    Rule("shadow-read", "T1003.008", "high", ("openat",),
         (_READ, _paths(("exact", "/etc/shadow"), ("exact", "/etc/gshadow"))), _OPEN_FIELDS,
         "open for read of /etc/shadow or /etc/gshadow"),
    Rule("k8s-sa-token-read", "T1528", "high", ("openat",),
         (_READ, _paths(("prefix", "/var/run/secrets/kube"), ("prefix", "/run/secrets/kube"))),
         _OPEN_FIELDS,
         "open for read under /var/run/secrets/kube... or /run/secrets/kube... "
         "(kubernetes.io service-account tokens)"),
    Rule("proc-environ-read", "T1057", "low", ("openat",),
         (_READ, Path("path", (_PROC,)),
          Path("path", (PathMatch("prefix", "/proc/self/"),
                        PathMatch("prefix", "/proc/thread-self/")), negate=True),
          _basename("environ")),
         _OPEN_FIELDS, "open for read of /proc/<pid>/environ, pid not self or thread-self"),
    Rule("fileless-exec-memfd", "T1620", "high", ("exec",),
         (Raw("the new image is a memfd: its exe dentry is named \"memfd:...\"",
              cond=('strncmp(str(curtask->mm->exe_file->f_path.dentry->d_name.name), '
                    '"memfd:", 6) == 0'),
              c_setup=("bpf_probe_read_kernel_str(s->aux, ST_STR, "
                       "BPF_CORE_READ(task, mm, exe_file, f_path.dentry, d_name.name));",),
              c_cond='st_prefix(s->aux, "memfd:", 6)'),),
         (Field("path", "str", "str(curtask->mm->exe_file->f_path.dentry->d_name.name)",
                raw=True, c="bpf_probe_read_kernel_str({dst}, ST_STR, s->aux);"),
          Field("filename", "str", "filename")),
         "exec of a memfd (exe dentry \"memfd:...\")"),
    Rule("setuid-bit-set", "T1548.001", "high", ("fchmodat", "chmod"),
         (FlagsAny("mode", 0o6000),), (Field("path", "str", "path"), Field("mode", "int", "mode")),
         "chmod/fchmodat with S_ISUID|S_ISGID"),
    Rule("log-file-delete", "T1070.002", "medium", ("unlinkat", "unlink"),
         (Path("path", (PathMatch("prefix", "/var/log/"),), read="string"),),
         (Field("path", "str", "path"),), "unlink/unlinkat under /var/log/"),
    Rule("stdio-socket-redirect", "T1059.004", "high", ("dup2", "dup3"),
         (ArgCmp("newfd", "<=", 2), ArgCmp("oldfd", ">", 2), Raw(
             "oldfd is an AF_INET/AF_INET6 socket (the caller's fd table, the socket's family)",
             setup=("$file = (struct file *)*(uint64 *)kptr((uint64)curtask->files->fdt->fd"
                    " + (uint64)args->oldfd * 8);",
                    "$fam = (uint16)0;",
                    "if ($file != 0 && ($file->f_inode->i_mode & 0xf000) == 0xc000) {",
                    "\t$fam = ((struct socket *)$file->private_data)->sk->__sk_common.skc_family;",
                    "}"),
             cond="$fam == 2 || $fam == 10",
             c_setup=("struct file **fds = BPF_CORE_READ(task, files, fdt, fd);",
                      "struct file *file = 0;",
                      "bpf_probe_read_kernel(&file, sizeof(file), fds + (a_oldfd & 0xffffff));",
                      "__u16 fam = 0;",
                      "if (file && (BPF_CORE_READ(file, f_inode, i_mode) & 0xf000) == 0xc000) {",
                      "\tstruct socket *sock = (struct socket *)BPF_CORE_READ(file, private_data);",
                      "\tfam = BPF_CORE_READ(sock, sk, __sk_common.skc_family);",
                      "}"),
             c_cond="fam == 2 || fam == 10")),
         (Field("oldfd", "int", "oldfd"), Field("newfd", "int", "newfd"),
          Field("family", "int", "$fam", raw=True, c="{dst} = fam;")),
         "dup2/dup3 of an AF_INET/AF_INET6 socket onto fd 0, 1 or 2"),
    Rule("setuid-root-gain", "T1548.001", "high", ("commit_creds",),
         (Raw("a task whose effective uid is not 0 commits credentials with euid 0 "
              "(a setuid-root exec, su or sudo raising privilege)",
              setup=("$new = (struct cred *)arg0;",),
              cond="$new->euid.val == 0 && curtask->cred->euid.val != 0",
              c_setup=("struct cred *new = (struct cred *)PT_REGS_PARM1(ctx);",),
              c_cond="BPF_CORE_READ(new, euid.val) == 0 && BPF_CORE_READ(task, cred, euid.val) != 0"),),
         (Field("old_euid", "uint", "curtask->cred->euid.val", raw=True,
                c="{dst} = BPF_CORE_READ(task, cred, euid.val);"),
          Field("new_euid", "uint", "$new->euid.val", raw=True,
                c="{dst} = BPF_CORE_READ(new, euid.val);")),
         "commit_creds raising euid to 0 (needs kprobes and BTF for struct cred)",
         module="kprobes"),
)


# ------------------------------------------------------------------ enforcement
@dataclass(frozen=True)
class Enforcement:
    """An enforcing variant of a detection rule (enforce.bt): ``action`` on every match,
    only for tasks in ``scope``; ``exclude_comms`` are excepted on top of the rule's own
    :class:`CommNotIn`."""

    rule: str
    action: Literal["sigkill"]
    scope: Raw
    exclude_comms: tuple[str, ...] = ()


#: enforce.bt's version (its ready line and ``shadowtest-enforce`` header)
ENFORCE_VERSION = "1"

#: tasks in a cgroup (v2) under a top-level "shadowtest" or "docker" cgroup (level >= 2).
#: struct cgroup's ancestors[] is a flexible array bpftrace 0.17 cannot index: its offset
#: is searched near the end of the struct (ancestors[level] is the cgroup itself)
CONTAINER_SCOPE = Raw(
    "the task's cgroup v2 is under a top-level cgroup named shadowtest or docker",
    setup=("$cg = curtask->cgroups->dfl_cgrp;",
           "$lvl = (uint64)$cg->level;",
           "$scoped = 0;",
           "if ($lvl >= 2 && $lvl < 64) {",
           "\t$k = (uint64)0;",
           "\twhile ($k < 9) {",
           "\t\t$o = (uint64)sizeof(struct cgroup) - 64 + $k * 8;",
           "\t\tif (*(uint64 *)((uint64)$cg + $o + $lvl * 8) == (uint64)$cg) {",
           "\t\t\t$top = *(uint64 *)((uint64)$cg + $o + 8);",
           "\t\t\t$name = str(((struct cgroup *)$top)->kn->name);",
           '\t\t\tif ($name == "shadowtest" || $name == "docker") {',
           "\t\t\t\t$scoped = 1;",
           "\t\t\t}",
           "\t\t\tbreak;",
           "\t\t}",
           "\t\t$k++;",
           "\t}",
           "}"),
    cond="$scoped")

ENFORCEMENTS: tuple[Enforcement, ...] = (
    Enforcement("etc-file-create", "sigkill", CONTAINER_SCOPE,
                ("dpkg-divert", "ucf", "update-alternat")),  # comm is 15 bytes at most
    Enforcement("ptrace-pid1", "sigkill", CONTAINER_SCOPE),
)


def rule(name: str) -> Rule:
    for r in RULES:
        if r.name == name:
            return r
    raise KeyError(f"no rule {name!r} in harness.sensors.bpftrace.rules.RULES")


def hook(name: str) -> Hook:
    for h in HOOKS:
        if h.name == name:
            return h
    raise KeyError(f"no hook {name!r} in harness.sensors.bpftrace.rules.HOOKS "
                   f"(have {[h.name for h in HOOKS]})")


def module_rules(module: str) -> tuple[Rule, ...]:
    """The rules of one program: ``""`` = sensor.bt, else the named optional module."""
    return tuple(r for r in RULES if r.module == module)


__all__ = ["ENFORCEMENTS", "HOOKS", "RULES", "VERSION", "Enforcement", "Field", "Hook", "Path",
           "PathMatch", "Raw", "Rule", "hook", "module_rules", "rule"]
