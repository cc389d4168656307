"""Data and figures behind the dashboard pages, free of Streamlit so they can be tested and timed directly.

Everything reads the results store through :class:`mmsr_bench.results.store.Store` opened read-only, and every table comes
from the harness' own builders (:func:`mmsr_bench.results.leaderboard.build_board`, :func:`mmsr_bench.results.significance.compare`,
:func:`mmsr_bench.results.significance.mark_board`) so the dashboard can never disagree with ``bench leaderboard`` or
``bench compare``. The Streamlit layer (:mod:`mmsr_bench.dashboard.ui`) wraps these functions in ``st.cache_data`` keyed
on :meth:`Store.last_change`.

Why one module of this length: every read the dashboard pages make, kept apart from the pages so that they are
tested and timed without Streamlit.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sqlalchemy.engine import make_url

from mmsr_bench.errors import BenchError
from mmsr_bench.paths import default_db_url
from mmsr_bench.results import ablations as ablation_report
from mmsr_bench.results.ablations import AblationCell
from mmsr_bench.results.leaderboard import Board, build_board, latest_runs, summarize_seeds
from mmsr_bench.results.significance import compare, mark_board
from mmsr_bench.results.store import Artifact, Run, Store
from mmsr_bench.results.tables import Cell as TableCell
from mmsr_bench.results.tables import plain_text, strip_controls

log = logging.getLogger(__name__)

EMPTY_HINT = "bench run --suite synth4 --model pop"
RUN_COLUMNS = ["id", "suite", "dataset", "model", "variant", "seed", "status", "started_at", "finished_at",
               "fit_seconds", "score_seconds", "peak_memory_mb", "device", "host", "code_version", "code_dirty",
               "n_users", "group_id", "suite_hash", "config_hash", "error"]
BEST_STYLE = "font-weight: bold; background-color: rgba(46, 160, 67, 0.25)"
_VARIANT_RE = re.compile(r"^(?P<kind>[A-Za-z_][\w\-]*):(?P<share>[0-9]*\.?[0-9]+)$")


# --------------------------------------------------------------------------------------------------- the store


def db_url_from_env() -> str:
    """The store the dashboard shows: ``$MMSR_BENCH_DB`` (set by ``bench dashboard --db``), else the default."""
    return os.environ.get("MMSR_BENCH_DB") or default_db_url()


def sqlite_path(url: str) -> Path | None:
    """The file behind a file-based SQLite URL; None for other databases and in-memory SQLite."""
    try:
        u = make_url(url)
    except Exception:  # noqa: BLE001 - Store reports a bad URL with a proper message
        return None
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:":
        return None
    db = u.database[5:] if u.database.startswith("file:") else u.database
    return Path(db.split("?", 1)[0])


def readonly_url(url: str) -> str:
    """A SQLite file URL rewritten to open the file with ``mode=ro`` so the dashboard can never write (or create)
    it; other URLs are returned unchanged (a read-only Store runs PostgreSQL transactions read-only itself)."""
    path = sqlite_path(url)
    if path is None or make_url(url).query.get("uri"):
        return url
    return f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"


def store_state(url: str) -> str:
    """"missing" (no such SQLite file), "empty" (no completed or failed run yet) or "ready"."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return "missing"
    token = open_store(url).last_change()
    return "empty" if token == "empty" or token.split(":")[0] == "0" else "ready"


def open_store(url: str) -> Store:
    """The store at ``url``, opened read-only (no table creation; SQLite files in ``mode=ro``, PostgreSQL sessions
    with ``default_transaction_read_only``)."""
    return Store(readonly_url(url), read_only=True)


# ------------------------------------------------------------------------------------------------------ runs


def runs_frame(store: Store) -> pd.DataFrame:
    """Every run (completed and failed) as one row; metrics, config, packages and run info as JSON text."""
    runs = store.runs(status=None)
    rows = []
    for r in runs:
        row = {c: getattr(r, c) for c in RUN_COLUMNS}
        row.update(metrics_json=r.metrics_json, config_json=r.config_json, packages_json=r.packages_json,
                   run_info_json=r.run_info_json)
        rows.append(row)
    df = pd.DataFrame(rows, columns=RUN_COLUMNS + ["metrics_json", "config_json", "packages_json", "run_info_json"])
    df["label"] = run_labels(df)
    return df


