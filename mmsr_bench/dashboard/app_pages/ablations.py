"""Ablations page: relative change of every variant of a base model (same family prefix, or the base's runs with a
variant tag such as "blank:0.2") per metric and dataset, with paired-test significance on the cells; the numbers
and markers come from :func:`mmsr_bench.results.ablations.compute`, the function behind ``bench report ablations``.
With the reference runs shown, a base's variants are taken from its own side only (computed on that side's store)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from mmsr_bench.dashboard import queries as q
from mmsr_bench.dashboard import ui
from mmsr_bench.results import ablations as ablation_report
from mmsr_bench.results import stats
from mmsr_bench.results.study import FULL

ctx = ui.context()
st.title("Ablations")
runs = ctx.completed
if runs.empty:
    st.info("No completed runs yet.")
    st.stop()

c1, c2, c3 = st.columns([1, 1, 2])
with c1:
    suite = ui.pick("Suite", sorted(runs["suite"].unique()), key="ab_suite")
in_suite = runs[runs["suite"] == suite]
models = sorted(in_suite[in_suite["variant"] == ""]["model"].unique())




def plain(model: str) -> str:
    """The model's own name (without "(reference)"): family prefixes and the full model are matched on it."""
    side = ctx.side_of(model)
    return side.plain(model) if side is not None else model


tags = in_suite[in_suite["variant"] != ""].groupby("model")["variant"].nunique().to_dict()
# a family is counted per side: reference runs are never the variants of the user's model, nor the other way round
families = pd.Series([(ctx.is_reference(m), q.family_prefix(plain(m))) for m in models],
                     dtype=object).value_counts().to_dict()


def n_variants(base: str) -> int:
    return families.get((ctx.is_reference(base), q.family_prefix(plain(base))), 1) - 1 + tags.get(base, 0)


# the user's own models first (the reference runs' only when the user has none here); among them the most variants,
# on a tie the study's full model (a store with only RQ2's runs ties every MLLM-SRec variant)
candidates = [m for m in models if not ctx.is_reference(m)] or models
default_base = max(candidates, key=lambda m: (n_variants(m), plain(m) == FULL)) if candidates else None
with c2:
    base = ui.pick("Base model", models, key="ab_base", default=default_base)
with c3:
    prefix = st.text_input("Variant prefix", value=q.family_prefix(plain(base)), key=f"ab_prefix_{base}",
                           help="Models whose name starts with this prefix are the base's variants"
                                + (" (on the base's side only: reference runs with reference runs, yours with yours)."
                                   if ctx.reference is not None else "."))
all_metrics = ui.metric_names(ctx.url, ctx.token, suite)
default_metrics = [m for m in ("hr@10", "ndcg@10", "mrr") if m in all_metrics] or all_metrics[:3]
m1, m2, m3 = st.columns([2, 1, 1])
with m1:
    metrics = ui.pick_many("Metrics", all_metrics, key="ab_metrics", default=default_metrics)
test = m2.selectbox("Test", list(stats.TESTS), key="ab_test")
alpha = m3.select_slider("alpha", options=[0.001, 0.01, 0.05, 0.1], value=0.05, key="ab_alpha")
if not metrics:
    st.info("Pick at least one metric.")
    st.stop()

with ui.guard():
    with st.spinner("testing every variant against the base..."):
        side = ctx.side_of(base)
        if side is None:  # one store, no reference runs shown
            ab = ui.ablation(ctx.url, ctx.token, suite, base, prefix, tuple(metrics), test, alpha)
        else:  # the base's own side only, its names marked as shown
            ab = q.suffixed_ablation(ui.ablation(side.url, side.token, suite, side.plain(base), prefix,
                                                 tuple(metrics), test, alpha), side.suffix)
    df = q.ablation_frame(ab.cells)
    for note in ab.notes:
        st.caption(ui.md_text(note))
    if df.empty:
        st.info(f"No variants of {ui.md_code(base)} on {ui.md_text(suite)}: no other model starts with "
                f"{ui.md_code(prefix)} and no run of {ui.md_code(base)} carries a variant tag (e.g. `blank:0.2`).")
        st.stop()
    st.caption(ui.md_text(f"Cell = (variant - {base}) / {base} in percent; {ab.footer}."))
    for dataset in sorted(df["dataset"].unique()):
        st.plotly_chart(q.heatmap_figure(df, dataset, base, metrics), key=f"ab_heat_{dataset}")
    with st.expander("Table"):
        st.dataframe(df, hide_index=True, key="ab_table")
    with st.expander("Report (as `bench report ablations`)"):
        markdown = ablation_report.to_markdown(ab)
        st.code(markdown, language="markdown")
        ui.download_row([("Markdown", markdown, f"ablations-{suite}-{base}.md", "text/markdown"),
                         ("LaTeX", ablation_report.to_latex(ab), f"ablations-{suite}-{base}.tex",
                          "application/x-tex")])
