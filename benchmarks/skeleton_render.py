"""bench_skeleton's Markdown section of benchmarks/RESULTS.md, from the raw measurements."""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from skeleton_analysis import analyse_breakdown, analyse_overhead, analyse_timeline
from skeleton_common import (
    NO_HYPOTHESIS,
    REPO,
    TARGET_LINE_P99_MS,
    TARGET_SUITE_S,
    each,
    f,
    med,
    pct,
    ratio,
    table,
)
from skeleton_suite import machine

BEGIN = "<!-- bench_skeleton:begin -->"
END = "<!-- bench_skeleton:end -->"


def render_latency(d: dict[str, Any]) -> str:
    fl_cond, fl_ino = d["fl_cond"], d["fl_ino"]
    cond_p50, cond_p99 = pct(fl_cond, 50), pct(fl_cond, 99)
    ino_p50, ino_p99 = pct(fl_ino["watcher"], 50), pct(fl_ino["watcher"], 99)
    ic_p50, ic_p99 = pct(fl_ino["cond"], 50), pct(fl_ino["cond"], 99)
    rows = []
    for name, res, fp50, fp99, fname in (
        ("bpftrace (on_line in writer thread)", d["lat_b"], cond_p50, cond_p99, "Condition hop"),
        ("auditd (write+flush -> FileTail -> on_line)", d["lat_a"], ic_p50, ic_p99,
         "inotify+Condition"),
    ):
        v, w = res["verdict"], res["wake"]
        rows.append([
            name, str(len(v)), f(pct(w, 50), 3), f(pct(v, 50), 3), f(pct(v, 99), 3), f(max(v), 3),
            "yes" if pct(v, 99) < TARGET_LINE_P99_MS else "**no**",
            f"{ratio(pct(v, 50), fp50)} / {ratio(pct(v, 99), fp99)} ({fname})",
            f"{res['on_line_us']:.1f}", str(int(res["not_detected"][0])),
        ])
    rows.append(["floor: Condition notify -> wake", str(len(fl_cond)), "-", f(cond_p50, 3),
                 f(cond_p99, 3), f(max(fl_cond), 3), "", "1.0x", "", ""])
    rows.append(["floor: inotify write -> watcher wakes", str(len(fl_ino["watcher"])), "-",
                 f(ino_p50, 3), f(ino_p99, 3), f(max(fl_ino["watcher"]), 3), "", "", "", ""])
    rows.append(["floor: inotify -> watcher -> Condition -> main", str(len(fl_ino["cond"])),
                 "-", f(ic_p50, 3), f(ic_p99, 3), f(max(fl_ino["cond"]), 3), "", "1.0x", "", ""])
    return table(["path", "N", "wake ms p50", "verdict ms p50", "verdict ms p99", "max ms",
                  f"p99 < {TARGET_LINE_P99_MS:.0f} ms", "ratio to floor p50 / p99",
                  "on_line CPU us/event", "not DETECTED"], rows)


def _plain(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in d["suites"] if not s["traced"] and not s["addopts"]]


def _vcount(s: dict[str, Any]) -> str:
    c: dict[str, int] = defaultdict(int)
    for r in s["rows"]:
        c[r["verdict"]] += 1
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))