def tuning_frames(store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per tuning study of ``bench tune``, one row per trial): empty frames for a store without any."""
    studies, trials = [], []
    for t in store.tunings():
        rows = store.trials(t.id)
        budget = json.loads(t.budget_json or "{}")
        studies.append({"study": t.uuid[:10], "suite": t.suite, "dataset": t.dataset, "model": t.model,
                        "sampler": t.sampler, "pruner": t.pruner, "metric": t.metric,
                        "budget": (f"{budget['trials']} trials" if budget.get("trials")
                                   else f"{budget.get('minutes', 0):g} min"),
                        "complete": sum(x.state == "complete" for x in rows),
                        "pruned": sum(x.state == "pruned" for x in rows),
                        "failed": sum(x.state == "failed" for x in rows),
                        "minutes": sum(x.seconds for x in rows) / 60.0, "best": t.best_value,
                        "best trial": t.best_trial})
        for x in rows:
            sel = json.loads(x.selection_json or "{}")
            trials.append({"study": t.uuid[:10], "model": t.model, "trial": x.number, "state": x.state,
                           "value": x.value, "kept": sel.get("chosen"), "of": sel.get("last"),
                           "stopped by": sel.get("stopped_by", ""), "seconds": x.seconds,
                           "params": x.params_json, "error": x.error})
    return pd.DataFrame(studies), pd.DataFrame(trials)


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """'#12 sasrec [blank:0.2] synth4/beauty seed 0' per run: the runs' names in pickers (vectorized)."""
    if runs.empty:
        return pd.Series([], dtype=object, index=runs.index)
    variant = runs["variant"].map(lambda v: f" [{v}]" if v else "")
    status = runs["status"].map(lambda s: "" if s == "completed" else f" ({s})")
    return ("#" + runs["id"].astype(str) + " " + runs["model"] + variant + " " + runs["suite"] + "/"
            + runs["dataset"] + " seed " + runs["seed"].astype(str) + status)


def metric_names(runs: pd.DataFrame) -> list[str]:
    """Metric names present in the runs, in the leaderboard's order (hr, recall, ndcg, mrr, auc by cutoff)."""
    from mmsr_bench.results.leaderboard import _metric_order

    names: set[str] = set()
    for text in runs["metrics_json"].unique():
        names.update(json.loads(text))
    return sorted(names, key=_metric_order)


def default_pair(runs: pd.DataFrame, metric: str = "ndcg@10") -> tuple[int | None, int | None]:
    """A telling default for the Compare page: the best untagged run on ``metric`` against the best run of another
    model with the same seed (None where there is no such run)."""
    plain = runs[(runs["variant"] == "") & (runs["status"] == "completed")]
    if plain.empty:
        return None, None
    score = plain["metrics_json"].map(lambda t: json.loads(t).get(metric, -math.inf))
    ranked = plain.assign(_score=score).sort_values(["_score", "id"], ascending=False)
    a = ranked.iloc[0]
    rest = ranked[(ranked["model"] != a["model"]) & (ranked["seed"] == a["seed"])]
    return int(a["id"]), (int(rest.iloc[0]["id"]) if not rest.empty else None)


