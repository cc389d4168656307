"""Studies as data (mmsr_bench/results/study_spec.py): the shipped MLLM-SRec study is a TOML file, a researcher's
own study file runs the same way, and a bad study file is one error line naming the file and the field."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.errors import BenchError
from mmsr_bench.results import study
from mmsr_bench.results.store import Store
from mmsr_bench.results.study_spec import load_study

MINE = """
name = "mine"
full = "pop"
proposed = ["pop"]

[[rq]]
key = "q1"
title = "Q1: popularity against chance"
models = ["random", "pop"]
reference = "best-baseline"
labels = { pop = "the proposed one" }
"""


def test_the_shipped_study_is_the_mllm_srec_grid():
    spec = load_study()
    assert spec.full == "mllm-srec-qlora" and list(spec.rqs) == ["rq1", "rq2", "rq3", "rq4"]
    assert spec.rqs["rq1"].against_baseline and not spec.rqs["rq2"].against_baseline
    assert spec.is_proposed("mllm-srec-text") and not spec.is_proposed("tallrec")
    assert study.RQS == spec.rqs and study.FULL == spec.full  # the module's names are the file's facts


def test_a_researchers_own_study_plans_runs_and_reports(frozen_tiny, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(MINE)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    res = CliRunner().invoke(app, ["study", "--study", str(path), "--suite", str(frozen_tiny), "--run", "--db", db])
    assert res.exit_code == 0, res.output
    assert sorted(r.model for r in Store.for_reading(db).runs()) == ["pop", "random"]
    res = CliRunner().invoke(app, ["report", "study", "--study", str(path), "--suite", str(frozen_tiny), "--db", db])
    assert res.exit_code == 0, res.output
    assert "Q1: popularity against chance" in res.output and "pop (the proposed one)" in res.output
    assert "Reference per dataset: seq: random" in res.output  # the best model the study does not propose


@pytest.mark.parametrize("text, message", [
    (MINE.replace('models = ["random", "pop"]', 'models = ["random", "pop", "popp"]'), "unknown model 'popp'"),
    (MINE.replace('labels = { pop =', 'labels = { sasrec ='), "labels name 'sasrec'"),
    (MINE.replace('reference = "best-baseline"', 'reference = "best"'), "rq.0.reference"),
    (MINE + '\n[[rq]]\nkey = "q1"\ntitle = "again"\nmodels = ["pop"]\n', "key 'q1' is used twice"),
    (MINE.replace('full = "pop"', 'full = "sasrec"').replace('reference = "best-baseline"', 'reference = "full"'),
     "full = 'sasrec' is in no research question"),
    (MINE.replace('name = "mine"', 'name = "mine"\ncolour = "red"'), "colour: Extra inputs are not permitted"),
    ("name = [", "not valid TOML"),
])
def test_a_bad_study_file_is_one_error_naming_the_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(BenchError) as err:
        load_study(str(path))
    assert message in str(err.value) and str(path) in str(err.value)


def test_an_unknown_study_name_lists_the_shipped_ones():
    with pytest.raises(BenchError, match="Did you mean: mllm-srec"):
        load_study("mlm-srec")
