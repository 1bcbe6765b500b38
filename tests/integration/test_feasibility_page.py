"""The trial-feasibility page in a real headless Chromium against a real network.

Gateway + three node processes (a network of this module's own, so the budgets it
reads are its own), Debian's chromium driven by Playwright as in
``test_console_browser.py``; skipped, saying why, where either is missing. Every
check reads the DOM or a downloaded file, never pixels.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from launcher.network import LocalNetwork
from varde.query import Query, parse_query

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("feasibility-page"),
]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
expect = sync_api.expect
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True
    )

SITES = ["oslo", "bergen", "trondheim"]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork(
        workdir=tmp_path_factory.mktemp("feasibility"), sites=SITES, rows=5_000, seed=14
    )
    network.start()
    yield network
    network.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    expected = "the server responded with a status of 401"  # wrong token, ended session
    tab.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and expected not in m.text else None,
    )
    outside: list[str] = []
    tab.on(
        "request",
        lambda r: (
            None
            if r.url.startswith(("http://127.0.0.1", "blob:", "data:"))
            else outside.append(r.url)
        ),
    )
    yield tab
    context.close()
    assert not outside, f"the page loaded from outside the gateway: {outside}"
    assert not errors, f"the page logged errors: {errors}"


def log_in(page: Any, net: LocalNetwork) -> None:
    page.goto(net.url + "/feasibility")
    assert page.url.endswith("/feasibility/login")
    page.fill("#token", net.token)
    page.click("button[type=submit]")
    page.wait_for_selector("#question:not([hidden])")
    assert net.token not in page.url


def build_readme_question(page: Any) -> None:
    """Stage IV NSCLC (C34), EGFR+, age 18-75, diagnosed 2020 or later (README.md)."""
    page.select_option("#project", "nsclc-feasibility")
    page.fill("#topo-search", "C34")
    page.press("#topo-search", "Enter")
    assert "Bronchus and lung" in page.inner_text("#topo-chosen")
    page.check("#stage-IV")
    page.select_option("#bm-egfr", "positive")
    page.fill("#age-min", "18")
    page.fill("#age-max", "75")
    page.fill("#year-from", "2020")


def rows(page: Any, table: str) -> dict[str, list[str]]:
    """A table's body rows by their first cell."""
    out = {}
    for tr in page.locator(f"#{table} tbody tr").all():
        cells = [tr.locator("th").inner_text(), *tr.locator("td").all_inner_texts()]
        out[cells[0]] = cells[1:]
    return out


COLOURS = """(selectors) => selectors.map((sel) => {
  const el = document.querySelector(sel);
  let bg = el, back = "rgba(0, 0, 0, 0)";
  while (bg && (back === "rgba(0, 0, 0, 0)" || back === "transparent")) {
    back = getComputedStyle(bg).backgroundColor;
    bg = bg.parentElement;
  }
  return [sel, getComputedStyle(el).color, back];
})"""


