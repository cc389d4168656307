"""``bench study`` and ``bench report study`` end to end on the conformance kit's tiny suite, and the dashboard's
Study page on the same store.

The module fixture runs ``bench study --budget tiny --run`` ONCE on the whole default grid: all 17 models of
RQ1-RQ4 with the conformance kit's tiny budgets (tiny backbones, a handful of users; about 15 s on 2 cores in a
fresh clone for RQ1 and RQ2). Missing cells are checked on a copy of the store with runs deleted, and the
``%Improv.`` and hallucination paths on a copy into which runs with known per-user values are added (per-user
vectors derived from stored runs; test data, not results).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.models import adapter, conformance
from mmsr_bench.results import significance, study, study_report
from mmsr_bench.results.store import Run, Store
from mmsr_bench.runner import study as study_runner
from mmsr_bench.suites import spec as suites

BASELINES = ("pop", "random", "sasrec", "bert4rec", "gptrec", "tallrec", "mmgcn", "mmsr")
MODELS = tuple(study.grid_models())  # the whole study
METRICS = ["hr@5", "hr@10", "ndcg@5", "ndcg@10"]  # the kit's suite: hr, ndcg, mrr at 1, 5, 10 (no recall, no AUC)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """The kit suite, frozen, and a store holding the tiny study runs of MODELS; ``seconds``: the run's time."""
    work = tmp_path_factory.mktemp("study")
    k = conformance.make_suite(work / "kit")
    url = f"sqlite:///{work / 'results.db'}"
    runner = CliRunner()
    with conformance._home(k.home):
        r = runner.invoke(app, ["suite", "freeze", str(k.spec.path)])
        assert r.exit_code == 0, r.output
        t0 = time.perf_counter()
        r = runner.invoke(app, ["study", "--suite", str(k.spec.path), "--budget", "tiny", "--run", "--seed", "0",
                                "--db", url])
        seconds = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    print(f"\nbench study --run on {len(MODELS)} models took {seconds:.1f} s")
    return {"path": str(k.spec.path), "spec": suites.load_suite(str(k.spec.path)), "url": url, "work": work,
            "home": k.home, "seconds": seconds, "output": r.output}


def _report(kit, *args, url=None):
    r = CliRunner().invoke(app, ["report", "study", "--suite", kit["path"], "--budget", "tiny",
                                 "--db", url or kit["url"], *args])
    assert r.exit_code == 0, r.output
    return r.output


def _opts(kit, url=None):
    return study.validate(kit["path"], budget="tiny", db=url or kit["url"], check_db=False)


def _section(md: str, title: str) -> str:
    return md.split(f"**{title}**", 1)[1].split("\n**", 1)[0]


def _row(section: str, label: str) -> list[str]:
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


# ------------------------------------------------------------------------------------------------------ study


def test_run_stored_every_cell_and_the_plan_shows_nothing_missing(kit):
    assert "0 missing" in kit["output"]
    p = study_runner.plan(study.validate(kit["path"], budget="tiny", db=kit["url"], models=",".join(MODELS)))
    assert not p.missing and len(p.stored) == len(MODELS)
    r = CliRunner().invoke(app, ["study", "--suite", kit["path"], "--budget", "tiny", "--plan", "--models",
                                 ",".join(MODELS), "--db", kit["url"]])
    assert r.exit_code == 0 and f"{len(MODELS)} of {len(MODELS)} cells stored, 0 missing" in r.output
    runs = Store(kit["url"]).runs()
    assert sorted(r.model for r in runs) == sorted(MODELS)
    for run in runs:  # the tiny budget is part of each run's configuration (and so of its hash)
        for k, v in conformance.tiny_overrides(run.model).items():
            assert str(run.config[k]).lower() == v.lower() or float(run.config[k]) == float(v)
        assert run.config_hash == study.expected_config_hash(run.model, "tiny")
    assert study.expected_config_hash("sasrec", "tiny") != study.expected_config_hash("sasrec", "default")
    # the default budget's plan sees none of them (tiny and default runs never mix); pop/random have no tiny budget
    default = study_runner.plan(study.validate(kit["path"], db=kit["url"], models=",".join(MODELS)))
    assert {c.model for c in default.missing} == set(MODELS) - {"pop", "random"}
    assert all(c.estimate_s is not None for c in default.missing)  # from the tiny runs of the same model
    assert sorted(study.grid_models()) == sorted(set(m for rq in study.RQS.values() for m in rq.models))


