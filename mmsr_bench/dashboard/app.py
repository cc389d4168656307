"""The mmsr-bench dashboard: ``streamlit run mmsr_bench/dashboard/app.py`` with ``$MMSR_BENCH_DB`` naming the results store
(``bench dashboard [--db URL] [--port N]`` does this). The store is opened read-only."""

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

url = q.db_url_from_env()
try:
    state = q.store_state(url)
except Exception as exc:  # noqa: BLE001 - an unreadable store is shown as a message, never a traceback
    st.title("mmsr-bench leaderboard")
    st.warning(f"Cannot read the results store `{mask_url(url)}`: {exc}")
    st.stop()
if state != "ready":
    ui.empty_state(url, state)
    st.stop()

nav = st.navigation([st.Page(PAGES_DIR / f, title=t, icon=i, default=(n == 0))
                     for n, (f, t, i) in enumerate(PAGES)])
nav.run()
