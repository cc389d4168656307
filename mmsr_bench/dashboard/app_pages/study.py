"""Study page: the MLLM-SRec study's tables (RQ1-RQ4 and hallucination) from :func:`mmsr_bench.runner.study.build_report`
and :mod:`mmsr_bench.results.tables`, the functions behind ``bench report study``, with the report for download."""

from __future__ import annotations

import streamlit as st

from mmsr_bench.dashboard import ui
from mmsr_bench.errors import BenchError

ctx = ui.context()
st.title("Study")
runs = ctx.completed
if runs.empty:
    st.info("No completed runs yet: `bench study --suite synth4 --run` fills the study's grid.")
    st.stop()

c1, c2, c3, c4 = st.columns([1, 2, 1, 2])
with c1:
    suite = ui.pick("Suite", sorted(runs["suite"].unique()), key="study_suite")
with c2:
    suite_file = st.text_input("Suite file (a suite TOML outside the shipped specs)", value="", key="study_suite_file").strip()
with c3:
    budget = ui.pick("Budget", ["default", "tiny"], key="study_budget")
with c4:  # the datasets with runs on this suite (as `bench report study --dataset`); a wide table otherwise
    with_runs = sorted(runs.loc[runs["suite"] == suite, "dataset"].unique())
    datasets = st.multiselect("Datasets", with_runs, default=with_runs, key="study_datasets")
# ?sets=... opens the page on a configuration (a link to share, and `screenshots --study-sets`)
sets = st.text_input("Configuration: the --set pairs the study ran with (key=value, comma-separated), e.g. "
                     "backbone=smollm2-135m", value=st.query_params.get("sets", ""), key="study_sets").strip()


@st.cache_data(show_spinner=False, max_entries=16)
def report(url: str, token: str, suite_ref: str, budget: str, datasets: tuple[str, ...], sets: str) -> dict:
    """Every format of the report and each table's markdown, built once per store change."""
    from mmsr_bench.models.adapter import parse_set_options
    from mmsr_bench.results import study, tables

    pairs = parse_set_options([x for x in sets.split(",") if x.strip()])
    opts = study.validate(suite_ref, datasets=list(datasets) or None, budget=budget, db=url, check_db=False,
                          sets=pairs)
    rep = study.build_report(ui.store_for(url), opts)
    return {"suite": rep.suite, "tables": [tables.to_markdown(t) for t in study.all_tables(rep)],
            "notes": list(rep.notes), **{fmt: study.render(rep, fmt) for fmt in study.FORMATS}}


try:
    with st.spinner("Building the study's tables"):
        out = report(ctx.url, ctx.token, suite_file or suite, budget, tuple(datasets) if not suite_file else (), sets)
except BenchError as exc:
    hint = "" if "--set" in str(exc) else " Give the suite's TOML file above if it is not one of the shipped suites."
    st.warning(f"{exc}.{hint}")
    st.stop()

if out["suite"] != suite:
    st.caption(f"suite file {suite_file} holds suite {out['suite']!r}")
st.caption("Rows: models; columns: datasets × metrics. Best **bold**, second underlined; ▲/▼ significantly "
           "better/worse than the reference (strongest baseline in RQ1, the full model elsewhere); cells without "
           "runs say missing, and n/a where the model cannot run on the dataset (the footer says why). "
           "`bench report study` prints the same tables.")
for md in out["tables"]:
    st.markdown(md, unsafe_allow_html=True)
for n in out["notes"]:
    st.caption(n)
name = f"study-{out['suite']}-{budget}"
ui.download_row([("Markdown", out["markdown"], f"{name}.md", "text/markdown"),
                 ("LaTeX", out["latex"], f"{name}.tex", "application/x-tex"),
                 ("HTML", out["html"], f"{name}.html", "text/html")])
