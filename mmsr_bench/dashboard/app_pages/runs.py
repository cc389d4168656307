"""Runs page: every stored run (failed ones included) with its config, environment, timings and status; a run's
detail view and its config/environment diff against another run."""

from __future__ import annotations

import json

import streamlit as st

from mmsr_bench.dashboard import queries as q
from mmsr_bench.dashboard import ui
from mmsr_bench.results.leaderboard import tuned_text
from mmsr_bench.results.selection import convergence_of

ctx = ui.context()
st.title("Runs")
runs = ctx.runs

f1, f2, f3, f4 = st.columns(4)
with f1:
    suites = ui.pick_many("Suite", sorted(runs["suite"].unique()), key="runs_suite", default=[])
with f2:
    datasets = ui.pick_many("Dataset", sorted(runs["dataset"].unique()), key="runs_dataset", default=[])
with f3:
    models = ui.pick_many("Model", sorted(runs["model"].unique()), key="runs_model", default=[])
with f4:
    statuses = ui.pick_many("Status", sorted(runs["status"].unique()), key="runs_status", default=[])
text = st.text_input("Search (model, variant, host, config, error)", key="runs_search")

sel = runs
for col, chosen in (("suite", suites), ("dataset", datasets), ("model", models), ("status", statuses)):
    if chosen:
        sel = sel[sel[col].isin(chosen)]
if text:
    needle = text.lower()
    hay = (sel["model"] + " " + sel["variant"] + " " + sel["host"] + " " + sel["config_json"] + " "
           + sel["error"]).str.lower()
    sel = sel[hay.str.contains(needle, regex=False)]

metrics = ui.metric_names(ctx.url, ctx.token)
shown = [m for m in ("hr@10", "ndcg@10", "mrr", "auc") if m in metrics] or metrics[:4]
st.caption(f"{len(sel)} of {len(runs)} runs")
st.dataframe(q.runs_table(sel.sort_values("id", ascending=False), shown), hide_index=True, key="runs_table",
             column_config={"started_at": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                            "finished_at": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                            "fit_seconds": st.column_config.NumberColumn(format="%.1f s"),
                            "score_seconds": st.column_config.NumberColumn(format="%.1f s"),
                            "peak_memory_mb": st.column_config.NumberColumn(format="%.0f MB"),
                            **{m: st.column_config.NumberColumn(format="%.4f") for m in shown}})
if sel.empty:
    st.stop()

st.subheader("Run detail")
ordered = sel.sort_values("id", ascending=False)
labels = dict(zip(ordered["id"].astype(int), ordered["label"]))
run_id = ui.pick("Run", list(labels), key="runs_detail", format_func=labels.get)
with ui.guard():
    run = ui.run_detail(ctx.url, ctx.token, run_id)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("status", ui.md_text(run.status))
    m2.metric("fit", f"{run.fit_seconds:.1f} s")
    m3.metric("score", f"{run.score_seconds:.1f} s")
    m4.metric("peak memory", f"{run.peak_memory_mb:.0f} MB")
    if run.error:
        st.warning(f"run {run.id} failed: {ui.md_text(run.error)}")
    chosen = convergence_of(run)
    if chosen is not None and chosen.converged is False:
        st.warning(f"not converged: the best validation ({ui.md_text(chosen.metric)} at {chosen.unit} "
                   f"{chosen.chosen}) is the last one and training stopped at its {chosen.stopped_by}; the run's "
                   "numbers are a lower bound of the model")
    tuned = run.run_info.get("tuned_from")
    if isinstance(tuned, dict):
        st.info(f"configuration tuned on validation: {ui.md_text(tuned_text(tuned))}, study "
                f"{ui.md_text(str(tuned.get('tuning', ''))[:10])}")
    d1, d2, d3 = st.columns(3)
    d1.markdown("**Metrics**")
    d1.json(run.metrics or {}, expanded=True)
    d2.markdown("**Config**")
    d2.json(run.config, expanded=True)
    d3.markdown("**Environment**")
    d3.json({"code_version": run.code_version, "code_dirty": run.code_dirty, "host": run.host,
             "device": run.device, "started_at": str(run.started_at), "finished_at": str(run.finished_at),
             "suite_hash": run.suite_hash, "eval_users_hash": run.eval_users_hash, "n_users": run.n_users,
             "run_info": run.run_info, "packages": json.loads(run.packages_json or "{}")}, expanded=False)

    pool = runs[runs["id"] != run_id].sort_values("id", ascending=False)
    others = dict(zip(pool["id"].astype(int), pool["label"]))
    same_model = pool.loc[pool["model"] == run.model, "id"].astype(int).tolist()
    if others:
        other = ui.pick("Diff against", list(others), key=f"runs_diff_{run_id}",
                        default=(same_model or list(others))[0], format_func=others.get)
        diff = q.config_diff(run, ui.run_detail(ctx.url, ctx.token, other))
        if diff.empty:
            st.success(f"runs {run_id} and {other} have the same model, config and environment")
        else:
            st.dataframe(diff, hide_index=True, key="runs_diff_table")

studies, trials = ui.tunings(ctx.url, ctx.token)
if not studies.empty:
    st.subheader("Tuning studies (bench tune)")
    st.dataframe(studies, hide_index=True, key="runs_tunings",
                 column_config={"minutes": st.column_config.NumberColumn(format="%.1f"),
                                "best": st.column_config.NumberColumn(format="%.4f")})
    study = ui.pick("Study", studies["study"].tolist(), key="runs_tuning_pick")
    st.dataframe(trials[trials["study"] == study], hide_index=True, key="runs_trials",
                 column_config={"value": st.column_config.NumberColumn(format="%.4f"),
                                "seconds": st.column_config.NumberColumn(format="%.1f s")})