def runs_table(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The Runs page table: the run columns plus one column per requested metric."""
    table = runs[RUN_COLUMNS].copy()
    parsed = [json.loads(t) for t in runs["metrics_json"]]
    for m in metrics:
        table[m] = [p.get(m, math.nan) for p in parsed]
    return table


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """Nested dict -> {"a.b.c": value}; lists are kept as JSON text so they compare as one value."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v
    return out


def config_diff(a: Run, b: Run) -> pd.DataFrame:
    """Keys whose value differs between two runs, over model, variant, seed, config, run info and packages."""
    def facts(r: Run) -> dict[str, object]:
        out: dict[str, object] = {"model": r.model, "variant": r.variant, "seed": r.seed, "suite": r.suite,
                                  "dataset": r.dataset, "suite_hash": r.suite_hash, "code_version": r.code_version,
                                  "code_dirty": r.code_dirty, "device": r.device, "host": r.host}
        out.update(flatten(r.config, "config."))
        out.update(flatten(r.run_info, "run_info."))
        out.update(flatten(json.loads(r.packages_json or "{}"), "packages."))
        return out

    fa, fb = facts(a), facts(b)
    missing = "(absent)"
    rows = [{"key": k, f"run {a.id}": str(fa.get(k, missing)), f"run {b.id}": str(fb.get(k, missing))}
            for k in sorted(set(fa) | set(fb)) if fa.get(k, missing) != fb.get(k, missing)]
    return pd.DataFrame(rows, columns=["key", f"run {a.id}", f"run {b.id}"])


# ------------------------------------------------------------------------------------------------ leaderboard


def leaderboard(store: Store, suite: str, datasets: list[str], metrics: list[str], against: str | None = None,
                test: str = "t", alpha: float = 0.05, mark_only: Sequence[str] | None = None) -> tuple[Board, str]:
    """The harness leaderboard, with significance markers against ``against`` (mark_board) when one is given;
    ``mark_only`` limits the tested rows to those models (the reference model's own side, so that reference runs
    and the user's runs are never tested against each other unless asked)."""
    board = build_board(store, suite, datasets or None, metrics or None)
    footer = ""
    if against and board.models and board.datasets and board.metrics:
        if mark_only is None:
            footer = mark_board(store, board, against, alpha=alpha, test=test)
        else:  # the same cells dict: marks set on the sub-board show on the whole board
            keep = set(mark_only) | {against}
            sub = dataclasses.replace(board, models=[m for m in board.models if m in keep])
            footer = mark_board(store, sub, against, alpha=alpha, test=test)
    return board, footer


def board_frames(board: Board, digits: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric means, display text "mean ± ci ▲") with one row per model, one column per dataset/metric; the
    numeric frame drives sorting and best-value highlighting, the text frame what is shown."""
    from mmsr_bench.results.leaderboard import fmt_cell

    multi = len(board.datasets) > 1
    cols = [(d, m) for d in board.datasets for m in board.metrics]
    names = [f"{d}/{m}" if multi else m for d, m in cols]
    labels = pd.Index([board.label(mo) for mo in board.models], name="model")  # with the not-converged mark
    num = pd.DataFrame([[board.value(mo, d, m) for d, m in cols] for mo in board.models], columns=names,
                       index=labels, dtype=float)
    text = pd.DataFrame([[fmt_cell(board.cells.get((mo, d, m)), digits) for d, m in cols] for mo in board.models],
                        columns=names, index=labels)
    return num, text


def best_models(num: pd.DataFrame) -> dict[str, str]:
    """Column -> the model with the highest mean (the bold cell)."""
    return {c: str(num[c].idxmax()) for c in num.columns if num[c].notna().any()}


def styled_board(board: Board, digits: int = 4):
    """A pandas Styler over the numeric means (so the table sorts numerically) whose cells display the harness'
    text ("mean ± ci" plus ▲/▼ markers), the best value of each column bold on a tinted background."""
    num, text = board_frames(board, digits)
    best = best_models(num)

    def highlight(col: pd.Series) -> list[str]:
        return [BEST_STYLE if best.get(col.name) == idx else "" for idx in col.index]

    styler = num.style.apply(highlight, axis=0)
    # Styler.format hands a formatter the value only: one value -> text lookup per column, and a per-cell
    # formatter just for cells whose mean ties with another model's but whose text (CI, marker) differs.
    for col in num.columns:
        lookup: dict[object, str] = {}
        clashes = []
        for idx in num.index:
            key = _key(num.at[idx, col])
            if lookup.setdefault(key, text.at[idx, col]) != text.at[idx, col]:
                clashes.append(idx)
        styler = styler.format(lambda v, lookup=lookup: lookup[_key(v)], subset=[col])
        for idx in clashes:
            styler = styler.format(lambda _v, s=text.at[idx, col]: s, subset=pd.IndexSlice[[idx], [col]])
    return styler


def _key(v: object) -> object:
    return "nan" if pd.isna(v) else float(v)


def plot_text(text: object) -> str:
    """Stored text (a model, dataset, suite or metric name) for a plotly title, label, legend entry, category or hover
    text, which plotly.js renders as HTML-like markup (``<b>``, ``<a href>``, ``<br>``, entities): HTML-escaped, so
    it is shown as typed (plotly decodes ``&lt;`` and ``&amp;`` back to the characters), control characters
    removed."""
    return html.escape(strip_controls(str(text)), quote=False)


def bar_figure(board: Board, metric: str) -> go.Figure:
    """Grouped bars of one metric per model and dataset with 95% CI error bars across seeds."""
    fig = go.Figure()
    models = [plot_text(mo) for mo in board.models]
    for d in board.datasets:
        cells = [board.cells.get((mo, d, metric)) for mo in board.models]
        fig.add_trace(go.Bar(
            name=plot_text(d), x=models, y=[c.mean if c else None for c in cells],
            error_y=dict(type="data", visible=True,
                         array=[(0.0 if (c is None or math.isnan(c.half_width)) else c.half_width) for c in cells]),
            text=[(c.marker.replace("+", "▲").replace("-", "▼") if c else "") for c in cells],
            textposition="outside",
            hovertemplate="%{x}<br>" + plot_text(d) + " " + plot_text(metric) + " = %{y:.4f}<extra></extra>"))
    fig.update_layout(barmode="group", title=f"{plot_text(board.suite)}: {plot_text(metric)} (mean ± 95% CI across "
                                             "seeds)",
                      yaxis_title=plot_text(metric), xaxis_title="model", legend_title="dataset", height=420,
                      margin=dict(l=40, r=20, t=60, b=40))
    return fig


# ------------------------------------------------------------------------------------------------- ablations


# the statistics live in mmsr_bench.results.ablations (also behind `bench report ablations`); these are the page's views
family_prefix = ablation_report.family_prefix


def suffixed_ablation(ab: ablation_report.Ablation, suffix: str) -> ablation_report.Ablation:
    """An ablation computed on one side's own store (the plain reference runs) with that side's marked names: the base
    and every variant carry ``suffix`` ("sasrec (reference)", "mllm-srec-qlora (reference) [blank:0.2]")."""
    if not suffix:
        return ab

    def name(label: str) -> str:
        model, sep, tag = label.partition(" [")
        return f"{model}{suffix}{sep}{tag}"

    cells = tuple(dataclasses.replace(c, variant=name(c.variant)) for c in ab.cells)
    return dataclasses.replace(ab, base=ab.base + suffix, cells=cells)


def ablation_frame(cells: Sequence[AblationCell]) -> pd.DataFrame:
    return pd.DataFrame([{**c.__dict__, "marker": c.marker} for c in cells],
                        columns=["dataset", "variant", "metric", "base_mean", "mean", "rel_change", "p_corrected",
                                 "significant", "marker"])


def heatmap_figure(df: pd.DataFrame, dataset: str, base: str, metrics: list[str]) -> go.Figure:
    """Variants x metrics, colour = relative change against the base (diverging at 0), text = change and the
    report's ▲/▼ marker where the corrected paired test is significant."""
    sub = df[df["dataset"] == dataset]
    variants = list(dict.fromkeys(sub["variant"]))
    ms = [m for m in metrics if m in set(sub["metric"])]
    z = np.full((len(variants), len(ms)), np.nan)
    text = [["" for _ in ms] for _ in variants]
    for _, r in sub.iterrows():
        i, j = variants.index(r["variant"]), ms.index(r["metric"])
        z[i, j] = 100 * r["rel_change"]
        text[i][j] = plain_text(TableCell("n/a" if math.isnan(r["rel_change"]) else f"{100 * r['rel_change']:+.1f}%",
                                          marker=r["marker"]))
    lim = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(go.Heatmap(z=z, x=[plot_text(m) for m in ms], y=[plot_text(v) for v in variants], text=text,
                               texttemplate="%{text}", colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                               colorbar=dict(title="% vs base"),
                               hovertemplate="%{y}<br>%{x}: %{text}<extra></extra>"))
    fig.update_layout(title=f"{plot_text(dataset)}: relative change against {plot_text(base)} (▲/▼ significantly "
                            "better/worse)",
                      height=max(260, 60 + 40 * len(variants)), margin=dict(l=40, r=20, t=60, b=40),
                      yaxis=dict(autorange="reversed"))
    return fig


# --------------------------------------------------------------------------------------------------- compare


def comparison(store: Store, a_id: int, b_id: int, *, test: str = "t", correction: str = "holm",
               alpha: float = 0.05, n_resamples: int = 2000):
    """``bench compare A B`` for two run ids, plus both runs' per-user vectors (for the plots)."""
    from mmsr_bench.results.leaderboard import _metric_order

    va, vb = store.per_user(a_id), store.per_user(b_id)
    names = sorted(set(va) & set(vb), key=_metric_order)
    comp = compare(store, str(a_id), str(b_id), metrics=names or None, test=test, correction=correction,
                   alpha=alpha, n_resamples=n_resamples)
    return comp, va, vb


def comparison_frame(comp) -> pd.DataFrame:
    cols = ["metric", "n", "mean_a", "mean_b", "diff", "rel_diff", "ci_low", "ci_high", "cohen_d", "p_t",
            "p_wilcoxon", "p_perm", "p_bootstrap", "p_value", "p_corrected", "significant"]
    return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in comp.rows], columns=cols)