def contrast(fore: str, back: str) -> float:
    """WCAG 2 contrast ratio of two CSS ``rgb(...)`` colours."""

    def luminance(css: str) -> float:
        r, g, b = (int(float(x)) / 255 for x in re.findall(r"[\d.]+", css)[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted([luminance(fore), luminance(back)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def downloaded(page: Any, button: str) -> tuple[str, bytes]:
    with page.expect_download() as info:
        page.click(button)
    return info.value.suggested_filename, Path(info.value.path()).read_bytes()


def test_build_preview_run_export_and_rerun_uncharged(
    page: Any, net: LocalNetwork, tmp_path: Path
) -> None:
    # a wrong token first: a clear message, no session
    page.goto(net.url + "/feasibility/login")
    page.fill("#token", "vr_not-a-token")
    page.click("button[type=submit]")
    assert "Unknown or revoked token" in page.inner_text("#login-error")
    log_in(page, net)
    build_readme_question(page)

    # preview: epsilon each site would charge and the ±95% error; nothing charged
    page.click("#preview-btn")
    page.wait_for_selector("#preview-section:not([hidden])")
    count_rows = page.locator('#preview tr[data-stat="count"]')
    assert count_rows.count() == 4  # three sites and the network
    for site in SITES:
        cells = page.locator(
            f'#preview tr[data-stat="count"][data-site="{site}"] td'
        ).all_inner_texts()
        assert cells[1] == "would answer" and cells[2] == "ε 0.50" and cells[3].startswith("±")
        assert cells[4] == {"oslo": "ε 10.00", "bergen": "ε 8.00", "trondheim": "ε 6.00"}[site]
    assert page.locator('#preview tr[data-stat="funnel"]').count() == 4
    total = page.inner_text("#preview-total")
    assert all(f"{site} ε 1.00" in total for site in SITES), total  # count + funnel

    # run: three sites and the network row, the funnel, budgets left
    page.click("#run-btn")
    page.wait_for_selector("#results-section:not([hidden])")
    counts = rows(page, "counts")
    assert list(counts)[-1] == "NETWORK"
    unit = "Patients" if "unit" in Query.model_fields else "Tumours"  # issue 11's option
    assert page.inner_text("#unit-head") == unit
    assert set(counts) == {*SITES, "NETWORK"}
    for site in SITES:
        value, interval, words, charged, left = counts[site]
        assert value.rstrip("*").isdigit() and interval.startswith("[")
        assert words == "answered" and charged == "ε 0.50"
    assert counts["NETWORK"][2].startswith("combined over")
    funnel_steps = page.locator("#funnel tbody tr").all_inner_texts()
    assert [s.split("\t")[0] for s in funnel_steps][:2] == ["Tumour site C34", "Stage IV"]
    assert page.locator("#counts-chart svg[role=img]").count() == 1
    assert page.locator("#funnel-chart svg rect").count() > 5
    budgets = rows(page, "budgets")
    assert budgets["bergen"] == ["ε 1.00", "ε 7.00"]  # 8.0 budget: count 0.5 + funnel 0.5
    assert budgets["trondheim"] == ["ε 1.00", "ε 5.00"]
    page.screenshot(path=str(tmp_path / "feasibility-1280.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    selectors = ["h1", "p.muted", "#run-btn", "#save-btn", "#counts td.ok", "#counts tr.network td"]
    for sel, fore, back in page.evaluate(COLOURS, selectors):
        assert contrast(fore, back) >= 4.5, (sel, fore, back)  # WCAG AA for text

    # export: the table as CSV (same numbers as on the page), the query JSON, a PNG
    name, data = downloaded(page, "#csv-counts")
    assert name.endswith(".csv")
    table = list(csv.DictReader(io.StringIO(data.decode())))
    assert [r["site"] for r in table] == [*list(counts)]
    for r in table:
        assert r["value"] == counts[r["site"]][0].rstrip("*")
    assert {r["status"] for r in table} == {"ok"}
    name, data = downloaded(page, "#json-export")
    spec = json.loads(data)
    query = parse_query(spec)  # what VardeClient / varde query take
    assert query.project == "nsclc-feasibility"
    assert spec.get("unit", "tumours") == unit.lower()
    assert {"op": "eq", "field": "egfr", "value": "positive"} in spec["cohort"]["args"]
    name, data = downloaded(page, "#png-counts")
    assert name.endswith(".png") and data[:8] == b"\x89PNG\r\n\x1a\n"

    # save, then re-run: every site answers from its cache, no budget moves
    page.fill("#title", "EGFR NSCLC")
    page.click("#save-btn")
    page.reload()
    page.wait_for_selector("#question:not([hidden])")
    assert page.input_value("#age-min") == ""
    page.click('#saved li[data-saved="EGFR NSCLC"] >> text=Load into form')
    assert page.input_value("#age-min") == "18" and page.input_value("#bm-egfr") == "positive"
    assert "C34" in page.inner_text("#topo-chosen") and page.is_checked("#stage-IV")
    page.click('#saved li[data-saved="EGFR NSCLC"] button.rerun')
    page.wait_for_selector("#results-section:not([hidden])")
    expect(page.locator("#status")).to_have_text(re.compile("^Done"))
    again = rows(page, "counts")
    for site in SITES:
        assert again[site][0] == counts[site][0]  # the same released numbers
        assert "cache" in again[site][2] and again[site][3] == "ε 0.00"
    assert rows(page, "budgets")["bergen"] == ["ε 0.00", "ε 7.00"]
    assert rows(page, "budgets")["trondheim"] == ["ε 0.00", "ε 5.00"]

    # a field one site does not expose: Trondheim refuses in words, the others answer
    page.select_option("#bm-pdl1_tps", ">=50%")
    page.uncheck("#want-funnel")
    page.check("#want-survival")
    page.click("#run-btn")
    page.wait_for_selector("#refusal-trondheim")
    refusal = page.inner_text("#refusal-trondheim")
    assert "does not share pdl1_tps" in refusal and "Nothing was charged" in refusal
    counts = rows(page, "counts")
    assert set(counts) == {*SITES, "NETWORK"}
    assert counts["oslo"][2] == "answered" and counts["bergen"][2] == "answered"
    assert page.locator("#funnel-block").is_hidden()
    assert page.locator("#survival-chart svg path").count() == 2
    assert "trondheim" in page.inner_text("#survival-refusals")

    # a tablet: everything still fits the width
    page.set_viewport_size({"width": 768, "height": 1024})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / "feasibility-768.png"), full_page=True)


def test_bad_input_and_an_ended_session_get_clear_messages(page: Any, net: LocalNetwork) -> None:
    log_in(page, net)
    # the keyboard alone: type a code, Enter adds it, Tab reaches its remove button
    page.focus("#topo-search")
    page.keyboard.type("C50")
    page.keyboard.press("Enter")
    assert "C50 Breast" in page.inner_text("#topo-chosen")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "topo-add"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Remove C50"
    page.keyboard.press("Enter")
    assert page.locator("#topo-chosen li").count() == 0
    # every control of the form has a label
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('#question input, #question select')]"
        ".filter((e) => !e.labels || e.labels.length === 0).map((e) => e.id)"
    )
    assert unlabelled == []
    page.select_option("#project", "nsclc-feasibility")
    page.click("#preview-btn")
    assert "Add at least one inclusion criterion" in page.inner_text("#form-error")

    page.fill("#topo-search", "C99.9")
    page.press("#topo-search", "Enter")
    assert "is not a topography code" in page.inner_text("#form-error")
    page.fill("#topo-search", "C34 Bronchus and lung")
    page.click("#topo-add")
    page.fill("#age-min", "80")
    page.fill("#age-max", "18")
    page.click("#run-btn")
    assert "lower bound 80 is above the upper bound 18" in page.inner_text("#form-error")
    assert page.locator("#results-section").is_hidden()

    # no epsilon, then one beyond what every site allows per query: each site's refusal, in words
    page.fill("#age-min", "18")
    page.fill("#age-max", "75")
    page.fill("#epsilon", "0")
    page.click("#preview-btn")
    assert "is not a positive number" in page.inner_text("#form-error")
    page.fill("#epsilon", "5")
    page.click("#preview-btn")
    page.wait_for_selector("#preview-section:not([hidden])")
    for site in SITES:
        words = page.locator(f'#preview tr[data-site="{site}"] td').nth(1).inner_text()
        assert words.startswith("The site's policy does not allow this question"), words
    assert page.locator("#form-error").is_hidden()

    # the session ends (expired, logged out elsewhere, forged): a clear message, a way back
    page.fill("#epsilon", "0.5")
    page.context.clear_cookies()
    page.context.add_cookies([{"name": "varde_session", "value": "forged", "url": net.url}])
    page.click("#preview-btn")
    page.wait_for_selector("#session-message:not([hidden])")
    assert "session has expired or is not valid" in page.inner_text("#session-message")
    page.click("#session-message a")
    page.wait_for_url("**/feasibility/login")


def site_info(net: LocalNetwork, site: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {net.token}"}
    sites = httpx.get(net.url + "/v1/sites", headers=headers, timeout=30).json()
    return dict(next(s for s in sites if s["site"] == site))


def wait_until_bergen_asks_its_staff(net: LocalNetwork) -> None:
    """Ask Bergen (a new question each time) until its reloaded policy holds it for approval.

    The node reloads its policy file within a second; a question is the quickest way to
    see it (the manifest the gateway shows is refreshed less often). Each ask before the
    reload charges 0.5, so the loop is short and stops at the first refusal of another kind.
    """
    headers = {"Authorization": f"Bearer {net.token}"}
    with httpx.Client(base_url=net.url, headers=headers, timeout=60) as client:
        for age in range(8):
            time.sleep(0.5)
            spec = {
                "project": "nsclc-feasibility",
                "cohort": {"op": "<=", "field": "age_at_diagnosis", "value": 100 - age},
                "statistic": {"kind": "count"},
                "privacy": {"mode": "dp", "epsilon": 0.5},
                "sites": ["bergen"],
            }
            (row,) = client.post("/v1/queries", json=spec).json()["sites"]
            if row["status"] == "awaiting_approval":
                return
            assert row["status"] == "ok", row
    raise AssertionError("bergen never reloaded its policy")


def exhaust(net: LocalNetwork, site: str) -> None:
    """Spend the whole ``nsclc-feasibility`` budget at ``site`` (distinct questions: no cache)."""
    headers = {"Authorization": f"Bearer {net.token}"}
    with httpx.Client(base_url=net.url, headers=headers, timeout=60) as client:
        for age in range(20):
            spec = {
                "project": "nsclc-feasibility",
                "cohort": {"op": ">=", "field": "age_at_diagnosis", "value": age},
                "statistic": {"kind": "count"},
                "privacy": {"mode": "dp", "epsilon": 1.0},
                "sites": [site],
            }
            if client.post("/v1/queries", json=spec).status_code == 409:
                return
    raise AssertionError(f"the budget at {site} never ran out")


def test_offline_spent_and_awaiting_approval_are_named_and_nothing_breaks(
    page: Any, net: LocalNetwork
) -> None:
    """Runs last: it spends Trondheim's budget, stops Oslo's node, makes Bergen ask its staff."""
    exhaust(net, "trondheim")
    net.stop_process("oslo")
    deadline = time.monotonic() + 20
    while site_info(net, "oslo")["connected"]:
        assert time.monotonic() < deadline, "the gateway never saw oslo go"
        time.sleep(0.2)
    log_in(page, net)
    page.select_option("#project", "nsclc-feasibility")
    page.fill("#topo-search", "C50")
    page.press("#topo-search", "Enter")
    page.uncheck("#want-funnel")
    page.click("#run-btn")
    page.wait_for_selector("#refusal-oslo")
    assert "offline" in page.inner_text("#refusal-oslo")
    assert "budget at this site is used up" in page.inner_text("#refusal-trondheim")
    counts = rows(page, "counts")
    assert counts["bergen"][2] == "answered" and "NETWORK" in counts

    # Bergen's staff now approve every question over epsilon 0.4 (the node reloads its policy)
    path = net.policy_path("bergen")
    path.write_text(path.read_text() + "\napprovals:\n  epsilon_above: 0.4\n")
    wait_until_bergen_asks_its_staff(net)
    page.click("#run-btn")
    page.wait_for_selector("#refusal-bergen")
    assert "Waiting for the site's staff to approve" in page.inner_text("#refusal-bergen")
    assert "offline" in page.inner_text("#refusal-oslo")
    assert "NETWORK" not in rows(page, "counts")  # nobody released: no network row, no error
    expect(page.locator("#status")).to_contain_text("wait for their staff's approval")
    assert page.locator("#form-error").is_hidden()
