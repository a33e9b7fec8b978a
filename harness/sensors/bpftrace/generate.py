"""Compile the rule table (``harness.sensors.bpftrace.rules``) to the bundled bpftrace 0.17
programs and their docs.

    python -m harness.sensors.bpftrace.generate          # rewrite sensor.bt, sensor-kprobes.bt, RULES.md
    python -m harness.sensors.bpftrace.generate --check  # exit 1 if any of them is stale

One probe per hook holds every rule of that hook: each rule's condition sets one bit of
``$hit``; the hook's shared work (the path's 8-byte words, the basename scan, the caller's
pid namespace) is done once, and the ancestor walk and the printfs only when a bit is set.
bpftrace 0.17 has no functions or macros, so the walk is written out once per probe.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path as FilePath

from harness.sensors import codegen
from harness.sensors.bpftrace.header import (
    COMMAND,
    ENFORCE_PREAMBLE,
    FIXED,
    NOTES,
    PREAMBLE,
    comment,
    rule_table,
    rules_markdown,
    wrap,
)
from harness.sensors.bpftrace.rules import (
    ENFORCE_VERSION,
    ENFORCEMENTS,
    HOOKS,
    INIT_PIDNS,
    RULES,
    VERSION,
    ArgCmp,
    ArgIn,
    ArgNotIn,
    CommNotIn,
    Enforcement,
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
    module_rules,
    rule,
)

HERE = FilePath(__file__).resolve().parent
BASENAME_SCAN = 64  # bytes of the path searched for its last '/' (BPFTRACE_STRLEN)
_BANNER_WIDTH = 77

HEADER_FIELDS = ('\\"kind\\":\\"detection\\",\\"rule\\":\\"{rule}\\",\\"technique\\":\\"{technique}\\",'
                 '\\"severity\\":\\"{severity}\\"{action},\\"pid\\":%d,\\"tid\\":%d,\\"ppid\\":%d,'
                 '\\"ancestors\\":[%d,%d,%d,%d,%d,%d],\\"comm\\":\\"%s\\",\\"cgroup\\":%llu,'
                 '\\"pidns\\":%u,\\"mntns\\":%u,\\"uid\\":%u,\\"ts_ns\\":%llu,\\"wall_ns\\":%s000')
HEADER_ARGS = ("pid, tid, $p1->tgid,",
               "$a1->tgid, $a2->tgid, $a3->tgid, $a4->tgid, $a5->tgid, $a6->tgid,",
               "comm, cgroup, $up->ns->ns.inum, $t->nsproxy->mnt_ns->ns.inum,",
               'uid, $ts, strftime("%s%f", $ts)')
WALK = ("$ts = nsecs;",
        "$t = curtask;",
        "$p1 = $t->real_parent;",
        "$a1 = $p1->real_parent;",
        "$a2 = $a1->real_parent;",
        "$a3 = $a2->real_parent;",
        "$a4 = $a3->real_parent;",
        "$a5 = $a4->real_parent;",
        "$a6 = $a5->real_parent;",
        "$tp = $t->thread_pid;",
        "$up = (struct upid *)((uint64)$tp + sizeof(struct pid) +",
        "                      $tp->level * sizeof(struct upid));")
PIDNS = ("$tp0 = curtask->thread_pid;",
         "$up0 = (struct upid *)((uint64)$tp0 + sizeof(struct pid) +",
         "                       $tp0->level * sizeof(struct upid));")
#: the struct type a pointer argument of a tracepoint points to
_POINTS_TO = {"how": "open_how"}
_ACTIONS = {"sigkill": 'signal("KILL");'}
_ARG_PREDICATES = (FlagsAny, FlagsNone, ArgIn, ArgNotIn, ArgCmp)
_FORMAT = {"int": "%d", "long": "%ld", "uint": "%u", "str": '\\"%s\\"'}


# ------------------------------------------------------------------ expressions
def _int(value: int) -> str:
    return str(value) if value < 256 else hex(value)


def _arg(hook: Hook, name: str) -> str:
    """A logical argument of ``hook`` as a bpftrace expression."""
    if hook.kind == "kprobe":
        raise KeyError(f"kprobe hook {hook.name!r}: use a Raw predicate for its arguments")
    actual = hook.arg(name)
    if "." in actual:  # a member of a struct the argument points to (openat2's how.flags)
        ptr, member = actual.split(".", 1)
        return f"((struct {_POINTS_TO[ptr]} *)args->{ptr})->{member}"
    return f"args->{actual}"


def _term(cond: str) -> str:
    """``cond`` as one operand of ``&&``."""
    bare = cond[1:] if cond.startswith("!") else cond
    return f"({cond})" if " || " in cond and not _enclosed(bare) else cond


def _enclosed(cond: str) -> bool:
    """Whether ``cond`` is one parenthesised expression."""
    depth = 0
    for i, c in enumerate(cond):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth == 0:
            return i == len(cond) - 1
    return False


def words(literal: str) -> list[tuple[int, int, int]]:
    """(byte offset, mask, value) of each little-endian 8-byte word of ``literal``; the
    mask is all-ones for a full word (compared without a mask)."""
    data = literal.encode()
    out = []
    for off in range(0, len(data), 8):
        chunk = data[off:off + 8]
        mask = (1 << (8 * len(chunk))) - 1
        out.append((off, mask, int.from_bytes(chunk, "little")))
    return out


def _word_cmp(var: str, mask: int, value: int) -> str:
    if mask == (1 << 64) - 1:
        return f"{var} == {hex(value)}"
    return f"({var} & {hex(mask)}) == {hex(value)}"


def _match(arg: str, match: PathMatch) -> str:
    """One path match on the word variables of ``arg`` (``$<arg>_w<i>``) or the basename
    words (``$b<i>``)."""
    if match.kind == "basename":
        lit, var = match.value + "\0", "$b{}"
    else:
        lit = match.value + ("\0" if match.kind == "exact" else "")
        var = "$" + arg + "_w{}"
    parts = [_word_cmp(var.format(off // 8), mask, value) for off, mask, value in words(lit)]
    return "(" + " && ".join(parts) + ")" if len(parts) > 1 else parts[0]


def _strncmp(var: str, match: PathMatch) -> str:
    if match.kind != "prefix":
        raise ValueError(f"path match {match}: read='string' supports prefix matches only")
    return f'strncmp({var}, "{match.value}", {len(match.value.encode())}) == 0'


def _any(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + " || ".join(parts) + ")"


def _static(hook: Hook, pred: Predicate) -> bool | None:
    """A flags predicate on an argument the hook implies, decided now (else None)."""
    if isinstance(pred, (FlagsAny, FlagsNone)):
        value = hook.const(pred.arg)
        if value is not None:
            return (value & pred.mask != 0) == isinstance(pred, FlagsAny)
    return None


def _cond(hook: Hook, pred: Predicate) -> str:
    """``pred`` as a bpftrace expression ("" when it always holds on ``hook``)."""
    static = _static(hook, pred)
    if static is not None:
        if not static:
            raise ValueError(f"hook {hook.name!r}: {pred} never holds: drop the hook")
        return ""
    return _expr(hook, pred)


def _expr(hook: Hook, pred: Predicate) -> str:
    match pred:
        case Path():
            return _path_cond(pred)
        case Raw(_, cond, _):
            return cond
        case CommNotIn(names):
            return " && ".join(f'comm != "{n}"' for n in names)
        case InContainer():
            return f"$up0->ns->ns.inum != {INIT_PIDNS}"
        case ParentIs(tgid):
            return f"curtask->real_parent->tgid == {tgid}"
    return _arg_cond(hook, pred)


def _path_cond(pred: Path) -> str:
    if pred.read == "string":
        got = _any([_strncmp("$" + pred.arg, m) for m in pred.any_of])
    else:
        got = _any([_match(pred.arg, m) for m in pred.any_of])
    if pred.negate:
        return f"!{got}" if _enclosed(got) else f"!({got})"
    return got


def _arg_cond(hook: Hook, pred: Predicate) -> str:
    """A predicate on one numeric argument."""
    match pred:
        case FlagsAny(arg, mask):
            return f"({_arg(hook, arg)} & {hex(mask)}) != 0"
        case FlagsNone(arg, mask):
            return f"({_arg(hook, arg)} & {hex(mask)}) == 0"
        case ArgIn(arg, values):
            return _any([f"{_arg(hook, arg)} == {_int(v)}" for v in values])
        case ArgNotIn(arg, values):
            return " && ".join(f"{_arg(hook, arg)} != {_int(v)}" for v in values)
        case ArgCmp(arg, op, value):
            return f"{_arg(hook, arg)} {op} {_int(value)}"
        case NotCaller(arg):
            return f"{_arg(hook, arg)} != pid"
    raise TypeError(f"unknown predicate {pred!r}")


def _local_setup(hook: Hook, pred: Predicate) -> tuple[str, ...]:
    """Statements a rule runs just before ``pred``'s condition (its own, not shared)."""
    if isinstance(pred, Raw):
        return pred.setup
    if isinstance(pred, Path) and pred.read == "string":
        return (f"${pred.arg} = str({_arg(hook, pred.arg)});",)
    return ()


