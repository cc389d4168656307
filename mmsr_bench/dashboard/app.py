"""The mmsr-bench dashboard: ``streamlit run mmsr_bench/dashboard/app.py`` with ``$MMSR_BENCH_DB`` naming the results store
(``bench dashboard [--db URL] [--port N]`` does this). The store is opened read-only. Where the project's reference runs
exist (``reference-runs/`` or ``$MMSR_BENCH_REFERENCE``), a sidebar toggle shows them beside the user's runs, marked
``(reference)``; it starts on while the local store is missing or empty (``?reference=0|1`` sets it)."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

if str(Path(__file__).resolve().parents[2]) not in sys.path:  # `streamlit run` puts only the app's folder on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmsr_bench.dashboard import queries as q
from mmsr_bench.dashboard import ui
from mmsr_bench.results.store import mask_url

PAGES_DIR = Path(__file__).resolve().parent / "app_pages"
PAGES = [("leaderboard.py", "Leaderboard", ":material/leaderboard:"),
         ("ablations.py", "Ablations", ":material/grid_on:"),
         ("compare.py", "Compare", ":material/compare_arrows:"),
         ("runs.py", "Runs", ":material/list:"),
         ("hallucination.py", "Hallucination", ":material/visibility:"),
         ("study.py", "Study", ":material/science:")]

st.set_page_config(page_title="mmsr-bench", page_icon=":material/leaderboard:", layout="wide")

try:  # which store(s) to show: the local one, the reference runs (sidebar toggle), or both
    src = ui.source()
except Exception as exc:  # noqa: BLE001 - an unreadable store is shown as a message, never a traceback
    st.title("mmsr-bench leaderboard")
    st.warning(f"Cannot read the results store {ui.md_code(mask_url(q.db_url_from_env()))}: {ui.md_text(exc)}")
    st.stop()
if src.url is None:  # nothing to show: the command that fills the store (and the toggle, where reference runs exist)
    if src.problem:
        st.sidebar.warning(src.problem)
    ui.empty_state(src.local_url, src.local_state, reference_offered=src.offered)
    st.stop()

nav = st.navigation([st.Page(PAGES_DIR / f, title=t, icon=i, default=(n == 0))
                     for n, (f, t, i) in enumerate(PAGES)])
nav.run()