def diff_histogram(a: np.ndarray, b: np.ndarray, metric: str, a_label: str, b_label: str) -> go.Figure:
    d = np.asarray(a) - np.asarray(b)
    fig = go.Figure(go.Histogram(x=d, nbinsx=60, name="a - b"))
    fig.add_vline(x=float(d.mean()), line_dash="dash", line_color="firebrick",
                  annotation_text=f"mean {d.mean():+.4f}")
    fig.update_layout(title=f"per-user {plot_text(metric)}: {plot_text(a_label)} minus {plot_text(b_label)}",
                      xaxis_title=f"difference in {plot_text(metric)}",
                      yaxis_title="users", height=360, margin=dict(l=40, r=20, t=60, b=40))
    return fig


def pair_scatter(a: np.ndarray, b: np.ndarray, metric: str, a_label: str, b_label: str,
                 max_points: int = 5000) -> go.Figure:
    """Per-user a against b (WebGL, a fixed random subsample beyond ``max_points`` users to keep the page light)."""
    a, b = np.asarray(a), np.asarray(b)
    idx = np.arange(len(a))
    if len(a) > max_points:
        idx = np.sort(np.random.default_rng(0).choice(len(a), max_points, replace=False))
    lo = float(min(a.min(), b.min())) if len(a) else 0.0
    hi = float(max(a.max(), b.max())) if len(a) else 1.0
    fig = go.Figure(go.Scattergl(x=b[idx], y=a[idx], mode="markers", marker=dict(size=4, opacity=0.4),
                                 name="users"))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dot", color="grey"),
                             name="a = b"))
    sub = "" if len(idx) == len(a) else f" ({len(idx)} of {len(a)} users)"
    fig.update_layout(title=f"per-user {plot_text(metric)}{sub}", xaxis_title=plot_text(b_label),
                      yaxis_title=plot_text(a_label), height=420,
                      margin=dict(l=40, r=20, t=60, b=40))
    return fig


