"""Compare page: two runs side by side, the statistics of ``bench compare`` (mmsr_bench.results.significance.compare), the
distribution of per-user differences and a per-user scatter."""

from __future__ import annotations

import streamlit as st

from mmsr_bench.dashboard import queries as q
from mmsr_bench.dashboard import ui
from mmsr_bench.results import stats

ctx = ui.context()
st.title("Compare two runs")
runs = ctx.completed
if runs.empty:
    st.info("No completed runs yet.")
    st.stop()

c1, c2 = st.columns(2)
with c1:
    suite = ui.pick("Suite", sorted(runs["suite"].unique()), key="cmp_suite")
with c2:
    dataset = ui.pick("Dataset", sorted(runs[runs["suite"] == suite]["dataset"].unique()), key="cmp_dataset")
pool = runs[(runs["suite"] == suite) & (runs["dataset"] == dataset)].sort_values("id", ascending=False)
labels = dict(zip(pool["id"].astype(int), pool["label"]))
ids = list(labels)
if len(ids) < 2:
    st.info(f"Only one run on {ui.md_text(f'{suite}/{dataset}')}; a comparison needs two.")
    st.stop()
default_a, default_b = q.default_pair(pool)
with c1:
    a = ui.pick("Run A (under test)", ids, key="cmp_a", default=default_a, format_func=labels.get)
with c2:
    b = ui.pick("Run B (baseline)", [i for i in ids if i != a], key="cmp_b", default=default_b,
                format_func=labels.get)
s1, s2, s3 = st.columns(3)
test = s1.selectbox("Test", list(stats.TESTS), key="cmp_test")
correction = s2.selectbox("Correction", list(stats.CORRECTIONS), key="cmp_correction")
alpha = s3.select_slider("alpha", options=[0.001, 0.01, 0.05, 0.1], value=0.05, key="cmp_alpha")

model_of = dict(zip(pool["id"].astype(int), pool["model"]))
if a in model_of and b in model_of and ctx.is_reference(model_of[a]) != ctx.is_reference(model_of[b]):
    st.info("One run is a reference run (this project's own, from its run files) and the other is yours: the "
            "test below compares them because you picked them (the comparability checks of `bench compare` still "
            "apply).")

with ui.guard():
    with st.spinner("running the paired tests..."):
        comp, va, vb = ui.comparison(ctx.url, ctx.token, a, b, test, correction, alpha)
    st.caption(ui.md_text(f"A = {comp.a_label}, B = {comp.b_label}; {comp.n_users} users on {comp.suite}/"
                          f"{comp.dataset}. diff = mean(A) - mean(B); significant = {correction}-corrected p of the "
                          f"{test} test < {alpha}."))
    frame = q.comparison_frame(comp)
    st.dataframe(frame, hide_index=True, key="cmp_table",
                 column_config={c: st.column_config.NumberColumn(format="%.4g") for c in frame.columns
                                if c not in ("metric", "n", "significant")})
    metric = ui.pick("Metric for the plots", list(frame["metric"]), key="cmp_metric", default="ndcg@10")
    p1, p2 = st.columns(2)
    la, lb = f"A: {comp.a_label}", f"B: {comp.b_label}"
    p1.plotly_chart(q.diff_histogram(va[metric], vb[metric], metric, "A", "B"), key="cmp_hist")
    p2.plotly_chart(q.pair_scatter(va[metric], vb[metric], metric, la, lb), key="cmp_scatter")