def _basename(pred: Predicate) -> bool:
    return isinstance(pred, Path) and any(m.kind == "basename" for m in pred.any_of)


# ------------------------------------------------------------------ one probe
def _probe_name(hook: Hook) -> str:
    if hook.kind == "syscall":
        return f"tracepoint:syscalls:sys_enter_{hook.event}"
    return f"{hook.kind}:{hook.event}"


def _indent(lines: Sequence[str], depth: int) -> list[str]:
    return ["\t" * depth + line if line else line for line in lines]


def _shared(hook: Hook, rules: Sequence[Rule]) -> list[str]:
    """The hook's shared work: word reads of each path argument matched by words, the
    caller's pid namespace, the basename scan (guarded by the rules that need it)."""
    preds = [p for r in rules for p in r.when]
    out: list[str] = []
    width: dict[str, int] = {}
    for p in preds:
        if isinstance(p, Path) and p.read == "words":
            for m in p.any_of:
                if m.kind != "basename":
                    n = len(words(m.value + ("\0" if m.kind == "exact" else "")))
                    width[p.arg] = max(width.get(p.arg, 0), n)
    for arg, n in width.items():
        base = f"(uint64){_arg(hook, arg)}"
        out += [f"${arg}_w{i} = *(uint64 *)uptr({base} + {8 * i});" for i in range(n)]
    if any(isinstance(p, InContainer) for p in preds):
        out += PIDNS
    return out + _basename_scan(hook, rules)