# -------------------------------------------------------------------------------------------- hallucination


@dataclass(frozen=True)
class HallucinationPayload:
    """The payload of an artifact of kind ``"hallucination"`` (JSON in ``Artifact.payload_json``)::

        {"dataset": str,              # the dataset the distances were measured on
         "distances": [float, ...],   # CLIP distance between each generated item description and its item image
         "mismatched": [float, ...],  # the same distance for deliberately mismatched (description, image) pairs
         "threshold": float,          # a distance above it flags a description as hallucinated
         "flagged_share": float,      # share of ``distances`` above ``threshold`` (0..1)
         "auroc": float | None}       # separability of matched vs mismatched distances (None if not computed)
    """

    artifact_id: int
    model: str
    suite: str
    dataset: str
    distances: tuple[float, ...]
    mismatched: tuple[float, ...]
    threshold: float
    flagged_share: float
    auroc: float | None


def parse_hallucination(art: Artifact) -> HallucinationPayload:
    """Validate one hallucination artifact; a malformed payload raises BenchError naming the artifact and field."""
    where = f"hallucination artifact {art.id} ({art.model} on {art.suite}/{art.dataset})"
    try:
        p = json.loads(art.payload_json)
    except json.JSONDecodeError as exc:
        raise BenchError(f"{where}: payload is not JSON ({exc}); re-run the analysis that wrote it") from None
    if not isinstance(p, dict):
        raise BenchError(f"{where}: payload must be a JSON object, got {type(p).__name__}")

    def floats(name: str, required: bool = True) -> tuple[float, ...]:
        v = p.get(name, None if required else [])
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise BenchError(f"{where}: field {name!r} must be a list of numbers")
        return tuple(float(x) for x in v)

    def number(name: str, optional: bool = False) -> float | None:
        v = p.get(name)
        if v is None and optional:
            return None
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise BenchError(f"{where}: field {name!r} must be a number, got {v!r}")
        return float(v)

    dataset = p.get("dataset", art.dataset)
    if not isinstance(dataset, str) or not dataset:
        raise BenchError(f"{where}: field 'dataset' must be a non-empty string")
    return HallucinationPayload(art.id or 0, art.model, art.suite, dataset, floats("distances"),
                                floats("mismatched", required=False), number("threshold"),  # type: ignore[arg-type]
                                number("flagged_share"), number("auroc", optional=True))  # type: ignore[arg-type]


