"""The dashboard in a real browser: `streamlit run mmsr_bench/dashboard/app.py` (the command of `bench dashboard`) on a free
loopback port against a fixture store, every page loaded in headless Chromium (Debian's chromium +
chromium-driver via selenium), rendered content checked, no error shown, a screenshot of each page saved."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmsr_bench.dashboard import screenshots as ss
from mmsr_bench.dashboard.fixture import FixtureSpec, build_fixture_store
from mmsr_bench.results.store import Store

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(ss.browser_missing() is not None, reason=str(ss.browser_missing()))]

SPEC = FixtureSpec(skill=(("pop", 0.15), ("sasrec", 0.40), ("mllm-srec-qlora", 0.55), ("mllm-srec-text", 0.45)),
                   seeds=(0, 1), perturbations=("blank:0.2", "blank:0.5"), n_users=150)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('dash_browser') / 'results.db'}"
    build_fixture_store(url, SPEC)
    no_reference = tmp_path_factory.mktemp("dash_browser_no_ref") / "absent"  # the checkout's reference-runs/ aside
    with ss.serve(url, timeout=120, reference_dir=no_reference) as base, ss.chromium() as driver:
        yield url, base, driver


def _no_error_shown(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    assert "Traceback" not in text and "Error" not in text, text[:2000]
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')


def _grid_cells(driver, timeout: float = 60.0) -> list[str]:
    """The text of every cell of the page's interactive grids, once the grid has drawn them: the page's text is
    complete before the grid (a canvas with an accessible cell layer) has rendered, and on a busy machine that lag
    was once long enough to read no cell at all."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def cells(d):
        found = [c.get_attribute("textContent") for c in
                 d.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"] [role="gridcell"]')]
        return found or False

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(cells)


def test_leaderboard_in_the_browser(browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, base, driver = browser
    text = ss.load_page(driver, base, ss.PAGES[0], query="?against=sasrec")
    _no_error_shown(driver, text)
    assert "significantly better/worse than sasrec" in text
    # the interactive grid exposes its cells to assistive technology: model names and the stored means
    cells = _grid_cells(driver)
    runs = [r for r in Store(url).runs(dataset="beauty", model="mllm-srec-qlora") if r.variant == ""]
    expected = float(np.mean([r.metrics["hr@10"] for r in runs]))
    row = cells.index("mllm-srec-qlora")
    assert float(cells[row + 1]) == pytest.approx(expected, abs=1e-12)  # first column: beauty/hr@10
    assert {"pop", "sasrec", "mllm-srec-text"} <= set(cells)
    # the exported Markdown shown on the page carries the CI and the markers
    code = " ".join(e.get_attribute("textContent") for e in driver.find_elements(By.CSS_SELECTOR, "code"))
    assert f"**{expected:.4f} ± " in code and "▲" in code and "▼" in code
    assert driver.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"] .main-svg')
    assert ss.full_page_screenshot(driver, tmp_path / "leaderboard.png").stat().st_size > 10_000


@pytest.mark.parametrize("page", ss.PAGES[1:], ids=lambda p: p.name)
def test_other_pages_in_the_browser(browser, tmp_path, page):
    url, base, driver = browser
    text = ss.load_page(driver, base, page)
    _no_error_shown(driver, text)
    expect = {"ablations": ["mllm-srec-text", "mllm-srec-qlora [blank:0.2]", "relative change against"],
              "compare": ["Run A (under test)", "per-user ndcg@10", "Metric for the plots"],
              "runs": ["Run detail", "gptrec", "CUDA out of memory (simulated)", "Diff against"],
              "hallucination": ["flagged share", "against perturbation share", "mllm-srec-qlora · blank"],
              "study": ["RQ1: overall performance", "RQ4: fine-tuning", "Hallucination and robustness",
                        "suite_hash"]}[page.name]
    for snippet in expect:
        assert snippet in text, (page.name, snippet)
    if page.name == "hallucination":
        payload = json.loads(Store(url).artifacts(kind="hallucination")[0].payload_json)
        assert f"{100 * payload['flagged_share']:.1f}%" in text
    assert ss.full_page_screenshot(driver, tmp_path / f"{page.name}.png").stat().st_size > 10_000


def test_missing_store_in_the_browser(tmp_path):
    db = tmp_path / "absent.db"
    with ss.serve(f"sqlite:///{db}", timeout=120, reference_dir=tmp_path / "no-reference-runs") as base, \
            ss.chromium() as driver:
        driver.get(base + "/")
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 120, poll_frequency=0.25).until(
            lambda d: "bench run --suite synth4 --model pop" in d.find_element(By.TAG_NAME, "body").text)
        _no_error_shown(driver, driver.find_element(By.TAG_NAME, "body").text)
    assert not db.exists()


def test_reference_runs_alone_in_the_browser(tmp_path):
    """No local store, a folder of reference run files: the Leaderboard and Study pages show the reference runs,
    every leaderboard row marked "(reference)", and the local store is not created."""
    from mmsr_bench.dashboard.fixture import build_reference_folder
    from mmsr_bench.results import reference

    folder = build_reference_folder(tmp_path / "reference-runs")
    db = tmp_path / "absent.db"
    with ss.serve(f"sqlite:///{db}", timeout=120, reference_dir=folder) as base, ss.chromium() as driver:
        pages = {p.name: p for p in ss.PAGES}
        text = ss.load_page(driver, base, pages["leaderboard"], query=ss.page_query(pages["leaderboard"],
                                                                                     reference=True))
        _no_error_shown(driver, text)
        assert "No results store" not in text and "reference runs from" in text
        cells = _grid_cells(driver)
        shown = {c for c in cells if c.endswith(reference.SUFFIX)}
        assert shown == {"pop (reference)", "sasrec (reference)", "mllm-srec-qlora (reference)"}, cells[:40]
        assert not any(c in ("pop", "sasrec", "mllm-srec-qlora") for c in cells)  # never shown unmarked
        assert ss.full_page_screenshot(driver, tmp_path / "leaderboard-reference.png").stat().st_size > 10_000

        text = ss.load_page(driver, base, pages["study"], query=ss.page_query(pages["study"], reference=True))
        _no_error_shown(driver, text)
        assert "Reference runs" in text and "RQ1: overall performance" in text
    assert not db.exists()


def test_hostile_names_render_as_text_in_the_browser(tmp_path):
    """Stored names and code versions that read as HTML, markdown links, images, emphasis or a spreadsheet formula
    are shown as typed on the Leaderboard, Runs and Study pages: no element is made of them."""
    from selenium.webdriver.common.by import By

    from mmsr_bench.dashboard.fixture import HOSTILE_NAMES, HOSTILE_SHORT, build_hostile_store

    url = f"sqlite:///{tmp_path / 'hostile.db'}"
    build_hostile_store(url)
    pages = {p.name: p for p in ss.PAGES}
    # emphasis made of a stored "**bold**" (the Study page's legend "Best **bold**, ..." is the page's own)
    stored_emphasis = """return [...document.querySelectorAll('[data-testid="stMain"] :is(strong, em, b, del)')]
        .filter(e => e.textContent.includes('bold')
                && !e.parentElement.textContent.includes('Best bold, second underlined'))
        .map(e => e.outerHTML)"""
    with ss.serve(url, timeout=120, reference_dir=tmp_path / "no-reference-runs") as base, ss.chromium() as driver:
        for name, shown in (("leaderboard", [HOSTILE_NAMES[2]]), ("runs", []), ("study", list(HOSTILE_SHORT))):
            query = ss.page_query(pages[name], against=HOSTILE_NAMES[2])  # the footer names the model
            text = ss.load_page(driver, base, pages[name], query=query).replace("\u2060", "")
            _no_error_shown(driver, text)
            live = driver.find_elements(By.CSS_SELECTOR, 'img[src="x"], h2#pwned, a[href^="javascript:"], '
                                                         '[data-testid="stMarkdownContainer"] '
                                                         'a:not([aria-label="Link to heading"]), '
                                                         '[data-testid="stMarkdownContainer"] img, '
                                                         '[data-testid="stPlotlyChart"] a')
            assert not live, (name, [e.get_attribute("outerHTML") for e in live])
            assert not driver.execute_script(stored_emphasis), name
            for snippet in shown:
                assert snippet in text, (name, snippet, text[:3000])
            if name == "leaderboard":  # the grid's cells and the chart's categories read as the names
                cells = set(_grid_cells(driver))
                ticks = {t.get_attribute("textContent") for t in
                         driver.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"] .xtick text')}
                assert set(HOSTILE_NAMES) <= cells and set(HOSTILE_NAMES) <= ticks, (cells, ticks)
