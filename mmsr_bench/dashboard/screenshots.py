"""Serve the dashboard on a free loopback port and drive it with headless Chromium: screenshots of every page for
the docs, and the plumbing of the real-browser test.

Usage::

    python -m mmsr_bench.dashboard.screenshots --db sqlite:///results.db --out docs/screenshots [--against sasrec] \
        [--study-sets backbone=smollm2-135m,dtype=bfloat16]
    python -m mmsr_bench.dashboard.screenshots --demo --out /tmp/shots      # against a synthetic fixture store
    python -m mmsr_bench.dashboard.screenshots --db sqlite:///none.db --reference --out /tmp/shots  # reference runs
    python -m mmsr_bench.dashboard.screenshots --demo --reference --out /tmp/shots  # demo store + demo reference runs

``--reference`` opens every page with the sidebar toggle "Show reference runs" on (``?reference=1``), reading the
reference runs of ``--reference-dir`` (default: ``$MMSR_BENCH_REFERENCE`` or the checkout's ``reference-runs/``).

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``) and selenium.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mmsr_bench.errors import BenchError

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars")


@dataclass(frozen=True)
class PageSpec:
    path: str  # URL path under the server root ("" = the default page)
    title: str  # the page's st.title
    name: str  # screenshot file stem


PAGES = (PageSpec("", "Leaderboard", "leaderboard"), PageSpec("ablations", "Ablations", "ablations"),
         PageSpec("compare", "Compare two runs", "compare"), PageSpec("runs", "Runs", "runs"),
         PageSpec("hallucination", "Hallucination and robustness", "hallucination"), PageSpec("study", "Study", "study"))


def browser_missing() -> str | None:
    """Why a real-browser session cannot start here, or None when it can."""
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: install it with `apt-get install -y {pkg}`"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(db_url: str, *, port: int | None = None, timeout: float = 60.0,
          reference_dir: Path | None = None) -> Iterator[str]:
    """Run ``streamlit run mmsr_bench/dashboard/app.py`` (the command of :func:`mmsr_bench.dashboard.launch`) on 127.0.0.1 against
    ``db_url`` (and the reference runs of ``reference_dir`` when given, else those of ``$MMSR_BENCH_REFERENCE`` or
    ``reference-runs/``) and yield its base URL once the health endpoint answers; the server is stopped on exit."""
    from mmsr_bench.dashboard import streamlit_command
    from mmsr_bench.results.reference import ENV as REFERENCE_ENV

    port = port or free_port()
    env = dict(os.environ, MMSR_BENCH_DB=db_url)
    if reference_dir is not None:
        env[REFERENCE_ENV] = str(Path(reference_dir).resolve())
    log_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(streamlit_command(port), env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log_file.seek(0)
                raise BenchError(f"the dashboard server exited with {proc.returncode}: "
                                 f"{log_file.read().decode(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as resp:  # noqa: S310 - loopback
                    if resp.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"the dashboard did not answer on {base} within {timeout:.0f} s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log_file.close()


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A headless Chromium driven by chromedriver with a fresh, throw-away profile."""
    reason = browser_missing()
    if reason:
        raise BenchError(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mmsr-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def load_page(driver, base: str, page: PageSpec, timeout: float = 120.0, query: str = "") -> str:
    """Open a page and wait (bounded) until its script finished, its title is shown and its charts are drawn;
    returns the page's visible text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/{page.path}{query}")
    wait = WebDriverWait(driver, timeout, poll_frequency=0.25)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="stApp"]')))
    wait.until(lambda d: any(h.text.strip() == page.title for h in d.find_elements(By.TAG_NAME, "h1")))
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-testid="stApp"]')
               .get_attribute("data-test-script-state") == "notRunning")
    wait.until(lambda d: all(c.find_elements(By.CSS_SELECTOR, ".main-svg")
                             for c in d.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]')))
    time.sleep(1.0)  # canvas-drawn tables and chart transitions settle
    return driver.find_element(By.TAG_NAME, "body").text


def full_page_screenshot(driver, path: Path, width: int = 1400, max_height: int = 6000) -> Path:
    """Resize the window to the app's scroll height (Streamlit scrolls inside its main container) and save a PNG."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]') || "
        "document.querySelector('[data-testid=\"stAppViewContainer\"]');"
        "return Math.max(m ? m.scrollHeight : 0, document.body.scrollHeight);")
    driver.set_window_size(width, min(max_height, int(height) + 120))
    time.sleep(0.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise BenchError(f"chromium could not write the screenshot {path}")
    driver.set_window_size(width, 1000)
    return path


def page_query(page: PageSpec, *, against: str | None = None, study_sets: str | None = None,
               reference: bool | None = None, study_suite: str | None = None) -> str:
    """The query string a page opens with: the leaderboard's significance model, the Study page's ``--set`` pairs,
    and on every page the "Show reference runs" toggle when ``reference`` is given (``reference=1`` / ``0``)."""
    from urllib.parse import urlencode

    params = {"leaderboard": {"against": against},
              "study": {"suite": study_suite, "sets": study_sets}}.get(page.name, {})
    params = {k: v for k, v in params.items() if v}
    if reference is not None:
        params["reference"] = "1" if reference else "0"
    return f"?{urlencode(params)}" if params else ""


def take_screenshots(db_url: str, out_dir: Path, *, width: int = 1400, against: str | None = None,
                     study_sets: str | None = None, reference: bool | None = None,
                     reference_dir: Path | None = None, study_suite: str | None = None) -> list[Path]:
    """One PNG per dashboard page (``<out_dir>/<page>.png``) of the store at ``db_url``; ``against`` opens the
    leaderboard with significance markers against that model (``?against=MODEL``), ``study_sets`` the Study page
    on the runs of that configuration (``?sets=k=v,...``, as ``bench report study --set``), ``reference`` every page
    with the reference runs shown (True) or hidden (False) rather than the toggle's default, read from
    ``reference_dir`` (default ``$MMSR_BENCH_REFERENCE`` or ``reference-runs/``)."""
    if reference:
        from mmsr_bench.results.reference import ENV as REFERENCE_ENV
        from mmsr_bench.results.reference import reference_dir as default_reference_dir

        folder = Path(reference_dir) if reference_dir is not None else default_reference_dir()
        if not folder.is_dir():
            raise BenchError(f"--reference: no reference runs at {folder} (give --reference-dir or set "
                             f"${REFERENCE_ENV})")
    out_dir = Path(out_dir)
    written = []
    with serve(db_url, reference_dir=reference_dir) as base, chromium(width) as driver:
        for page in PAGES:
            load_page(driver, base, page, query=page_query(page, against=against, study_sets=study_sets,
                                                           study_suite=study_suite,
                                                           reference=reference))
            written.append(full_page_screenshot(driver, out_dir / f"{page.name}.png", width))
            log.info("wrote %s", written[-1])
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Screenshots of every dashboard page (headless Chromium).")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="SQLAlchemy URL of the results store, e.g. sqlite:///results.db")
    src.add_argument("--demo", action="store_true", help="use a synthetic fixture store (demo data)")
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="output folder")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--against", help="reference model for the leaderboard's significance markers")
    ap.add_argument("--study-suite", help="the suite the Study page opens on (?suite=NAME)")
    ap.add_argument("--study-sets", help="the Study page's configuration: the runs' --set pairs, comma-separated "
                                         "(e.g. backbone=smollm2-135m,dtype=bfloat16)")
    ap.add_argument("--reference", action=argparse.BooleanOptionalAction, default=None,
                    help="turn the sidebar toggle 'Show reference runs' on (--reference) or off (--no-reference) on "
                         "every page (default: the dashboard's own default, on while the store is missing or empty)")
    ap.add_argument("--reference-dir", type=Path,
                    help="the folder of reference run files (default: $MMSR_BENCH_REFERENCE or reference-runs/; "
                         "with --demo --reference: simulated reference runs)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.demo:
            from mmsr_bench.dashboard.fixture import build_fixture_store, build_reference_folder

            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'demo.db'}"
                build_fixture_store(url)
                ref_dir = args.reference_dir
                if args.reference and ref_dir is None:  # simulated reference runs beside the demo store
                    ref_dir = build_reference_folder(Path(tmp) / "reference-runs")
                take_screenshots(url, args.out, width=args.width, against=args.against or "sasrec",
                                 study_sets=args.study_sets, reference=args.reference, reference_dir=ref_dir)
        else:
            take_screenshots(args.db, args.out, width=args.width, against=args.against, study_sets=args.study_sets,
                             study_suite=args.study_suite,
                             reference=args.reference, reference_dir=args.reference_dir)
    except BenchError as exc:
        log.error("error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
