"""One standalone, offline HTML report of a results file: the scenario x kernel x sensor
grid with verdict colours and filters, each run's evidence one click away, and the diff
and parity views when their JSON is given. No CDN: CSS, JS and data are inline."""

from __future__ import annotations

import datetime as dt
import html
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from harness.core import policy
from harness.core.secrets import redact
from harness.report.summary import ORDER, Grid, build_grid, latency_text

TEMPLATE = "templates/report.html"


def write_html(rows: Iterable[dict[str, Any]], out: Path, diff: dict[str, Any] | None = None,
               parity: dict[str, Any] | None = None, title: str = "shadowtest report") -> Path:
    """Write the report to ``out`` (parents created) and return it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(list(rows), diff, parity, title), encoding="utf-8")
    return out


def render_html(rows: Sequence[dict[str, Any]], diff: Mapping[str, Any] | None = None,
                parity: Mapping[str, Any] | None = None, title: str = "shadowtest report") -> str:
    template = files("harness.report").joinpath(TEMPLATE).read_text("utf-8")
    grid = build_grid(rows)
    index = {id(r): i for i, r in enumerate(rows)}
    views = [("grid", "Grid", _grid_view(grid, index))]
    if diff is not None:
        views.append(("diff", "Diff", _json_view(diff, "diff")))
    if parity is not None:
        views.append(("parity", "Parity", _json_view(parity, "parity")))
    tabs = "".join(
        f'<button type="button" class="tab{" active" if i == 0 else ""}" data-view="{key}" '
        f'id="tab-{key}">{label}</button>' for i, (key, label, _) in enumerate(views))
    body = "".join(
        f'<section class="view{" active" if i == 0 else ""}" id="view-{key}">{content}</section>'
        for i, (key, _, content) in enumerate(views))
    data = json.dumps({"rows": list(rows)}, sort_keys=True, default=str)
    # inside <script> no "<" at all: "</script" would end it, "<!--" change how it parses
    data = redact(data).replace("<", "\\u003c")
    generated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    counts = Counter(str(r.get("verdict")) for r in rows)
    return (template
            .replace("@@TITLE@@", _e(title))
            .replace("@@SUBTITLE@@", _e(_subtitle(rows, grid, generated)))
            .replace("@@COUNTS@@", _counts(counts))
            .replace("@@FILTERS@@", _filters(grid, counts))
            .replace("@@TABS@@", tabs)
            .replace("@@VIEWS@@", body)
            .replace("@@DATA@@", data))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _subtitle(rows: Sequence[dict[str, Any]], grid: Grid, generated: str) -> str:
    runs = len({r.get("run_id") for r in rows})
    return (f"{runs} runs, {len(rows)} verdicts, {len(grid.rows)} scenario rows, "
            f"{len(grid.kernels)} kernels, {len(grid.sensors)} sensors; generated {generated}")


def _counts(counts: Counter[str]) -> str:
    known = [v for v in ORDER if counts.get(v)] + sorted(v for v in counts if v not in ORDER)
    return "".join(f'<span class="count v-{_e(v)}" data-verdict="{_e(v)}">{_e(v)} '
                   f'<b>{counts[v]}</b></span>' for v in known)


def _options(values: Iterable[str], label: str) -> str:
    return f'<option value="">all {label}</option>' + "".join(
        f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)


def _filters(grid: Grid, counts: Counter[str]) -> str:
    contexts = sorted({c for _, c in grid.rows})
    tactics = sorted({t for t in grid.tactics.values() if t})
    verdicts = [v for v in ORDER if counts.get(v)] + sorted(v for v in counts if v not in ORDER)
    chips = "".join(
        f'<label class="chip v-{_e(v)}"><input type="checkbox" class="f-verdict" '
        f'value="{_e(v)}" checked> {_e(v)}</label>' for v in verdicts)
    return (
        '<input type="search" id="f-text" placeholder="scenario, technique, run id, rule">'
        f'<select id="f-kernel">{_options(grid.kernels, "kernels")}</select>'
        f'<select id="f-sensor">{_options(grid.sensors, "sensors")}</select>'
        f'<select id="f-context">{_options(contexts, "contexts")}</select>'
        f'<select id="f-tactic">{_options(tactics, "tactics")}</select>'
        '<label class="chip"><input type="checkbox" id="f-failing"> failing only</label>'
        f'<span class="chips">{chips}</span>'
    )


def _grid_view(grid: Grid, index: Mapping[int, int]) -> str:
    if not grid.rows:
        return '<p class="empty">No results rows.</p>'
    kernels = grid.kernels
    head1 = ['<th rowspan="2" class="rowhead">scenario</th><th rowspan="2">context</th>']
    head2 = []
    for k in kernels:
        sensors = [s for kk, s in grid.columns if kk == k]
        head1.append(f'<th colspan="{len(sensors)}" class="kernel" data-kernel="{_e(k)}">'
                     f'{_e(k)}</th>')
        head2 += [f'<th class="sensor" data-kernel="{_e(k)}" data-sensor="{_e(s)}">{_e(s)}</th>'
                  for s in sensors]
    body = []
    for scenario, context in grid.rows:
        first = next((r for (sc, cx, _, _), rs in grid.cells.items()
                      if (sc, cx) == (scenario, context) for r in rs), {})
        technique = first.get("technique") or ("benign control" if first.get("benign") else "")
        tactic = grid.tactics.get(scenario, "")
        cells = [f'<th class="rowhead" scope="row"><span class="scenario">{_e(scenario)}</span>'
                 f'<span class="meta">{_e(technique)} &middot; {_e(tactic)}</span></th>'
                 f'<td class="context">{_e(context)}</td>']
        for kernel, sensor in grid.columns:
            several = len(grid.nodes(scenario, context, kernel)) > 1
            runs = "".join(_run_button(r, index[id(r)], several)
                           for r in grid.cell(scenario, context, kernel, sensor))
            cells.append(f'<td class="cell" data-kernel="{_e(kernel)}" data-sensor="{_e(sensor)}">'
                         f'{runs or "<span class=none>&ndash;</span>"}</td>')
        search = " ".join(str(x) for x in (scenario, technique, tactic, context))
        body.append(f'<tr class="gridrow" data-scenario="{_e(scenario)}" '
                    f'data-context="{_e(context)}" data-tactic="{_e(tactic)}" '
                    f'data-search="{_e(search.lower())}">{"".join(cells)}</tr>')
    return ('<div class="gridwrap"><table id="grid" class="grid">'
            f'<thead><tr>{"".join(head1)}</tr><tr>{"".join(head2)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>'
            '<p class="hint">Click a verdict for its evidence: the run record, the matched '
            'detection, the near misses and the reason.</p>')


def _run_button(row: dict[str, Any], i: int, several: bool) -> str:
    verdict = str(row.get("verdict"))
    lat = latency_text(row)
    where = f'<span class="where">{_e(row.get("node"))}</span>' if several else ""
    search = " ".join(str(row.get(k) or "") for k in ("run_id", "rule", "node", "sensor")).lower()
    return (f'<button type="button" class="run v-{_e(verdict)}" data-row="{i}" '
            f'data-run-id="{_e(row.get("run_id"))}" data-verdict="{_e(verdict)}" '
            f'data-failing="{1 if policy.row_failed(row) else 0}" '
            f'data-node="{_e(row.get("node"))}" data-search="{_e(search)}" '
            f'title="{_e(row.get("reason") or verdict)}">'
            f'<span class="verdict">{_e(verdict)}</span>'
            f'{f"<span class=lat>{_e(lat)}</span>" if lat else ""}{where}</button>')


# ---------------------------------------------------------------- diff / parity (generic)
def _json_view(doc: Mapping[str, Any], expected_kind: str) -> str:
    """Any JSON object as tables: scalars as a summary list, lists of objects and mappings
    of objects as tables, anything deeper as JSON. Tolerant of shapes it does not know."""
    if not isinstance(doc, Mapping):
        return (f'<p class="empty">Expected a JSON object for the {expected_kind} view, got '
                f'{_e(type(doc).__name__)}.</p>')
    kind = doc.get("kind", expected_kind)
    parts = [f'<h2>{_e(str(kind).capitalize())}</h2>']
    if kind != expected_kind:
        parts.append(f'<p class="warn">kind is {_e(kind)!s}, shown as given.</p>')
    scalars = {k: v for k, v in doc.items() if k != "kind" and not isinstance(v, dict | list)}
    if scalars:
        parts.append(_dl(scalars))
    for key, value in doc.items():
        if key == "kind" or key in scalars:
            continue
        parts.append(f'<h3>{_e(key)}</h3>{_value_block(value)}')
    return f'<div class="jsonview" data-kind="{_e(kind)}">{"".join(parts)}</div>'


def _value_block(value: Any, depth: int = 0) -> str:
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return _table(value)
        if not value:
            return '<p class="empty">(none)</p>'
        return "<ul>" + "".join(f"<li>{_cell(v)}</li>" for v in value) + "</ul>"
    if isinstance(value, dict):
        if value and all(isinstance(v, dict) for v in value.values()):
            return _table([{"key": k, **v} for k, v in value.items()])
        scalars = {k: v for k, v in value.items() if not isinstance(v, dict | list)}
        nested = {k: v for k, v in value.items() if k not in scalars}
        out = _dl(scalars) if scalars else ""
        for k, v in nested.items():
            out += (f"<h4>{_e(k)}</h4>{_value_block(v, depth + 1)}" if depth < 3
                    else f"<pre>{_e(json.dumps(v, indent=2, default=str))}</pre>")
        return out or '<p class="empty">(none)</p>'
    return f"<p>{_cell(value)}</p>"


def _dl(values: Mapping[str, Any]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{_e(k)}</dt><dd>{_cell(v)}</dd>"
                                       for k, v in values.items()) + "</dl>"


def _table(items: Sequence[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for item in items for k in item))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(item.get(c))}</td>" for c in columns) + "</tr>"
                   for item in items)
    return f'<div class="tablewrap"><table class="data"><thead><tr>{head}</tr></thead>' \
           f"<tbody>{body}</tbody></table></div>"


def _cell(value: Any) -> str:
    if value is None:
        return '<span class="none">&ndash;</span>'
    if isinstance(value, bool):
        return f'<span class="bool-{str(value).lower()}">{"yes" if value else "no"}</span>'
    if isinstance(value, dict | list):
        return f'<code>{_e(json.dumps(value, sort_keys=True, default=str))}</code>'
    text = str(value)
    if text in ORDER:
        return f'<span class="badge v-{_e(text)}">{_e(text)}</span>'
    if isinstance(value, float):
        return _e(f"{value:.4g}")
    return _e(text)