@pytest.mark.parametrize("args, option", [
    (["--dataset", "nope"], "--dataset"),
    (["--models", "sasrecc"], "--models"),
    (["--models", "mmgcn-text"], "--models"),  # registered, but not in the study's grid
    (["--budget", "huge"], "--budget"),
    (["--rq", "rq9"], "--rq"),
    (["--seed", "-1"], "--seed"),
    (["--set", "no_such_field=1"], "--set"),  # no grid model has it
    (["--set", "lora_rank=many"], "--set"),  # a field of the LLM recommenders, not an integer
    (["--set", "lora_rank"], "--set"),
    (["--set", "sasrec*:lora_rank=4"], "--set"),  # the models it names lack the field
    (["--set", "nomodel*:lora_rank=4"], "--set"),  # the glob matches no grid model
    (["--set", ":lora_rank=4"], "--set"),
])
def test_bad_argument_fails_with_one_line_and_writes_nothing(kit, tmp_path, args, option):
    db = tmp_path / "new.db"
    r = CliRunner().invoke(app, ["study", "--suite", kit["path"], "--run", "--db", f"sqlite:///{db}", *args])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and option in lines[0], r.output
    assert not db.exists()


def test_set_reaches_only_the_grid_models_that_have_the_field(kit):
    import dataclasses

    from mmsr_bench.models import adapter

    opts = study.validate(kit["path"], budget="tiny", db=kit["url"], sets={"lora_rank": "4"})
    assert opts.sets == (("lora_rank", "4"),)
    has = {m for m in MODELS if "lora_rank" in {f.name for f in dataclasses.fields(adapter.get(m).cls.config_cls)}}
    assert "tallrec" in has and "mllm-srec-qlora" in has and "sasrec" not in has
    for m in MODELS:
        assert (study.overrides_for(m, "tiny", opts.sets).get("lora_rank") == "4") == (m in has)
        same = study.expected_config_hash(m, "tiny", opts.sets) == study.expected_config_hash(m, "tiny")
        assert same == (m not in has), m
    # the tiny runs were made without it: the LLM recommenders' cells are missing under --set, the others stored
    assert {c.model for c in study_runner.plan(opts).missing} == has
    md = _report(kit, "--set", "lora_rank=4")
    rq1 = study.RQS["rq1"]
    assert _row(_section(md, rq1.title), study_report._label(rq1, "tallrec"))[1] == "missing"
    assert _row(_section(md, rq1.title), study_report._label(rq1, "sasrec"))[1] != "missing"


def test_a_scoped_set_reaches_only_the_models_it_names(kit):
    """``--set 'mllm-srec*:train_batch_size=8'`` gives MLLM-SRec its CPU budget and leaves the baselines that share
    the field (SASRec, BERT4Rec, GPTRec, TALLRec) at their defaults; a scoped pair wins over an unscoped one."""
    opts = study.validate(kit["path"], budget="tiny", db=kit["url"],
                          sets={"mllm-srec*:train_batch_size": "8", "train_batch_size": "4"})
    for m in MODELS:
        got = study.overrides_for(m, "tiny", opts.sets).get("train_batch_size")
        if m.startswith("mllm-srec"):
            assert got == "8", m
        elif m in ("sasrec", "bert4rec", "gptrec", "tallrec"):
            assert got == "4", m
        else:
            assert got is None, m
    scoped = study.validate(kit["path"], budget="tiny", db=kit["url"], sets={"mllm-srec*:train_batch_size": "8"})
    assert study.overrides_for("sasrec", "tiny", scoped.sets) == study.overrides_for("sasrec", "tiny")
    plain = (("train_batch_size", "8"),)
    assert study.expected_config_hash(study.FULL, "tiny", scoped.sets) == \
        study.expected_config_hash(study.FULL, "tiny", plain)  # the same run as `bench run --set train_batch_size=8`
    assert adapter.split_set_key("mllm-srec*:max_pairs") == ("mllm-srec*", "max_pairs")
    assert adapter.split_set_key("backbone") == (None, "backbone")


