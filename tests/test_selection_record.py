"""Every trained family writes one selection record (``run_info["selection"]``), and it says what the family's older
keys say: read through :func:`mmsr_bench.results.selection.selection` with and without the record, a fitted run
gives the same choice, so runs stored before the record and after it are judged alike."""

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


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "gptrec", "mmsr-text", "mmgcn-text", "tallrec"])
def test_each_trained_family_writes_the_record_and_its_older_keys_agree(kit, name):
    suite, data = kit
    with kit_mod._home(suite.home):
        model = kit_mod._fit(name, kit_mod.tiny_overrides(name), 0, suite, data)
    info = json.loads(json.dumps(model.run_info, default=str))  # as stored
    record = info["selection"]
    assert set(record) == KEYS and record["unit"] in ("epoch", "step") and record["n_validations"] >= 1
    assert record["stopped_by"] in ("patience", "budget", "deadline") and record["chosen"] <= record["last"]
    config = adapter.config_dict(model)
    new = selection(info, config)
    old = selection({k: v for k, v in info.items() if k != "selection"}, config)
    assert new is not None and new == old, (new, old)


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
