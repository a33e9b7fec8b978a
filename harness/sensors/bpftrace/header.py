"""The text around the generated bpftrace programs: their header comments (with the rule
table), the fixed probes (ready, heartbeat, sync marker) and RULES.md, all from
``harness.sensors.bpftrace.rules``."""

from __future__ import annotations

from collections.abc import Sequence

from harness.sensors.bpftrace.rules import ENFORCEMENTS, RULES, VERSION, Hook, Raw, Rule, hook

COMMAND = "python -m harness.sensors.bpftrace.generate"


def wrap(text: str, width: int, indent: str = " * ") -> list[str]:
    """``text`` in lines of at most ``width`` characters, the next ones after ``indent``."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = indent + word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


def rule_table(rules: Sequence[Rule]) -> list[str]:
    """The header table: rule, technique, severity, what it matches (+ its fields)."""
    out = [f"{'rule':<26}{'technique':<11}{'sev':<8}trigger (+ fields)"]
    for r in rules:
        hooks = ",".join(r.hooks)
        text = f"{r.summary} [{hooks}] (+{','.join(f.name for f in r.emits)})"
        lines = wrap(text, 46, "")
        out.append(f"{r.name:<26}{r.technique:<11}{r.severity:<8}{lines[0]}")
        out += [" " * 45 + rest for rest in lines[1:]]
    return out



PREAMBLE = """\
shadowtest-rulepack: {version}

GENERATED from harness/sensors/bpftrace/rules.py by
  {command}
Edit the table, not this file (a unit test fails when this file is stale).

shadowtest reference eBPF sensor (bpftrace 0.17, tracepoints + BTF/CO-RE
reads of curtask only: no kprobes, fentry, lsm or rawtracepoint probes).
Every detection printf has the same header (the fields below) followed by
its rule's fields.  One probe per hook: each rule's condition sets a bit of
$hit, and the ancestor walk and the printfs run only when a bit is set.

Invocation (fixed):
  bpftrace -B none -f json harness/sensors/bpftrace/sensor.bt
Every printf emits exactly ONE JSON object followed by "\\n"; with -f json
bpftrace wraps it as {{"type": "printf", "data": "<object>\\n"}}.  Perf-buffer
loss appears as {{"type": "lost_events", "data": {{"events": N}}}}.

Payloads:
  {{"kind":"ready","version":"{version}","ts_ns":N}}             (BEGIN; version = rule pack)
  {{"kind":"heartbeat","ts_ns":N}}                       (every 1 s)
  {{"kind":"marker","token":N,"cpu":N,"ts_ns":N}}       (getpgid(0x5ad00000+token))
  {{"kind":"detection","rule":R,"technique":T,"severity":S,"pid":N,"tid":N,
   "ppid":N,"ancestors":[6 x N],"comm":"...","cgroup":N,"pidns":N,"mntns":N,
   "uid":N,"ts_ns":N,"wall_ns":N, <rule fields>}}

Rules (rule pack {version}; "container" = the caller is outside the initial pid
namespace, inum {init_pidns} = PROC_PID_INIT_INO):
"""

NOTES = """\

Field notes:
  - pid/tid/ppid/ancestors are host (initial pid namespace) ids.  ancestors
    = [grandparent, great-grandparent, ...] exactly 6 entries; past init the
    chain reaches swapper (tgid 0), so trailing entries are 0.
  - pidns is the task's ACTIVE pid namespace inum
    (task->thread_pid->numbers[level].ns->ns.inum).  bpftrace 0.17 refuses to
    index the flexible array numbers[], so the upid is addressed as
    thread_pid + sizeof(struct pid) + level * sizeof(struct upid)
    (numbers[] is the last member and both structs are 8-byte aligned).
  - mntns = curtask->nsproxy->mnt_ns->ns.inum; cgroup = cgroup v2 id builtin.
  - ts_ns = nsecs (CLOCK_MONOTONIC, bpf_ktime_get_ns).
  - wall_ns: 0.17 has no wall-clock builtin; strftime("%s%f", ts) is
    resolved in user space from the captured ts plus the boot-time offset
    bpftrace measured at start, so wall_ns has MICROSECOND precision (the
    last three digits are always 000) and drifts if the machine suspends
    while bpftrace runs.
  - path matches compare the caller's memory as little-endian 8-byte words
    (string literals and str() cost 64 bytes of the 512-byte BPF stack
    each); basename matches (release_agent, core_pattern, ld.so.preload, mem,
    environ) first scan the user string for its last '/' (at most 64 bytes,
    BPFTRACE_STRLEN), once per probe.

LIMITATIONS (accepted; the harness counts undecodable lines as malformed):
  - bpftrace printf does NOT JSON-escape %s arguments.  A comm or path
    containing '"', '\\' or control characters yields an invalid inner JSON
    object.  Normal names are fine.
  - Strings are capped at BPFTRACE_STRLEN (64 bytes by default in 0.17, so
    paths longer than 63 bytes are truncated; a truncation may split a
    multi-byte UTF-8 character).  Path matches are on the literal argument:
    relative paths (openat with a dirfd or cwd), non-canonical spellings
    ("//etc/x", "/./etc/x", symlinks) are missed.  The sensitive-path and
    basename rules watch openat only (what glibc uses); open, openat2 and
    creat feed etc-file-create only.  fchmod (by fd) and fchmodat2 are not
    watched.
  - Syscall-entry tracepoints: a detection means the call was attempted, not
    that it succeeded (e.g. O_CREAT of a non-existent directory still fires).
  - The package-manager exclusion of etc-file-create is by comm (dpkg, apt,
    apt-get, rpm, dnf, yum), which any process can take: it mirrors Falco's
    "Write below etc" exceptions and is as spoofable.
