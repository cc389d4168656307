"""Leaderboard page: mean ± 95% CI across seeds per model and dataset, best value bold, significance markers
against a chosen model (mmsr_bench.results.significance.mark_board), a bar chart, and the harness' exporters. With the
reference runs shown (sidebar toggle) their rows carry "(reference)", and the markers compare each side only with its
own runs unless "Also test the other side's rows" is ticked."""

from __future__ import annotations

import streamlit as st

from mmsr_bench.dashboard import queries as q
from mmsr_bench.dashboard import ui
from mmsr_bench.results import stats
from mmsr_bench.results.leaderboard import board_to_latex, to_csv, to_json, to_markdown
from mmsr_bench.results.reference import SUFFIX

ctx = ui.context()
st.title("Leaderboard")
runs = ctx.completed[ctx.completed["variant"] == ""]
if runs.empty:
    st.info("No completed runs without a variant tag yet: failed runs and perturbation runs are on the Runs and "
            "Hallucination pages.")
    st.stop()

c1, c2, c3 = st.columns([1, 2, 2])
suites = sorted(runs["suite"].unique())
with c1:
    suite = ui.pick("Suite", suites, key="lb_suite")
in_suite = runs[runs["suite"] == suite]
all_datasets = sorted(in_suite["dataset"].unique())
all_metrics = ui.metric_names(ctx.url, ctx.token, suite)
default_metrics = [m for m in ("hr@10", "ndcg@10", "mrr") if m in all_metrics] or all_metrics[:3]
with c2:
    datasets = ui.pick_many("Datasets", all_datasets, key="lb_datasets", default=all_datasets)
with c3:
    metrics = ui.pick_many("Metrics", all_metrics, key="lb_metrics", default=default_metrics)
with c1:
    models = sorted(in_suite[in_suite["dataset"].isin(datasets)]["model"].unique())
    against = ui.pick("Significance against", ["(none)"] + models, key="lb_against",
                      default=st.query_params.get("against"),
                      help="Mark cells significantly better (▲) or worse (▼) than this model (paired per-user test, "
                           "Holm correction across the shown metrics).")
if not datasets or not metrics:
    st.info("Pick at least one dataset and one metric.")
    st.stop()
both_sides = ctx.reference is not None and ctx.local is not None
with st.expander("Test settings"):
    t1, t2 = st.columns(2)
    test = t1.selectbox("Test", list(stats.TESTS), key="lb_test")
    alpha = t2.select_slider("alpha", options=[0.001, 0.01, 0.05, 0.1], value=0.05, key="lb_alpha")
    cross = both_sides and st.checkbox(
        "Also test the other side's rows", value=False, key="lb_cross",
        help="Off: the markers compare your runs only with your runs and reference runs only with reference runs. "
             "On: every row is tested against the chosen model, reference runs against yours (made on another "
             "machine: check the fingerprints on the Compare page).")

against = None if against == "(none)" else against
# reference runs are never tested against the user's own runs unless asked (the "Also test" box above)
mark_only = (tuple(m for m in models if ctx.is_reference(m) == ctx.is_reference(against))
             if against and ctx.reference is not None and not cross else None)
with ui.guard():
    with st.spinner("computing the leaderboard..."):
        board, footer = ui.board(ctx.url, ctx.token, suite, tuple(datasets), tuple(metrics), against, test, alpha,
                                 mark_only)
    st.dataframe(q.styled_board(board), key="lb_table")
    side_note = ""
    if ctx.reference is not None:
        side_note = ("  \nRows marked *(reference)* are this project's reference runs, not yours"
                     + ("; significance marks compare each side only with its own runs." if both_sides and not cross
                        else "; every row is tested against the chosen model." if cross else "."))
    st.caption("Mean ± 95% CI across seeds; best value per column in bold. Click a column header to sort."
               + (f"  \n{ui.md_text(footer.replace('+/-', '▲/▼'))}" if footer else "") + side_note)
    for note in board.row_notes() + board.notes:  # data-quality warnings recorded by the build stand out; other notes are captions
        (st.warning if note.startswith("data quality:") else st.caption)(ui.md_text(note))

    chart_metric = ui.pick("Chart metric", board.metrics, key="lb_chart_metric")
    st.plotly_chart(q.bar_figure(board, chart_metric), key="lb_chart")

    markdown = to_markdown(board) + (f"\n\n_{footer}_\n" if footer else "\n")
    if ctx.reference is not None:  # the export says what the marked rows are, as `bench leaderboard --reference`
        markdown += (f"\n_Rows marked {SUFFIX.strip()} are this project's reference runs"
                     + ("; significance marks compare each side only with its own runs" if both_sides and not cross
                        else "") + "._\n")
    with st.expander("Markdown (as exported: best bold, second underlined)"):
        st.code(markdown, language="markdown")
    st.caption("Downloads")
    stem = f"leaderboard_{suite}"
    ui.download_row([
        ("CSV", to_csv(board), f"{stem}.csv", "text/csv"),
        ("Markdown", markdown, f"{stem}.md", "text/markdown"),
        ("LaTeX", board_to_latex(board, footer=footer), f"{stem}.tex", "application/x-tex"),
        ("JSON", to_json(board), f"{stem}.json", "application/json"),
    ])
