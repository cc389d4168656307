"""Streamlit glue shared by the pages: the store context, the empty state, and cached queries.

Every cached function takes the store URL and the store's :meth:`~mmsr_bench.results.store.Store.last_change` token as its
first arguments, so a cached answer is reused until a run or artifact is added, and then recomputed once.
"""

from __future__ import annotations

import dataclasses
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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
from mmsr_bench.results.tables import Table, strip_controls

CACHE = dict(show_spinner=False, max_entries=64)


#: Session-state key of the sidebar toggle "Show reference runs" (and the query parameter that sets its start value).
REFERENCE_KEY = "show_reference"
REFERENCE_PARAM = "reference"
_SOURCE_KEY = "_mmsr_source"  # this run's Source, resolved once by the entry point (app.py) for the page
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Side:
    """One side of what is shown: the user's own store, or the reference runs (a plain, unsuffixed store of them, for
    statistics that must compare each side only with its own runs)."""

    url: str
    token: str
    suffix: str  # what this side's model names carry in the shown store: "" or reference.SUFFIX

    def plain(self, model: str) -> str:
        return model[: -len(self.suffix)] if self.suffix and model.endswith(self.suffix) else model


@dataclass(frozen=True)
class Source:
    """Which store(s) this session shows, decided once per script run by :func:`source`."""

    local_url: str  # the user's store ($MMSR_BENCH_DB)
    local_state: str  # "missing", "empty" or "ready"
    url: str | None  # the store the pages read (the local one, the reference runs, or both merged); None: empty state
    reference_url: str | None = None  # the plain reference store, when the reference runs are shown
    reference_dir: Path | None = None
    offered: bool = False  # the reference folder exists (the toggle is shown)
    problem: str = ""  # why the reference runs cannot be shown although asked for (markdown, stored text escaped)


@dataclass(frozen=True)
class Context:
    url: str  # the store the pages read: the local store, the reference runs, or both merged (reference marked)
    token: str
    runs: pd.DataFrame  # every run, failed included
    local: Side | None = None  # the user's own store, when it has runs
    reference: Side | None = None  # the reference runs, when shown
    reference_dir: Path | None = None  # their folder, when shown

    @property
    def completed(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "completed"]

    def side_of(self, model: str) -> Side | None:
        """The side a shown model name belongs to (None when the page shows one store without reference runs)."""
        if self.reference is not None and model.endswith(self.reference.suffix):
            return self.reference
        return self.local

    def is_reference(self, model: str) -> bool:
        return self.reference is not None and model.endswith(self.reference.suffix)


@st.cache_resource(show_spinner=False)
def store_for(url: str) -> Store:
    return q.open_store(url)


def empty_state(url: str, state: str, *, reference_offered: bool = False) -> None:
    """What a new user sees: no store file, or a store without runs, and the command that fills it."""
    from mmsr_bench.results.store import mask_url

    st.title("mmsr-bench leaderboard")
    shown = mask_url(url)  # a password in the URL never reaches the page
    if state == "missing":
        st.info(f"No results store at {md_code(shown)} yet.")
    else:
        st.info(f"The results store {md_code(shown)} has no runs yet.")
    st.markdown("Run a model to fill it, then reload this page:")
    st.code(q.EMPTY_HINT + (f" --db {shown}" if url != q.default_db_url() else ""), language="bash")
    st.caption("The dashboard reads `$MMSR_BENCH_DB` (set by `bench dashboard --db URL`)."
               + (" Turn on **Show reference runs** in the sidebar to see this project's own runs meanwhile."
                  if reference_offered else ""))


# ------------------------------------------------------------------------------------- stored text as text
#
# Every Streamlit element that shows a string renders it as markdown (st.markdown, st.caption, st.title, st.info,
# st.warning, st.error, st.metric's value, ...): a stored name such as "[x](javascript:...)", "**bold**",
# "<img src=x onerror=...>", "www.example.com" or ":smile:" would become a link, formatting, HTML or an emoji. Stored
# text (model, dataset and suite names, code versions, hosts, error messages, notes and footers built from them)
# therefore reaches a page only through md_text (running text), md_code (a name in a code span), inert_table (a
# results table for tables.to_markdown) or a non-markdown element (st.dataframe, st.json, st.code, widget options);
# figures use queries.plot_text, download names file_name.