def render_suite(d: dict[str, Any]) -> str:
    plain = _plain(d)
    traced = [s for s in d["suites"] if s["traced"]]
    nohyp = [s for s in d["suites"] if s["addopts"] == NO_HYPOTHESIS]
    suite_med = med([s["wall_s"] for s in plain])
    rows = [[f"shadowtest run #{i + 1}", f(s["wall_s"], 2), f"rc {s['rc']}: {_vcount(s)}"]
            for i, s in enumerate(plain)]
    rows.append([f"**median of {len(plain)} runs**", f"**{f(suite_med, 2)}**",
                 f"target < {TARGET_SUITE_S:.0f} s: "
                 + ("yes" if suite_med < TARGET_SUITE_S else "**no**")])
    rows.append([f"traced runs (`-p skeleton_trace`), median of {len(traced)}",
                 f(med([s["wall_s"] for s in traced]), 2),
                 each([s["wall_s"] for s in traced], 2) + "; rc "
                 + ",".join(str(s["rc"]) for s in traced)])
    rows.append([f"variant `PYTEST_ADDOPTS='{NO_HYPOTHESIS}'`, median of {len(nohyp)}",
                 f(med([s["wall_s"] for s in nohyp]), 2),
                 each([s["wall_s"] for s in nohyp], 2) + "; rc "
                 + ",".join(str(s["rc"]) for s in nohyp)])
    st = d["starts"]
    shared = any(st.get("auditd_shared", []))
    fl_collect, fl_py, fl_py_real = d["fl_collect"], d["fl_py"], d["fl_py_real"]
    rows += [
        ["in-process BpftraceSensor().start() -> READY", f(med(st["bpftrace_ready_s"]), 3),
         each(st["bpftrace_ready_s"])],
        ["in-process BpftraceSensor.stop()", f(med(st["bpftrace_stop_s"]), 3),
         each(st["bpftrace_stop_s"])],
        ["in-process AuditdSensor().start() total", f(med(st["auditd_start_s"]), 3),
         each(st["auditd_start_s"]) + (" (joined a running shared daemon)" if shared else "")],
        ["  auditd spawn -> registered (auditctl -s)", f(med(st["auditd_register_s"]), 3),
         each(st["auditd_register_s"])],
        ["  auditd rules load", f(med(st["auditd_rules_s"]), 3), each(st["auditd_rules_s"])],
        ["in-process AuditdSensor.stop()", f(med(st["auditd_stop_s"]), 3),
         each(st["auditd_stop_s"])],
        [f"floor: `python3 -c pass` (PATH: {d['py3']})", f(med(fl_py), 3),
         f"x10; suite = {ratio(suite_med, med(fl_py))}"],
        [f"floor: `python3 -c pass` (resolved: {d['runner']['real']})", f(med(fl_py_real), 3),
         f"x10; suite = {ratio(suite_med, med(fl_py_real))}"],
        ["floor: venv `python -c pass`", f(med(d["fl_venv_py"]), 3), "x10"],
        ["floor: `pytest --collect-only -q scenarios`", f(med(fl_collect), 3),
         each(fl_collect) + f"; suite = {ratio(suite_med, med(fl_collect))}"],
        [f"floor variant: same with `{NO_HYPOTHESIS}`", f(med(d["fl_collect_nohyp"]), 3),
         each(d["fl_collect_nohyp"])],
    ]
    return table(["what", "s", "notes"], rows)


