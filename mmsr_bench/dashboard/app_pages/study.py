"""Study page: the MLLM-SRec study's tables (RQ1-RQ4 and hallucination) from :func:`mmsr_bench.results.study_report.build_report`
and :mod:`mmsr_bench.results.tables`, the functions behind ``bench report study``, with the report for download. With the
reference runs shown (sidebar toggle), the reference runs get their own report below the user's, never pooled."""

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
    # ?suite=... opens the page on a suite (a link to share, and `screenshots --study-suite`)
    suite = ui.pick("Suite", sorted(runs["suite"].unique()), key="study_suite", default=st.query_params.get("suite"))
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
    """Every format of the report and each table's markdown (names in it made inert by :func:`ui.inert_table`:
    shown as text, never as a link, markup or HTML), built once per store change."""
    from mmsr_bench.models.adapter import parse_set_options
    from mmsr_bench.results import study, study_report, tables

    pairs = parse_set_options(ui.split_sets(sets))
    opts = study.validate(suite_ref, datasets=list(datasets) or None, budget=budget, db=url, check_db=False,
                          sets=pairs)
    rep = study_report.build_report(ui.store_for(url), opts)
    return {"suite": rep.suite, "tables": [tables.to_markdown(ui.inert_table(t)) for t in study_report.all_tables(rep)],
            "notes": list(rep.notes), **{fmt: study_report.render(rep, fmt) for fmt in study_report.FORMATS}}


# With the reference runs shown, each side gets its own report (the study's grid matches runs by their own model
# names, and reference runs are never pooled with or tested against the user's): yours first, then the reference runs.
if ctx.reference is None:
    sections = [("", "", ctx.url, ctx.token, None)]
else:
    sections = [("Your runs", "", ctx.local.url, ctx.local.token, False)] if ctx.local is not None else []
    note = (f"This project's own runs, from the run files in {ui.md_code(ui.folder_label(ctx.reference_dir))} "
            "(committed with the project, not your store), reported on their own; `bench store import` of that "
            "folder into a store gives the same tables with `bench report study`.")
    sections.append(("Reference runs", note, ctx.reference.url, ctx.reference.token, True))

results = []  # (title, note, report or None, problem)
for title, note, side_url, side_token, is_ref in sections:
    side_runs = runs if is_ref is None else runs[runs["model"].map(ctx.is_reference) == is_ref]
    if suite_file:
        side_datasets: tuple[str, ...] = ()
    else:
        have = set(side_runs.loc[side_runs["suite"] == suite, "dataset"])
        side_datasets = tuple(d for d in datasets if d in have)
        if is_ref is not None and not side_datasets:
            results.append((title, note, None, f"No completed runs on {ui.md_text(suite)}"
                                               + (" in the chosen datasets" if have else "") + " here."))
            continue
    try:
        with st.spinner("Building the study's tables"):
            results.append((title, note, report(side_url, side_token, suite_file or suite, budget, side_datasets, sets),
                            ""))
    except BenchError as exc:
        hint = "" if "--set" in str(exc) else (" Give the suite's TOML file above if it is not one of the shipped "
                                                "suites.")
        results.append((title, note, None, ui.md_text(f"{exc}.{hint}")))

if all(out is None for _, _, out, _ in results):
    for _, _, _, problem in results:
        st.warning(problem)
    st.stop()
st.caption("Rows: models; columns: datasets × metrics. Best **bold**, second underlined; ▲/▼ significantly "
           "better/worse than the reference (strongest baseline in RQ1, the full model elsewhere); cells without "
           "runs say missing, and n/a where the model cannot run on the dataset (the footer says why). "
           "`bench report study` prints the same tables.")
for title, note, out, problem in results:
    if title:
        st.header(title, divider=True)
    if note:
        st.caption(note)
    if out is None:
        (st.info if title and problem.startswith("No completed runs") else st.warning)(problem)
        continue
    if out["suite"] != suite:
        st.caption(f"suite file {ui.md_code(suite_file)} holds suite {ui.md_code(out['suite'])}")
    for md in out["tables"]:
        st.markdown(md, unsafe_allow_html=True)
    for n in out["notes"]:
        st.caption(ui.md_text(n))
    name = f"study-{out['suite']}-{budget}" + ("-reference" if title == "Reference runs" else "")
    ui.download_row([("Markdown", out["markdown"], f"{name}.md", "text/markdown"),
                     ("LaTeX", out["latex"], f"{name}.tex", "application/x-tex"),
                     ("HTML", out["html"], f"{name}.html", "text/html")])