def test_unknown_suite_fails_with_one_line(tmp_path):
    r = CliRunner().invoke(app, ["study", "--suite", "no-such-suite", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()


# ----------------------------------------------------------------------------------------------------- report


def test_report_has_every_rq_table_with_its_rows_missing_cells_and_footer(kit):
    md = _report(kit, "--format", "markdown")
    runs = Store(kit["url"]).runs()
    fingerprint = kit["spec"].protocol_fingerprint("baby")
    for key, rq in study.RQS.items():
        sec = _section(md, rq.title)
        labels = [ln.split("|")[1].strip() for ln in sec.splitlines() if ln.startswith("| ")][1:]
        assert labels == [study_report._label(rq, m) for m in rq.models], key
        header = [c.strip() for c in sec.splitlines()[2].strip("|").split("|")]
        assert header == ["model", *METRICS, "%Improv." if key == "rq1" else "%Diff. vs full"]
        for m in rq.models:  # every cell of the grid was run (missing cells: test_deleted_runs_print_missing)
            row = _row(sec, study_report._label(rq, m))
            run = next(r for r in runs if r.model == m)
            assert row[1].strip("*<u>/ ▲▼") == f"{run.metrics['hr@5']:.4f}"
        assert f"suite_hash: baby={fingerprint}" in sec
    rq1 = _section(md, study.RQS["rq1"].title)
    rq1_ids = [r.id for r in sorted(runs, key=lambda r: r.id) if r.model in study.RQS["rq1"].models]
    assert "runs: " + ", ".join(map(str, rq1_ids)) + "." in rq1  # the runs behind this table, and only those
    assert "code version: " in rq1 and "Holm correction" in rq1
    hal = _section(md, "Hallucination and robustness")
    assert _row(hal, study.FULL)[1:] == ["missing", "missing"]


def test_best_bold_second_underlined_and_markers_agree_with_compare(kit):
    store = Store(kit["url"])
    rep = study_report.build_report(store, _opts(kit))
    t = rep.tables[0]
    ref = t.references[0]
    rq1 = [m for m in MODELS if m in study.RQS["rq1"].models]
    means = {m: t.cells[(m, 0, "ndcg@10")].mean for m in BASELINES}
    assert ref == max(means, key=means.get)  # the strongest baseline by the primary metric
    n_checked = 0
    for m in rq1:
        if m == ref:
            assert all(t.cells[(m, 0, x)].marker == "" for x in METRICS)
            continue
        cmp = significance.compare(store, m, ref, suite="conformance", dataset="baby", metrics=METRICS)
        for row in cmp.rows:
            want = ("+" if row.diff > 0 else "-") if row.significant else ""
            assert t.cells[(m, 0, row.metric)].marker == want, (m, row.metric)
            n_checked += 1
    assert n_checked == 4 * (len(rq1) - 1)
    rq2 = rep.tables[1]  # RQ2 is tested against the full model, with real (tiny) runs of each variant
    assert rq2.references[0] == study.FULL
    for m in ("mllm-srec-text", "mllm-srec-image"):
        cmp = significance.compare(store, m, study.FULL, suite="conformance", dataset="baby", metrics=METRICS)
        for row in cmp.rows:
            assert rq2.cells[(m, 0, row.metric)].marker == (("+" if row.diff > 0 else "-") if row.significant
                                                           else ""), (m, row.metric)
    table = study_report.to_table(t)
    col = table.header.index("ndcg@10")
    ranked = sorted((c.value, c.rank) for r in table.rows if (c := r[col]).value is not None)
    assert ranked[-1][1] == 1 and [rk for _, rk in ranked].count(1) >= 1
    assert any(rk == 2 for _, rk in ranked)
    md = _report(kit, "--format", "markdown")
    allmeans = {m: t.cells[(m, 0, "ndcg@10")].mean for m in rq1}
    best = max(allmeans, key=allmeans.get)
    assert _row(_section(md, study.RQS["rq1"].title), study_report._label(study.RQS["rq1"], best))[4].startswith("**")


def test_latex_html_and_out_file(kit, tmp_path):
    tex = _report(kit, "--format", "latex")
    assert tex.count(r"\begin{table}") == 5 and r"\textbf{" in tex and "missing" in tex
    html = _report(kit, "--format", "html")
    assert html.count("<table>") == 5 and "<b>" in html and "<u>" in html
    out = tmp_path / "study.md"
    _report(kit, "--format", "markdown", "--out", str(out))
    assert out.read_text(encoding="utf-8") == _report(kit, "--format", "markdown")
    r = CliRunner().invoke(app, ["report", "study", "--suite", kit["path"], "--format", "pdf", "--db", kit["url"]])
    assert r.exit_code == 1 and "--format" in r.output


def test_deleted_runs_print_missing(kit, tmp_path):
    db = tmp_path / "copy.db"
    shutil.copy(kit["work"] / "results.db", db)
    with sqlite3.connect(db) as con:
        (rid,) = con.execute("SELECT id FROM runs WHERE model = 'sasrec'").fetchone()
        con.execute("DELETE FROM user_metrics WHERE run_id = ?", (rid,))
        con.execute("DELETE FROM runs WHERE id = ?", (rid,))
    md = _report(kit, "--format", "markdown", url=f"sqlite:///{db}")
    sec = _section(md, study.RQS["rq1"].title)
    assert _row(sec, "sasrec")[1:5] == ["missing"] * 4
    assert f" {rid}," not in sec.split("runs: ")[1] and not sec.split("runs: ")[1].startswith(f"{rid},")


def test_cells_that_need_images_the_data_lacks_are_not_run_and_print_na(tmp_path):
    """On a dataset without item images (the S3-Rec Amazon files), the image models' cells say why they cannot run
    in the plan, `--run` leaves them out and exits 0, and the report prints n/a (not missing) with the reason."""
    import csv

    import pandas as pd

    from mmsr_bench.suites import build

    k = conformance.make_suite(tmp_path / "noimg")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    models = "pop,sasrec,mmsr,mllm-srec-text,mllm-srec-image,mllm-srec-qlora"
    with conformance._home(k.home):
        items = build.dataset_dir(k.spec, "baby") / "items.tsv"
        frame = pd.read_csv(items, sep="\t", dtype=str, keep_default_na=False)
        frame["image"] = ""
        frame.to_csv(items, sep="\t", index=False, quoting=csv.QUOTE_MINIMAL)
        assert CliRunner().invoke(app, ["suite", "freeze", str(k.spec.path)]).exit_code == 0
        opts = study.validate(str(k.spec.path), budget="tiny", db=url, models=models, check_db=False)
        p = study_runner.plan(opts)
        why = {c.model: c.cannot_run for c in p.cells}
        assert why == {"pop": "", "sasrec": "", "mllm-srec-text": "", "mmsr": "conformance/baby has no item images",
                       "mllm-srec-image": "conformance/baby has no item images",
                       "mllm-srec-qlora": "conformance/baby has no item images"}
        assert [c.model for c in p.missing] == ["pop", "sasrec", "mllm-srec-text"]
        assert p.to_dict()["cannot_run"] == 3
        r = CliRunner().invoke(app, ["study", "--suite", str(k.spec.path), "--budget", "tiny", "--run",
                                     "--models", "pop,mmsr,mllm-srec-qlora", "--db", url])
        assert r.exit_code == 0, r.output
        assert "cannot run: conformance/baby has no item images" in r.output and "failed" not in r.output
        assert "1 of 3 cells stored, 0 missing, 2 cannot run on this data" in " ".join(r.output.split())
        assert [run.model for run in Store(url).runs()] == ["pop"]
        md = CliRunner().invoke(app, ["report", "study", "--suite", str(k.spec.path), "--budget", "tiny",
                                      "--db", url]).output
    rq1, rq2 = _section(md, study.RQS["rq1"].title), _section(md, study.RQS["rq2"].title)
    assert _row(rq1, "mmsr")[1:5] == ["n/a"] * 4 and _row(rq1, "sasrec")[1:5] == ["missing"] * 4
    assert "n/a: cannot run on the dataset (mmgcn, mmsr, mllm-srec-qlora: conformance/baby has no item images)" in rq1
    assert _row(rq2, study_report._label(study.RQS["rq2"], "mllm-srec-text"))[1:5] == ["missing"] * 4
    assert _row(rq2, study_report._label(study.RQS["rq2"], "mllm-srec-image"))[1:5] == ["n/a"] * 4
    assert "baby: n/a (the full model cannot run)" in rq2


def _add_copy(store: Store, src: Run, model: str, shift: float) -> Run:
    """A run of ``model`` (its tiny configuration hash) whose per-user values are ``src``'s moved by ``shift``."""
    vecs = {k: np.clip(v + shift, 0, 1) for k, v in store.per_user(src.id).items()}
    data = src.model_dump(exclude={"id", "uuid"})
    data.update(model=model, config_hash=study.expected_config_hash(model, "tiny"),
                metrics_json=json.dumps({k: float(v.mean()) for k, v in vecs.items()}))
    return store.add_run(Run(**data), vecs)


def test_a_qlora_row_says_when_its_runs_ran_unquantized():
    """On a CPU the full model is stored with ``--set quantization=none``; its RQ4 row must not read as 4-bit."""
    rq2, rq4 = study.RQS["rq2"], study.RQS["rq4"]
    lora = [Run(config_json=json.dumps({"quantization": "none"}))]
    four_bit = [Run(config_json=json.dumps({"quantization": "4bit"}))]
    assert study_report._label(rq4, study.FULL, lora) == f"{study.FULL} (QLoRA (full), run with quantization=none)"
    assert study_report._label(rq4, "mllm-srec-qlora-cot", lora).endswith("run with quantization=none)")
    assert study_report._label(rq4, study.FULL, four_bit) == study_report._label(rq4, study.FULL) == f"{study.FULL} (QLoRA (full))"
    assert study_report._label(rq4, study.FULL, lora + four_bit) == study_report._label(rq4, study.FULL)  # mixed: some are 4-bit
    assert study_report._label(rq2, study.FULL, lora) == study_report._label(rq2, study.FULL)  # the RQ2 label names no QLoRA
    assert study_report._label(rq4, "mllm-srec-lora", lora) == "mllm-srec-lora (LoRA)"


def test_full_model_is_the_reference_of_rq2_to_rq4_and_improves_on_the_strongest_baseline(kit, tmp_path):
    db = tmp_path / "copy.db"
    shutil.copy(kit["work"] / "results.db", db)
    url = f"sqlite:///{db}"
    store = Store(url)
    sasrec = next(r for r in store.runs() if r.model == "sasrec")
    full = _add_copy(store, sasrec, study.FULL, 0.3)
    text = _add_copy(store, sasrec, "mllm-srec-text", 0.0)
    rep = study_report.build_report(store, _opts(kit, url))
    rq1, rq2 = rep.tables[0], rep.tables[1]
    assert rq2.references[0] == study.FULL and rq1.references[0] != study.FULL
    cmp = significance.compare(store, "mllm-srec-text", study.FULL, suite="conformance", dataset="baby",
                               metrics=METRICS)
    for row in cmp.rows:
        assert rq2.cells[("mllm-srec-text", 0, row.metric)].marker == (
            ("+" if row.diff > 0 else "-") if row.significant else "")
    assert any(row.significant for row in cmp.rows)
    ref = rq1.references[0]
    expect = (full.metrics["ndcg@10"] - rq1.cells[(ref, 0, "ndcg@10")].mean) / rq1.cells[(ref, 0, "ndcg@10")].mean
    assert rq1.improv[(study.FULL, 0)] == pytest.approx(expect)
    md = _report(kit, "--format", "markdown", url=url)
    assert _row(_section(md, study.RQS["rq1"].title), study_report._label(study.RQS["rq1"], study.FULL))[-1] == \
        f"{100 * expect:+.2f}%"
    assert str(text.id) in _section(md, study.RQS["rq2"].title).split("runs: ")[1]
    # the hallucination table: a `bench hallucination` artifact and a `--perturb` run of the full model
    from mmsr_bench.results.store import Artifact

    art = store.add_artifact(Artifact(kind="hallucination", suite=kit["path"], dataset="baby", model=study.FULL,
                                      payload_json=json.dumps({"flagged_share": 0.25, "auroc": 0.7})))
    blank = _add_copy(store, full, study.FULL, -0.1)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE runs SET variant = 'blank:0.2' WHERE id = ?", (blank.id,))
    hal = _section(_report(kit, "--format", "markdown", url=url), "Hallucination and robustness")
    drop = (blank.metrics["ndcg@10"] - full.metrics["ndcg@10"]) / full.metrics["ndcg@10"]
    assert _row(hal, study.FULL)[1:] == ["25.0%", "0.700", f"{100 * drop:+.2f}%"]
    assert f"Artifacts: {art.id};" in hal and str(blank.id) in hal.split("runs: ")[1]


# -------------------------------------------------------------------------------------------------- dashboard


def test_dashboard_study_page_shows_the_same_tables(kit, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from mmsr_bench import dashboard
    from mmsr_bench.results import tables

    monkeypatch.setenv("MMSR_BENCH_DB", kit["url"])
    at = AppTest.from_file(str(Path(dashboard.__file__).resolve().parent / "app.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("app_pages/study.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Study"
    at.text_input(key="study_suite_file").set_value(kit["path"]).run()
    at.selectbox(key="study_budget").set_value("tiny").run()
    assert not at.exception, [e.value for e in at.exception]
    rep = study_report.build_report(Store(kit["url"]), _opts(kit))
    shown = [m.value.strip() for m in at.markdown]
    for t in study_report.all_tables(rep):
        assert tables.to_markdown(t).strip() in shown
    assert [b.label for b in at.get("download_button")] == ["Markdown", "LaTeX", "HTML"]
    at.text_input(key="study_sets").set_value("lora_rank=4").run()  # runs of another configuration: as --set
    assert not at.exception, [e.value for e in at.exception]
    opts = study.validate(kit["path"], budget="tiny", db=kit["url"], check_db=False, sets={"lora_rank": "4"})
    shown = [m.value.strip() for m in at.markdown]
    for t in study_report.all_tables(study_report.build_report(Store(kit["url"]), opts)):
        assert tables.to_markdown(t).strip() in shown
    at.text_input(key="study_sets").set_value("lora_rank").run()
    assert not at.exception and "--set" in at.warning[0].value


def test_also_adds_the_full_ranking_columns(kit, tmp_path):
    """``--also`` puts another protocol's columns beside the suite's: here a full-ranking copy of the kit suite."""
    text = Path(kit["path"]).read_text(encoding="utf-8").split("\n[hashes")[0]
    full = tmp_path / "conformance-full.toml"
    full.write_text(text.replace('name = "conformance"', 'name = "conformance-full"', 1)
                    .replace('candidates = "sampled"', 'candidates = "full"'), encoding="utf-8")
    db = tmp_path / "copy.db"
    shutil.copy(kit["work"] / "results.db", db)
    url = f"sqlite:///{db}"
    runner = CliRunner()
    with conformance._home(kit["home"]):
        r = runner.invoke(app, ["suite", "freeze", str(full)])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["run", "--suite", str(full), "--model", "pop", "--db", url])
        assert r.exit_code == 0, r.output
    md = _report(kit, "--format", "markdown", "--also", str(full), url=url)
    sec = _section(md, study.RQS["rq1"].title)
    header = [c.strip() for c in sec.splitlines()[2].strip("|").split("|")]
    assert header[1:6] == [f"baby/{m}" for m in METRICS] + ["baby/%Improv."]
    assert header[6:] == [f"baby (conformance-full)/{m}" for m in METRICS] + ["baby (conformance-full)/%Improv."]
    pop_full = next(r for r in Store(url).runs(suite="conformance-full"))
    row = _row(sec, "pop")
    assert row[6].strip("*<u>/ ") == f"{pop_full.metrics['hr@5']:.4f}"
    assert _row(sec, "sasrec")[6:10] == ["missing"] * 4
    assert suites.load_suite(str(full)).protocol_fingerprint("baby") in sec


def test_dashboard_study_page_on_other_stores(monkeypatch, tmp_path):
    """A store with only a failed run says so; a store of other configurations shows the tables, all missing."""
    from streamlit.testing.v1 import AppTest

    from mmsr_bench import dashboard
    from mmsr_bench.dashboard.fixture import FixtureSpec, build_fixture_store

    app_file = str(Path(dashboard.__file__).resolve().parent / "app.py")
    failed = f"sqlite:///{tmp_path / 'failed.db'}"
    Store(failed).add_run(Run(group_id="g", suite="synth4", suite_hash="h", dataset="beauty", model="gptrec",
                              status="failed", error="boom"))
    demo = f"sqlite:///{tmp_path / 'demo.db'}"
    build_fixture_store(demo, FixtureSpec(seeds=(0,), n_users=50, perturbations=()))
    for url, expect in ((failed, "No completed runs"), (demo, None)):
        monkeypatch.setenv("MMSR_BENCH_DB", url)
        at = AppTest.from_file(app_file, default_timeout=120).run()
        at.switch_page("app_pages/study.py").run()
        assert not at.exception, [e.value for e in at.exception]
        if expect:
            assert expect in at.info[0].value
        else:
            text = "\n".join(m.value for m in at.markdown)
            assert "RQ1: overall performance" in text and "| sasrec | missing |" in text


def test_dashboard_study_page_opens_on_the_sets_of_its_link(monkeypatch, tmp_path):
    """``?sets=...`` fills the configuration, as typing it would (the shareable link and the screenshots' option)."""
    from streamlit.testing.v1 import AppTest

    from mmsr_bench import dashboard
    from mmsr_bench.dashboard.fixture import FixtureSpec, build_fixture_store
    from mmsr_bench.dashboard.screenshots import PAGES, page_query

    demo = f"sqlite:///{tmp_path / 'demo.db'}"
    build_fixture_store(demo, FixtureSpec(seeds=(0,), n_users=50, perturbations=()))
    monkeypatch.setenv("MMSR_BENCH_DB", demo)
    at = AppTest.from_file(str(Path(dashboard.__file__).resolve().parent / "app.py"), default_timeout=120)
    at.query_params["sets"] = "backbone=smollm2-135m,dtype=bfloat16"
    at.run()
    at.switch_page("app_pages/study.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="study_sets").value == "backbone=smollm2-135m,dtype=bfloat16"
    assert "RQ1: overall performance" in "\n".join(m.value for m in at.markdown)
    bad = AppTest.from_file(str(Path(dashboard.__file__).resolve().parent / "app.py"), default_timeout=120)
    bad.query_params["sets"] = "lora_rank"  # a malformed pair from a link fails as the typed one does
    bad.run()
    bad.switch_page("app_pages/study.py").run()
    assert not bad.exception and "--set" in bad.warning[0].value

    page = {p.name: p for p in PAGES}
    assert page_query(page["study"], study_sets="backbone=smollm2-135m,dtype=bfloat16") == \
        "?sets=backbone%3Dsmollm2-135m%2Cdtype%3Dbfloat16"
    assert page_query(page["leaderboard"], against="sasrec", study_sets="x=1") == "?against=sasrec"
    assert page_query(page["runs"], against="sasrec", study_sets="x=1") == ""
