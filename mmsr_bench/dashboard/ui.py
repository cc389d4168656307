"""Streamlit glue shared by the pages: the store context, the empty state, and cached queries.

Every cached function takes the store URL and the store's :meth:`~mmsr_bench.results.store.Store.last_change` token as its
first arguments, so a cached answer is reused until a run or artifact is added, and then recomputed once.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import streamlit as st

from mmsr_bench.dashboard import queries as q
from mmsr_bench.errors import BenchError
from mmsr_bench.results import ablations as ablation_report
from mmsr_bench.results.ablations import Ablation
from mmsr_bench.results.leaderboard import Board
from mmsr_bench.results.store import Store

CACHE = dict(show_spinner=False, max_entries=64)


@dataclass(frozen=True)
class Context:
    url: str
    token: str
    runs: pd.DataFrame  # every run, failed included

    @property
    def completed(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "completed"]


@st.cache_resource(show_spinner=False)
def store_for(url: str) -> Store:
    return q.open_store(url)


def empty_state(url: str, state: str) -> None:
    """What a new user sees: no store file, or a store without runs, and the command that fills it."""
    from mmsr_bench.results.store import mask_url

    st.title("mmsr-bench leaderboard")
    shown = mask_url(url)  # a password in the URL never reaches the page
    if state == "missing":
        st.info(f"No results store at `{shown}` yet.")
    else:
        st.info(f"The results store `{shown}` has no runs yet.")
    st.markdown("Run a model to fill it, then reload this page:")
    st.code(q.EMPTY_HINT + (f" --db {shown}" if url != q.default_db_url() else ""), language="bash")
    st.caption("The dashboard reads `$MMSR_BENCH_DB` (set by `bench dashboard --db URL`).")


def context() -> Context:
    """The store behind this session; shows the empty state and stops the page when there is nothing to show."""
    url = q.db_url_from_env()
    try:
        state = q.store_state(url)
    except BenchError as exc:
        st.error(str(exc))
        st.stop()
    if state != "ready":
        empty_state(url, state)
        st.stop()
    token = store_for(url).last_change()
    ctx = Context(url, token, runs_df(url, token))
    st.sidebar.caption(f"store `{url}`  \n{len(ctx.runs)} runs · {int((ctx.runs['status'] == 'completed').sum())}"
                       f" completed")
    return ctx


@contextmanager
def guard() -> Iterator[None]:
    """Bad requests (incomparable runs, malformed artifacts) become a warning on the page, not a traceback."""
    try:
        yield
    except BenchError as exc:
        st.warning(str(exc))


def pick(label: str, options: list, key: str, default=None, **kw):
    """A selectbox whose stored choice survives option changes (falls back to ``default`` or the first option)."""
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    index = options.index(default) if default in options else 0
    return st.selectbox(label, options, index=index, key=key, **kw)


def pick_many(label: str, options: list, key: str, default: list, **kw) -> list:
    if key in st.session_state:
        kept = [o for o in st.session_state[key] if o in options]
        if kept != st.session_state[key]:
            st.session_state[key] = kept
        return st.multiselect(label, options, key=key, **kw)
    return st.multiselect(label, options, default=[d for d in default if d in options], key=key, **kw)


# ----------------------------------------------------------------------------------------------- cached queries


@st.cache_data(**CACHE)
def runs_df(url: str, token: str) -> pd.DataFrame:
    return q.runs_frame(store_for(url))


@st.cache_data(**CACHE)
def metric_names(url: str, token: str, suite: str | None = None) -> list[str]:
    runs = runs_df(url, token)
    runs = runs[(runs["status"] == "completed") & ((runs["suite"] == suite) if suite else True)]
    return q.metric_names(runs)


@st.cache_data(**CACHE)
def board(url: str, token: str, suite: str, datasets: tuple[str, ...], metrics: tuple[str, ...],
          against: str | None, test: str, alpha: float) -> tuple[Board, str]:
    return q.leaderboard(store_for(url), suite, list(datasets), list(metrics), against, test, alpha)


@st.cache_data(**CACHE)
def ablation(url: str, token: str, suite: str, base: str, prefix: str, metrics: tuple[str, ...], test: str,
             alpha: float) -> Ablation:
    """The function behind ``bench report ablations`` (same defaults), so page and report show the same numbers."""
    return ablation_report.compute(store_for(url), suite, base, prefix=prefix, metrics=list(metrics), test=test,
                                   alpha=alpha)


@st.cache_data(**CACHE)
def comparison(url: str, token: str, a: int, b: int, test: str, correction: str, alpha: float):
    return q.comparison(store_for(url), a, b, test=test, correction=correction, alpha=alpha)


@st.cache_data(**CACHE)
def run_detail(url: str, token: str, run_id: int):
    return store_for(url).run(run_id)


@st.cache_data(**CACHE)
def hallucination(url: str, token: str) -> tuple[list[q.HallucinationPayload], list[str]]:
    """Parsed hallucination artifacts, plus one message per malformed artifact (shown, not raised)."""
    good, bad = [], []
    for art in store_for(url).artifacts(kind="hallucination"):
        try:
            good.append(q.parse_hallucination(art))
        except BenchError as exc:
            bad.append(str(exc))
    return good, bad


@st.cache_data(**CACHE)
def curves(url: str, token: str, suite: str, metric: str) -> pd.DataFrame:
    return q.perturbation_curves(store_for(url), suite, metric)


def download_row(items: list[tuple[str, str, str, str]]) -> None:
    """(label, data, file name, mime) -> one download button per column."""
    for col, (label, data, name, mime) in zip(st.columns(len(items)), items):
        col.download_button(label, data, file_name=name, mime=mime, key=f"dl_{name}")


def pretty_json(text: str) -> str:
    return json.dumps(json.loads(text or "{}"), indent=2, sort_keys=True)


def finite(x: float) -> bool:
    return x is not None and bool(np.isfinite(x))
