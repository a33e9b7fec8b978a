"""bench_skeleton's analysis of the suite runs: overhead per scenario against the bare
floor, the traced runs' per-step breakdown and their timeline."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from skeleton_common import each, f, iso_to_epoch, med, pct, ratio, table


def analyse_overhead(suites: list[dict[str, Any]], bare: dict[str, dict[str, Any]]
                     ) -> tuple[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for s in suites:
        for r in s["rows"]:
            runs.setdefault(r["run_id"], {
                "key": f"{r['scenario']}[{r['context']}]", "scenario": r["scenario"],
                "window_ms": (iso_to_epoch(r["ended_at"]) - iso_to_epoch(r["started_at"])) * 1000,
                "action_ms": r["action_ms"]})
        for it in s.get("trace", {}).get("items", []):
            if it.get("run_id") in runs:
                runs[it["run_id"]]["call_ms"] = it.get("call_ms")
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs.values():
        groups[r["key"]].append(r)
    rows = []
    all_win_oh: list[float] = []
    all_call_oh: list[float] = []
    for key, g in groups.items():
        action = [r["action_ms"] for r in g]
        win = [r["window_ms"] for r in g]
        win_oh = [r["window_ms"] - r["action_ms"] for r in g]
        call = [r["call_ms"] for r in g if r.get("call_ms") is not None]
        call_oh = [r["call_ms"] - r["action_ms"] for r in g if r.get("call_ms") is not None]
        all_win_oh += win_oh
        all_call_oh += call_oh
        b = bare.get(g[0]["scenario"], {}).get("p50", float("nan"))
        rows.append([
            key, str(len(g)), f(med(action)), f(b), f(med(win)),
            f"{f(med(win_oh))} / {f(pct(win_oh, 95))} / {f(max(win_oh))}",
            ratio(med(win), b),
            f"{f(med(call))} (n={len(call)})",
            f"{f(med(call_oh))} / {f(pct(call_oh, 95))} / {f(max(call_oh) if call_oh else float('nan'))}",
            ratio(med(call), b),
        ])
    header = ["scenario[context]", "runs", "action ms p50", "bare sh -c ms p50",
              "act window ms p50", "window overhead ms p50/p95/max", "window / bare",
              "run wall ms p50 (pytest call)", "run overhead ms p50/p95/max", "run wall / bare"]
    summary = {"win_oh_p50": med(all_win_oh), "win_oh_p95": pct(all_win_oh, 95),
               "call_oh_p50": med(all_call_oh), "call_oh_p95": pct(all_call_oh, 95),
               "call_oh_max": max(all_call_oh) if all_call_oh else float("nan"),
               "bare_p50": med([v["p50"] for v in bare.values()])}
    return table(header, rows), summary


def analyse_breakdown(suites: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """Mean ms per run of each harness step inside the pytest call phase."""
    per_run: list[dict[str, float]] = []
    tags: list[set[str]] = []
    for s in suites:
        tr = s.get("trace")
        if not tr:
            continue
        for idx, it in enumerate(tr["items"]):
            if "call_ms" not in it or "run_id" not in it:
                continue
            steps: dict[str, float] = defaultdict(float)
            for ev in tr["events"]:
                if ev["item"] == idx and ev["phase"] == "call":
                    key = ev["key"].split(":")[0] if ev["key"].startswith("open:") else ev["key"]
                    steps[key] += ev["ms"]
            steps["_call"] = it["call_ms"]
            per_run.append(steps)
            benign = all(v in ("CLEAN", "UNEXPECTED") for v in it.get("verdicts", {}).values())
            tags.append({"all", it.get("context", "?"), "benign" if benign else "attack"})
    if not per_run:
        return "(no traced runs)", {}
    cols = ["all", "host", "namespace", "attack", "benign"]
    sel = {c: [r for r, t in zip(per_run, tags, strict=True) if c in t] for c in cols}
    keys = sorted({k for r in per_run for k in r
                   if not k.startswith("_") and k not in {"execute", "facts"}})

    def mean_of(k: str, rs: list[dict[str, float]]) -> float:
        return statistics.fmean([r.get(k, 0.0) for r in rs]) if rs else float("nan")

    inside = ("open", "close", "arm_cleanup", "stage:", "sync:", "wait:", "health:")
    rows = []
    for k in keys:
        rows.append([k, *(f(mean_of(k, sel[c])) for c in cols)])
    other_exec, other_pytest = [], []
    for c in cols:
        explained = sum(mean_of(k, sel[c]) for k in keys if k.startswith(inside))
        other_exec.append(f(mean_of("execute", sel[c]) - explained))
        other_pytest.append(f(mean_of("_call", sel[c]) - mean_of("execute", sel[c])
                              - mean_of("facts", sel[c])))
    rows.append(["execute() rest (subscribe, render, judge, Python)", *other_exec])
    rows.append(["node facts probe (1st run only)", *(f(mean_of("facts", sel[c])) for c in cols)])
    rows.append(["pytest + run_item rest", *other_pytest])
    rows.append(["**pytest call phase total**",
                 *(f"**{f(mean_of('_call', sel[c]))}**" for c in cols)])
    header = ["step: mean ms per run", *(f"{c} (n={len(sel[c])})" for c in cols)]
    top = {k: mean_of(k, per_run) for k in keys}
    top["_call"] = mean_of("_call", per_run)
    return table(header, rows), top


def analyse_timeline(suites: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    phases: dict[str, list[float]] = defaultdict(list)
    for s in suites:
        tr = s.get("trace")
        if not tr:
            continue
        m = tr["marks"]
        ev: dict[str, float] = defaultdict(float)
        for e in tr["events"]:
            ev[e["key"]] += e["ms"] / 1000.0
        calls = sum(it.get("call_ms", 0.0) for it in tr["items"]) / 1000.0
        fixture = ev.get("fixture:shadowtest_sensors", 0.0)
        stops = ev.get("stop:auditd", 0.0) + ev.get("stop:bpftrace", 0.0)
        span = m["last_item"] - m["first_item"]
        summary = ev.get("terminal_summary", 0.0)
        hyp = " (imports hypothesis)" if m.get("hypothesis_imported_in_summary") else ""
        phases["python start + imports + pytest configure"].append(m["configure"] - s["t_launch"])
        phases["collection"].append(m["collected"] - m["configure"])
        phases["collected -> first test"].append(m["first_item"] - m["collected"])
        phases["tests (first start -> last end)"].append(span)
        phases["  sensors start (session fixture)"].append(fixture)
        phases["    bpftrace start -> READY"].append(ev.get("start:bpftrace", 0.0))
        phases["    auditd start (total)"].append(ev.get("start:auditd", 0.0))
        phases["      auditd spawn -> registered"].append(ev.get("auditd_register", 0.0))
        phases["      auditd rules (auditctl x N)"].append(ev.get("auditd_rules", 0.0))
        phases["  scenario runs (sum of pytest call phases)"].append(calls)
        phases["    of which node facts probe (1st run)"].append(ev.get("facts", 0.0))
        phases["  sensors stop"].append(stops)
        phases["    bpftrace stop (SIGINT -> exit)"].append(ev.get("stop:bpftrace", 0.0))
        phases["    auditd stop"].append(ev.get("stop:auditd", 0.0))
        phases["  pytest between/around tests"].append(span - fixture - calls - stops)
        phases["last test -> session finish"].append(m["sessionfinish"] - m["last_item"])
        phases[f"terminal summary, all plugins{hyp}"].append(summary)
        phases["session finish -> unconfigure, other"].append(
            m["unconfigure"] - m["sessionfinish"] - summary)
        phases["unconfigure -> process exit"].append(s["t_exit"] - m["unconfigure"])
        phases["**total wall**"].append(s["wall_s"])
    rows = [[k, f(med(v), 3), each(v)] for k, v in phases.items()]
    return (table(["suite phase (traced runs)", "median s", "each run s"], rows),
            {k.strip(): med(v) for k, v in phases.items()})