_WORD_JOINER = "\u2060"  # invisible; breaks what the text-level plugins look for in the unescaped text
_LIVE = re.compile(r"[\\\[\]*~$]|(?<![^\W_])_|_(?![^\W_])")  # links, images, emphasis, strikethrough, math, escapes
_BREAKS = ((re.compile(r":(?=[A-Za-z])"), r"\\:" + _WORD_JOINER),  # a directive (:red[..]), a shortcode, javascript:
           (re.compile(r":(?=//|[\w+/-]+:)"), ":" + _WORD_JOINER),  # an autolink (http://), an emoji shortcode (:+1:)
           (re.compile(r"(?i)(?<=www)(?=\.)"), _WORD_JOINER),  # an autolink (www.x.y)
           (re.compile(r"(?<=[-.\w+])@(?=[-\w]+\.[-\w])"), "@" + _WORD_JOINER))  # an e-mail autolink (a@b.c)
_LINE_START = re.compile(r"^(\s*)([-+=#])|^(\s*\d+)([.)])")  # a list item, heading or setext underline


def _inert(line: str, code: bool = True) -> str:
    """One line with the markdown syntax that would turn it into a link, image, emphasis, strikethrough, math,
    directive, literal autolink, emoji, block (list, heading) or (``code``) code span neutralized: backslash-escaped,
    or broken by an invisible word joiner where Streamlit finds it in the unescaped text (GFM's literal autolinks,
    emoji shortcodes). HTML is left to the caller. Ordinary names ("mllm-srec-qlora", "suite_hash: beauty=...",
    "hr@10", "blank:0.2") pass unchanged."""
    s = _LIVE.sub(r"\\\g<0>", line)
    if code:
        s = s.replace("`", "\\`")
    for pattern, repl in _BREAKS:
        s = pattern.sub(repl, s)
    return _LINE_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[2] else f"{m[3]}\\{m[4]}", s)


def md_text(text: object) -> str:
    """``text`` for any element that renders markdown, shown as exactly that text on one line (:func:`_inert`, and
    ``<``, ``>`` and ``&`` escaped: no tag, entity or quote; control characters removed)."""
    return re.sub(r"[<>&]", r"\\\g<0>", _inert(" ".join(strip_controls(str(text)).split())))


def inert_table(table: Table) -> Table:
    """``table`` with its stored text (title, column and group titles, row labels, footer) made inert for
    :func:`mmsr_bench.results.tables.to_markdown` shown by ``st.markdown(..., unsafe_allow_html=True)``: to_markdown
    escapes HTML and pipes, :func:`_inert` the markdown; a table of ordinary names comes out unchanged (the page shows
    the markdown ``bench report study`` prints). The footer's own `` `code` `` spans stay code (a backtick in a name
    there can only make more code, which is inert)."""
    def rows():
        for row in table.rows:
            yield tuple(_inert(c) if isinstance(c, str) else c for c in row)

    return dataclasses.replace(table, title=_inert(table.title), header=tuple(_inert(h) for h in table.header),
                               groups=tuple((_inert(g), w) for g, w in table.groups), rows=tuple(rows()),
                               footer="\n".join(_inert(line, code=False) for line in table.footer.splitlines()))