def _basename_scan(hook: Hook, rules: Sequence[Rule]) -> list[str]:
    """``$b0``/``$b1``: the first 16 bytes after the path's last '/', read only when a
    basename rule's other conditions (those before its basename match) hold."""
    out: list[str] = []
    scans = [r for r in rules if any(_basename(p) for p in r.when)]
    if scans:
        guards: list[list[str]] = []
        args = {p.arg for r in scans for p in r.when if isinstance(p, Path) and _basename(p)}
        if len(args) != 1:
            raise ValueError(f"hook {hook.name!r}: basename matches on several arguments {args}")
        for rule in scans:
            conds: list[str] = []
            for p in rule.when:
                if _basename(p) or _local_setup(hook, p):
                    break
                if _cond(hook, p):
                    conds.append(_cond(hook, p))
            guards.append([_term(c) for c in conds])
        # a guard that holds only where a weaker one does adds nothing
        guards = [g for i, g in enumerate(guards)
                  if not any(set(h) <= set(g) and (set(h) < set(g) or j < i)
                             for j, h in enumerate(guards) if j != i)]
        either = [" && ".join(g) or "1" for g in guards]
        if len(either) > 1:
            either = [f"({g})" if " && " in g else _term(g) for g in either]
        out += ["$b0 = (uint64)0;", "$b1 = (uint64)0;",
                f"if ({' || '.join(either)}) {{",
                f"\t$p = (uint64){_arg(hook, args.pop())};",
                "\t$i = (uint64)0;",
                "\t$slash = (uint64)0;",
                f"\twhile ($i < {BASENAME_SCAN}) {{",
                "\t\t$c = *(uint8 *)uptr($p + $i);",
                "\t\tif ($c == 0) { break; }",
                "\t\tif ($c == 47) { $slash = $i + 1; }",
                "\t\t$i++;",
                "\t}",
                "\t$b0 = *(uint64 *)uptr($p + $slash);",
                "\t$b1 = *(uint64 *)uptr($p + $slash + 8);",
                "}"]
    return out


