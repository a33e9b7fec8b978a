"""Compile the reference sensor's rule table (``harness.sensors.bpftrace.rules``) to C: the
CO-RE BPF object's source and the loader's rule table.

    python -m harness.sensors.libbpf.generate          # rewrite sensor.bpf.c and rules.h
    python -m harness.sensors.libbpf.generate --check  # exit 1 if either is stale

The same table generates the bpftrace programs (``harness.sensors.bpftrace.generate``), so
both engines detect the same things with the same detection lines. Each hook is one BPF
program; each rule a block in it whose conditions, when all hold, reserve one ring-buffer
event (the shared header, then the rule's fields) and submit it. Path arguments are read
once per program (256 bytes, not bpftrace's 64); basename matches scan that copy for its
last ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path as FilePath

from harness.sensors import codegen
from harness.sensors.bpftrace.rules import (
    HOOKS,
    INIT_PIDNS,
    RULES,
    VERSION,
    ArgCmp,
    ArgIn,
    ArgNotIn,
    CommNotIn,
    Field,
    FlagsAny,
    FlagsNone,
    Hook,
    InContainer,
    NotCaller,
    ParentIs,
    Path,
    PathMatch,
    Predicate,
    Raw,
    Rule,
)

HERE = FilePath(__file__).resolve().parent
COMMAND = "python -m harness.sensors.libbpf.generate"
MAX_STR, MAX_INT = 3, 3  # string and integer field slots of one event (event.h)

#: the syscalls' arguments in order, as the sys_enter tracepoints name them, with their C
#: type ("ptr": a user pointer): the x86-64 syscall ABI, stable
SYSCALL_ARGS: dict[str, tuple[tuple[str, str], ...]] = {
    "ptrace": (("request", "long"), ("pid", "long"), ("addr", "ptr"), ("data", "ptr")),
    "setns": (("fd", "int"), ("flags", "int")),
    "openat": (("dfd", "int"), ("filename", "ptr"), ("flags", "int"), ("mode", "int")),
    "open": (("filename", "ptr"), ("flags", "int"), ("mode", "int")),
    "openat2": (("dfd", "int"), ("filename", "ptr"), ("how", "ptr"), ("usize", "long")),
    "creat": (("pathname", "ptr"), ("mode", "int")),
    "mount": (("dev_name", "ptr"), ("dir_name", "ptr"), ("type", "ptr"), ("flags", "long"),
              ("data", "ptr")),
    "connect": (("fd", "int"), ("uservaddr", "ptr"), ("addrlen", "int")),
    "process_vm_writev": (("pid", "int"), ("lvec", "ptr"), ("liovcnt", "long"),
                          ("rvec", "ptr"), ("riovcnt", "long"), ("flags", "long")),
    "unlinkat": (("dfd", "int"), ("pathname", "ptr"), ("flag", "int")),
    "unlink": (("pathname", "ptr"),),
    "fchmodat": (("dfd", "int"), ("filename", "ptr"), ("mode", "int")),
    "chmod": (("filename", "ptr"), ("mode", "int")),
    "dup2": (("oldfd", "int"), ("newfd", "int")),
    "dup3": (("oldfd", "int"), ("newfd", "int"), ("flags", "int")),
}
#: tracepoints other than sys_enter: their context struct and how an argument is read
TRACEPOINT_CTX = {"sched:sched_process_exec": "trace_event_raw_sched_process_exec"}
_C_TYPE = {"int": "int", "long": "long", "ptr": "unsigned long"}
_ON_ARG = (FlagsAny, FlagsNone, ArgIn, ArgNotIn, ArgCmp, NotCaller, Path)
_FIELD_TYPE = {"int": "i", "long": "l", "uint": "u", "str": "s"}


def _basename_of(pred: Predicate, arg: str) -> bool:
    return isinstance(pred, Path) and pred.arg == arg and any(
        m.kind == "basename" for m in pred.any_of)


def _module_of(hook: Hook, rules: Sequence[Rule]) -> str:
    modules = {r.module for r in rules}
    if len(modules) != 1:
        raise ValueError(f"hook {hook.name!r} holds rules of several modules {modules}: "
                         "split the hook")
    return modules.pop()


# ------------------------------------------------------------------ arguments
def _c_lit(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _args_used(hook: Hook, rules: Sequence[Rule]) -> list[str]:
    """Logical arguments the hook's rules read (conditions and fields), in hook order."""
    used: set[str] = set()
    text: list[str] = []  # C written in the table (Raw predicates, raw fields)
    for r in rules:
        for p in r.when:
            if isinstance(p, _ON_ARG) and hook.const(p.arg) is None:
                used.add(p.arg)
            if isinstance(p, Raw):
                text += [*p.c_setup, p.c_cond]
        used |= {f.value for f in r.emits if not f.raw}
        text += [f.c for f in r.emits if f.raw]
    joined = " ".join(text)
    return [name for name, _ in hook.args
            if name in used or re.search(rf"\ba_{name}\b", joined)]