def file_name(name: str) -> str:
    """A download's file name from stored names (suite, model): letters, digits, ``.``, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip("._-")[:120] or "download"


def md_code(text: str) -> str:
    """``text`` as one inline code span, whatever backticks or line breaks it holds (a path, URL or stored name never
    turns into markdown: a code span shows its content as typed)."""
    text = " ".join(strip_controls(str(text)).split("\n"))
    fence = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _longest_backtick_run(text: str) -> int:
    best = cur = 0
    for ch in text:
        cur = cur + 1 if ch == "`" else 0
        best = max(best, cur)
    return best


#: A comma followed by the start of a new ``[GLOB:]key=`` pair; other commas belong to a value (a list such as
#: ``target_modules=q_proj,v_proj``).
_PAIR_START = re.compile(r",\s*(?=[A-Za-z0-9_*?\[\].-]+(?::[A-Za-z_][A-Za-z0-9_]*)?=)")


def split_sets(text: str) -> list[str]:
    """The ``--set`` pairs of a comma-separated configuration field: split only where a new ``key=`` (or
    ``GLOB:key=``) starts, so a list value keeps its commas."""
    return [p.strip() for p in _PAIR_START.split(text) if p.strip()]


def folder_label(folder: Path) -> str:
    """The reference folder as the user knows it: relative to the checkout (``reference-runs/``) when inside it."""
    from mmsr_bench.paths import REPO_ROOT

    try:
        rel = folder.resolve().relative_to(REPO_ROOT.resolve())
    except ValueError:
        return str(folder)
    return f"{rel.as_posix()}/"


def _query_flag(name: str) -> bool | None:
    raw = str(st.query_params.get(name, "")).strip().lower()
    return True if raw in _TRUE else False if raw in _FALSE else None


def _signature(folder: Path) -> tuple:
    """A cheap key of the folder's run files (names, sizes, modification times): the cached URLs below are looked
    up again (and the folder's digest recomputed by :mod:`mmsr_bench.results.reference`) only when it changes."""
    out = []
    for p in sorted(folder.rglob("*.json")):
        try:
            st_ = p.stat()
        except OSError:
            continue
        out.append((p.relative_to(folder).as_posix(), st_.st_size, st_.st_mtime_ns))
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=8)
def _reference_url(folder: str, signature: tuple) -> str:
    from mmsr_bench.results import reference

    return reference.reference_url(Path(folder))


@st.cache_data(show_spinner=False, max_entries=8)
def _merged_url(local_url: str | None, local_token: str, folder: str, signature: tuple) -> str:
    """The shown store with the reference runs: merged with the local store's runs, or (``local_url`` None) the
    reference runs alone, their model names carrying the suffix either way."""
    from mmsr_bench.results import reference

    local = store_for(local_url) if local_url else Store(_no_runs_url(), read_only=True)
    return reference.merged_url(local, Path(folder))


def _no_runs_url() -> str:
    """An empty store in the cache home: the "local side" merged with the reference runs when the user has none (so
    the reference runs are marked the same way before and after the first local run)."""
    from mmsr_bench.results import reference

    return reference.cached_store("no-local-runs", Store)


def _fresh(fn, *args) -> str:
    """A cached store URL whose file still exists (a cleared cache home is rebuilt, not read as missing)."""
    url = fn(*args)
    path = q.sqlite_path(url)
    if path is not None and not path.is_file():
        fn.clear()
        url = fn(*args)
    return url


def source() -> Source:
    """Decide which store(s) this session shows, rendering the sidebar toggle "Show reference runs" (offered when the
    reference folder exists; on by default while the local store is missing or empty, off once it has runs; the
    query parameter ``?reference=1`` / ``?reference=0`` sets its start value). Called by the entry point before the
    page; :func:`context` reuses the answer. Raises what reading the local store raises."""
    from mmsr_bench.results import reference

    url = q.db_url_from_env()
    state = q.store_state(url)
    folder = reference.reference_dir()
    src = Source(url, state, url if state == "ready" else None)
    if folder.is_dir():
        src = Source(url, state, src.url, offered=True)
        asked = _query_flag(REFERENCE_PARAM)
        default = (state != "ready") if asked is None else asked
        on = st.sidebar.toggle(
            "Show reference runs", value=default, key=REFERENCE_KEY,
            help=f"This project's own runs, kept as run files in {md_code(folder_label(folder))} (set "
                 f"`${reference.ENV}` for another folder), shown beside yours with "
                 f"{md_code(reference.SUFFIX.strip())} after the model name. Significance marks compare each side "
                 "only with its own runs unless you ask for more.")
        if on:
            try:
                sig = _signature(folder)
                ref_url = _fresh(_reference_url, str(folder), sig)
                local_token = store_for(url).last_change() if state == "ready" else ""
                shown = _fresh(_merged_url, url if state == "ready" else None, local_token, str(folder), sig)
                if q.store_state(shown) == "ready":
                    src = Source(url, state, shown, ref_url, folder, offered=True)
            except BenchError as exc:
                src = Source(url, state, src.url, offered=True, problem=f"reference runs not shown: {md_text(exc)}")
    elif _query_flag(REFERENCE_PARAM):
        src = Source(url, state, src.url, problem=f"no reference runs at {md_code(folder)} (set "
                                                  f"`${reference.ENV}` to a folder of run files)")
    st.session_state[_SOURCE_KEY] = src
    return src


