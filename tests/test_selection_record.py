"""Every trained family writes one selection record (``run_info["selection"]``) and none of the keys that grew per
family before it (runs stored with those keep reading: tests/test_tune.py's stored shapes), and
:func:`mmsr_bench.results.selection.selection` reads the record back as it was written."""

from __future__ import annotations

import json

import pytest

from mmsr_bench.evaluation.training import STOPPED_BY, selection_record
from mmsr_bench.errors import BenchError
from mmsr_bench.models import adapter
from mmsr_bench.models import conformance as kit_mod
from mmsr_bench.results.selection import selection

KEYS = {"split", "metric", "value", "unit", "chosen", "last", "stopped_by", "n_validations"}


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    kit = kit_mod.make_suite(tmp_path_factory.mktemp("selection-kit"))
    with kit_mod._home(kit.home):
        yield kit, kit_mod._load(kit)


#: What each family wrote before the record; one fact in one place: a new run writes none of them.
OLDER_KEYS = {"best_epoch", "best_valid", "epochs_trained", "early_stopping_split", "early_stopping_metric",
              "valid_metric", "best_step", "best_valid_auc", "stopped_by"}


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "gptrec", "mmsr-text", "mmgcn-text", "tallrec"])
def test_each_trained_family_writes_the_record_and_only_the_record(kit, name):
    suite, data = kit
    with kit_mod._home(suite.home):
        model = kit_mod._fit(name, kit_mod.tiny_overrides(name), 0, suite, data)
    info = json.loads(json.dumps(model.run_info, default=str))  # as stored
    record = info["selection"]
    assert set(record) == KEYS and record["unit"] in ("epoch", "step") and record["n_validations"] >= 1
    assert record["stopped_by"] in ("patience", "budget", "deadline") and record["chosen"] <= record["last"]
    assert not OLDER_KEYS & set(info), sorted(OLDER_KEYS & set(info))
    read = selection(info, adapter.config_dict(model))
    assert read is not None and {k: v for k, v in read.as_dict().items() if k != "converged"} == record


def test_the_record_refuses_an_unknown_unit_or_reason_and_maps_the_old_words():
    rec = selection_record(split="valid", metric="ndcg@10", value=float("nan"), unit="epoch", chosen=None, last=3,
                           stopped_by="max_epochs", n_validations=3)
    assert rec["value"] is None and rec["stopped_by"] == "budget" and STOPPED_BY["time_limit"] == "deadline"
    with pytest.raises(BenchError, match="unit"):
        selection_record(split="valid", metric="auc", value=0.5, unit="batch", chosen=1, last=1, stopped_by="budget",
                         n_validations=1)
    with pytest.raises(KeyError):
        selection_record(split="valid", metric="auc", value=0.5, unit="step", chosen=1, last=1, stopped_by="bored",
                         n_validations=1)