def _arg_decl(hook: Hook, name: str) -> list[str]:
    """C statements declaring ``a_<name>``, the logical argument ``name`` of ``hook``."""
    actual = hook.arg(name)
    if hook.kind == "tracepoint":
        if hook.event == "sched:sched_process_exec" and actual == "filename":
            return [f"unsigned long a_{name} = (unsigned long)ctx + "
                    "(ctx->__data_loc_filename & 0xFFFF);"]
        raise ValueError(f"hook {hook.name!r}: argument {actual!r} has no C reading")
    table = SYSCALL_ARGS[hook.event]
    if "." in actual:  # a member of a user struct the argument points to (how.flags)
        ptr, member = actual.split(".", 1)
        if (ptr, member) != ("how", "flags"):
            raise ValueError(f"hook {hook.name!r}: no C reading for {actual!r}")
        index = [n for n, _ in table].index(ptr)
        return [f"long a_{name} = 0;",
                f"bpf_probe_read_user(&a_{name}, sizeof(a_{name}), "
                f"(void *)ctx->args[{index}]);  /* struct open_how: flags first */"]
    names = [n for n, _ in table]
    if actual not in names:
        raise ValueError(f"hook {hook.name!r}: {actual!r} is not an argument of "
                         f"{hook.event} ({names}); fix SYSCALL_ARGS or the hook")
    ctype = table[names.index(actual)][1]
    return [f"{_C_TYPE[ctype]} a_{name} = ({_C_TYPE[ctype]})ctx->args[{names.index(actual)}];"]


def _kernel_string(hook: Hook) -> bool:
    return hook.kind == "tracepoint"


# ------------------------------------------------------------------ conditions
def _int(value: int) -> str:
    return str(value) if value < 256 else hex(value)


def _path_slots(hook: Hook, rules: Sequence[Rule]) -> list[str]:
    """Logical arguments read as strings into the scratch (one slot each)."""
    out: list[str] = []
    for r in rules:
        for p in r.when:
            if isinstance(p, Path) and p.arg not in out:
                out.append(p.arg)
    if len(out) > MAX_STR:
        raise ValueError(f"hook {hook.name!r} matches {len(out)} path arguments; at most "
                         f"{MAX_STR} scratch slots")
    return out


def _match(slot: int, m: PathMatch) -> str:
    n = len(m.value.encode())
    if m.kind == "prefix":
        return f"st_prefix(s->str[{slot}], {_c_lit(m.value)}, {n})"
    if m.kind == "exact":
        return f"st_prefix(s->str[{slot}], {_c_lit(m.value)}, {n + 1})"
    return f"st_at(s->str[{slot}], base{slot}, {_c_lit(m.value)}, {n + 1})"


def _cond(hook: Hook, slots: Sequence[str], pred: Predicate) -> str:
    """``pred`` as a C expression ("" when it always holds on ``hook``)."""
    if isinstance(pred, (FlagsAny, FlagsNone)) and (value := hook.const(pred.arg)) is not None:
        if (value & pred.mask != 0) != isinstance(pred, FlagsAny):
            raise ValueError(f"hook {hook.name!r}: {pred} never holds: drop the hook")
        return ""
    if isinstance(pred, Path):
        got = " || ".join(_match(slots.index(pred.arg), m) for m in pred.any_of)
        return f"!({got})" if pred.negate else f"({got})"
    if isinstance(pred, Raw):
        if not pred.c_cond:
            raise ValueError(f"hook {hook.name!r}: a Raw predicate ({pred.describe!r}) has "
                             "no C (c_cond): add it to the rule table")
        return f"({pred.c_cond})"
    return _task_cond(pred) or _arg_cond(pred)


def _task_cond(pred: Predicate) -> str:
    """A predicate on the calling task ("" for any other)."""
    match pred:
        case InContainer():
            return f"st_pidns(task) != {INIT_PIDNS}U"
        case ParentIs(tgid):
            return f"BPF_CORE_READ(task, real_parent, tgid) == {tgid}"
        case CommNotIn(names):
            return " && ".join(f"!st_prefix(comm, {_c_lit(n)}, {len(n.encode()) + 1})"
                               for n in names)
    return ""