def _rule_block(hook: Hook, rule: Rule, then: Sequence[str]) -> list[str]:
    """``then`` (statements) under ``rule``'s conditions, in order: a predicate with setup
    statements opens a nested block after the conditions before it."""
    out = [f"/* {rule.name} ({rule.technique}): {rule.summary} */"]
    depth, conds = 0, list[str]()
    for pred in rule.when:
        setup = _local_setup(hook, pred)
        if setup and conds:
            out += _indent([f"if ({' && '.join(conds)}) {{"], depth)
            depth, conds = depth + 1, []
        if isinstance(pred, Raw):
            out += _indent([f"/* RAW (not table data): {pred.describe} */"], depth)
        out += _indent(list(setup), depth)
        cond = _cond(hook, pred)
        if cond:
            conds.append(_term(cond))
    if conds:
        out += _indent([f"if ({' && '.join(conds)}) {{", *_indent(then, 1), "}"], depth)
    else:
        out += _indent(then, depth)
    return out + ["\t" * d + "}" for d in range(depth - 1, -1, -1)]


def _value(hook: Hook, rule: Rule, f: Field) -> str:
    if f.raw:
        return f.value
    if f.type == "str":
        # read again even when a condition read it (``$path``): a string variable and a
        # printf argument both on the 512-byte BPF stack overflow the openat probe
        return f"str({_arg(hook, f.value)})"
    return _arg(hook, f.value)


def printf(hook: Hook, rule: Rule, action: str = "") -> list[str]:
    """The detection printf: the shared header (with ``action`` when one is taken), then
    the rule's fields."""
    fmt = "{" + HEADER_FIELDS.format(rule=rule.name, technique=rule.technique,
                                     severity=rule.severity,
                                     action=f',\\"action\\":\\"{action}\\"' if action else "")
    fmt += "".join(f',\\"{f.name}\\":{_FORMAT[f.type]}' for f in rule.emits) + "}\\n"
    args = [*HEADER_ARGS[:-1], HEADER_ARGS[-1] + ("," if rule.emits else "")]
    values = [_value(hook, rule, f) for f in rule.emits]
    args += [v + ("," if i < len(values) - 1 else "") for i, v in enumerate(values)]
    return [f'printf("{fmt}",', *("       " + a for a in args[:-1]), f"       {args[-1]});"]


def probe(hook: Hook, rules: Sequence[Rule], action: str = "") -> list[str]:
    """One probe on ``hook`` holding all of ``rules``; ``action`` (sigkill) on a match."""
    out = wrap(f"/* {hook.name}: " + ", ".join(r.name for r in rules) + " */", 88)
    out += [_probe_name(hook), "{"]
    body = _shared(hook, rules)
    act = [_ACTIONS[action]] if action else []
    if len(rules) == 1:
        body += _rule_block(hook, rules[0], [*act, *WALK, *printf(hook, rules[0], action)])
    else:
        body += ["$hit = (uint64)0;"]
        for bit, rule in enumerate(rules):
            body += _rule_block(hook, rule, [f"$hit = $hit | {hex(1 << bit)};"])
        body += ["if ($hit != 0) {", *_indent([*act, *WALK], 1)]
        for bit, rule in enumerate(rules):
            body += _indent([f"if (($hit & {hex(1 << bit)}) != 0) {{"], 1)
            body += [*_indent(printf(hook, rule, action), 2), "\t}"]
        body += ["}"]
    return out + _indent(body, 1) + ["}"]


