"""Hallucination page: CLIP-distance distributions of generated item descriptions (artifacts of kind
"hallucination", payload schema in :class:`mmsr_bench.dashboard.queries.HallucinationPayload`) and metric-versus-perturbation
curves from runs tagged "kind:share" (e.g. "blank:0.2")."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from mmsr_bench.dashboard import queries as q
from mmsr_bench.dashboard import ui

ctx = ui.context()
st.title("Hallucination and robustness")

payloads, problems = ui.hallucination(ctx.url, ctx.token)
for msg in problems:
    st.warning(ui.md_text(msg))

st.subheader("CLIP distance of generated descriptions")
if not payloads:
    st.info("No hallucination analyses in this store yet. They are stored as artifacts of kind `hallucination` "
            "with the payload `{\"dataset\", \"distances\", \"mismatched\", \"threshold\", \"flagged_share\", "
            "\"auroc\"}` by the analysis of a generative model's item descriptions.")
else:
    summary = pd.DataFrame([{"artifact": p.artifact_id, "model": p.model, "suite": p.suite, "dataset": p.dataset,
                             "descriptions": len(p.distances), "threshold": p.threshold,
                             "flagged_share": p.flagged_share, "auroc": p.auroc} for p in payloads])
    st.dataframe(summary, hide_index=True, key="hal_summary",
                 column_config={"flagged_share": st.column_config.NumberColumn(format="percent"),
                                "threshold": st.column_config.NumberColumn(format="%.3f"),
                                "auroc": st.column_config.NumberColumn(format="%.3f")})
    labels = {p.artifact_id: f"{p.model} on {p.suite}/{p.dataset} (artifact {p.artifact_id})" for p in payloads}
    chosen = ui.pick("Analysis", list(labels), key="hal_artifact", format_func=labels.get)
    p = next(x for x in payloads if x.artifact_id == chosen)
    k1, k2, k3 = st.columns(3)
    k1.metric("flagged share", f"{100 * p.flagged_share:.1f}%")
    k2.metric("threshold", f"{p.threshold:.3f}")
    k3.metric("AUROC matched vs mismatched", "n/a" if p.auroc is None else f"{p.auroc:.3f}")
    st.plotly_chart(q.distance_figure(p), key="hal_hist")

st.subheader("Metric against perturbation share")
perturbed = ctx.completed[ctx.completed["variant"].map(lambda v: q.parse_variant(v) is not None)]
if perturbed.empty:
    st.info("No perturbation runs yet: runs whose variant tag is `kind:share` (e.g. `blank:0.2`, a fifth of the "
            "item images blanked) are plotted here against the untagged runs of the same model.")
    st.stop()
c1, c2 = st.columns(2)
with c1:
    suite = ui.pick("Suite", sorted(perturbed["suite"].unique()), key="hal_suite")
metrics = ui.metric_names(ctx.url, ctx.token, suite)
with c2:
    metric = ui.pick("Metric", metrics, key="hal_metric", default="ndcg@10")
with ui.guard():
    curves = ui.curves(ctx.url, ctx.token, suite, metric)
    if curves.empty:
        st.info(f"No perturbation runs on {ui.md_text(suite)} report {ui.md_text(metric)}.")
        st.stop()
    for dataset in sorted(curves["dataset"].unique()):
        st.plotly_chart(q.curve_figure(curves, dataset, metric), key=f"hal_curve_{dataset}")
    with st.expander("Table"):
        st.dataframe(curves, hide_index=True, key="hal_curve_table")