def _arg_cond(pred: Predicate) -> str:
    """A predicate on one numeric argument ``a_<arg>``."""
    match pred:
        case FlagsAny(arg, mask):
            return f"(a_{arg} & {hex(mask)}) != 0"
        case FlagsNone(arg, mask):
            return f"(a_{arg} & {hex(mask)}) == 0"
        case ArgIn(arg, values):
            return "(" + " || ".join(f"a_{arg} == {_int(v)}" for v in values) + ")"
        case ArgNotIn(arg, values):
            return " && ".join(f"a_{arg} != {_int(v)}" for v in values)
        case ArgCmp(arg, op, value):
            return f"a_{arg} {op} {_int(value)}"
        case NotCaller(arg):
            return f"a_{arg} != (long)(bpf_get_current_pid_tgid() >> 32)"
    raise TypeError(f"unknown predicate {pred!r}")


# ------------------------------------------------------------------ fields
def _fields(hook: Hook, slots: Sequence[str], rule: Rule) -> list[str]:
    """Statements storing ``rule``'s fields in the reserved event ``e``."""
    out: list[str] = []
    n_str = n_int = 0
    for f in rule.emits:
        if f.type == "str":
            dst, n_str = f"e->str[{n_str}]", n_str + 1
        else:
            dst, n_int = f"e->num[{n_int}]", n_int + 1
        out.append(_field(hook, slots, f, dst))
    if n_str > MAX_STR or n_int > MAX_INT:
        raise ValueError(f"rule {rule.name!r}: {n_str} string and {n_int} integer fields; "
                         f"an event has {MAX_STR} and {MAX_INT}")
    return out


def _field(hook: Hook, slots: Sequence[str], f: Field, dst: str) -> str:
    if f.raw:
        if not f.c:
            raise ValueError(f"field {f.name!r}: a raw field needs its C (c)")
        return f.c.format(dst=dst)
    if f.type != "str":
        return f"{dst} = a_{f.value};"
    if f.value in slots:
        return f"bpf_probe_read_kernel_str({dst}, ST_STR, s->str[{slots.index(f.value)}]);"
    read = "kernel" if _kernel_string(hook) else "user"
    return f"bpf_probe_read_{read}_str({dst}, ST_STR, (void *)a_{f.value});"


# ------------------------------------------------------------------ programs
def _indent(lines: Sequence[str], depth: int = 1) -> list[str]:
    return ["\t" * depth + line if line else line for line in lines]


def exempt(rule: Rule) -> bool:
    """Reported whatever the filter: what a kernel usermode helper does (a child of
    kthreadd) is in no run's process tree by nature, however a run caused it."""
    return any(isinstance(p, ParentIs) for p in rule.when)


def _rule_block(hook: Hook, slots: Sequence[str], index: int, rule: Rule,
                gate: str = "") -> list[str]:
    """The rule's conditions in order (``gate`` first; a Raw one's setup after those
    before it), then the event; in a scope of its own (the setups' variables)."""
    body: list[str] = []
    depth, conds = 0, [gate] if gate else list[str]()
    for pred in rule.when:
        setup = pred.c_setup if isinstance(pred, Raw) else ()
        if setup and conds:
            body += _indent([f"if ({' && '.join(conds)}) {{"], depth)
            depth, conds = depth + 1, []
        if isinstance(pred, Raw):
            body += _indent([f"/* RAW (not table data): {pred.describe} */"], depth)
        body += _indent(list(setup), depth)
        cond = _cond(hook, slots, pred)
        if cond:
            conds.append(cond)
    emit = [f"struct st_event *e = st_emit(task, {index});", "if (e) {",
            *_indent(_fields(hook, slots, rule)), "\tbpf_ringbuf_submit(e, 0);", "}"]
    if conds:
        body += _indent([f"if ({' && '.join(conds)}) {{", *_indent(emit), "}"], depth)
    else:
        body += _indent(emit, depth)
    body += ["\t" * d + "}" for d in range(depth - 1, -1, -1)]
    return [f"/* {rule.name} ({rule.technique}): {rule.summary} */", "{",
            *_indent(body), "}"]


