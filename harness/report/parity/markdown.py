"""``parity.md``: the parity report as Markdown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.report.parity.options import EXIT_EMPTY


def render_markdown(report: Mapping[str, Any]) -> str:
    g, t = report["gate"], report["totals"]
    verdict = "PASSED" if g["passed"] else "NOTHING TO GATE" if g["exit_code"] == EXIT_EMPTY else "FAILED"
    lines = [
        f"# Parity: `{report['candidate']}` against `{report['incumbent']}`", "",
        f"- Window: {report['window']['start']} .. {report['window']['end']} "
        f"({report['window']['length']})",
        f"- Keys: {', '.join(report['keys']) or '(none)'}; tolerance ±{report['tolerance_ms']:g} ms; "
        "one-to-one (maximum matching per key group, harness/report/parity/match.py)",
        f"- Detections: incumbent {t['incumbent']}, candidate {t['candidate']}, matched "
        f"{t['matched']}; with a null key: incumbent {t['incumbent_null_keys']}, candidate "
        f"{t['candidate_null_keys']}; |Δt| of pairs mean {t['mean_abs_dt_ms']} ms, max "
        f"{t['max_abs_dt_ms']} ms",
        f"- Gate: parity >= {g['threshold']:.2%} on every rule of severity "
        f"{', '.join(g['severities'])}: **{verdict}** ({g['rules_in_scope']} rule(s) in scope"
        + (f"; below: {', '.join(g['rules_below'])}" if g["rules_below"] else "") + ")", "",
        "## Incumbent rules", "", "| rule | severity | incumbent | matched | parity | gated | passed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rules"]:
        passed = "" if r["passed"] is None else "yes" if r["passed"] else "**no**"
        lines.append(f"| {r['rule']} | {r['severity'] or ''} | {r['incumbent']} | {r['matched']} "
                     f"| {r['parity']:.2%} | {'yes' if r['gated'] else 'no'} | {passed} |")
    lines += ["", "## Candidate rules", "", "| rule | candidate | matched |", "|---|---|---|"]
    lines += [f"| {r['rule']} | {r['candidate']} | {r['matched']} |" for r in report["candidate_rules"]]
    for name, title in (("unmatched_incumbent", "Unmatched incumbent detections"),
                        ("unmatched_candidate", "Unmatched candidate detections")):
        items = report[name]
        lines += ["", f"## {title} (first {report['listed_limit']})", ""]
        if not items:
            lines.append("none")
            continue
        lines += ["| ts | rule | technique | node | container_id | pid |", "|---|---|---|---|---|---|"]
        lines += [f"| {i['ts']} | {i['rule']} | {i['technique'] or ''} | {i['node'] or ''} | "
                  f"{i['container_id'] or ''} | {i['pid'] if i['pid'] is not None else ''} |"
                  for i in items]
    return "\n".join(lines) + "\n"