def context() -> Context:
    """The store(s) behind this session; shows the empty state and stops the page when there is nothing to show."""
    from mmsr_bench.results import reference
    from mmsr_bench.results.store import mask_url

    src = st.session_state.get(_SOURCE_KEY)
    if src is None:  # a page run without the entry point
        try:
            src = source()
        except BenchError as exc:
            st.error(md_text(exc))
            st.stop()
    if src.problem:
        st.sidebar.warning(src.problem)
    if src.url is None:
        empty_state(src.local_url, src.local_state, reference_offered=src.offered)
        st.stop()
    token = store_for(src.url).last_change()
    runs = runs_df(src.url, token)
    local = reference_side = None
    if src.local_state == "ready":
        local = Side(src.local_url, store_for(src.local_url).last_change(), "")
    if src.reference_url is not None:
        reference_side = Side(src.reference_url, store_for(src.reference_url).last_change(), reference.SUFFIX)
    ctx = Context(src.url, token, runs, local, reference_side, src.reference_dir)
    completed = int((runs["status"] == "completed").sum())
    lines = []
    if local is not None:
        n_local = int((~runs["model"].str.endswith(reference.SUFFIX)).sum()) if reference_side else len(runs)
        lines.append(f"your store {md_code(mask_url(src.local_url))} ({n_local} runs)")
    if reference_side is not None:
        n_ref = int(runs["model"].str.endswith(reference.SUFFIX).sum())
        lines.append(f"reference runs from {md_code(folder_label(src.reference_dir))} ({n_ref} runs), "
                     f"marked {md_code(reference.SUFFIX.strip())}")
        if local is None:
            lines.append(f"your store {md_code(mask_url(src.local_url))} "
                         + ("does not exist yet" if src.local_state == "missing" else "has no runs yet"))
    lines.append(f"{len(runs)} runs · {completed} completed")
    st.sidebar.caption("  \n".join(lines))
    return ctx


@contextmanager
def guard() -> Iterator[None]:
    """Bad requests (incomparable runs, malformed artifacts) become a warning on the page, not a traceback."""
    try:
        yield
    except BenchError as exc:
        st.warning(md_text(exc))


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
          against: str | None, test: str, alpha: float, mark_only: tuple[str, ...] | None = None) -> tuple[Board, str]:
    return q.leaderboard(store_for(url), suite, list(datasets), list(metrics), against, test, alpha, mark_only)


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
def tunings(url: str, token: str):
    """The store's tuning studies and their trials (``bench tune``)."""
    return q.tuning_frames(store_for(url))


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
    """(label, data, file name, mime) -> one download button per column (file names made safe by :func:`file_name`)."""
    for col, (label, data, name, mime) in zip(st.columns(len(items)), items):
        col.download_button(label, data, file_name=file_name(name), mime=mime, key=f"dl_{name}")


def pretty_json(text: str) -> str:
    return json.dumps(json.loads(text or "{}"), indent=2, sort_keys=True)


def finite(x: float) -> bool:
    return x is not None and bool(np.isfinite(x))
