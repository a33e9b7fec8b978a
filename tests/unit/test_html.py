"""The standalone HTML report, without a browser (tests/e2e/test_html_report.py drives one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.report.html import render_html, write_html
from harness.report.results import read_rows

RESULTS = Path(__file__).resolve().parents[1] / "data" / "results" / "matrix.jsonl"


def embedded(page: str) -> dict[str, object]:
    m = re.search(r'<script type="application/json" id="shadowtest-data">(.*?)</script>', page, re.S)
    assert m is not None
    data: dict[str, object] = json.loads(m.group(1))
    return data


def test_write_html_one_button_per_row_and_data_embedded(tmp_path: Path) -> None:
    rows = list(read_rows(RESULTS))
    out = write_html(rows, tmp_path / "sub" / "r.html")
    page = out.read_text()
    assert page.count('class="run v-') == len(rows)
    assert embedded(page)["rows"] == rows
    assert "http://" not in page
    assert "https://" not in page  # offline: no CDN


def test_html_escapes_script_breakers_in_rows() -> None:
    rows = [{"scenario": "x", "context": "host", "node": "n", "kernel": "6.1", "sensor": "s",
             "verdict": "MISSED", "run_id": "st1", "reason": "</script><script>alert(1)</script>"}]
    page = render_html(rows)
    assert "<script>alert(1)" not in page
    assert page.count("</script>") == 2  # the data block and the code block
    assert embedded(page)["rows"] == rows


def test_diff_and_parity_views_render_any_json_object() -> None:
    diff = {"kind": "diff", "before": "a", "changed": [{"scenario": "x", "after": "MISSED"}],
            "by_sensor": {"falco": {"changed": 1}}, "notes": ["one", {"deep": [1, 2]}]}
    parity = {"kind": "parity", "passed": True, "pairs": [], "gate": {"critical": 0.95}}
    page = render_html([], diff=diff, parity=parity)
    assert 'id="view-diff"' in page
    assert 'id="view-parity"' in page
    assert '<span class="badge v-MISSED">MISSED</span>' in page
    assert "by_sensor" in page
    assert "No results rows." in page
    assert '<span class="bool-true">yes</span>' in page


def test_view_of_unexpected_kind_is_shown_with_a_warning() -> None:
    page = render_html([], parity={"kind": "diff", "x": 1})
    assert "kind is diff, shown as given" in page


def test_failing_only_filter_follows_the_policy() -> None:
    """Each run button says whether it fails (harness.core.policy): RACED does, a known
    gap's MISSED does not; the template's "failing only" filter reads that, not a list."""
    base = {"scenario": "s", "context": "host", "kernel": "6.1", "node": "n", "run_id": "st1",
            "reason": "r"}
    rows = [{**base, "sensor": "a", "verdict": "RACED"},
            {**base, "sensor": "b", "verdict": "MISSED", "known_gap": "no rule"},
            {**base, "sensor": "c", "verdict": "SENSOR_DOWN"},
            {**base, "sensor": "d", "verdict": "DETECTED"}]
    page = render_html(rows)
    got = dict(re.findall(r'data-verdict="(\w+)" data-failing="(\d)"', page))
    assert got == {"RACED": "1", "MISSED": "0", "SENSOR_DOWN": "1", "DETECTED": "0"}
    assert "var FAILING" not in page
    assert 'b.dataset.failing === "1"' in page