# ------------------------------------------------------------------ programs
def banner(title: str) -> str:
    return "/* " + "-" * max(3, _BANNER_WIDTH - 7 - len(title)) + " " + title + " */"


def _probes(rules: Sequence[Rule], action: str = "") -> Iterator[str]:
    section = ""
    for h in HOOKS:
        mine = [r for r in rules if h.name in r.hooks]
        if not mine:
            continue
        if h.section != section:
            section = h.section
            yield from ["", banner(section)]
        yield from ["", *probe(h, mine, action)]


def sensor_program() -> str:
    """sensor.bt: the base rule pack (no optional module's rules)."""
    rules = module_rules("")
    head = PREAMBLE.format(version=VERSION, command=COMMAND, init_pidns=INIT_PIDNS)
    lines = [*head.splitlines(), *("  " + x for x in rule_table(rules)), *NOTES.splitlines()]
    return (comment(lines) + "\n" + FIXED.format(version=VERSION) + "\n"
            + "\n".join(_probes(rules)) + "\n")


def module_program(module: str) -> str:
    """An optional module (appended to sensor.bt on nodes whose kernel has the feature)."""
    rules = module_rules(module)
    lines = [f"shadowtest reference sensor: {module} module, loaded with sensor.bt only on",
             "nodes whose kernel has the feature (MODULES in harness.sensors.bpftrace).",
             "Same line format as sensor.bt.",
             "",
             "GENERATED from harness/sensors/bpftrace/rules.py by",
             f"  {COMMAND}",
             "", *rule_table(rules)]
    return comment(lines) + "\n".join(_probes(rules)) + "\n"


def enforced(enforcement: Enforcement) -> Rule:
    """The rule an enforcement acts on: its scope after the rule's argument predicates
    (before any path, comm or raw one), its extra comms excepted."""
    base = rule(enforcement.rule)
    when: list[Predicate] = []
    for pred in base.when:
        if enforcement.scope not in when and not isinstance(pred, _ARG_PREDICATES):
            when.append(enforcement.scope)
        when.append(CommNotIn(pred.names + enforcement.exclude_comms)
                    if isinstance(pred, CommNotIn) else pred)
    if enforcement.scope not in when:
        when.append(enforcement.scope)
    return replace(base, when=tuple(when))


def enforce_program() -> str:
    """enforce.bt: the enforcements, each rule acting (sigkill) on its matches in scope."""
    actions = {e.action for e in ENFORCEMENTS}
    if len(actions) != 1:
        raise ValueError(f"enforce.bt takes one action for all its rules, got {actions}")
    rules = [enforced(e) for e in ENFORCEMENTS]
    extra = sorted({c for e in ENFORCEMENTS for c in e.exclude_comms})
    head = ENFORCE_PREAMBLE.format(version=ENFORCE_VERSION, command=COMMAND,
                                   extra=", ".join(extra) or "none")
    lines = [*head.splitlines(), *("  " + x for x in rule_table(rules))]
    return (comment(lines) + "\n" + FIXED.format(version=f"enforce-{ENFORCE_VERSION}") + "\n"
            + "\n".join(_probes(rules, actions.pop())) + "\n")


def outputs() -> dict[FilePath, str]:
    """Every generated file, by path."""
    out = {HERE / "sensor.bt": sensor_program(), HERE / "RULES.md": rules_markdown(),
           HERE / "enforce.bt": enforce_program()}
    for module in sorted({r.module for r in RULES} - {""}):
        out[HERE / f"sensor-{module}.bt"] = module_program(module)
    return out


def stale() -> list[FilePath]:
    """Generated files whose committed text differs from the table's."""
    return codegen.stale(outputs)


def main(argv: Sequence[str] | None = None) -> int:
    return codegen.main(outputs, COMMAND, (__doc__ or "").split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