def _program(hook: Hook, rules: Sequence[tuple[int, Rule]]) -> list[str]:
    only = [r for _, r in rules]
    module = _module_of(hook, only)
    if hook.kind == "syscall":
        head = [f'SEC("tracepoint/syscalls/sys_enter_{hook.event}")',
                f"int st_{hook.name}(struct trace_event_raw_sys_enter *ctx)"]
    elif hook.kind == "tracepoint":
        category, name = hook.event.split(":")
        head = [f'SEC("tracepoint/{category}/{name}")',
                f"int st_{hook.name}(struct {TRACEPOINT_CTX[hook.event]} *ctx)"]
    else:
        head = [f'SEC("kprobe/{hook.event}")', f"int st_{hook.name}(struct pt_regs *ctx)"]
    slots = _path_slots(hook, only)
    body = ["struct task_struct *task = (struct task_struct *)bpf_get_current_task();",
            "struct st_scratch *s = st_scratch();", "if (!s)", "\treturn 0;"]
    if not any(exempt(r) for r in only):  # the filter first: nothing read for the rest
        body += ["if (!st_traced(task))", "\treturn 0;"]
    elif not all(exempt(r) for r in only):
        body += ["int traced = st_traced(task);"]
    for name in _args_used(hook, only):
        body += _arg_decl(hook, name)
    read = "kernel" if _kernel_string(hook) else "user"
    for i, arg in enumerate(slots):
        body += [f"bpf_probe_read_{read}_str(s->str[{i}], ST_STR, (void *)a_{arg});"]
        if any(_basename_of(p, arg) for r in only for p in r.when):
            body += [f"__u32 base{i} = st_basename(s->str[{i}]);"]
    if any(isinstance(p, CommNotIn) for r in only for p in r.when):
        body += ["char comm[16];", "bpf_get_current_comm(comm, sizeof(comm));"]
    mixed = any(exempt(r) for r in only) and not all(exempt(r) for r in only)
    for index, r in rules:
        body += ["", *_rule_block(hook, slots, index, r,
                                  "traced" if mixed and not exempt(r) else "")]
    note = f" (module {module}: loaded only where the node has it)" if module else ""
    title = f"/* {hook.name}: {', '.join(r.name for r in only)}{note} */"
    return [title, *head, "{", *_indent(body), "\treturn 0;", "}"]


def bpf_source() -> str:
    """sensor.bpf.c: the fixed part (prelude.bpf.h) and one program per hook."""
    out = ["// SPDX-License-Identifier: GPL-2.0",
           f"/* shadowtest-rulepack: {VERSION} (compiled engine)",
           " *",
           " * GENERATED from harness/sensors/bpftrace/rules.py by",
           f" *   {COMMAND}",
           " * Edit the table, not this file (a unit test fails when this file is stale).",
           " */",
           '#include "prelude.bpf.h"']
    indexed = list(enumerate(RULES))
    for h in HOOKS:
        mine = [(i, r) for i, r in indexed if h.name in r.hooks]
        if mine:
            out += ["", *_program(h, mine)]
    return "\n".join(out) + "\n"


def rules_header() -> str:
    """rules.h: the loader's table (rule index -> name, technique, severity, module,
    fields with their event slots)."""
    out = ["/* GENERATED from harness/sensors/bpftrace/rules.py by",
           f" *   {COMMAND}",
           " * The loader's view of the rule table: index (the BPF programs' rule number) ->",
           " * name, technique, severity, module, fields ('i' int, 'l' long, 'u' uint, 's' str",
           " * and their slot in the event's num[] or str[]). */",
           f'#define ST_RULEPACK "{VERSION}"',
           f"#define ST_NRULES {len(RULES)}",
           "static const struct st_rule st_rules[ST_NRULES] = {"]
    for r in RULES:
        fields, n_str, n_int = [], 0, 0
        for f in r.emits:
            kind = _FIELD_TYPE[f.type]
            if kind == "s":
                fields.append(f"{{{_c_lit(f.name)}, 's', {n_str}}}")
                n_str += 1
            else:
                fields.append(f"{{{_c_lit(f.name)}, '{kind}', {n_int}}}")
                n_int += 1
        out.append(f"\t{{{_c_lit(r.name)}, {_c_lit(r.technique)}, {_c_lit(r.severity)}, "
                   f"{_c_lit(r.module)}, {len(fields)}, {{{', '.join(fields)}}}}},")
    out.append("};")
    optional = []
    for h in HOOKS:
        mine = [r for r in RULES if h.name in r.hooks]
        if mine and _module_of(h, mine):
            optional.append(f"\t{{{_c_lit('st_' + h.name)}, {_c_lit(_module_of(h, mine))}}},")
    out += ["/* programs of optional modules (loaded only with --module NAME) */",
            f"#define ST_NOPTIONAL {len(optional)}",
            "static const struct st_program st_optional[ST_NOPTIONAL] = {", *optional, "};"]
    return "\n".join(out) + "\n"


def outputs() -> dict[FilePath, str]:
    return {HERE / "sensor.bpf.c": bpf_source(), HERE / "rules.h": rules_header()}


def stale() -> list[FilePath]:
    """Generated files whose committed text differs from the table's."""
    return codegen.stale(outputs)


def main(argv: Sequence[str] | None = None) -> int:
    return codegen.main(outputs, COMMAND, (__doc__ or "").split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