"""

FIXED = """\
BEGIN
{{
\tprintf("{{\\"kind\\":\\"ready\\",\\"version\\":\\"{version}\\",\\"ts_ns\\":%llu}}\\n", nsecs);
}}

interval:s:1
{{
\tprintf("{{\\"kind\\":\\"heartbeat\\",\\"ts_ns\\":%llu}}\\n", nsecs);
}}

/* Sync markers: getpgid(pid) with pid in [0x5ad00000, 0x5adfffff]. */
tracepoint:syscalls:sys_enter_getpgid
/ args->pid >= 0x5ad00000 && args->pid <= 0x5adfffff /
{{
\tprintf("{{\\"kind\\":\\"marker\\",\\"token\\":%d,\\"cpu\\":%d,\\"ts_ns\\":%llu}}\\n",
\t       args->pid - 0x5ad00000, cpu, nsecs);
}}"""


def comment(lines: Sequence[str]) -> str:
    """A C comment of ``lines``."""
    return "/*\n" + "".join(f" * {line}".rstrip() + "\n" for line in lines) + " */\n"


def rules_markdown() -> str:
    """RULES.md: the rule table for the docs."""
    out = ["# Rules of the bundled bpftrace sensor", "",
           f"Rule pack {VERSION}. Generated by `{COMMAND}` from",
           "`harness/sensors/bpftrace/rules.py` (do not edit by hand).", "",
           "| rule | technique | severity | hook | matches | fields | program |",
           "|---|---|---|---|---|---|---|"]
    for r in RULES:
        hooks = ", ".join(_hook_doc(hook(h)) for h in r.hooks)
        fields = ", ".join(f"`{f.name}`" for f in r.emits)
        where = f"sensor-{r.module}.bt" if r.module else "sensor.bt"
        out.append(f"| `{r.name}` | {r.technique} | {r.severity} | {hooks} | "
                   f"{_cell(r.summary)} | {fields} | {where} |")
    raws = [(r.name, p.describe) for r in RULES for p in r.when if isinstance(p, Raw)]
    out += ["", "Conditions that are not table data (raw bpftrace in the table):", ""]
    out += [f"- `{name}`: {text}" for name, text in raws]
    out += ["", "Enforced by `enforce.bt` (the sensor's `enforce = true`; same lines plus "
            "`\"action\"`):", ""]
    for e in ENFORCEMENTS:
        extra = (", also excepting comms " + ", ".join(f"`{c}`" for c in e.exclude_comms)
                 if e.exclude_comms else "")
        out.append(f"- `{e.rule}`: {e.action}, only when {e.scope.describe}{extra}")
    return "\n".join(out) + "\n"


def _hook_doc(h: Hook) -> str:
    if h.kind == "syscall":
        return f"`{h.event}()`"
    return f"`{h.event}` ({h.kind})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


ENFORCE_PREAMBLE = """\
shadowtest-enforce: {version}

GENERATED from harness/sensors/bpftrace/rules.py (ENFORCEMENTS) by
  {command}
Edit the table, not this file (a unit test fails when this file is stale).

shadowtest's bundled ENFORCING policy for bpftrace 0.17 (run by the bpftrace sensor
with `enforce = true`):

  bpftrace --unsafe -B none -f json harness/sensors/bpftrace/enforce.bt

It is a kill policy, like a Tetragon TracingPolicy with `matchActions: Sigkill`:
signal("KILL") at syscall ENTRY (tracepoints only; no kprobes, no BPF LSM needed).
The kill is a real in-kernel SIGKILL, but it is delivered when the syscall returns:
the syscall itself still runs.  Measured on kernel 6.18 (PLATFORM.md and the
shadowtest e2e tests): openat(O_CREAT) still creates the file (RACED), and
ptrace(PTRACE_ATTACH) still attaches (the tracee is then left with the attach's
SIGSTOP pending, i.e. stopped, when the killed tracer exits) -- exactly what
pre-enforcement validation exists to show.  Deny-before-effect needs BPF LSM
(the `lsm` sensor on the VM kernels).

Same line format as sensor.bt (ready / heartbeat / marker / detection), each
detection with "action":"sigkill".

SCOPE -- what it may kill (read this before running it anywhere):
  - only tasks whose cgroup v2 (the default hierarchy; /sys/fs/cgroup/unified on a
    hybrid host) is a child of a top-level cgroup named "shadowtest" or "docker"
    (level >= 2 and ancestors[1]->kn->name in {{shadowtest, docker}}): a
    container-scoped policy.  The host's own processes (level 0/1: init, sshd,
    systemd slices, the harness, bpftrace itself) are never in scope; neither are
    containers under system.slice/docker-<id>.scope (systemd cgroup driver) -- add
    them deliberately if wanted.
  - the rules below, as in sensor.bt (paths as passed: relative paths and "//etc"
    spellings are not matched), with these comms excepted as well: {extra}.
    Like every comm exception, any process can take such a comm (comm is at most
    15 bytes: update-alternat[ives]).
  The scope is found without helpers: struct cgroup's ancestors[] is a flexible
  array bpftrace 0.17 cannot index, so its offset is searched for near the end of
  the struct (ancestors[level] is the cgroup itself: the search checks that), which
  keeps the program working on 6.1, 6.12 and 6.18 layouts.

Other shadowtest runs on the same machine in a shadowtest/ cgroup are in scope too:
a policy applies to every container, not to one test.  Run enforcement validation on
a node that runs nothing else that should live.

Rules (action on every match in scope):
"""