def render(d: dict[str, Any], args: argparse.Namespace) -> str:
    ov_table, ov = analyse_overhead(d["suites"], d["bare"])
    bd_table, bd = analyse_breakdown(d["suites"])
    tl_table, tl = analyse_timeline(d["suites"])
    plain = _plain(d)
    suite_med = med([s["wall_s"] for s in plain])
    lat_b, lat_a, runner = d["lat_b"], d["lat_a"], d["runner"]
    m = machine()
    n_runs = len({r["run_id"] for s in plain for r in s["rows"]}) // max(1, len(plain))
    biggest = sorted(((k, v) for k, v in bd.items() if not k.startswith("_")),
                     key=lambda kv: -kv[1])[:4]
    auto = [
        f"- Suite: median {f(suite_med, 2)} s for {n_runs} runs x 2 sensors "
        f"({ratio(suite_med, med(d['fl_collect']))} the `pytest --collect-only` floor). "
        f"Traced-run phases (median): startup "
        f"{f(tl.get('python start + imports + pytest configure', 0), 2)} s, sensors start "
        f"{f(tl.get('sensors start (session fixture)', 0), 2)} s, scenario runs "
        f"{f(tl.get('scenario runs (sum of pytest call phases)', 0), 2)} s, sensors stop "
        f"{f(tl.get('sensors stop', 0), 2)} s, terminal summary "
        f"{f(next((v for k, v in tl.items() if k.startswith('terminal summary')), 0), 2)} s.",
        f"- Per run, the harness adds p50 {f(ov['call_oh_p50'])} ms (p95 {f(ov['call_oh_p95'])}, "
        f"max {f(ov['call_oh_max'])}) around the atomic; inside the act window alone "
        f"p50 {f(ov['win_oh_p50'])} ms. Largest mean steps per run: "
        + ", ".join(f"{k} {f(v)} ms" for k, v in biggest) + ".",
        f"- Line -> verdict p99: bpftrace {f(pct(lat_b['verdict'], 99), 3)} ms, auditd "
        f"{f(pct(lat_a['verdict'], 99), 3)} ms (target < {TARGET_LINE_P99_MS:.0f} ms).",
    ]
    exe = Path(sys.executable)
    exe_txt = str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else str(exe)
    return "\n".join([
        BEGIN,
        "## Results",
        "",
        f"- Date: {d['started'].strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, {m['python']}; "
        f"`python3` on PATH: {d['py3']}; PYTHONDONTWRITEBYTECODE="
        f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}",
        f"- Command: `{exe_txt} benchmarks/bench_skeleton.py"
        f"{' --out ' + str(args.out) if args.out else ''}` (as root, from {REPO}); "
        f"N={args.n}, {args.reps} plain + {args.reps} traced suite runs, "
        f"{args.bare_reps} bare runs per atomic",
        "",
        "### 1. Harness overhead per scenario",
        "",
        "`window` = a results row's `ended_at - started_at` (preconditions + command + proof, "
        "ms-resolution ISO stamps), `action` = row `action_ms` (the command stage), "
        "`run wall` = the pytest call phase of that run (open context, subscribe, act, sync, "
        "wait, judge, cleanup, close; traced runs only). Overhead = wall - action. Floor: the "
        "rendered atomic command via `subprocess.run([\"sh\", \"-c\", cmd])` with the stage "
        "runner's PATH (ptrace target replaced by a `sleep` the benchmark owns).",
        "",
        ov_table,
        "",
        f"Opening a host context = starting the stage runner (`start_runner`), x{args.bare_reps}:",
        "",
        table(["stage-runner interpreter", "start ms p50", "min ms"], [
            [f"`stage_runner_argv()` = {runner['which']}", f(med(runner['which_ms'])),
             f(min(runner['which_ms']))],
            [f"resolved interpreter {runner['real']}", f(med(runner['real_ms'])),
             f(min(runner['real_ms']))],
        ]),
        "",
        "Where a run's harness time goes (traced runs, pytest call phase):",
        "",
        bd_table,
        "",
        "### 2. Sensor line -> verdict (in-process, no daemon)",
        "",
        "t0 = just before `on_line()` (bpftrace) or the `write()+flush()` of the event's 3 "
        "recorded lines (auditd, file tailed by `FileTail`); `wake` = `Subscription.wait("
        "decided)` returns; `verdict` = `judge()` returns (DETECTED). The writer starts once "
        "the main thread is blocked in the wait, after a 0.5 ms settle outside the interval.",
        "",
        render_latency(d),
        "",
        f"bpftrace's recorded line carries cgroup {lat_b['cgroup_of_line']} (not a container "
        f"cgroup): every such line re-runs `scan_cgroups()` ({f(lat_b['scan_cgroups_us'])} us "
        "on this node) inside `on_line`.",
        "",
        "### 3. Full bundled suite (`shadowtest run --results R`)",
        "",
        render_suite(d),
        "",
        tl_table,
        "",
        "### Summary (generated)",
        "",
        *auto,
        END,
    ])


