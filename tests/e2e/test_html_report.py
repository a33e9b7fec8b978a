"""The HTML report in Debian's headless Chromium (playwright drives it; it never downloads
a browser): every grid cell shows its row's verdict, a click shows that run's evidence,
filters hide what they should, and the page loads nothing from the network."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.core import policy
from harness.report.html import write_html
from harness.report.results import read_rows

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RESULTS = Path(__file__).resolve().parents[1] / "data" / "results" / "matrix.jsonl"
DIFF = {"kind": "diff", "before": "rules-1.2.0", "after": "rules-1.3.0", "changed": [
    {"scenario": "ptrace-pid1", "context": "namespace", "sensor": "bpftrace",
     "before": "DETECTED", "after": "MISSED", "rule": "ptrace-attach-pid1"}]}
PARITY = {"kind": "parity", "incumbent": "falco", "candidate": "sysdig", "gate": 0.95,
          "passed": False, "rules": {"Write below etc": {"severity": "high", "parity": 0.91,
                                                         "matched": 10, "missed": 1}}}


@pytest.fixture(scope="module")
def browser(pytestconfig: pytest.Config) -> Iterator[Any]:
    if not CHROMIUM.exists():
        in_ci = bool(os.environ.get("CI")) or pytestconfig.getoption("--run-node")
        if in_ci:
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (ci/setup.sh does)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); runs in CI")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    pg = context.new_page()
    pg.errors = []
    pg.requests = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.on("console", lambda msg: pg.errors.append(msg.text) if msg.type == "error" else None)

    def only_file(route: Any) -> None:
        url = route.request.url
        if not url.startswith(("file://", "data:", "about:")):
            pg.requests.append(url)
            route.abort()
        else:
            route.continue_()

    pg.route("**/*", only_file)
    try:
        yield pg
    finally:
        context.close()


def open_report(page: Any, tmp_path: Path, **views: Any) -> tuple[list[dict[str, Any]], Path]:
    rows = list(read_rows(RESULTS))
    out = write_html(rows, tmp_path / "report.html", **views)
    page.goto(out.as_uri())
    page.wait_for_selector("#grid")
    return rows, out


def grid_buttons(page: Any, visible_only: bool = False) -> list[dict[str, Any]]:
    return list(page.evaluate("""(visibleOnly) => Array.from(document.querySelectorAll('#grid button.run'))
        .filter(b => !visibleOnly || b.offsetParent !== null)
        .map(b => ({row: Number(b.dataset.row), text: b.querySelector('.verdict').textContent,
                    run_id: b.dataset.runId, kernel: b.parentNode.dataset.kernel,
                    sensor: b.parentNode.dataset.sensor,
                    scenario: b.closest('tr').dataset.scenario,
                    context: b.closest('tr').dataset.context}))""", visible_only))


def test_html_report_grid_matches_results_and_click_shows_evidence(page: Any, tmp_path: Path) -> None:
    rows, _ = open_report(page, tmp_path)
    shot = page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(shot) > 30_000  # a rendered grid, not a blank page
    buttons = grid_buttons(page)
    assert sorted(b["row"] for b in buttons) == list(range(len(rows)))  # each row once
    for b in buttons:
        row = rows[b["row"]]
        assert (b["text"], b["run_id"], b["kernel"], b["sensor"], b["scenario"], b["context"]) == (
            row["verdict"], row["run_id"], row["kernel"], row["sensor"], row["scenario"],
            row["context"])
    missed = next(i for i, r in enumerate(rows) if r["verdict"] == "MISSED")
    page.click(f'#grid button.run[data-row="{missed}"]')
    page.wait_for_selector("#evidence.open")
    assert page.inner_text("#ev-run-id") == rows[missed]["run_id"]
    assert page.inner_text("#ev-verdict") == "MISSED"
    assert page.inner_text("#ev-reason") == rows[missed]["reason"]
    near = page.inner_text("#ev-near")
    mismatch = rows[missed]["near_misses"][0]["mismatches"][0]
    assert mismatch["field"] in near
    assert mismatch["expected"] in near
    page.wait_for_timeout(200)  # the panel's slide-in transition
    page.screenshot(path=str(tmp_path / "evidence.png"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#evidence:not(.open)", state="attached")
    assert page.errors == []
    assert page.requests == []  # offline: nothing but the file itself


def test_html_report_filters(page: Any, tmp_path: Path) -> None:
    rows, _ = open_report(page, tmp_path)
    page.check("#f-failing")
    shown = grid_buttons(page, visible_only=True)
    # the one verdict policy (harness.core.policy): RACED fails, a known gap's MISSED does not
    failing = [i for i, r in enumerate(rows) if policy.row_failed(r)]
    assert sorted(b["row"] for b in shown) == failing
    page.uncheck("#f-failing")
    page.select_option("#f-kernel", "6.12.9-cloud")
    page.select_option("#f-sensor", "falco")
    shown = grid_buttons(page, visible_only=True)
    assert sorted(b["row"] for b in shown) == [
        i for i, r in enumerate(rows) if (r["kernel"], r["sensor"]) == ("6.12.9-cloud", "falco")]
    page.select_option("#f-kernel", "")
    page.select_option("#f-sensor", "")
    page.fill("#f-text", rows[0]["run_id"])
    shown = grid_buttons(page, visible_only=True)
    assert {rows[b["row"]]["run_id"] for b in shown} == {rows[0]["run_id"]}
    assert page.errors == []


def test_html_report_diff_and_parity_views(page: Any, tmp_path: Path) -> None:
    open_report(page, tmp_path, diff=DIFF, parity=PARITY)
    page.click("#tab-diff")
    assert page.is_visible("#view-diff")
    assert not page.is_visible("#view-grid")
    diff = page.inner_text("#view-diff")
    assert "rules-1.3.0" in diff
    assert "ptrace-attach-pid1" in diff
    page.click("#tab-parity")
    parity = page.inner_text("#view-parity")
    assert "Write below etc" in parity
    assert "0.91" in parity
    page.screenshot(path=str(tmp_path / "parity.png"))
    page.click("#tab-grid")
    assert page.is_visible("#grid")
    assert page.errors == []
    assert page.requests == []