def distance_figure(p: HallucinationPayload) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Histogram(x=list(p.distances), name="generated vs own image", opacity=0.65, nbinsx=40,
                               histnorm="probability"))
    if p.mismatched:
        fig.add_trace(go.Histogram(x=list(p.mismatched), name="mismatched pairs", opacity=0.65, nbinsx=40,
                                   histnorm="probability"))
    fig.add_vline(x=p.threshold, line_dash="dash", line_color="firebrick",
                  annotation_text=f"threshold {p.threshold:.3f}")
    fig.update_layout(barmode="overlay", title=f"{plot_text(p.model)} on {plot_text(p.dataset)}: CLIP distance",
                      xaxis_title="CLIP distance", yaxis_title="share", height=360,
                      margin=dict(l=40, r=20, t=60, b=40))
    return fig


def parse_variant(tag: str) -> tuple[str, float] | None:
    """``"blank:0.2"`` -> ("blank", 0.2); None for tags that are not a perturbation with a share."""
    m = _VARIANT_RE.match(tag or "")
    return (m["kind"], float(m["share"])) if m else None


def perturbation_curves(store: Store, suite: str, metric: str) -> pd.DataFrame:
    """Metric against perturbation share, per (model, dataset, kind): the untagged runs give share 0, runs tagged
    "kind:share" the rest; mean and 95% CI across seeds of the latest runs."""
    runs = [r for r in store.runs(suite=suite) if metric in r.metrics]
    perturbed = {(r.model, r.dataset) for r in runs if parse_variant(r.variant)}
    rows = []
    for model, dataset in sorted(perturbed):
        mine, _ = latest_runs([r for r in runs if r.model == model and r.dataset == dataset])
        base = [r.metrics[metric] for r in mine if r.variant == ""]
        by: dict[tuple[str, float], list[float]] = {}
        for r in mine:
            pv = parse_variant(r.variant)
            if pv:
                by.setdefault(pv, []).append(r.metrics[metric])
        for kind in sorted({k for k, _ in by}):
            points = ([(0.0, base)] if base else []) + sorted((s, v) for (k, s), v in by.items() if k == kind)
            for share, vals in points:
                mean, hw = summarize_seeds(vals)
                rows.append({"model": model, "dataset": dataset, "kind": kind, "share": share,
                             "mean": mean, "half_width": hw, "n_seeds": len(vals)})
    return pd.DataFrame(rows, columns=["model", "dataset", "kind", "share", "mean", "half_width", "n_seeds"])


def curve_figure(df: pd.DataFrame, dataset: str, metric: str) -> go.Figure:
    fig = go.Figure()
    sub = df[df["dataset"] == dataset]
    for (model, kind), g in sub.groupby(["model", "kind"], sort=True):
        g = g.sort_values("share")
        fig.add_trace(go.Scatter(x=g["share"], y=g["mean"], mode="lines+markers",
                                 name=f"{plot_text(model)} · {plot_text(kind)}",
                                 error_y=dict(type="data", array=g["half_width"].fillna(0.0).tolist(),
                                              visible=True)))
    fig.update_layout(title=f"{plot_text(dataset)}: {plot_text(metric)} against perturbation share",
                      xaxis_title="perturbed share", showlegend=True, legend_title="model · perturbation",
                      yaxis_title=plot_text(metric), height=380, margin=dict(l=40, r=20, t=60, b=40))
    return fig
